"""Faults during promotion, on the real tritonserver (127.0.0.1) with the real MLflow registry.

* tritonserver SIGKILLed between writing the new version folder and finishing its checks, with the promoting
  process surviving (it rolls back what it can) or dying with it (``sail serve up`` reconciles the repository
  with ``serving_state.json``): after ``sail serve up`` the previous champion serves, the champion alias
  agrees with it, the half-written version folder is in ``failed/``, and promoting the version again works;
* a parity failure (the served output differs from onnxruntime run in-process on the version folder's files)
  and a version folder whose export.json names other dims: promote refuses, the served version and the
  aliases stay, the folder goes to ``failed/``.

Promotions go through the pipeline's promote step (:func:`sail_core.pipeline.steps.promote`: Triton, then the
alias). The moment of each fault is chosen with ``serving.promote._test_hook`` (called between promote's
phases). ``sail serve up`` is :func:`serving.server.start` on ``home().triton_repo``, what the CLI command
runs (the CLI itself would read the ports from params.yaml, and this module uses free ones).
Each test uses its own Triton model name and starts by promoting v1 (champion v1), so the order does not matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exports import cached_export
from sail_core.config import load_config
from sail_core.paths import free_ports, home
from sail_core.pipeline import registry, steps, tracking
from serving import promote as triton_promote
from serving import server
from serving.client import infer_batch, make_client
from serving.promote import PromotionError
from serving.repository import read_config
from serving.state import read_state

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MODEL = "fault-embedder"


@pytest.fixture(scope="module")
def pipeline(runtime, tmp_path_factory):
    """Its own SAIL_HOME (MLflow store, Triton repository, server state) with v1 and v2 registered."""
    import mlflow

    mp = pytest.MonkeyPatch()
    mp.setenv("SAIL_HOME", str(tmp_path_factory.mktemp("fault-home")))
    http, grpc, metrics = free_ports(3)
    cfg = load_config(profile="demo", overrides={"registry.mlflow_model": MODEL})
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(
        update={"http_port": http, "grpc_port": grpc, "metrics_port": metrics})})
    exports = {v: cached_export(v)[0] for v in (1, 2)}
    experiment = tracking.ensure_experiment("fault-promotion")
    for v, folder in exports.items():
        with mlflow.start_run(experiment_id=experiment) as run:
            pass
        assert registry.register_onnx(run.info.run_id, folder, MODEL, {"test": "fault-promotion"}) == v
    try:
        yield {"cfg": cfg, "exports": exports}
    finally:
        server.stop()
        mp.undo()


def _model(pipeline, name: str):
    """The config for Triton model ``name``, now serving v1 (promoted by the pipeline step: champion v1)."""
    cfg = pipeline["cfg"]
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"triton_model": name})})
    steps.promote(cfg, 1)
    assert _served(cfg) == "1" and _champion() == 1
    return cfg


def _served(cfg) -> str:
    client = make_client(cfg.serve)
    try:
        return infer_batch(client, ["Toy Story (1995)"], None, cfg.serve)[1]
    finally:
        client.close()


def _champion() -> int:
    return registry.by_alias(MODEL, registry.CHAMPION).version


def _kill_server() -> None:
    info = server._read_info(None)
    os.kill(info.pid, signal.SIGKILL)
    child = server._children.get(info.pid)
    if child is not None:
        child.wait(30)  # reap it (the server was started by this process)
    deadline = time.monotonic() + 30
    while server._is_tritonserver(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server._is_tritonserver(info.pid)


def _serve_up(cfg) -> server.ServerInfo:
    """What `sail serve up` runs."""
    return server.start(home().triton_repo, cfg.serve)


def _assert_previous_champion_serves(cfg, failed_version: int = 2) -> None:
    folder = home().triton_repo / cfg.serve.triton_model
    assert _served(cfg) == "1"
    assert _champion() == 1, "the champion alias must name the served version"
    assert not (folder / str(failed_version)).exists()
    assert any(p.name.startswith(f"{failed_version}-") for p in (folder / "failed").iterdir())
    assert not list(folder.glob(".*.partial"))
    assert list(read_config(folder / "config.pbtxt").version_policy.specific.versions) == [1]
    state = read_state(folder)
    assert state["current"] == 1 and state["stack"] == [1]


@pytest.fixture
def hook(monkeypatch):
    """Set ``serving.promote._test_hook`` for one test."""
    return lambda fn: monkeypatch.setattr(triton_promote, "_test_hook", fn)


def test_server_killed_mid_promotion_promoter_survives(pipeline, hook):
    """The server dies after Triton was asked to load v2, before its checks: the promote step fails clearly,
    rolls back what it can, and `sail serve up` serves v1 again."""
    cfg = _model(pipeline, "killed_survivor")

    def kill(phase, version_dir):
        if phase == "loaded":
            _kill_server()

    hook(kill)
    with pytest.raises(PromotionError, match=r"(?s)version 2 failed.*restoring version 1 ALSO failed.*sail serve up"):
        steps.promote(cfg, 2)
    hook(None)
    assert _champion() == 1 and registry.by_alias(MODEL, registry.CHALLENGER).version == 2

    info = _serve_up(cfg)
    assert "killed_survivor" in info.loaded
    _assert_previous_champion_serves(cfg)
    assert read_state(home().triton_repo / "killed_survivor")["history"][-1]["event"] == "promote_failed"


PROMOTER = """
import os, signal, sys
from sail_core.config import ServeConfig
from serving import promote

