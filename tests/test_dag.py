"""The whole Airflow DAG, for real: dag.test() on SQLite, tiny data, real MLflow, DVC, GX and tritonserver.

Every task runs as a separate worker would: ``store.local_cache: per-task`` gives each one a fresh,
empty working directory and local cache, removed when it ends, so a task finds its inputs only
through the stores (the object store, a DVC remote, and MLflow).

``tiny`` trains stages I -> II -> III (the third after its mining task, train.mine_stage3); the test
project's configuration has a second profile with two stages only, whose runs skip mine_stage3 and stage3.
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
                   "registry.mlflow_model": "dag-test-model", "registry.experiment": "dag-test",
                   "store.local_cache": "per-task"},
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


TRAIN = ["train.teacher", "train.stage1", "train.stage2", "train.mine_stage3", "train.stage3", "train.cre"]
AFTER_CHECK = ["ingest", "validate", "version", *TRAIN, "index", "sid", "evaluate", "gate", "export", "register",
               "promote"]


def test_dag_shape_follows_the_configuration(project):
    from sail_core.config import runnable_profiles
    from sail_core.pipeline import STEPS

    dag = _dag()
    assert [t.task_id for t in dag.tasks if t.task_id.startswith("train.")] == TRAIN
    assert dag.get_task("check").downstream_task_ids == {"ingest"}
    assert dag.get_task("train.teacher").upstream_task_ids == {"version"}
    assert dag.get_task("train.stage1").upstream_task_ids == {"train.teacher"}
    assert dag.get_task("train.stage2").upstream_task_ids == {"train.stage1"}
    assert dag.get_task("train.mine_stage3").upstream_task_ids == {"train.stage2"}
    assert dag.get_task("train.stage3").upstream_task_ids == {"train.mine_stage3"}
    assert dag.get_task("train.cre").upstream_task_ids == {"train.stage3"}
    assert dag.get_task("index").upstream_task_ids == {"train.cre"}
    assert dag.get_task("sid").upstream_task_ids == {"index"}
    assert dag.get_task("evaluate").upstream_task_ids == {"sid"}
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
    check_steps(paper, ["ingest", "validate", "version", "train", "index", "evaluate", "gate"])  # without export it may run
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
    """One whole tiny run (the state the other runs start from)."""
    return _dag().test(run_conf={"profile": "tiny"})


def test_whole_dag_succeeds_and_serves(project, whole_run):
    from sail_core.pipeline import registry, runs
    from sail_core.config import load_config
    from sail_core.paths import sail_home
    from serving import client

    dr = whole_run
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
    # the served version carries the catalogue index its run built: `sail similar` answers from its vectors
    import numpy as np

    from serving import catalogue

    index = Path(registry.client().download_artifacts(champ.run_id, "index"))
    answer = catalogue.similar(index.joinpath("item_ids.txt").read_text().split()[0], 5, cfg.serve)
    assert answer.version == champ.version and len(answer.hits) == 5
    np.testing.assert_array_equal(catalogue.served_catalogue(cfg.serve)[1].vectors, np.load(index / "vectors.npy"))
    assert run.data.metrics["index.items"] == answer.meta["count"] == 120

    # every task ran in a workspace of its own that is gone now; nothing was written to the project
    assert not (sail_home() / "cache").exists()
    assert not any((project / d).exists() for d in ("data", "models", "reports"))
    record = runs.get(cfg, dr.run_id)
    assert record.status == "succeeded" and record.mlflow_run_id == champ.run_id
    assert "sail.failed_task" not in record.tags
    assert set(record.task_seconds) == {"check", "ingest", "validate", "version", *TRAIN, "index", "sid", "evaluate",
                                        "gate", "export", "register", "promote"}  # each task's wall time

    # one nested MLflow run per stage (and one for the mining), with the per-term losses and statistics
    children = {r.data.tags["mlflow.runName"]: r for r in registry.client().search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")}
    assert set(children) == {"teacher.teacher", "train.stage1", "train.stage2", "mine.stage3", "train.stage3",
                             "train.cre"}
    assert "recall_at_10" in {k.split(".", 1)[1] for k in children["teacher.teacher"].data.metrics}
    # the CRE stage trains seq2item and id2item next to copair_i2i (3 steps: which tasks ran is the sampler's
    # draw, so check the temperatures it logs for every stage dataset)
    assert {"temperature.seq2item", "temperature.id2item"} <= set(children["train.cre"].data.metrics)
    history = registry.client().get_metric_history(children["train.stage1"].info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    logged = set().union(*(children[f"train.stage{i}"].data.metrics for i in (1, 2, 3)))
    assert {"cosent_384_loss", "micl_vision_loss", "late_fusion_loss", "temperature.copair_i2i",
            "weight.xmodal"} <= logged, sorted(logged)
    s2 = children["train.stage2"].data.metrics
    assert "balance.cost.copair_i2i" in s2
    # balancing on MovieLens: the weights stage2 samples with are not the configured ones (2 : 1 : 6), nor uniform
    weights = {k: s2[f"weight.{k}"] for k in ("copair_i2i", "q2i", "xmodal")}
    assert abs(sum(weights.values()) - 1) < 1e-6 and max(weights.values()) - min(weights.values()) > 0.01
    assert weights != pytest.approx({"copair_i2i": 2 / 9, "q2i": 1 / 9, "xmodal": 6 / 9}, abs=1e-3), weights
    s3 = children["train.stage3"].data.metrics
    assert {"hard_negatives.copair_i2i.drawn_mined", "hard_negatives.q2i.mined_share"} <= set(s3), sorted(s3)
    mined = children["mine.stage3"].data.metrics
    assert {"copair_i2i.lambda_star", "copair_i2i.kept", "copair_i2i.dropped", "q2i.f1_star"} <= set(mined)
    assert mined["copair_i2i.kept"] + mined["q2i.kept"] > 0

    # the run's record: resolved configuration, code version, and the DVC hashes of every output
    import yaml

    assert run.data.tags["sail.git_sha"] and run.data.tags["sail.git_dirty"] in {"true", "false", "unknown"}
    saved = Path(registry.client().download_artifacts(champ.run_id, "record"))
    assert yaml.safe_load((saved / "config.resolved.yaml").read_text()) == cfg.model_dump(mode="json")
    outs = {o["path"]: o["md5"] for o in yaml.safe_load((saved / "outputs.dvc").read_text())["outs"]}
    assert set(outs) == {"data/raw", "data/validated", "data/quarantine", "data/teacher", "models/stage1",
                         "models/stage2", "data/mined/stage3", "models/stage3", "models/cre", "models/index",
                         "models/sid", "reports/eval", "models/onnx"}
    assert outs == record.outputs and outs["data/validated"] == mv.tags["data_hash"]


def test_a_second_run_with_the_same_settings_does_not_retrain_finished_stages(project, whole_run):
    """Finished stages (and the mining) are recognised by the key of their configuration, data and starting
    model: a new run takes them from the earlier run instead of training again."""
    from sail_core.config import load_config
    from sail_core.pipeline import runs

    cfg = load_config(project / "params.yaml")
    dr = _dag().test(run_conf={"profile": "tiny", "steps": ["train"]})
    assert str(dr.state) == "success", _states(dr)
    again, first = runs.get(cfg, dr.run_id), runs.get(cfg, whole_run.run_id)
    assert all(again.metrics[f"train.{s}.reused"] == 1.0 for s in ("stage1", "stage2", "stage3"))
    assert {p: again.outputs[p] for p in ("models/stage1", "data/mined/stage3", "models/stage3")} == {
        p: first.outputs[p] for p in ("models/stage1", "data/mined/stage3", "models/stage3")}
    # a changed stage retrains it and the stages after it, not the ones before
    dr = _dag().test(run_conf={"profile": TWO_STAGES, "steps": ["train"]})
    states = _states(dr)
    assert str(dr.state) == "success" and states["train.stage3"] == "skipped", states
    other = runs.get(cfg, dr.run_id)
    assert other.metrics["train.stage1.reused"] == 1.0 and other.metrics["train.stage2.reused"] == 0.0


def test_a_run_that_reuses_its_base_runs_index_registers_and_serves_it(project, whole_run):
    """Encoder and index travel together even when the index was built by the base run."""
    from sail_core.config import load_config
    from sail_core.pipeline import registry
    from serving import catalogue

    from sail_core import pipeline

    cfg = load_config(project / "params.yaml")
    before = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    dr = _dag().test(run_conf={"profile": "tiny", "steps": ["evaluate", "gate", "export", "register", "promote"]})
    assert str(dr.state) == "success", _states(dr)
    champ = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    assert champ.version != before.version and registry.has_artifact(champ.run_id, "index")
    item = catalogue.served_catalogue(cfg.serve)[1].item_ids[0]
    answer = catalogue.similar(item, 3, cfg.serve)
    assert answer.version == champ.version and len(answer.hits) == 3
    # roll back: the earlier version's encoder and index serve again (and the module's other tests see it as champion)
    pipeline.rollback(cfg)
    assert catalogue.similar(item, 3, cfg.serve).version == before.version
    assert registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION).version == before.version


def test_the_record_is_a_dvc_file_that_dvc_pulls(project, whole_run, tmp_path):
    """``record/outputs.dvc`` names the run's folders by hash: DVC itself fetches them from the object store."""
    from sail_core.config import load_config
    from sail_core.pipeline import registry, runs
    from sail_core.pipeline.workspace import Stores
    from tests.project import BIN, run

    cfg = load_config(project / "params.yaml")
    record = runs.get(cfg, whole_run.run_id)
    dvc_file = Path(registry.client().download_artifacts(record.mlflow_run_id, "record/outputs.dvc", str(tmp_path)))
    repo = tmp_path / "elsewhere"
    repo.mkdir()
    run(repo, "git", "init", "-q")
    run(repo, str(BIN / "dvc"), "init", "-q")
    run(repo, str(BIN / "dvc"), "remote", "add", "-d", "store", Stores.of(cfg).objects)
    (repo / "run.dvc").write_text(dvc_file.read_text())
    run(repo, str(BIN / "dvc"), "pull", "run.dvc")
    assert pd.read_parquet(repo / "data" / "validated" / "items.parquet").shape[0] > 0
    assert (repo / "models" / "onnx" / "model.onnx").stat().st_size > 0


