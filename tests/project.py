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
TWO_STAGES = "tiny_two_stages"


def make_project(root: Path, profile: str = "tiny", overrides: dict | None = None, two_stages: bool = False) -> Path:
    """git init + dvc init in ``root`` with this repo's dvc.yaml, params.yaml (profile set), stage deps, and
    ``params.resolved.yaml`` for ``profile``.

    ``overrides`` (dotted keys) are written into ``profile``. ``two_stages`` adds the profile
    :data:`TWO_STAGES`: ``tiny`` with a second training stage, ``stage2``, after ``stage1``.
    """
    from sail_core.config import load_config
    from sail_core.pipeline.dvc_params import write_resolved

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
    if two_stages:
        params["profiles"][TWO_STAGES] = two_stage_profile(root / "params.yaml", params["profiles"]["tiny"])
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_resolved(load_config(root / "params.yaml", profile), root)
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    run(root, str(BIN / "dvc"), "init", "-q")
    run(root, str(BIN / "dvc"), "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "init")
    return root


def two_stage_profile(params: Path, tiny: dict) -> dict:
    """``tiny`` with two training stages: its own ``stage1``, then ``stage2`` (two steps); base's stage3 and cre
    dropped."""
    import copy

    from sail_core.config import load_config

    first = load_config(params, "tiny").train.stages[0].model_dump(mode="json")
    second = {**first, "name": "stage2", "steps": 2, "warmup_steps": 1, "checkpoint_every": 1}
    profile = copy.deepcopy(tiny)
    profile.setdefault("train", {})["stages"] = [first, second, {"name": "stage3", "drop": True},
                                                 {"name": "cre", "drop": True}]
    return profile


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    return e


def run(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
