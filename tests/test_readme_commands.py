"""Every shell command in the README runs as written, on the tiny profile, so the docs cannot drift.

The README's ```bash blocks are run in order in a throw-away copy of the project (git + DVC, its own
SAIL_HOME). Quick commands run for real. Long ones get the dry-run flag the README documents:
``sail --dry-run VERB`` (checks the configuration and arguments, prints the call), ``make -n`` and
``pytest --collect-only`` (both in the repository).
``dvc repro`` becomes ``dvc dag && dvc status``: both resolve dvc.yaml's templates and params against
params.resolved.yaml (``dvc repro --dry`` cannot stand in: it stops at the first stage whose inputs do
not exist yet). A command that fails, or a `sail` option the CLI does not know, fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.project import REPO, make_project

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# sail verbs that start servers, train, or need a served model: run with --dry-run.
DRY_VERBS = {"run", "demo", "ui", "train", "mine", "ablate", "index", "evaluate", "similar", "search", "gate", "export",
             "register", "promote", "embed", "version", "reproduce", "runs"}
SAIL_GLOBAL_OPTIONS_WITH_VALUE = {"--set", "--profile", "-p", "--params", "--workdir"}


def readme_commands(text: str) -> list[str]:
    """The command lines of every ```bash block, comments stripped, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def _sail_verb(words: list[str]) -> str | None:
    i = 1
    while i < len(words):
        if words[i] in SAIL_GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
        elif words[i].startswith("-"):
            i += 1
        else:
            return words[i]
    return None


def as_run(command: str) -> tuple[str, str]:
    """(how it runs: real | dry | make, the shell command to run) for one README command."""
    parts, kinds = [], set()
    for part in command.split("&&"):
        words = shlex.split(part)
        if words[0] == "make":
            kinds.add("make")
            part = "make -n " + " ".join(shlex.quote(w) for w in words[1:])
        elif words[0].endswith("bin/pytest"):
            kinds.add("make")  # runs in the repository, where the tests are
            part = " ".join([*map(shlex.quote, words), "--collect-only"])
        elif words[0].endswith("bin/sail") and _sail_verb(words) in DRY_VERBS:
            kinds.add("dry")
            part = " ".join([shlex.quote(words[0]), "--dry-run", *map(shlex.quote, words[1:])])
        elif words[:2] == ["dvc", "repro"] or words[:2] == [".venv/bin/dvc", "repro"]:
            kinds.add("dry")
            part = part.replace("dvc repro", "dvc dag && dvc status")
        parts.append(part.strip())
    kind = "make" if "make" in kinds else "dry" if "dry" in kinds else "real"
    return kind, " && ".join(parts)


def test_the_transform_marks_long_commands_dry():
    assert as_run(".venv/bin/sail --set gate.metrics.0.min_delta=0.02 gate")[0] == "dry"
    assert as_run(".venv/bin/sail ingest && .venv/bin/sail validate") == (
        "real", ".venv/bin/sail ingest && .venv/bin/sail validate")
    assert as_run("make demo") == ("make", "make -n demo")
    assert as_run(".venv/bin/pytest -q -m train") == ("make", ".venv/bin/pytest -q -m train --collect-only")
    assert as_run("source .venv/bin/activate && dvc repro")[1].endswith("dvc dag && dvc status")
    assert readme_commands("```bash\nmake demo   # note\n\n.venv/bin/sail a \\\n  --b c\n```") == [
        "make demo", ".venv/bin/sail a    --b c"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("readme") / "proj", profile="tiny")
    (root / ".venv").symlink_to(BIN.parent)  # the README says .venv/bin/...: the test's own venv
    return root


def _byo_files(root: Path) -> None:
    """items.csv / interactions.csv for the README's 'bring your own data' example (no media columns)."""
    raw = root / "data" / "raw"
    items = pd.read_parquet(raw / "items.parquet")
    items.drop(columns=[c for c in items.columns if c.endswith("_path") or c.endswith("_paths")]).to_csv(
        root / "items.csv", index=False)
    pd.read_parquet(raw / "interactions.parquet").to_csv(root / "interactions.csv", index=False)


def test_every_readme_command_runs(project, tmp_path):
    commands = readme_commands((REPO / "README.md").read_text())
    assert len(commands) >= 10, commands
    env = {**os.environ, "SAIL_WORKDIR": str(project), "SAIL_PARAMS": str(project / "params.yaml"),
           "SAIL_HOME": str(tmp_path / "home"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in commands:
        kind, shell = as_run(command)
        if "items.csv" in command and not (project / "items.csv").exists():
            _byo_files(project)
        cwd = REPO if kind == "make" else project
        proc = subprocess.run(["bash", "-c", shell], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        ran.append(f"{kind:4} {proc.returncode} {command}")
        assert proc.returncode == 0, f"README command failed: {command}\nran: {shell}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if kind == "dry" and "bin/sail" in shell:
            assert "dry run" in proc.stdout, (command, proc.stdout)
    print("\n".join(ran))
