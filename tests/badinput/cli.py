"""Runner for ``cli/`` cases: a `sail` command with a missing or wrong file, folder or version.

Fields: ``files``: name -> text written into the case's folder first; ``dirs``: folders made there;
``args``: the command line, ``{tmp}`` being the case's folder; ``exit``: expected exit code (default 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.common import Case, expect_failure, fill, sail


def run(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    for name in case.spec.get("dirs") or []:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    for name, text in (case.spec.get("files") or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return expect_failure(sail(fill(case.spec["args"], tmp=tmp_path)), case)
