"""Runs side by side, reproduced from their record, and cleaned up: the real `sail` program, Airflow on
SQLite, MLflow, the object store (a DVC remote) and tritonserver, in a SAIL_HOME of this module's own.

- two `sail run`s started together on the tiny profile both succeed, each in its own workspace with its
  own complete record (they promote in turn: promotion holds a lock on the Triton model repository);
- `sail reproduce` of one of them re-runs it from its record into a new workspace: same data hash, same
  metrics;
- `sail gc` shows first, then frees the workspace and objects of a run that nothing needs, and keeps what
  the champion and the previous champion need.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sail_core.paths import free_ports
from tests.project import REPO

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.triton]
SAIL = str(Path(sys.executable).parent / "sail")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A SAIL_HOME and params.yaml for this module: tiny with free Triton ports, and tiny_seed1."""
    root = tmp_path_factory.mktemp("runs")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    http, grpc, metrics = free_ports(3)
    params["profiles"]["tiny"]["serve"] = {"http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    seed1 = yaml.safe_load(yaml.safe_dump(params["profiles"]["tiny"]))
    seed1["train"]["seed"] = 1
    params["profiles"]["tiny_seed1"] = seed1
    params["profile"] = "tiny"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    saved = {k: os.environ.get(k) for k in ("SAIL_HOME", "SAIL_PARAMS")}
    os.environ["SAIL_HOME"], os.environ["SAIL_PARAMS"] = str(root / "home"), str(root / "params.yaml")
    yield root
    subprocess.run([SAIL, "serve", "down"], capture_output=True, env=dict(os.environ))
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _sail(*args: str) -> subprocess.Popen:
    return subprocess.Popen([SAIL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ), cwd=REPO)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-6000:]
    return out


def _cfg():
    from sail_core.config import load_config

    return load_config()


@pytest.fixture(scope="module")
def two_runs(home):
    first = _sail("run", "--conf", '{"profile": "tiny"}')
    time.sleep(2)
    second = _sail("run", "--conf", '{"profile": "tiny"}')
    _finish(first), _finish(second)
    from sail_core.pipeline import runs

    return runs.list_runs(_cfg())


def test_overlapping_runs_both_succeed_each_with_its_own_record(two_runs):
    from mlflow import MlflowClient

    from sail_core.pipeline import registry

    assert len(two_runs) == 2
    a, b = two_runs
    assert a.run_id != b.run_id and a.workspace != b.workspace
    assert a.status == b.status == "succeeded"
    # they ran at the same time: each started before the other finished
    assert abs((a.started - b.started).total_seconds()) < 60
    client = MlflowClient()
    for run in two_runs:
        assert run.tags["sail.git_sha"] and run.tags["sail.git_dirty"] in {"true", "false"}
        assert set(run.outputs) == {"data/raw", "data/validated", "data/quarantine", "data/teacher", "models/stage1",
                                    "models/stage2", "data/mined/stage3", "models/stage3", "models/cre", "models/index",
                                    "models/sid", "reports/eval", "models/onnx"}
        assert set(run.task_seconds) == set(run.tasks) and "promote" in run.tasks
        record = {a.path for a in client.list_artifacts(run.mlflow_run_id, "record")}
        assert record == {"record/config.resolved.yaml", "record/data.dvc", "record/outputs.dvc", "record/train_items.txt"}
        assert "eval.i2i.recall_at_10" in run.metrics
    # the same configuration and data: the same hashes, stored once
    assert a.outputs["data/validated"] == b.outputs["data/validated"]
    versions = sorted(int(r.tags["sail.model_version"]) for r in two_runs)
    assert versions == [1, 2]
    cfg = _cfg()
    assert {registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION).version,
            registry.by_alias(cfg.registry.mlflow_model, registry.PREVIOUS).version} == {1, 2}


def test_reproduce_gives_the_same_metrics(two_runs):
    from sail_core.pipeline import runs, tracking

    original = two_runs[-1]
    out = _finish(_sail("reproduce", original.run_id))
    assert "reproduced" in out
    again = [r for r in runs.list_runs(_cfg()) if r.tags.get("sail.reproduces") == original.mlflow_run_id]
    assert len(again) == 1 and again[0].workspace != original.workspace
    assert "promote" not in again[0].tasks  # a reproduction never promotes
    assert again[0].tags["sail.data_hash"] == original.tags["sail.data_hash"]
    a, b = tracking.run_metrics(original.mlflow_run_id), tracking.run_metrics(again[0].mlflow_run_id)
    evals = [k for k in a if k.startswith("eval.")]
    assert evals and all(abs(a[k] - b[k]) <= 1e-6 for k in evals)


def test_gc_frees_what_nothing_needs_and_keeps_the_champions(two_runs, home, tmp_path):
    import fsspec

    from sail_core.config import load_config
    from sail_core.paths import home as sail_home
    from sail_core.pipeline import registry, runs
    from sail_core.pipeline.objects import ObjectStore, ObjectStoreError
    from sail_core.pipeline.workspace import Stores
    from serving import client

    # a run that registers nothing, with a model of its own (another seed)
    _finish(_sail("run", "--conf", '{"profile": "tiny_seed1", "steps": ["ingest", "validate", "version", '
                                    '"train", "index", "evaluate"]}'))
    cfg = load_config()
    loose = runs.list_runs(cfg)[0]
    assert loose.tags["sail.profile"] == "tiny_seed1" and loose.status == "succeeded"
    stale = sail_home().triton_repo / cfg.serve.triton_model / "7"  # a version folder nothing refers to
    stale.mkdir()
    fs, loose_ws = fsspec.core.url_to_fs(loose.workspace)
    assert fs.exists(loose_ws)

    shown = _finish(_sail("gc", "--keep", "0"))
    assert "dry run: nothing removed" in shown and loose.run_id in shown
    assert fs.exists(loose_ws) and stale.exists()

    _finish(_sail("gc", "--keep", "0", "--apply"))
    assert not fs.exists(loose_ws) and not stale.exists()
    store = ObjectStore(Stores.of(cfg).objects, tmp_path / "cache")
    with pytest.raises(ObjectStoreError):
        store.pull(loose.outputs["models/stage1"], tmp_path / "gone")
    for alias in (registry.CHAMPION, registry.PREVIOUS):
        ref = registry.by_alias(cfg.registry.mlflow_model, alias)
        run = next(r for r in runs.list_runs(cfg) if r.mlflow_run_id == ref.run_id)
        for path, md5 in run.outputs.items():
            store.pull(md5, tmp_path / alias / path)
        assert (sail_home().triton_repo / cfg.serve.triton_model / str(ref.version)).is_dir()
    assert client.embed(["still serving"], None, cfg.serve, "http").shape == (1, 384)
