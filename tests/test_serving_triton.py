"""The real tritonserver on 127.0.0.1: promote, swap, failed promotion, rollback, bad requests, restart.

One server (free ports, temporary model repository) is shared by the module;
the tests run in file order and walk one model through its life:
v1 promoted -> v2 promoted under load -> broken v3 refused under load (v2 keeps
serving) -> rollback to v1 -> malformed requests -> restart restores v1.

The Triton runtime venv is shared: ``$SAIL_TRITON_VENV`` if set, else the
default ``home().triton_venv``; it is created (about 40 s, from PyPI) if missing.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sail_core.config import load_config  # noqa: E402
from sail_core.export.onnx import export_onnx  # noqa: E402
from sail_core.model.embedder import build_model  # noqa: E402
from sail_core.paths import home  # noqa: E402
from serving import server  # noqa: E402
from serving.backend.embedding import OnnxTextEmbedder  # noqa: E402
from serving.client import ServingRequestError, ServingUnavailable, embed, infer_batch, make_client  # noqa: E402
from serving.ephemeral import ephemeral_server, free_ports  # noqa: E402
from serving.promote import PromotionError, promote, rollback, serving_state  # noqa: E402
from serving.runtime import ensure_runtime  # noqa: E402

TEXTS = ["Toy Story (1995)", "a funny cartoon about toys that come alive",
         "Fargo (1996) | Crime, Drama, Thriller", "Heat (1995)"]


@pytest.fixture(scope="module")
def runtime():
    # Pin the venv location before anything can move SAIL_HOME, so all test modules share one.
    mp = pytest.MonkeyPatch()
    mp.setenv("SAIL_TRITON_VENV", os.environ.get("SAIL_TRITON_VENV") or str(home().triton_venv))
    yield ensure_runtime()
    mp.undo()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real exports (v1: MiniLM as shipped; v2: last layer perturbed) and a corrupt v3."""
    cfg = load_config(profile="tiny")
    root = tmp_path_factory.mktemp("exports")
    model = build_model(cfg.model).eval()
    export_onnx(model, root / "v1")
    want_v1 = model.embed_texts(TEXTS).numpy()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.backbone.encoder.layer[-1].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    export_onnx(model, root / "v2")
    want_v2 = model.embed_texts(TEXTS).numpy()
    shutil.copytree(root / "v2", root / "v3")
    (root / "v3" / "model.onnx").write_bytes(b"this is not an onnx graph")
    assert np.abs(want_v1 - want_v2).max() > 1e-2, "v1 and v2 must be told apart"
    return {"cfg": cfg, "dirs": {v: root / f"v{v}" for v in (1, 2, 3)}, "torch": {1: want_v1, 2: want_v2}}


