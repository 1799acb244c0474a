"""Storage faults: the MLflow store or the DVC remote unavailable, and a full disk.

* MLflow store (``SAIL_HOME/mlflow.db`` + ``SAIL_HOME/mlartifacts``) and DVC remote (``SAIL_HOME/dvc-remote``)
  made unavailable: read-only (chmod; only when not root, since root writes anyway), replaced by a file, or
  moved away. Registering a model / logging to a run / the versioning step's ``dvc push`` fail with a message
  naming the path and the fix, write nothing, and the same call succeeds once the folder is back (one model
  version, one set of remote files). Real MLflow (sqlite store) and real DVC (a throw-away git + DVC project).
* A full disk while writing validated data (the validate step) or a checkpoint: a real size-limited folder
  (tmpfs, mounted when the test runs as root and ``mount`` works) filled up, else a fault-injecting writer
  (``open`` in :mod:`sail_core.data.io`, used by both :func:`~sail_core.data.io.write_table` and
  :func:`~sail_core.train.checkpoint.save_checkpoint`, replaced by one whose writes raise ENOSPC after 1 KiB).
  The previous outputs stay intact, no temporary file is left, the error says the disk is full and where.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sail_core.config import load_config
from sail_core.data import io as data_io
from sail_core.data.io import DiskFullError
from sail_core.paths import Workdir, home
from sail_core.pipeline import registry, steps, tracking, workspace
from sail_core.pipeline.tracking import StoreUnavailable
from sail_core.pipeline.versioning import VersioningError, commit_and_push
from sail_core.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from tests.project import BIN, run

ROOT = os.geteuid() == 0
# how a folder is made unavailable: read-only (not as root: root writes anyway), a file in its place, moved away
WAYS = (["read-only"] if not ROOT else []) + ["file-in-place", "moved-away"]


@pytest.fixture
def sail_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAIL_HOME", str(tmp_path / "home"))
    return home().root


class Unavailable:
    """Make ``path`` unavailable one way, and put it back."""

    def __init__(self, path: Path, way: str):
        self.path, self.way, self.aside = path, way, path.with_name(path.name + ".aside")

    def __enter__(self):
        if self.way == "read-only":
            self.mode = self.path.stat().st_mode
            self.path.chmod(0o555 if self.path.is_dir() else 0o444)
        else:
            self.path.rename(self.aside)
            if self.way == "file-in-place":
                self.path.write_text("not the store")
        return self

    def restore(self):
        if self.way == "read-only":
            self.path.chmod(self.mode)
        else:
            if self.way == "file-in-place":
                self.path.unlink()
            self.aside.rename(self.path)

    def __exit__(self, *exc):
        if self.way == "read-only" or self.aside.exists():
            self.restore()


# ---------------------------------------------------------------- MLflow store
def _tiny_export(folder: Path) -> Path:
    """An export folder register_onnx accepts: a one-node ONNX graph, tokenizer.json and export.json."""
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "export.json").write_text('{"format": "test"}')
    return folder


def _new_run() -> str:
    import mlflow

    experiment = tracking.ensure_experiment("store-faults")
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    return run.info.run_id


@pytest.mark.parametrize(("part", "way"), [("artifacts", w) for w in WAYS] + [("database", "moved-away")])
def test_register_fails_clearly_then_retries_cleanly(sail_home, tmp_path, part, way):
    export = _tiny_export(tmp_path / "export")
    run_id = _new_run()
    path = home().mlflow_artifacts if part == "artifacts" else home().mlflow_db
    with Unavailable(path, way) as store:
        with pytest.raises(StoreUnavailable) as failed:
            registry.register_onnx(run_id, export, "faulty", {"t": "1"})
        message = str(failed.value)
        assert str(path) in message and "run the same step again" in message
        assert {"read-only": "read-only", "file-in-place": "not a", "moved-away": "missing"}[way] in message
        with pytest.raises(StoreUnavailable):  # logging to a run: the same check
            tracking.log_text(run_id, "hello", "notes/hello.txt")
        store.restore()
    assert registry.register_onnx(run_id, export, "faulty", {"t": "1"}) == 1
    assert registry.by_alias("faulty", registry.CHALLENGER).version == 1
    versions = registry.client().search_model_versions("name='faulty'")
    assert [int(v.version) for v in versions] == [1], "one version: nothing half-registered by the failed attempt"
    assert registry.has_artifact(run_id, "onnx")
    tracking.log_text(run_id, "hello", "notes/hello.txt")
    assert tracking.load_text(run_id, "notes/hello.txt") == "hello"


def test_a_fresh_store_is_created_without_complaint(sail_home):
    """The checks do not stop a first run on an empty SAIL_HOME (no database, no artifact folder)."""
    assert not home().mlflow_db.exists() and not home().mlflow_artifacts.exists()
    registry.by_alias("nothing", registry.CHAMPION)  # a read creates the database first, as `sail` commands do
    run_id = _new_run()
    tracking.log_text(run_id, "first", "first.txt")
    assert tracking.load_text(run_id, "first.txt") == "first"


# ---------------------------------------------------------------- DVC remote
def _dvc_project(root: Path) -> Path:
    """A git + DVC project with one stage whose output is two small files."""
    root.mkdir()
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo made\n    outs:\n      - out\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], [str(BIN / "dvc"), "init", "-q"],
                [str(BIN / "dvc"), "config", "core.analytics", "false"]):
        run(root, *cmd)
    (root / "out").mkdir()
    (root / "out" / "a.txt").write_text("a" * 1000)
    (root / "out" / "b.txt").write_text("b" * 1000)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.dvc
@pytest.mark.parametrize("way", WAYS)
def test_dvc_push_fails_clearly_then_retries_cleanly(sail_home, tmp_path, way):
    root = _dvc_project(tmp_path / "proj")
    remote = home().dvc_remote
    commit_and_push(root, ["make"])  # the remote is created and configured on first use
    first = _files(remote)
    assert len(first) == 3  # a.txt, b.txt and the folder's manifest

    (root / "out" / "a.txt").write_text("changed")
    with Unavailable(remote, way) as store:
        with pytest.raises(VersioningError) as failed:
            commit_and_push(root, ["make"])
        message = str(failed.value)
        assert f"the DVC remote {remote}" in message and "run the same step again" in message
        assert {"read-only": "not writable", "file-in-place": "not a folder", "moved-away": "missing"}[way] in message
        store.restore()
    assert _files(remote) == first, "the failed attempt wrote nothing to the remote"
    commit_and_push(root, ["make"])
    assert len(_files(remote)) == 5  # the new a.txt and manifest beside the old ones
    status = run(root, str(BIN / "dvc"), "status", "--cloud", "make").stdout
    assert "up to date" in status.lower() or "cache and remote 'sail' are in sync" in status.lower(), status


# ---------------------------------------------------------------- disk full
def _can_mount() -> bool:
    return ROOT and shutil.which("mount") is not None


class SmallDisk:
    """A folder on a 64 MiB tmpfs (``fill`` writes a file until ENOSPC), or, where mounting is not possible, a
    plain folder whose writes through :mod:`sail_core.data.io` fail with ENOSPC after 1 KiB once ``fill``ed."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder, self.monkeypatch, self.tmpfs = folder, monkeypatch, False
        folder.mkdir()
        if _can_mount():
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                  capture_output=True, text=True)
            self.tmpfs = proc.returncode == 0
        self.kind = "tmpfs" if self.tmpfs else "injected ENOSPC writer"

    def fill(self):
        if self.tmpfs:
            with open(self.folder / "filler", "wb", buffering=0) as f:
                for chunk in (2**20, 4096):  # MiB by MiB, then the last pages
                    try:
                        while True:
                            f.write(b"\0" * chunk)
                    except OSError as err:
                        assert err.errno == errno.ENOSPC
            return
        real_open, folder = open, str(self.folder)

        class Full(io.FileIO):
            written = 0

            def write(self, data):
                self.written += len(data)
                if self.written > 1024:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return super().write(data)

        def full_open(path, mode="r", *args, **kwargs):
            if str(path).startswith(folder) and "w" in mode:
                return io.BufferedWriter(Full(path, "wb"))
            return real_open(path, mode, *args, **kwargs)

        self.monkeypatch.setattr(data_io, "open", full_open, raising=False)

    def free(self):
        if self.tmpfs:
            (self.folder / "filler").unlink()
        else:
            self.monkeypatch.delattr(data_io, "open", raising=False)

    def close(self):
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.folder)], check=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "disk", monkeypatch)
    print(f"disk full simulated with: {disk.kind}")
    try:
        yield disk
    finally:
        disk.close()


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".validate-")]
    assert left == [], left


