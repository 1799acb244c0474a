"""Two DAG runs at once through the real scheduler, one of them on bad data: the good one completes with a
correct record, the bad one stops at validation, and neither touches the other's files or the champion.

Real Airflow (scheduler with the LocalExecutor and parallelism 2, dag-processor, api-server; SQLite, 127.0.0.1;
see ``tests/scheduler.py``), real Great Expectations, MLflow, object store and workspace store. Both runs import
users' own files (profiles ``tiny_good`` and ``tiny_bad`` of the tests' params.yaml: the same settings, the bad
copy has one item whose year is outside the contract's 1870..2100) and run ingest, validate, version and one
training stage of 2 steps. The champion is a registered model version with the alias ``champion`` in the same
MLflow registry; it is not served (no run here promotes, so Triton is not started).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pandas as pd
import pytest

from tests import scheduler
from tests.scheduler import BAD, BAD_ITEM_YEAR, CONCURRENT_MODEL, GOOD, STEPS

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

TRAIN_TASKS = ["train.teacher", "train.stage1", "train.stage2", "train.mine_stage3", "train.stage3", "train.cre"]


@pytest.fixture(scope="module")
def airflow_scheduler(request, tmp_path_factory, demo_data):
    return scheduler.shared(request, tmp_path_factory, demo_data)


def _register_champion(tmp_path: Path) -> int:
    """A registered version of the tests' model name, aliased champion (a stand-in the runs must leave alone)."""
    import mlflow

    from sail_core.pipeline import registry, tracking

    # not mlflow.set_experiment: it pins the whole test process to this experiment, and any later
    # mlflow.start_run(run_id=...) of another experiment's run (tracking.resume_run) would refuse
    experiment = tracking.ensure_experiment("concurrent-test-champion")  # artifacts in SAIL_HOME
    note = tmp_path / "champion.txt"
    note.write_text("the champion before the concurrent runs\n")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(note), artifact_path="model")
    client = registry.client()
    client.create_registered_model(CONCURRENT_MODEL)
    version = int(client.create_model_version(CONCURRENT_MODEL, f"{run.info.artifact_uri}/model",
                                              run_id=run.info.run_id).version)
    registry.set_champion(CONCURRENT_MODEL, version)
    return version


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime in ns) of every file under ``roots``."""
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for r in roots if r.exists()
            for f in sorted(r.rglob("*")) if f.is_file()}


def test_two_runs_at_once_the_bad_one_stops_at_validation_and_neither_touches_the_other(airflow_scheduler,
                                                                                         monkeypatch, tmp_path):
    from sail_core.config import load_config
    from sail_core.pipeline import registry, runs
    from sail_core.pipeline.objects import ObjectStore
    from sail_core.pipeline.workspace import Stores, run_key

    af = airflow_scheduler
    af.here(monkeypatch)
    cfg = load_config(af.params, GOOD)
    champion = _register_champion(tmp_path)
    versions = {int(v.version) for v in registry.client().search_model_versions(f"name = '{CONCURRENT_MODEL}'")}

    tag = secrets.token_hex(3)
    good = af.trigger({"profile": GOOD, "steps": STEPS, "promote": False}, f"concurrent_good__{tag}")
    bad = af.trigger({"profile": BAD, "steps": STEPS, "promote": False}, f"concurrent_bad__{tag}")
    home = af.sail_home
    folders = {r: [home / "runs" / run_key(r), home / "cache" / "runs" / run_key(r)] for r in (good, bad)}

    # the bad run stops at validation; its tasks after validate never run
    assert af.wait_for(bad, timeout_s=300) == "failed"
    bad_tree = _tree(*folders[bad])
    assert af.run_state(good) == "running", "the good run ended before the bad one: they did not overlap"
    states = {t: r["state"] for t, r in af.task_instances(bad).items()}
    assert states["check"] == states["ingest"] == "success" and states["validate"] == "failed", states
    assert {states[t] for t in ["version", *TRAIN_TASKS]} == {"upstream_failed"}, states
    bad_tries = af.task_instances(bad)["validate"]["try_number"]
    assert bad_tries == 1  # validation is not retried: a contract breach would only repeat

    assert af.wait_for(good, timeout_s=400) == "success", af.task_instances(good)
    good_states = {t: r["state"] for t, r in af.task_instances(good).items()}
    assert all(good_states[t] == "success" for t in ["check", "ingest", "validate", "version", "train.teacher",
                                                     "train.stage1"]), good_states

    # the runs overlapped in time (parallelism 2): the bad run ran inside the good one
    spans = {r: af.query("SELECT start_date, end_date FROM dag_run WHERE run_id = ?", (r,))[0] for r in (good, bad)}
    assert spans[good]["start_date"] < spans[bad]["end_date"] and spans[bad]["start_date"] < spans[good]["end_date"]

    # the good run's record: every task done, its outputs, the data it validated is its own (the bad copy's item
    # has its good year there), one nested MLflow run for its stage with a loss per step
    record = runs.get(cfg, good)
    assert record.status == "succeeded" and "sail.failed_task" not in record.tags
    assert set(record.task_seconds) == {"check", "ingest", "validate", "version", "train.teacher", "train.stage1"}
    assert set(record.outputs) == {"data/raw", "data/validated", "data/quarantine", "data/teacher", "models/stage1"}
    assert record.tags["sail.data_hash"] == record.outputs["data/validated"]
    store = ObjectStore(Stores.of(cfg).objects, tmp_path / "objects")
    items = pd.read_parquet(store.pull(record.outputs["data/validated"], tmp_path / "good") / "items.parquet")
    original = pd.read_parquet(af.good_data / "items.parquet")
    assert len(items) == len(original) and af.bad_item in set(items["item_id"])
    assert int(items.set_index("item_id").loc[af.bad_item, "year"]) != BAD_ITEM_YEAR
    child = registry.client().get_run(record.tags["sail.stage_run.train.stage1"])
    assert [m.step for m in registry.client().get_metric_history(child.info.run_id, "loss")] == [1, 2]

    # the bad run's record: failed at validate, nothing validated recorded, the quarantine holds the bad item
    failed = runs.get(load_config(af.params, BAD), bad)
    assert failed.status == "failed" and failed.tags["sail.failed_task"] == "validate"
    assert "data/validated" not in failed.outputs and not any(p.startswith("models/") for p in failed.outputs)
    quarantine = store.pull(failed.outputs["data/quarantine"], tmp_path / "quarantine")
    held = pd.read_parquet(quarantine / "items.parquet")
    assert list(held["item_id"]) == [af.bad_item] and "year outside 1870..2100" in held["_reason"].iloc[0]

    # files: each workspace names its own run; the bad run's folders did not change while the good one went on
    # (nor after); the good run's raw data is the good copy's
    for r in (good, bad):
        assert f'"run_id": "{r}"' in (folders[r][0] / "run.json").read_text()
    assert _tree(*folders[bad]) == bad_tree
    raw = pd.read_parquet(store.pull(record.outputs["data/raw"], tmp_path / "raw") / "items.parquet")
    assert BAD_ITEM_YEAR not in set(raw["year"].dropna().astype(int))
    assert record.outputs["data/raw"] != failed.outputs["data/raw"]

    # the champion and the registered versions are as they were
    assert registry.by_alias(CONCURRENT_MODEL, registry.CHAMPION).version == champion
    assert {int(v.version) for v in registry.client().search_model_versions(f"name = '{CONCURRENT_MODEL}'")} == versions
    assert registry.by_alias(CONCURRENT_MODEL, registry.CHALLENGER) is None
