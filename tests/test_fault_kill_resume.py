"""A training task killed with SIGKILL mid-stage is retried by Airflow and resumes from its last checkpoint, to
the same result as a run that was never interrupted.

Real Airflow (scheduler with the LocalExecutor, dag-processor, api-server; SQLite, 127.0.0.1; see
``tests/scheduler.py``), real MLflow, object store and workspace store. The run is ``sail_pipeline`` on the tiny
profile's data with one training stage of 5 steps (a checkpoint every 2): as soon as the stage's first checkpoint
is in the run's workspace store, the test kills the task's process group (the task runner, in a process group of
its own) with SIGKILL. Airflow sees the try fail and retries it (``retries`` on the train tasks, not a manual
clear); the retry (``try_number`` 2) fetches the checkpoint and runs the remaining steps. The uninterrupted
reference is the same stage, same configuration and same validated data, trained in this process.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import pytest

from tests import scheduler
from tests.scheduler import RESUME, RESUME_STAGE, STEPS

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.train]

STAGE = "train.stage1"
# Resume is exact on the same machine (the checkpoint holds model, optimiser, scheduler, sampler and every RNG
# state); the tolerance only allows for float reductions that differ between processes.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def airflow_scheduler(request, tmp_path_factory, demo_data):
    return scheduler.shared(request, tmp_path_factory, demo_data)


def _kill_after_first_checkpoint(af: scheduler.Airflow, run_id: str, folder: Path, timeout_s: float = 300) -> int:
    """Wait until the stage's first try has stored a checkpoint in the workspace store, then SIGKILL the try's
    process group; returns the step of the checkpoint it had stored."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = af.task_instances(run_id).get(STAGE) or {}
        assert ti.get("state") not in ("success", "failed", "up_for_retry"), (
            f"{STAGE} ended ({ti.get('state')}) before the test could kill it; lengthen tiny_resume's stage1 in "
            "tests/scheduler.py (RESUME_STAGE)")
        stored = sorted(folder.glob("step_*.pt")) if folder.is_dir() else []
        if stored and ti.get("state") == "running" and ti.get("try_number") == 1 and ti.get("pid"):
            pid = int(ti["pid"])
            # the pid Airflow recorded is this try's task runner: its title names the task instance
            assert ti["id"].replace("-", "") in scheduler.cmdline(pid).replace("-", ""), scheduler.cmdline(pid)
            os.killpg(pid, signal.SIGKILL)  # the runner leads its own process group
            return int(stored[-1].stem.split("_")[1])
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint of {STAGE} in {folder} within {timeout_s:g} s; task states: "
                       f"{ {t: r['state'] for t, r in af.task_instances(run_id).items()} }")


def _wait_for_task(af: scheduler.Airflow, run_id: str, task: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = af.task_instances(run_id).get(task) or {}
        if ti.get("state") in ("success", "failed"):
            return ti
        time.sleep(1)
    raise TimeoutError(f"{task} of run {run_id} not finished within {timeout_s:g} s: {af.task_instances(run_id)}")


def test_a_stage_killed_mid_training_is_retried_and_ends_as_an_uninterrupted_run(airflow_scheduler, monkeypatch,
                                                                                 tmp_path):
    import torch
    from safetensors.torch import load_file

    from sail_core.config import load_config
    from sail_core.model.omni import OMNI_WEIGHTS
    from sail_core.pipeline import registry, runs
    from sail_core.pipeline.objects import ObjectStore
    from sail_core.pipeline.workspace import Stores, run_key
    from sail_core.train.loop import train_stage

    af = airflow_scheduler
    af.here(monkeypatch)
    cfg = load_config(af.params, RESUME)
    stage = cfg.train.stages[0]
    assert [s.name for s in cfg.train.stages] == ["stage1"] and stage.steps == RESUME_STAGE["steps"]

    run_id = af.trigger({"profile": RESUME, "steps": STEPS, "promote": False}, f"kill_resume__{secrets.token_hex(3)}")
    checkpoints = af.sail_home / "runs" / run_key(run_id) / "checkpoints" / "stage1"
    killed_after = _kill_after_first_checkpoint(af, run_id, checkpoints)
    assert 0 < killed_after < stage.steps

    ti = _wait_for_task(af, run_id, STAGE, timeout_s=300)
    assert ti["state"] == "success" and ti["try_number"] == 2, ti
    assert [t["try_number"] for t in af.tries(run_id, STAGE)] == [1]  # the killed try, kept in the history
    log = af.task_log(run_id, STAGE, 2)
    assert "resumes from the checkpoints in" in log, log[-3000:]

    # (a) the retry resumed from the checkpoint: the stage's MLflow run says from which step
    record = runs.get(cfg, run_id)
    child = registry.client().get_run(record.tags["sail.stage_run.train.stage1"])
    assert child.data.metrics["resumed_from_step"] == killed_after
    store = ObjectStore(Stores.of(cfg).objects, tmp_path / "cache")
    trained = store.pull(record.outputs["models/stage1"], tmp_path / "stage1")
    resumed = json.loads((trained / "train_metrics.json").read_text())
    assert resumed["summary"]["resumed_from_step"] == killed_after
    assert resumed["summary"]["steps_run"] == stage.steps - killed_after

    # (b) the same stage, never interrupted, on the run's validated data: the same losses at every step, the same
    # temperatures and the same weights
    data = store.pull(record.outputs["data/validated"], tmp_path / "validated")
    reference = train_stage(cfg, stage, data, tmp_path / "reference")
    expected = json.loads((tmp_path / "reference" / "train_metrics.json").read_text())
    assert [h["step"] for h in resumed["history"]] == list(range(1, stage.steps + 1))
    for got, want in zip(resumed["history"], expected["history"], strict=True):
        assert got["dataset"] == want["dataset"], (got["step"], got["dataset"], want["dataset"])
        assert got["loss"] == pytest.approx(want["loss"], rel=RTOL, abs=ATOL), got["step"]
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9), got["step"]
    assert record.metrics["train.stage1.final_loss"] == pytest.approx(reference["final_loss"], rel=RTOL, abs=ATOL)
    assert resumed["summary"]["temperatures"] == pytest.approx(reference["temperatures"], rel=RTOL, abs=ATOL)
    weights, want_weights = load_file(str(trained / "model" / OMNI_WEIGHTS)), \
        load_file(str(tmp_path / "reference" / "model" / OMNI_WEIGHTS))
    assert set(weights) == set(want_weights)
    differ = {k: float((weights[k] - want_weights[k]).abs().max()) for k in weights
              if not torch.allclose(weights[k], want_weights[k], rtol=RTOL, atol=ATOL)}
    assert not differ, f"weights that differ from the uninterrupted run (largest difference): {differ}"

    # the run carries on past the stage and succeeds; its record is complete
    assert af.wait_for(run_id, timeout_s=240) == "success", af.task_instances(run_id)
    assert runs.get(cfg, run_id).status == "succeeded"
    assert not checkpoints.exists()  # dropped from the workspace store once the stage finished