def test_disk_full_while_writing_validated_data_keeps_the_previous_data(small_disk, demo_data, tmp_path):
    """The validate step of a project workspace on a full disk: data/validated and data/quarantine as before."""
    cfg = load_config(profile="tiny")
    raw = small_disk.folder / "raw"  # on the same disk, so the media are hard-linked, as in a project
    shutil.copytree(demo_data, raw)
    ws = workspace.project(Workdir(small_disk.folder / "proj"))
    steps.validate(cfg, ws, src=raw)
    before = {name: _digests(ws.wd.root / "data" / name) for name in ("validated", "quarantine")}
    assert "items.parquet" in before["validated"]

    small_disk.fill()
    with pytest.raises(DiskFullError) as failed:
        steps.validate(cfg, ws, src=raw)
    message = str(failed.value)
    assert message.startswith("disk full: no space left on the disk holding ") and str(small_disk.folder) in message
    assert "was not changed" in message and "Free space" in message and "run the step again" in message
    assert {name: _digests(ws.wd.root / "data" / name) for name in before} == before
    _no_temporaries(small_disk.folder)

    small_disk.free()
    steps.validate(cfg, ws, src=raw)  # the same step once there is room again
    tables = lambda d: {k: v for k, v in d.items() if k.endswith(".parquet")}  # noqa: E731
    assert tables(_digests(ws.wd.validated)) == tables(before["validated"])  # same input, same tables


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(small_disk):
    folder = small_disk.folder / "checkpoints"
    first = {"weights": torch.arange(10.0), "history": [1.0]}
    save_checkpoint(folder, 1, first)
    small_disk.fill()
    with pytest.raises(DiskFullError, match=rf"disk full: .*{folder}.*checkpoint step_0000002.pt"):
        save_checkpoint(folder, 2, {"weights": torch.randn(200_000), "history": [1.0, 0.5]})
    assert [p.name for p in list_checkpoints(folder)] == ["step_0000001.pt"]
    loaded = load_checkpoint(list_checkpoints(folder)[0])
    assert loaded["step"] == 1 and torch.equal(loaded["weights"], first["weights"])
    _no_temporaries(folder)

    small_disk.free()
    save_checkpoint(folder, 2, {"weights": torch.randn(200_000), "history": [1.0, 0.5]})
    assert [p.name for p in list_checkpoints(folder)] == ["step_0000002.pt"]


def test_disk_full_while_writing_a_table_keeps_the_previous_file(small_disk):
    path = small_disk.folder / "items.parquet"
    old = pd.DataFrame({"item_id": ["1", "2"], "title": ["a", "b"]})
    data_io.write_table(old, path)
    small_disk.fill()
    big = pd.DataFrame({"x": np.random.default_rng(0).random(500_000)})
    with pytest.raises(DiskFullError, match="no space left"):
        data_io.write_table(big, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), old)
    _no_temporaries(small_disk.folder)