def test_failing_gate_stops_before_promotion(project, whole_run):
    from sail_core.pipeline import registry
    from sail_core.config import load_config

    cfg = load_config(project / "params.yaml")
    before = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    dr = _dag().test(run_conf={"profile": "tiny", "gate_thresholds": {"eval.i2i.recall_at_10": 1.5},
                               "steps": ["train", "index", "evaluate", "gate", "export", "register", "promote"]})
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["gate"] == "failed"
    assert states["export"] == states["register"] == states["promote"] == "upstream_failed", states
    assert registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION) == before
    from sail_core.pipeline import runs

    record = runs.get(cfg, dr.run_id)
    assert record.status == "failed" and record.tags["sail.failed_task"] == "gate"
    # the steps it left out reused the data of the latest run that had it (the whole run's data, or another
    # run's that reused it, depending on the test order)
    first = runs.get(cfg, whole_run.run_id)
    base = runs.get(cfg, record.tags["sail.base_run"])
    assert base.run_id != record.run_id and base.status == "succeeded"
    assert record.outputs["data/validated"] == base.outputs["data/validated"] == first.outputs["data/validated"]
    gate = registry.client().download_artifacts(record.mlflow_run_id, "gate/gate.json")
    text = Path(gate).read_text()
    assert '"passed": false' in text and "eval.i2i.recall_at_10" in text


