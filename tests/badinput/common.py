"""Shared by the bad-input runners: loading the cases, running `sail` in-process, filling placeholders.

A case is ``tests/badinput/<category>/<name>.yaml`` with ``what`` (one line: what is wrong) and
``expect`` (a substring of the message the user sees, matched case-insensitively), plus the fields
its category's runner (``tests/badinput/<category>.py``) reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent
CATEGORIES = ("tables", "media", "config", "cli", "serving")


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    path: Path
    spec: dict

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


def load_cases() -> list[Case]:
    """Every case of the corpus, by category then name; a case without ``what`` or ``expect`` is an error."""
    cases = []
    for category in CATEGORIES:
        for path in sorted((CORPUS / category).glob("*.yaml")):
            spec = yaml.safe_load(path.read_text()) or {}
            missing = [k for k in ("what", "expect") if not spec.get(k)]
            if missing:
                raise ValueError(f"{path}: missing {missing}; every case says what is wrong and the message it expects")
            cases.append(Case(category, path.stem, path, spec))
    return cases


@dataclass
class Outcome:
    """What a `sail` command did: its exit code and everything it printed."""

    exit_code: int
    output: str
    exception: BaseException | None = None


def sail(args: list[str]) -> Outcome:
    """Run the `sail` CLI in this process (typer's CliRunner) and collect stdout and stderr."""
    from typer.testing import CliRunner

    from sail_core.cli import State, app

    State.overrides = {}  # the callback sets every field again; reset the one a failed parse could leave
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = result.output  # stdout and stderr as a terminal shows them
    crashed = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, re.sub(r"\s+", " ", text), crashed)


def fill(value, **places):
    """``value`` (str, list or dict) with ``{name}`` placeholders filled from ``places``."""
    if isinstance(value, str):
        for k, v in places.items():
            value = value.replace("{" + k + "}", str(v))
        return value
    if isinstance(value, list):
        return [fill(v, **places) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, **places) for k, v in value.items()}
    return value


def expect_failure(outcome: Outcome, case: Case) -> str:
    """The message of a command that must fail cleanly: a non-zero exit and no traceback."""
    assert outcome.exception is None, f"{case.id}: crashed with {outcome.exception!r}: {outcome.output}"
    assert "Traceback" not in outcome.output, f"{case.id}: printed a traceback: {outcome.output}"
    want = case.spec.get("exit", 1)
    assert outcome.exit_code == want, f"{case.id}: exit {outcome.exit_code}, expected {want}: {outcome.output}"
    return outcome.output
