"""Runner of the serving cases of the bad-input corpus (``tests/badinput/serving/*.yaml``).

Each case is one raw request, built by hand with tritonclient (the project's client
refuses to send most of these), sent to a real tritonserver on 127.0.0.1 over each of
the case's protocols (``protocols``, default ``[http]``). The request must be refused;
:func:`run` returns the message Triton answered with. After each case the server must
still be live and answer a good request with the right embedding (the in-process
onnxruntime reference on the same bytes).

A case's fields besides ``what`` and ``expect``:

``protocols``  ``[http]``, ``[grpc]`` or both; every protocol's message must contain ``expect``.
``client_rows`` optional: after the refusal, ``serving.client.embed`` sends this many text rows (it splits them
               into requests of ``serve.limits.max_rows``) and must get every embedding.
``inputs``     ``NAME: spec`` for each tensor of the request (``{}`` = a request with no inputs). A spec has
               ``dtype`` (Triton datatype, default ``BYTES``), ``rows`` (default 1), ``per_row`` (entries per
               row, default 1), ``shape`` (default ``[rows, per_row]``) and one source of the element that
               fills the tensor:
                 ``value``         a literal (string or number);
                 ``text_chars``    a text of that many characters;
                 ``image``         ``[w, h]``: a real PNG of that size;
                 ``png_declared``  ``[w, h]``: a PNG whose header declares that size, with almost no data;
                 ``png_bomb``      ``[w, h]``: a valid grayscale PNG of that size, all zeros: a few hundred kB
                                   that decode to w*h bytes (and three times that as RGB);
                 ``wav_seconds``   a silent 16-bit mono WAV that long (``wav_rate``, default 16000; 0 = no samples);
               and optionally ``pad_to_bytes``: zeros appended to that element up to this size (decoders ignore them).

Large inputs are generated here at run time, never committed. The server is started
once per pytest session by the ``serving_corpus`` fixture (import it with ``from
tests.badinput.serving import *``); its model version is promoted with
``serve.limits.max_rows = 32`` (``max_batch_size`` stays 64) so that both the backend's
row limit and Triton's own batch-size check can be reached.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

__all__ = ["serving_corpus", "run", "png_declared", "png_bomb", "silent_wav", "GOOD_TEXT", "GOOD_IMAGE"]

CORPUS_ROW_LIMIT = 32  # serve.limits.max_rows of the corpus server (below max_batch_size = 64)
GOOD_TEXT = "a good request after a bad one"
GOOD_IMAGE_SIZE = (120, 90)
GOOD_IMAGE = None  # filled lazily (sail_core.preprocess.samples needs PIL only)


# --- inputs ---------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, color_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)  # 8-bit, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def png_declared(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` RGB pixels (its data is one empty
    zlib stream): decoding it would allocate 3 * width * height bytes before noticing the data is missing."""
    return _png(width, height, 2, zlib.compress(b""))


def png_bomb(width: int, height: int) -> bytes:
    """A valid ``width`` x ``height`` 8-bit grayscale PNG, every pixel 0: a decompression bomb (its IDAT is
    about 1/1000 of the width * height bytes it inflates to)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0 + the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return _png(width, height, 0, idat)


def silent_wav(seconds: float, rate: int = 16000) -> bytes:
    """A 16-bit mono PCM WAV of ``seconds`` of silence (0: a valid WAV with no samples)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(round(seconds * rate)))
    return out.getvalue()


def _good_image() -> bytes:
    global GOOD_IMAGE
    if GOOD_IMAGE is None:
        from sail_core.preprocess import samples

        GOOD_IMAGE = samples.image_bytes(301, GOOD_IMAGE_SIZE, "PNG")
    return GOOD_IMAGE


def _element(spec: dict, name: str):
    """The one element that fills an input tensor, from the spec's source key (and ``pad_to_bytes``)."""
    element = _source(spec, name)
    if "pad_to_bytes" in spec:
        element += b"\x00" * max(0, int(spec["pad_to_bytes"]) - len(element))
    return element


def _source(spec: dict, name: str):
    sources = {"value", "text_chars", "image", "png_declared", "png_bomb", "wav_seconds"} & set(spec)
    if len(sources) != 1:
        raise ValueError(f"input {name}: give exactly one of value, text_chars, image, png_declared, png_bomb, "
                         f"wav_seconds; got {sorted(sources) or 'none'}")
    source = sources.pop()
    if source == "value":
        value = spec["value"]
        return value.encode() if isinstance(value, str) else value
    if source == "text_chars":
        return ("x" * int(spec["text_chars"])).encode()
    if source == "image":
        from sail_core.preprocess import samples

        return samples.image_bytes(302, tuple(spec["image"]), "PNG")
    if source == "png_declared":
        return png_declared(*spec["png_declared"])
    if source == "png_bomb":
        return png_bomb(*spec["png_bomb"])
    return silent_wav(float(spec["wav_seconds"]), int(spec.get("wav_rate", 16000)))


_NUMPY = {"BYTES": object, "FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
          "INT8": np.int8, "BOOL": np.bool_}


