"""The whole Airflow DAG, for real: dag.test() on SQLite, tiny data, real MLflow, DVC, GX and tritonserver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sail_core.paths import free_ports
from tests.project import REPO, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    root = make_project(
        tmp_path_factory.mktemp("dagproj") / "proj",
        overrides={"serve.http_port": http, "serve.grpc_port": grpc, "serve.metrics_port": metrics,
                   "registry.mlflow_model": "dag-test-model"},
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


def test_whole_dag_succeeds_and_serves(project):
    from sail_core.pipeline import registry
    from sail_core.config import load_config
    from sail_core.pipeline.versioning import status_clean
    from serving import client

    dr = _dag().test(run_conf={"profile": "tiny"})
    states = _states(dr)
    assert str(dr.state) == "success", states
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
    assert status_clean(project)


def test_failing_gate_stops_before_promotion(project):
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


def test_contract_breach_stops_at_validation(project):
    items = project / "data" / "raw" / "items.parquet"
    good_validated = pd.read_parquet(project / "data" / "validated" / "items.parquet")
    df = pd.read_parquet(items).drop(columns=["title"])
    df.to_parquet(items)
    dr = _dag().test(run_conf={"profile": "tiny", "steps": ["validate", "version", "train", "evaluate", "gate",
                                                           "export", "register", "promote"]})
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["ingest"] == "skipped" and states["validate"] == "failed"
    for task in ("version", "train", "evaluate", "gate", "export", "register", "promote"):
        assert states[task] == "upstream_failed", states
    # the earlier validated data is intact
    assert pd.read_parquet(project / "data" / "validated" / "items.parquet").equals(good_validated)
    shutil.rmtree(project / "data" / "raw")
