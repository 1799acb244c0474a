"""The real tritonserver on 127.0.0.1 serving the omni model: every modality combination, promote, swap,
failed promotion, rollback, malformed requests, restart, semantic IDs.

One server (free ports, temporary model repository) is shared by the module, and
no test relies on another having run first (the order is random): the ``v1``
fixture promotes version 1 of the default model, which the read-only tests query;
``test_version_lifecycle`` walks a second model name through its life in one test:
v1 -> v2 promoted under load -> broken v3 refused under load (v2 keeps serving)
-> rollback to v1 -> restart restores every model's current version.

The Triton runtime venv is shared: ``$SAIL_TRITON_VENV`` if set, else the
default ``home().triton_venv``; it is created (about 40 s, from PyPI) if missing.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from exports import ITEM, QUERY, cached_export, torch_embed
from sail_core.config import load_config
from sail_core.index.semantic_ids import read_semantic_ids, save_semantic_ids
from sail_core.preprocess import samples
from sail_core.preprocess.semantic_ids import encode
from sail_core.paths import free_ports, home
from serving import server
from serving.backend.embedder import OnnxEmbedder, truncate_normalise
from serving.client import (
    ServingRequestError,
    ServingUnavailable,
    embed,
    embed_files,
    infer,
    infer_batch,
    make_client,
)
from serving.ephemeral import ephemeral_server
from serving.promote import PromotionError, promote, rollback, serving_state
from serving.repository import SID_DIR, read_config

pytestmark = pytest.mark.triton

TEXTS = ["Toy Story (1995)", "a funny cartoon about toys that come alive",
         "Fargo (1996) | Crime, Drama, Thriller", "Heat (1995)"]
PNG = samples.image_bytes(201, (240, 160), "PNG")
JPEG = samples.image_bytes(202, (100, 150), "JPEG")
FRAMES = [samples.image_bytes(210 + j, (160, 90), "JPEG") for j in range(3)]
WAV = samples.wav_bytes(203, seconds=2.0, rate=16000)
# name: rows sent in one request (text, image, frames, audio), each combination the issue names
COMBOS = {
    "text": dict(texts=TEXTS[:2]),
    "image": dict(images=[PNG, JPEG]),
    "audio": dict(audios=[WAV]),
    "frames": dict(frames=[FRAMES, FRAMES[:1]]),
    "text+image": dict(texts=TEXTS[2:4], images=[JPEG, PNG]),
    "all": dict(texts=[TEXTS[0]], images=[PNG], frames=[FRAMES], audios=[WAV]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real omni exports (v2: a different model) and a corrupt v3."""
    cfg = load_config(profile="demo")
    root = tmp_path_factory.mktemp("exports")
    v1, model1, _ = cached_export(1)
    v2, model2, _ = cached_export(2)
    shutil.copytree(v2, root / "v3")
    (root / "v3" / "model.onnx").write_bytes(b"this is not an onnx graph")
    want = {1: torch_embed(model1, TEXTS, [None] * 4, [None] * 4, [None] * 4, [QUERY] * 4),
            2: torch_embed(model2, TEXTS, [None] * 4, [None] * 4, [None] * 4, [QUERY] * 4)}
    assert np.abs(want[1] - want[2]).max() > 1e-2, "v1 and v2 must be told apart"
    return {"cfg": cfg, "dirs": {1: v1, 2: v2, 3: root / "v3"}, "torch": want, "model": {1: model1, 2: model2}}


