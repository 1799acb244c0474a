"""DVC: `dvc repro` runs the `sail` stages, and `dvc push` fills a real local remote (temp folders)."""

from __future__ import annotations

from pathlib import Path

from sail_core.pipeline.versioning import ensure_remote, out_hash, status_clean
from tests.project import BIN, make_project, run


def _remote_files(remote: Path) -> list[Path]:
    return [p for p in remote.rglob("*") if p.is_file()]


def test_repro_data_stages_and_push(tmp_path):
    root = make_project(tmp_path / "proj")
    remote = ensure_remote(root, tmp_path / "remote")

    run(root, str(BIN / "dvc"), "repro", "validate")
    assert (root / "data/validated/items.parquet").exists()
    lock_hash = out_hash(root, "data/validated")
    assert lock_hash and lock_hash.endswith(".dir")

    run(root, str(BIN / "dvc"), "push")
    assert len(_remote_files(remote)) >= 4          # the .dir manifest plus the tables
    assert "up to date" in run(root, str(BIN / "dvc"), "status", "validate").stdout
    assert not status_clean(root)   # train/evaluate/export have not run yet

    # A second repro is a no-op: nothing changed, so nothing reruns.
    again = run(root, str(BIN / "dvc"), "repro", "validate")
    assert "didn't change, skipping" in again.stdout

    # Removing the workspace copy and pulling from the remote restores the same data.
    import shutil

    shutil.rmtree(root / "data" / "validated")
    shutil.rmtree(root / ".dvc" / "cache")
    run(root, str(BIN / "dvc"), "pull", "validate")
    assert (root / "data/validated/items.parquet").exists()
    assert out_hash(root, "data/validated") == lock_hash


def test_changed_param_makes_stage_stale(tmp_path):
    root = make_project(tmp_path / "proj")
    ensure_remote(root, tmp_path / "remote")
    run(root, str(BIN / "dvc"), "repro", "ingest")
    params = (root / "params.yaml").read_text().replace("seed: 0", "seed: 1", 1)
    (root / "params.yaml").write_text(params)
    status = run(root, str(BIN / "dvc"), "status", "ingest").stdout
    assert "modified" in status and "base.data" in status