def test_contract_breach_stops_at_validation(project, whole_run, demo_data, tmp_path):
    """Your own files with one out-of-range rating: ingest imports them, validation stops the run, the
    quarantine holds the row, and the earlier runs' validated data is intact in the store."""
    import yaml

    from sail_core.config import load_config
    from sail_core.pipeline import runs
    from sail_core.pipeline.objects import ObjectStore
    from sail_core.pipeline.workspace import Stores

    files = tmp_path / "mine"
    shutil.copytree(demo_data, files)
    interactions = pd.read_parquet(files / "interactions.parquet")
    interactions.loc[interactions.index[0], "rating"] = 9.0
    interactions.to_parquet(files / "interactions.parquet")
    shutil.rmtree(files / "pairs", ignore_errors=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["tiny_files"] = {**params["profiles"]["tiny"], "data": {
        **params["profiles"]["tiny"].get("data", {}), "source": "files",
        "items_file": str(files / "items.parquet"), "interactions_file": str(files / "interactions.parquet")}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        dr = _dag().test(run_conf={"profile": "tiny_files"})
    finally:
        del params["profiles"]["tiny_files"]
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["check"] == "success" and states["ingest"] == "success" and states["validate"] == "failed"
    for task in ("version", *TRAIN, "index", "sid", "evaluate", "gate", "export", "register", "promote"):
        assert states[task] == "upstream_failed", states
    cfg = load_config(project / "params.yaml")
    record = runs.get(cfg, dr.run_id)
    assert record.status == "failed" and record.tags["sail.failed_task"] == "validate"
    assert "data/validated" not in record.outputs  # nothing half-made is recorded
    store = ObjectStore(Stores.of(cfg).objects, tmp_path / "cache")
    quarantine = store.pull(record.outputs["data/quarantine"], tmp_path / "q")
    bad = pd.read_parquet(quarantine / "interactions.parquet")
    assert len(bad) == 1 and float(bad["rating"].iloc[0]) == 9.0  # the quarantine keeps values as read
    # the earlier run's validated data is intact and fetchable
    earlier = runs.get(cfg, whole_run.run_id)
    good = store.pull(earlier.outputs["data/validated"], tmp_path / "good")
    assert len(pd.read_parquet(good / "items.parquet")) > 0