def build_inputs(case: dict, protocol: str) -> list:
    """The case's request tensors for ``protocol`` (``tritonclient.<protocol>.InferInput``s)."""
    module = __import__(f"tritonclient.{protocol}", fromlist=["InferInput"])
    tensors = []
    for name, spec in (case.get("inputs") or {}).items():
        spec = spec or {}
        dtype = spec.get("dtype", "BYTES")
        rows, per_row = int(spec.get("rows", 1)), int(spec.get("per_row", 1))
        shape = [int(s) for s in spec.get("shape", [rows, per_row])]
        element = _element(spec, name)
        data = np.empty(int(np.prod(shape)), dtype=_NUMPY[dtype])
        data[:] = [element] * data.size if dtype == "BYTES" else element
        tensor = module.InferInput(name, shape, dtype)
        tensor.set_data_from_numpy(data.reshape(shape))
        tensors.append(tensor)
    return tensors


# --- the server -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def serving_corpus(tmp_path_factory):
    """One tritonserver on free loopback ports for the whole corpus, serving version 1 of a real export with
    ``serve.limits.max_rows = 32``; yields its config, state folder and the in-process reference embedder."""
    from exports import cached_export
    from sail_core.config import load_config
    from sail_core.paths import home
    from serving.backend.embedder import OnnxEmbedder
    from serving.ephemeral import ephemeral_server
    from serving.promote import promote
    from serving.runtime import ensure_runtime

    mp = pytest.MonkeyPatch()  # the runtime venv is shared by every test module (see conftest's `runtime`)
    mp.setenv("SAIL_TRITON_VENV", __import__("os").environ.get("SAIL_TRITON_VENV") or str(home().triton_venv))
    ensure_runtime()
    export_dir, _, _ = cached_export(1)
    cfg = load_config(profile="demo").serve
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"max_rows": CORPUS_ROW_LIMIT})})
    base = tmp_path_factory.mktemp("badinput-serving")
    try:
        with ephemeral_server(base / "repo", cfg, base / "state") as (serve_cfg, _info):
            promote(export_dir, 1, serve_cfg, base / "repo")
            reference = OnnxEmbedder(export_dir, limits=serve_cfg.limit_values())
            want = reference.embed(texts=[GOOD_TEXT], images=[_good_image()])
            yield {"cfg": serve_cfg, "state": base / "state", "repo": base / "repo", "want": want}
    finally:
        mp.undo()


def _refusal(cfg, protocol: str, inputs: list) -> str:
    """Send ``inputs``; the message Triton refused them with (AssertionError if it answered)."""
    from serving.client import make_client
    from tritonclient.utils import InferenceServerException

    client = make_client(cfg, protocol, timeout=120.0)
    try:
        answer = client.infer(cfg.triton_model, inputs)
    except InferenceServerException as err:
        return str(err.message() or err)
    finally:
        client.close()
    raise AssertionError(f"the server answered the bad request over {protocol} instead of refusing it: "
                         f"outputs {[o['name'] for o in answer.get_response().get('outputs', [])] if protocol == 'http' else answer}")


def _still_serving(corpus: dict, protocol: str) -> None:
    """The server is live, its model ready, and a good request gets the reference embedding."""
    from serving import server
    from serving.client import embed, make_client

    cfg = corpus["cfg"]
    status = server.status(corpus["state"])
    assert status["running"], f"tritonserver died after the bad request; see {status.get('log_file')}"
    log = Path(status["log_file"]).read_text(errors="replace")
    for sign in ("is not healthy", "Traceback", "Segmentation fault", "core dumped"):
        assert sign not in log, f"the server log {status['log_file']} shows a crash ({sign!r}) after the bad request"
    client = make_client(cfg, protocol)
    try:
        assert client.is_server_live() and client.is_model_ready(cfg.triton_model, "1"), \
            "the model is no longer ready after the bad request"
    finally:
        client.close()
    got = embed(texts=[GOOD_TEXT], images=[_good_image()], cfg=cfg, protocol=protocol)
    np.testing.assert_allclose(got, corpus["want"], atol=1e-4)


def run(case, case_dir: Path, request: pytest.FixtureRequest) -> str:
    """Send the case's request over each of its protocols; return the first protocol's refusal message.

    ``case``: the case's fields (a dict, or ``tests.badinput.common.Case`` whose ``spec`` they are)."""
    case = getattr(case, "spec", case)
    corpus = request.getfixturevalue("serving_corpus")
    protocols = case.get("protocols") or ["http"]
    messages = []
    for protocol in protocols:
        messages.append(_refusal(corpus["cfg"], protocol, build_inputs(case, protocol)))
        _still_serving(corpus, protocol)
    if case.get("client_rows"):
        from serving.client import embed

        n = int(case["client_rows"])
        got = embed(texts=[GOOD_TEXT] * n, cfg=corpus["cfg"], protocol=protocols[0])
        assert got.shape == (n, corpus["want"].shape[1])
    expect = str(case["expect"]).lower()
    for protocol, message in zip(protocols[1:], messages[1:]):
        assert expect in message.lower(), f"over {protocol} the refusal reads {message!r}, not {case['expect']!r}"
    return messages[0]
