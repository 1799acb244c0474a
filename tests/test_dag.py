"""The whole Airflow DAG, for real: dag.test() on SQLite, tiny data, real MLflow, DVC, GX and tritonserver.

The test project's configuration has a second profile whose training has two stages, so the DAG has
the tasks train.stage1 -> train.stage2, and a ``tiny`` run (one stage) skips train.stage2.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sail_core.paths import free_ports
from tests.project import REPO, TWO_STAGES, make_project

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    root = make_project(
        tmp_path_factory.mktemp("dagproj") / "proj",
        overrides={"serve.http_port": http, "serve.grpc_port": grpc, "serve.metrics_port": metrics,
                   "registry.mlflow_model": "dag-test-model"},
        two_stages=True,
    )
    old = {k: os.environ.get(k) for k in ("SAIL_WORKDIR", "SAIL_PARAMS")}
    os.environ["SAIL_WORKDIR"] = str(root)
    os.environ["SAIL_PARAMS"] = str(root / "params.yaml")
    from airflow.utils.db import resetdb

    resetdb()
    yield root
    from serving import server

    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("sail_pipeline")


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


TRAIN = ["train.stage1", "train.stage2"]
AFTER_CHECK = ["ingest", "validate", "version", *TRAIN, "evaluate", "gate", "export", "register", "promote"]


def test_dag_shape_follows_the_configuration(project):
    from sail_core.config import runnable_profiles
    from sail_core.pipeline import STEPS

    dag = _dag()
    assert [t.task_id for t in dag.tasks if t.task_id.startswith("train.")] == TRAIN
    assert dag.get_task("check").downstream_task_ids == {"ingest"}
    assert dag.get_task("train.stage1").upstream_task_ids == {"version"}
    assert dag.get_task("train.stage2").upstream_task_ids == {"train.stage1"}
    assert dag.get_task("evaluate").upstream_task_ids == {"train.stage2"}
    # Only profiles that can run every step are offered: `paper` cannot be exported.
    offered = dag.params.get_param("profile").schema["enum"]
    assert offered == runnable_profiles(STEPS) and {"tiny", TWO_STAGES} <= set(offered) and "paper" not in offered


def test_a_profile_that_cannot_export_is_refused_before_training(project):
    from airflow.exceptions import ParamValidationError

    from sail_core.config import ConfigError, check_steps, load_config
    from sail_core.pipeline import STEPS

    paper = load_config(profile="paper")
    with pytest.raises(ConfigError, match="cannot run the export step"):
        check_steps(paper, STEPS)
    check_steps(paper, ["ingest", "validate", "version", "train", "evaluate", "gate"])  # without export it may run
    with pytest.raises(ParamValidationError, match="paper"):
        _dag().test(run_conf={"profile": "paper"})


def test_a_configuration_error_stops_the_run_at_check(project):
    before = sorted(p.name for p in (project / "models").glob("*")) if (project / "models").exists() else []
    dr = _dag().test(run_conf={"profile": "tiny", "gate_thresholds": {"eval.i2i.recall_at_10": "high"}})
    states = _states(dr)
    assert str(dr.state) == "failed" and states["check"] == "failed", states
    for task in AFTER_CHECK:
        assert states[task] == "upstream_failed", states
    after = sorted(p.name for p in (project / "models").glob("*")) if (project / "models").exists() else []
    assert after == before


@pytest.fixture(scope="module")
def whole_run(project):
    """One whole tiny run (the state the other runs start from), and whether DVC was clean right after it."""
    from sail_core.pipeline.versioning import status_clean

    dr = _dag().test(run_conf={"profile": "tiny"})
    return dr, status_clean(project)


def test_whole_dag_succeeds_and_serves(project, whole_run):
    from sail_core.pipeline import registry
    from sail_core.config import load_config
    from serving import client

    dr, dvc_clean = whole_run
    states = _states(dr)
    assert str(dr.state) == "success", states
    # tiny lists one training stage: the other stage's task is skipped and the rest still run
    assert states.pop("train.stage2") == "skipped", states
    assert set(states.values()) == {"success"}, states

    cfg = load_config(project / "params.yaml")
    champ = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    assert champ is not None
    run = registry.client().get_run(champ.run_id)
    assert "eval.i2i.recall_at_10" in run.data.metrics and "baseline.i2i.recall_at_10" in run.data.metrics
    assert run.data.metrics["export.onnx_max_abs_diff"] < 1e-4
    mv = registry.client().get_model_version(cfg.registry.mlflow_model, str(champ.version))
    assert mv.tags["airflow_run_id"] == dr.run_id and mv.tags["data_hash"].endswith(".dir")
    vec = client.embed(["a romantic comedy set in paris"], None, cfg.serve, "http")
    assert vec.shape == (1, 384)
    assert dvc_clean

    # the run's record: resolved configuration, code version, and the hashes DVC pinned
    import yaml

    assert run.data.tags["sail.git_sha"] and run.data.tags["sail.git_dirty"] in {"true", "false", "unknown"}
    record = Path(registry.client().download_artifacts(champ.run_id, "record"))
    assert yaml.safe_load((record / "config.resolved.yaml").read_text()) == cfg.model_dump(mode="json")
    lock = yaml.safe_load((record / "dvc.lock").read_text())
    assert {"ingest", "validate", "train@stage1", "evaluate", "export"} <= set(lock["stages"])


def test_failing_gate_stops_before_promotion(project, whole_run):
    from sail_core.pipeline import registry
    from sail_core.config import load_config

    cfg = load_config(project / "params.yaml")
    before = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    dr = _dag().test(run_conf={"profile": "tiny", "gate_thresholds": {"eval.i2i.recall_at_10": 1.5},
                               "steps": ["train", "evaluate", "gate", "export", "register", "promote"]})
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["gate"] == "failed"
    assert states["export"] == states["register"] == states["promote"] == "upstream_failed", states
    assert registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION) == before
    gate = (project / "reports" / "gate.json").read_text()
    assert '"passed": false' in gate and "eval.i2i.recall_at_10" in gate


def test_contract_breach_stops_at_validation(project, whole_run):
    items = project / "data" / "raw" / "items.parquet"
    good_validated = pd.read_parquet(project / "data" / "validated" / "items.parquet")
    df = pd.read_parquet(items).drop(columns=["title"])
    df.to_parquet(items)
    dr = _dag().test(run_conf={"profile": "tiny", "steps": ["validate", "version", "train", "evaluate", "gate",
                                                           "export", "register", "promote"]})
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["check"] == "success" and states["ingest"] == "skipped" and states["validate"] == "failed"
    for task in ("version", *TRAIN, "evaluate", "gate", "export", "register", "promote"):
        assert states[task] == "upstream_failed", states
    # the earlier validated data is intact
    assert pd.read_parquet(project / "data" / "validated" / "items.parquet").equals(good_validated)
    shutil.rmtree(project / "data" / "raw")