cfg, triton_pid, onnx_dir, repo = ServeConfig.model_validate_json(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def die(phase, version_dir):  # the machine goes down: the server and the promoter at once
    if phase == "loaded":
        os.kill(triton_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

promote._test_hook = die
promote.promote(onnx_dir, 2, cfg, repo)
"""


def test_server_and_promoter_killed_mid_promotion(pipeline, tmp_path):
    """Both die after Triton was asked to load v2 (config.pbtxt pins v2, the history ends at promote_started):
    `sail serve up` moves v2's folder to failed/, pins v1 again and serves it; promoting v2 again then works."""
    cfg = _model(pipeline, "killed_both")
    folder = home().triton_repo / "killed_both"
    pid = server._read_info(None).pid
    proc = subprocess.run([sys.executable, "-c", PROMOTER, cfg.serve.model_dump_json(), str(pid),
                           str(pipeline["exports"][2]), str(home().triton_repo)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    server._children.pop(pid).wait(30)
    assert (folder / "2").is_dir()  # what the crash left
    assert list(read_config(folder / "config.pbtxt").version_policy.specific.versions) == [2]
    assert read_state(folder)["history"][-1]["event"] == "promote_started"

    info = _serve_up(cfg)
    assert "killed_both" in info.loaded
    assert any(r.startswith("killed_both: ") and json.loads(r.split(": ", 1)[1])["abandoned"] == 2
               for r in info.recovered), info.recovered
    _assert_previous_champion_serves(cfg)
    assert read_state(folder)["history"][-1]["event"] == "promote_abandoned"

    result = steps.promote(cfg, 2)  # the same version again: nothing of the crash is in the way
    assert result["version"] == 2 and result["previous"] == 1
    assert _served(cfg) == "2" and _champion() == 2


def _perturb_weights(version_dir: Path) -> None:
    """Add noise to the largest weight of the version folder's model.onnx (a new file: Triton keeps the graph
    it loaded, so the served output now differs from the in-process reference on the folder's files)."""
    import onnx
    from onnx import numpy_helper

    path = version_dir / "model.onnx"
    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight)
    noisy = values + np.random.default_rng(0).normal(0, 0.5, values.shape).astype(values.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(path.with_suffix(".tmp")))
    os.replace(path.with_suffix(".tmp"), path)


def _other_dims(version_dir: Path) -> None:
    """export.json of the version folder names Matryoshka dims the served model does not have."""
    path = version_dir / "export.json"
    meta = json.loads(path.read_text())
    meta["matryoshka_dims"] = [256, *meta["matryoshka_dims"][1:]]
    path.write_text(json.dumps(meta))


def test_parity_failure_rolls_back_and_keeps_the_aliases(pipeline, hook):
    """Served output != onnxruntime on the folder's files, then export.json dims != the served model's:
    each promotion of v2 is refused, v1 serves and stays champion, the folder goes to failed/; a clean
    retry then promotes v2."""
    cfg = _model(pipeline, "parity")
    folder = home().triton_repo / "parity"
    cases = [(_perturb_weights, r"Triton and onnxruntime differ by .* \(tolerance 0.0001\)"),
             (_other_dims, r"DIM=256 is not a Matryoshka dim")]
    for tamper, message in cases:
        hook(lambda phase, version_dir: tamper(version_dir) if phase == "loaded" else None)
        with pytest.raises(PromotionError, match=rf"(?s){message}.*Rolled back: version 1 keeps serving.*failed/2-"):
            steps.promote(cfg, 2)
        _assert_previous_champion_serves(cfg)
        assert read_state(folder)["history"][-1]["event"] == "promote_failed"
    assert len(list((folder / "failed").iterdir())) == 2

    hook(None)
    assert steps.promote(cfg, 2)["version"] == 2
    assert _served(cfg) == "2" and _champion() == 2