@pytest.fixture(scope="module")
def triton(runtime, models, tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    with ephemeral_server(base / "repo", models["cfg"].serve, base / "state") as (serve_cfg, info):
        yield {"cfg": serve_cfg, "repo": base / "repo", "state": base / "state", "info": info}


@pytest.fixture(scope="module")
def v1(triton, models):
    """Version 1 of the default model, promoted on the server that started with no model."""
    assert server.status(triton["state"])["models"] == []
    started = time.perf_counter()
    result = promote(models["dirs"][1], 1, triton["cfg"], triton["repo"])
    print(f"promote v1: load {result['load_seconds']} s, smoke {result['check_seconds']} s, "
          f"total {time.perf_counter() - started:.1f} s")
    return result


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


def _torch_rows(model, rows: dict, dim=None) -> np.ndarray:
    n = len(next(iter(rows.values())))
    col = lambda k: list(rows.get(k) or [None] * n)  # noqa: E731
    media = [any(x is not None for x in r) for r in zip(col("images"), col("frames"), col("audios"))]
    return torch_embed(model, col("texts"), col("images"), col("frames"), col("audios"),
                       [ITEM if m else QUERY for m in media], dim)


def test_server_is_live_on_loopback(triton):
    st = server.status(triton["state"])
    assert st["running"] and st["live"] and st["ready"]
    assert st["http"] == f"127.0.0.1:{triton['cfg'].http_port}"


def test_promote_v1_smoke_checks_every_modality(triton, v1):
    cfg, result = triton["cfg"], v1
    assert result["version"] == 1 and result["previous"] is None
    assert set(result["smoke"]) == {"text", "image", "audio", "all"}
    assert result["max_abs_diff"] <= 1e-4
    assert result["dims"] == [384, 128, 64]
    assert serving_state(cfg, triton["repo"])["current"] == 1
    st = server.status(triton["state"])
    assert [m["version"] for m in st["models"] if m["name"] == cfg.triton_model and m["state"] == "READY"] == ["1"]


@pytest.mark.parametrize("combo", list(COMBOS))
def test_each_modality_combination_matches_pytorch(triton, models, v1, combo):
    """Raw bytes through Triton == PyTorch on the same bytes == onnxruntime in-process, at every dim."""
    cfg, rows = triton["cfg"], COMBOS[combo]
    want = _torch_rows(models["model"][1], rows)
    reference = OnnxEmbedder(models["dirs"][1]).embed(**rows)
    np.testing.assert_allclose(reference, want, atol=1e-4)
    for dim, protocol in ((None, "http"), (128, "grpc"), (64, "http")):
        got = embed(dim=dim, cfg=cfg, protocol=protocol, **rows)
        assert got.shape == (len(want), dim or 384)
        expect = truncate_normalise(want, dim) if dim else want
        np.testing.assert_allclose(got, expect, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_text_only_positional_call_works(triton, models, v1):
    full = embed(TEXTS, None, triton["cfg"], "http")  # positional (texts, dim, cfg, protocol)
    np.testing.assert_allclose(full, models["torch"][1], atol=1e-4)
    item = embed(TEXTS[:1], None, triton["cfg"], "http", side="target")
    want = torch_embed(models["model"][1], TEXTS[:1], [None], [None], [None], [ITEM])
    np.testing.assert_allclose(item, want, atol=1e-4)


def test_embed_files_for_the_cli(triton, models, v1, tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "title.wav"
    from sail_core.data.speech import Voice, speak_to_wav, spoken_text

    speak_to_wav(spoken_text("Toy Story", ["Animation", "Comedy"]), Voice("en", 175, 50), wav)
    cover = tmp_path / "cover.png"
    cover.write_bytes(PNG)
    vec = embed_files("Toy Story (1995)", cover, wav, 128, triton["cfg"], "grpc")
    want = torch_embed(models["model"][1], ["Toy Story (1995)"], [PNG], [None], [wav.read_bytes()], [ITEM], 128)
    assert vec.shape == (128,)
    np.testing.assert_allclose(vec, want[0], atol=1e-4)
    only_audio = embed_files(None, None, wav, None, triton["cfg"], "http")
    assert only_audio.shape == (384,) and np.abs(only_audio - embed_files("Toy Story (1995)", None, None, None,
                                                                          triton["cfg"])).max() > 1e-3
    with pytest.raises(ValueError, match="nothing to embed"):
        embed_files(None, None, None, None, triton["cfg"])
    with pytest.raises(FileNotFoundError, match="is not a file"):
        embed_files(None, tmp_path / "missing.jpg", None, None, triton["cfg"])


def test_preprocess_copy_imports_in_the_triton_env(runtime, triton, v1):
    """Every module of the copied sail_core/preprocess and the runners import with numpy<2 and without torch."""
    version_dir = triton["repo"] / triton["cfg"].triton_model / "1"
    modules = sorted(p.stem for p in (version_dir / "sail_core" / "preprocess").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys, numpy; assert numpy.__version__ < '2', numpy.__version__\n"
            f"for m in {modules!r}: importlib.import_module('sail_core.preprocess.' + m)\n"
            "import embedder; assert 'torch' not in sys.modules\n"
            "embedder.OnnxEmbedder('.')")
    proc = subprocess.run([str(runtime.venv / "bin" / "python"), "-c", code], cwd=version_dir,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr


def test_version_lifecycle(triton, models, v1):
    """v1 -> v2 under load -> broken v3 refused under load -> rollback to v1 -> restart restores it."""
    cfg = triton["cfg"].model_copy(update={"triton_model": "lifecycle"})
    assert promote(models["dirs"][1], 1, cfg, triton["repo"])["version"] == 1

    # v2 swaps in without dropping a request
    with Traffic(cfg) as traffic:
        result = promote(models["dirs"][2], 2, cfg, triton["repo"])
    assert result["version"] == 2 and result["previous"] == 1
    assert traffic.errors == []
    assert len(traffic.versions) >= 10 and set(traffic.versions) <= {"1", "2"}
    assert served_version(cfg) == "2"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][2], atol=1e-4)

    # a broken v3 is refused and v2 keeps serving
    with Traffic(cfg) as traffic:
        with pytest.raises(PromotionError, match="version 2 keeps serving"):
            promote(models["dirs"][3], 3, cfg, triton["repo"])
    assert traffic.errors == []
    assert len(traffic.versions) >= 10 and set(traffic.versions) == {"2"}
    assert served_version(cfg) == "2"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][2], atol=1e-4)
    folder = triton["repo"] / cfg.triton_model
    assert not (folder / "3").exists()
    assert any(p.name.startswith("3-") for p in (folder / "failed").iterdir())
    assert list(read_config(folder / "config.pbtxt").version_policy.specific.versions) == [2]
    state = serving_state(cfg, triton["repo"])
    assert state["current"] == 2 and state["stack"] == [1, 2]
    assert state["history"][-1]["event"] == "promote_failed"

    # rollback returns to v1, and there is nothing before it
    result = rollback(cfg, triton["repo"])
    assert result["version"] == 1 and result["rolled_back_from"] == 2
    assert served_version(cfg) == "1"
    np.testing.assert_allclose(embed(TEXTS, None, cfg), models["torch"][1], atol=1e-4)
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(cfg, triton["repo"])

    # a restart serves every model's current version
    state_dir = triton["state"]
    assert server.stop(state_dir)["result"] == "stopped"
    assert server.status(state_dir)["running"] is False
    started = time.perf_counter()
    info = server.start(triton["repo"], triton["cfg"], state_dir=state_dir)
    print(f"restart + load of {sorted(info.loaded)}: {time.perf_counter() - started:.1f} s")
    assert {"lifecycle", triton["cfg"].triton_model} <= set(info.loaded)
    assert served_version(cfg) == "1" and served_version(triton["cfg"]) == "1"
    np.testing.assert_allclose(embed(images=[PNG], cfg=cfg), OnnxEmbedder(models["dirs"][1]).embed(images=[PNG]),
                               atol=1e-4)


