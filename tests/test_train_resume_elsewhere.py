"""A training stage that dies after a checkpoint resumes from it on another worker (a fresh, empty folder):
the checkpoint reached the workspace store, and the retry fetched it from there. Real MLflow, object store
and workspace store; the crash is simulated by an exception right after the checkpoint was stored."""

from __future__ import annotations

import pytest

from sail_core.config import load_config
from sail_core.pipeline import steps, workspace

pytestmark = [pytest.mark.slow, pytest.mark.train]


class Crash(RuntimeError):
    pass


def test_a_retry_on_another_worker_resumes_from_the_stored_checkpoint(monkeypatch):
    cfg = load_config(profile="tiny", overrides={"store.local_cache": "per-task", "registry.experiment": "resume-test",
                                                 "train.stages.0.steps": 4, "train.stages.0.checkpoint_every": 2})
    run_id = workspace.new_run_id("test")
    with workspace.for_run(cfg, run_id) as ws:
        steps.check(cfg, ws, ["ingest", "validate", "version", "train"])
    with workspace.for_run(cfg, run_id) as ws:
        steps.ingest(cfg, ws)
    with workspace.for_run(cfg, run_id) as ws:
        steps.validate(cfg, ws)

    stored = workspace.Workspace.save_checkpoints

    def save_then_die(self, stage, folder):
        stored(self, stage, folder)
        raise Crash("the worker died right after checkpoint 2 was stored")

    monkeypatch.setattr(workspace.Workspace, "save_checkpoints", save_then_die)
    with pytest.raises(Crash), workspace.for_run(cfg, run_id) as first_worker:
        steps.train_stage(cfg, first_worker, "stage1")
    monkeypatch.setattr(workspace.Workspace, "save_checkpoints", stored)

    with workspace.for_run(cfg, run_id) as second_worker:
        assert not (second_worker.wd.root / "models").exists()  # nothing local: a different machine
        summary = steps.train_stage(cfg, second_worker, "stage1", resume=True)["summary"]
        assert summary["resumed_from_step"] == 2 and summary["steps_run"] == 2
        assert not second_worker.restore_checkpoints("stage1", second_worker.wd.root / "x")  # dropped when done
        assert second_worker.output_hash("models/stage1").endswith(".dir")