@pytest.fixture(scope="module")
def triton(runtime, models, tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    with ephemeral_server(base / "repo", models["cfg"].serve, base / "state") as (serve_cfg, info):
        yield {"cfg": serve_cfg, "repo": base / "repo", "state": base / "state", "info": info}


class Traffic:
    """Background requests while a promotion runs: counts errors and which versions answered."""

    def __init__(self, cfg):
        self.cfg, self.errors, self.versions, self._stop = cfg, [], [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        client = make_client(self.cfg)
        try:
            while not self._stop.is_set():
                try:
                    self.versions.append(infer_batch(client, TEXTS[:2], 64, self.cfg)[1])
                except Exception as err:  # noqa: BLE001
                    self.errors.append(repr(err))
        finally:
            client.close()

    def __enter__(self):
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(30)


def served_version(cfg) -> str:
    client = make_client(cfg)
    try:
        return infer_batch(client, TEXTS[:1], None, cfg)[1]
    finally:
        client.close()


def test_server_is_live_with_no_model(triton):
    st = server.status(triton["state"])
    assert st["running"] and st["live"] and st["ready"]
    assert st["http"] == f"127.0.0.1:{triton['cfg'].http_port}"
    assert st["models"] == []


def test_promote_v1_serves_and_matches(triton, models):
    cfg = triton["cfg"]
    result = promote(models["dirs"][1], 1, cfg, triton["repo"])
    assert result["version"] == 1 and result["previous"] is None
    assert result["max_abs_diff"] <= 1e-4
    full = embed(TEXTS, None, cfg)
    np.testing.assert_allclose(full, OnnxTextEmbedder(models["dirs"][1]).embed(TEXTS), atol=1e-4)
    np.testing.assert_allclose(full, models["torch"][1], atol=1e-4)  # end to end against PyTorch
    short = embed(TEXTS, 64, cfg, protocol="grpc")
    assert short.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    head = models["torch"][1][:, :64]
    np.testing.assert_allclose(short, head / np.linalg.norm(head, axis=1, keepdims=True), atol=1e-4)
    assert serving_state(cfg, triton["repo"])["current"] == 1
    st = server.status(triton["state"])
    assert [(m["version"], m["state"]) for m in st["models"] if m["state"] == "READY"] == [("1", "READY")]


def test_preprocess_copy_imports_in_the_triton_env(runtime, triton):
    """Every module of the copied sail_core/preprocess imports with numpy<2 and without torch."""
    import subprocess

    version_dir = triton["repo"] / triton["cfg"].model_name / "1"
    modules = sorted(p.stem for p in (version_dir / "sail_core" / "preprocess").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys, numpy; assert numpy.__version__ < '2', numpy.__version__\n"
            f"for m in {modules!r}: importlib.import_module('sail_core.preprocess.' + m)\n"
            "import embedding; assert 'torch' not in sys.modules")
    proc = subprocess.run([str(runtime.venv / "bin" / "python"), "-c", code], cwd=version_dir,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr


def test_promote_v2_swaps_without_dropping_requests(triton, models):
    cfg = triton["cfg"]
    with Traffic(cfg) as traffic:
        result = promote(models["dirs"][2], 2, cfg, triton["repo"])
    assert result["version"] == 2 and result["previous"] == 1
    assert traffic.errors == []
    assert len(traffic.versions) >= 10 and set(traffic.versions) <= {"1", "2"}
    assert served_version(cfg) == "2"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][2], atol=1e-4)


def test_broken_v3_is_refused_and_v2_keeps_serving(triton, models):
    cfg = triton["cfg"]
    with Traffic(cfg) as traffic:
        with pytest.raises(PromotionError, match="version 2 keeps serving"):
            promote(models["dirs"][3], 3, cfg, triton["repo"])
    assert traffic.errors == []
    assert len(traffic.versions) >= 10 and set(traffic.versions) == {"2"}
    assert served_version(cfg) == "2"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][2], atol=1e-4)
    folder = triton["repo"] / cfg.model_name
    assert not (folder / "3").exists()
    assert any(p.name.startswith("3-") for p in (folder / "failed").iterdir())
    assert "specific: { versions: [ 2 ] }" in (folder / "config.pbtxt").read_text()
    state = serving_state(cfg, triton["repo"])
    assert state["current"] == 2 and state["stack"] == [1, 2]
    assert state["history"][-1]["event"] == "promote_failed"


def test_rollback_returns_to_v1(triton, models):
    cfg = triton["cfg"]
    result = rollback(cfg, triton["repo"])
    assert result["version"] == 1 and result["rolled_back_from"] == 2
    assert served_version(cfg) == "1"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][1], atol=1e-4)
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(cfg, triton["repo"])


def test_refused_first_version_leaves_nothing_loaded(triton, models):
    """A model whose very first promotion fails: unloaded, no config left, the other model unaffected."""
    cfg = triton["cfg"].model_copy(update={"model_name": "first_is_broken"})
    with pytest.raises(PromotionError, match="no version of 'first_is_broken' serves"):
        promote(models["dirs"][3], 1, cfg, triton["repo"])
    assert not (triton["repo"] / "first_is_broken" / "config.pbtxt").exists()
    assert serving_state(cfg, triton["repo"])["current"] is None
    assert served_version(triton["cfg"]) == "1"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_clear_errors(triton, protocol):
    cfg = triton["cfg"]
    with pytest.raises(ServingRequestError, match="empty string"):
        embed(["fine", ""], None, cfg, protocol=protocol)
    with pytest.raises(ServingRequestError, match=r"DIM=100 is not a Matryoshka dim.*allowed dims: \[384, 128, 64\]"):
        embed(["fine"], 100, cfg, protocol=protocol)
    assert embed(["still serving"], 128, cfg, protocol=protocol).shape == (1, 128)


def test_client_says_how_to_start_a_server(models):
    http, grpc = free_ports(2)
    cfg = models["cfg"].serve.model_copy(update={"http_port": http, "grpc_port": grpc})
    for protocol in ("http", "grpc"):
        with pytest.raises(ServingUnavailable, match="sail serve up"):
            embed(["hello"], None, cfg, protocol=protocol)


def test_restart_serves_the_current_version(triton, models):
    cfg, state = triton["cfg"], triton["state"]
    assert server.stop(state)["result"] == "stopped"
    assert server.status(state)["running"] is False
    info = server.start(triton["repo"], cfg, state_dir=state)
    assert cfg.model_name in info.loaded
    assert served_version(cfg) == "1"
