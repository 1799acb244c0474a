"""DVC: `dvc repro` runs the `sail` stages, `dvc push` fills a real local remote, and the stages follow the
resolved configuration in params.resolved.yaml (one train@NAME stage per training stage; temp folders)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from sail_core.pipeline.versioning import ensure_remote, out_hash, status_clean
from tests.project import BIN, TWO_STAGES, make_project, run

pytestmark = pytest.mark.dvc


def _remote_files(remote: Path) -> list[Path]:
    return [p for p in remote.rglob("*") if p.is_file()]


def _dvc(root: Path, *args: str, check: bool = True):
    return run(root, str(BIN / "dvc"), *args, check=check)


def _sail(root: Path, *args: str, check: bool = True):
    return run(root, str(BIN / "sail"), *args, check=check)


def _set_in_profile(root: Path, profile: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params["profiles"][profile]
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _edges(root: Path) -> set[tuple[str, str]]:
    return set(re.findall(r'"([^"]+)" -> "([^"]+)"', _dvc(root, "dag", "--dot").stdout))


def test_repro_data_stages_and_push(tmp_path):
    root = make_project(tmp_path / "proj")
    remote = ensure_remote(root, tmp_path / "remote")

    _dvc(root, "repro", "validate")
    assert (root / "data/validated/items.parquet").exists()
    lock_hash = out_hash(root, "data/validated")
    assert lock_hash and lock_hash.endswith(".dir")

    _dvc(root, "push")
    assert len(_remote_files(remote)) >= 4          # the .dir manifest plus the tables
    assert "up to date" in _dvc(root, "status", "validate").stdout
    assert not status_clean(root)   # the train stages, evaluate and export have not run yet

    # A second repro is a no-op: nothing changed, so nothing reruns.
    again = _dvc(root, "repro", "validate")
    assert "didn't change, skipping" in again.stdout

    # Removing the workspace copy and pulling from the remote restores the same data.
    shutil.rmtree(root / "data" / "validated")
    shutil.rmtree(root / ".dvc" / "cache")
    _dvc(root, "pull", "validate")
    assert (root / "data/validated/items.parquet").exists()
    assert out_hash(root, "data/validated") == lock_hash


def test_a_changed_key_makes_only_the_stages_it_feeds_stale(tmp_path):
    root = make_project(tmp_path / "proj")
    ensure_remote(root, tmp_path / "remote")
    _dvc(root, "repro", "ingest")

    # DVC reads the resolved file: a change to params.yaml counts once it is resolved again.
    _set_in_profile(root, "tiny", "model.max_length", 48)
    assert _sail(root, "config", "resolve", "--check", check=False).returncode == 1
    _sail(root, "config", "resolve")
    _sail(root, "config", "resolve", "--check")
    assert "up to date" in _dvc(root, "status", "ingest").stdout   # ingest does not read model.*

    _set_in_profile(root, "tiny", "data.seed", 1)
    _sail(root, "config", "resolve")
    status = _dvc(root, "status", "ingest").stdout
    assert "modified" in status and "params.resolved.yaml" in status and re.search(r"modified:\s+data.seed", status)


def test_train_stages_follow_the_resolved_configuration(tmp_path):
    root = make_project(tmp_path / "proj", profile=TWO_STAGES, two_stages=True)
    listed = _dvc(root, "stage", "list", "--name-only").stdout.split()
    assert listed == ["ingest", "validate", "teacher", "train@stage1", "train@stage2", "index", "sid", "evaluate",
                      "export"]
    edges = _edges(root)
    assert {("validate", "train@stage1"), ("train@stage1", "train@stage2"),
            ("train@stage2", "evaluate"), ("train@stage2", "index"), ("index", "evaluate"),
            ("train@stage2", "export")} <= edges
    assert ("train@stage1", "evaluate") not in edges   # evaluate reads the last stage's model only

    # Each train stage tracks its own entry of train.stages, and runs it in the resolved profile.
    dvc_yaml = _resolved_stage(root, "train@stage2")
    assert dvc_yaml["cmd"] == f"sail --profile {TWO_STAGES} train --stage stage2"
    assert "models/stage1" in dvc_yaml["deps"] and {"train.stages.1", "model", "datasets", "train.seed"} <= set(
        dvc_yaml["params"][0]["params.resolved.yaml"])

    # Another profile: resolve it, and the train stages are that profile's (four here, the third after mining,
    # the fourth the CRE stage, which also reads the teacher).
    _sail(root, "--profile", "tiny", "config", "resolve")
    assert [s for s in _dvc(root, "stage", "list", "--name-only").stdout.split() if s.startswith(("train@", "mine@"))] == [
        "mine@stage3", "train@stage1", "train@stage2", "train@stage3", "train@cre"]
    assert {("train@stage2", "mine@stage3"), ("mine@stage3", "train@stage3"), ("train@stage3", "train@cre"),
            ("teacher", "train@cre")} <= _edges(root)
    assert ("train@cre", "evaluate") in _edges(root) and ("teacher", "evaluate") in _edges(root)

    # The second stage refuses to start without the first stage's model, and names the fix.
    _sail(root, "config", "resolve")   # back to the project's profile, tiny_two_stages
    proc = _sail(root, "train", "--stage", "stage2", check=False)
    assert proc.returncode == 1 and "models/stage1/model" in proc.stderr and "sail train --stage stage1" in proc.stderr
    proc = _sail(root, "train", "--stage", "nope", check=False)
    assert proc.returncode == 2 and "stage1, stage2" in proc.stderr


def _resolved_stage(root: Path, name: str) -> dict:
    """One stage of dvc.yaml as DVC resolves it (foreach and ${...} filled in)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if stage.name == name:
                params = [d for d in stage.deps if isinstance(d, ParamsDependency)]
                return {"cmd": stage.cmd, "deps": [d.def_path for d in stage.deps if d not in params],
                        "params": [{d.def_path: sorted(d.params)} for d in params]}
    raise AssertionError(f"no stage {name} in {root}/dvc.yaml")
