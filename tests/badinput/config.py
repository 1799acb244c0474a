"""Runner for ``config/`` cases: a broken params file or ``--set``, then a `sail` verb that loads the configuration.

Fields: ``params`` (optional): ``{path: dotted.key, value: V}`` edits (``delete: true`` removes the key)
applied to a copy of the repository's params.yaml, passed as ``--params {params}``; or ``params_text``:
the whole file's text. ``args``: the command line (default ``config show``); ``{params}`` is the edited
file. ``exit``: the expected exit code (default 2: a configuration error).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.badinput.common import Case, expect_failure, fill, sail
from tests.project import REPO


def _set(tree: dict, dotted: str, value, delete: bool) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[int(key)] if isinstance(tree, list) else tree.setdefault(key, {})
    if delete:
        del tree[last]
    elif isinstance(tree, list):
        tree[int(last)] = value
    else:
        tree[last] = value


def run(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    params = tmp_path / "params.yaml"
    if "params_text" in case.spec:
        params.write_text(case.spec["params_text"])
    else:
        tree = yaml.safe_load((REPO / "params.yaml").read_text())
        for edit in case.spec.get("params") or []:
            _set(tree, edit["path"], edit.get("value"), bool(edit.get("delete")))
        params.write_text(yaml.safe_dump(tree, sort_keys=False))
    args = fill(case.spec.get("args") or ["--params", "{params}", "config", "show"], params=params)
    return expect_failure(sail(args), Case(case.category, case.name, case.path, {"exit": 2, **case.spec}))