CATALOGUE = ["Jumanji (1995) | Adventure, Children, Fantasy", "Heat (1995) | Action, Crime, Thriller",
             "GoldenEye (1995) | Action, Adventure, Thriller", "Babe (1995) | Children, Drama",
             "Seven (1995) | Mystery, Thriller", "Pulp Fiction (1994) | Comedy, Crime, Drama, Thriller",
             "Braveheart (1995) | Action, Drama, War", "The Shawshank Redemption (1994) | Crime, Drama"]


def test_semantic_ids_served_beside_the_embedding(triton, models, v1, tmp_path):
    """A version promoted with SIDs (fitted on its own catalogue embeddings) returns SID == encode(its full-dim
    embedding); asking v1, which has none, for SID is refused clearly and v1 keeps serving."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    vectors = OnnxEmbedder(models["dirs"][1]).embed(texts=CATALOGUE, sides=["target"] * len(CATALOGUE))
    save_semantic_ids(tmp_path / "sid", [str(i) for i in range(len(CATALOGUE))], vectors, [4, 3], seed=0)
    codebooks, table, _ = read_semantic_ids(tmp_path / "sid")
    cfg = triton["cfg"].model_copy(update={"triton_model": "with_sid"})
    result = promote(models["dirs"][1], 1, cfg, triton["repo"], sid_dir=tmp_path / "sid")
    assert result["sid"]["levels"] == 2 and (triton["repo"] / "with_sid" / "1" / SID_DIR / "codebooks.npz").exists()

    full, codes = embed(TEXTS, None, cfg, "http", sid=True)
    assert codes.dtype == np.int32 and codes.shape == (len(TEXTS), 2)
    np.testing.assert_array_equal(codes, encode(full, codebooks))
    np.testing.assert_allclose(full, models["torch"][1], atol=1e-4)
    small, again = embed(TEXTS, 64, cfg, "grpc", sid=True)  # SID comes from the full width, whatever DIM is
    assert small.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(again, codes)
    np.testing.assert_allclose(embed(TEXTS, 64, cfg, "http"), small, atol=1e-6)  # sid=False: as before
    items, item_codes = embed(CATALOGUE, None, cfg, sid=True, side="target")  # the catalogue's own codes
    np.testing.assert_array_equal(item_codes, table[["sid_0", "sid_1"]].to_numpy())
    vec, one = embed_files(TEXTS[0], None, None, None, cfg, sid=True)
    assert vec.shape == (384,) and one.tolist() == codes[0].tolist()

    # v1 (the default model) was promoted without SIDs
    plain = triton["cfg"]
    for protocol in ("http", "grpc"):
        with pytest.raises(ServingRequestError, match="served version 1 of .* has no semantic IDs.*sid_dir"):
            embed(TEXTS[:1], None, plain, protocol, sid=True)
    client = make_client(plain)
    try:
        text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello"]], dtype=object))
        with pytest.raises(InferenceServerException, match="served version 1 has no semantic IDs.*promote a version"):
            client.infer(plain.triton_model, [text], outputs=[httpclient.InferRequestedOutput("SID")])
        answer = client.infer(plain.triton_model, [text])  # no outputs named: EMBEDDING alone, as before SIDs
        assert answer.as_numpy("EMBEDDING").shape == (1, 384) and answer.as_numpy("SID") is None
    finally:
        client.close()
    np.testing.assert_allclose(embed(TEXTS, None, plain), models["torch"][1], atol=1e-4)


def test_refused_first_version_leaves_nothing_loaded(triton, models, v1):
    """A model whose very first promotion fails: unloaded, no config left, the other model unaffected."""
    cfg = triton["cfg"].model_copy(update={"triton_model": "first_is_broken"})
    with pytest.raises(PromotionError, match="no version of 'first_is_broken' serves"):
        promote(models["dirs"][3], 1, cfg, triton["repo"])
    assert not (triton["repo"] / "first_is_broken" / "config.pbtxt").exists()
    assert serving_state(cfg, triton["repo"])["current"] is None
    assert served_version(triton["cfg"]) == "1"


def _raw_request(cfg, protocol, inputs):
    """A request built by hand (the client refuses to send some of these)."""
    module = __import__(f"tritonclient.{protocol}", fromlist=["InferInput"])
    client = make_client(cfg, protocol)
    try:
        tensors = []
        for name, data, dtype in inputs:
            t = module.InferInput(name, list(data.shape), dtype)
            t.set_data_from_numpy(data)
            tensors.append(t)
        return client.infer(cfg.triton_model, tensors)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_clear_errors(triton, v1, protocol):
    cfg = triton["cfg"]
    from tritonclient.utils import InferenceServerException

    bad = [
        (dict(texts=["fine", "also fine"], images=[PNG, b"this is not an image"]),
         r"IMAGE\[1\]: .*not a decodable image.*send JPEG or PNG"),
        (dict(frames=[[PNG, b"\x89PNG broken"]]), r"FRAMES\[0\]\[1\]: .*not a decodable image"),
        (dict(audios=[b"RIFF....WAVEfmt "]), r"AUDIO\[0\]: .*not a readable PCM WAV"),
        (dict(audios=[PNG]), r"AUDIO\[0\]: .*not a readable PCM WAV"),
        (dict(texts=["fine", ""]), r"row 1 is empty"),
        (dict(texts=["fine"], dim=100), r"DIM=100 is not a Matryoshka dim.*allowed dims: \[384, 128, 64\]"),
        (dict(texts=["fine"], task="nope"), r"TASK='nope' is not a dataset or task"),
    ]
    for rows, message in bad:
        with pytest.raises(ServingRequestError, match=message):
            embed(cfg=cfg, protocol=protocol, **rows)
    # an empty request: no modality at all (only DIM)
    with pytest.raises(InferenceServerException, match="no TEXT, IMAGE, FRAMES or AUDIO"):
        _raw_request(cfg, protocol, [("DIM", np.array([[64]], dtype=np.int32), "INT32")])
    assert embed(["still serving"], 128, cfg, protocol=protocol).shape == (1, 128)
    assert embed(images=[PNG], dim=64, cfg=cfg, protocol=protocol).shape == (1, 64)


def test_bad_requests_do_not_disturb_concurrent_good_ones(triton, models, v1):
    """Good and bad requests at once (the dynamic batcher may put them in one batch): each gets its own answer."""
    cfg = triton["cfg"]
    want = OnnxEmbedder(models["dirs"][1]).embed(texts=TEXTS[:1], images=[PNG])
    results: dict[int, object] = {}

    def call(k):
        client = make_client(cfg)
        try:
            rows = dict(texts=TEXTS[:1], images=[PNG]) if k % 2 == 0 else dict(images=[b"not an image at all"])
            results[k] = infer(client, cfg, "http", **rows)[0]
        except Exception as err:  # noqa: BLE001
            results[k] = err
        finally:
            client.close()

    threads = [threading.Thread(target=call, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k, r in results.items():
        if k % 2 == 0:
            np.testing.assert_allclose(r, want, atol=1e-4)
        else:
            assert isinstance(r, ServingRequestError) and "not a decodable image" in str(r)
    assert len(results) == 8


def test_client_says_how_to_start_a_server(models):
    http, grpc = free_ports(2)
    cfg = models["cfg"].serve.model_copy(update={"http_port": http, "grpc_port": grpc})
    for protocol in ("http", "grpc"):
        with pytest.raises(ServingUnavailable, match="sail serve up"):
            embed(["hello"], None, cfg, protocol=protocol)
