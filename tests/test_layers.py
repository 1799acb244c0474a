"""The layer contracts in pyproject.toml hold, and a deliberate back-import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


def _copy(tmp_path: Path) -> Path:
    for name in ("sail_core", "serving", "data_contracts"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_layer_contracts_hold(tmp_path):
    proc = _lint(_copy(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_back_import_breaks_the_layers(tmp_path):
    root = _copy(tmp_path)
    with (root / "sail_core" / "model" / "pooling.py").open("a") as fh:
        fh.write("\nimport sail_core.train.loop  # a deliberate back-import\n")
    with (root / "serving" / "state.py").open("a") as fh:
        fh.write("\nimport sail_core.model.omni  # serving must never load the model\n")
    proc = _lint(root)
    assert proc.returncode == 1
    assert "sail_core.model.pooling -> sail_core.train.loop" in proc.stdout
    assert "serving.state -> sail_core.model.omni" in proc.stdout
