"""A throw-away copy of this project as its own git + DVC repository, for tests that run DVC or the DAG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_project(root: Path, profile: str = "tiny", overrides: dict | None = None) -> Path:
    """git init + dvc init in ``root`` with this repo's dvc.yaml, params.yaml (profile set) and stage deps."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("sail_core", "data_contracts"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    for key, value in (overrides or {}).items():
        node = params["profiles"][profile]
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    run(root, str(BIN / "dvc"), "init", "-q")
    run(root, str(BIN / "dvc"), "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "init")
    return root


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    return e


def run(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
