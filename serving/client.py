"""Embed text, images, keyframes and audio through the running Triton server (tritonclient, HTTP or gRPC).

    from serving.client import embed, embed_files
    z = embed(["a romantic comedy set in paris"], dim=128, cfg=load_config().serve)   # (1, 128)
    z = embed(texts=["Toy Story"], images=[Path("cover.jpg")], audios=[wav_bytes], cfg=cfg.serve)
    v = embed_files("Toy Story", Path("cover.png"), Path("title.wav"), None, cfg.serve, "http")  # (384,)
    z, codes = embed(["Toy Story"], 128, cfg.serve, sid=True)   # (1, 128) and (1, L) int32 semantic IDs

``sid=True`` also asks for the ``SID`` output: the semantic IDs (one code per level)
of each row's full-width embedding, whatever ``dim`` is, under the codebooks promoted
with the served version. A version promoted without semantic IDs refuses such a
request (``ServingRequestError`` saying so); with ``sid=False`` (the default) the
calls return what they always did.

Send raw text: the server wraps each row in its task instruction (export.json;
TASK/SIDE choose it, default: the q2i query instruction for text-only rows, the
item (target) instruction for rows with media). Media are bytes or file paths;
``None`` (or empty) leaves that modality out of a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from sail_core.config import ServeConfig

Protocol = Literal["http", "grpc"]
Media = bytes | str | Path | None


class ServingUnavailable(RuntimeError):
    """No tritonserver answers at the configured address."""


class ServingRequestError(RuntimeError):
    """The server answered, but refused or failed the request (message from Triton)."""


def _module(protocol: Protocol):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: http, grpc")
    return module


def make_client(cfg: ServeConfig, protocol: Protocol = "http", timeout: float = 60.0):
    """A tritonclient ``InferenceServerClient`` for ``cfg`` (one per thread)."""
    module = _module(protocol)
    if protocol == "http":
        return module.InferenceServerClient(url=f"{cfg.host}:{cfg.http_port}", connection_timeout=timeout,
                                            network_timeout=timeout)
    return module.InferenceServerClient(url=f"{cfg.host}:{cfg.grpc_port}")


def _bytes(value: Media, name: str) -> bytes:
    """Media as bytes: bytes pass through, a path is read, None/empty is b"" (absent)."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path} is not a file")
    return path.read_bytes()


def _tensor(module, name: str, data: np.ndarray, dtype: str):
    t = module.InferInput(name, list(data.shape), dtype)
    t.set_data_from_numpy(data)
    return t


def build_inputs(texts: Sequence[str | None] | None = None, dim: int | None = None, protocol: Protocol = "http", *,
                 images: Sequence[Media] | None = None, frames: Sequence[Sequence[Media] | None] | None = None,
                 audios: Sequence[Media] | None = None, task: str | None = None, side: str | None = None) -> list:
    """The request tensors for one batch of rows (every given list has one entry per row)."""
    module = _module(protocol)
    columns = {k: v for k, v in (("TEXT", texts), ("IMAGE", images), ("FRAMES", frames), ("AUDIO", audios))
               if v is not None}
    if not columns:
        raise ValueError("nothing to embed: give texts, images, frames or audios")
    n = {len(v) for v in columns.values()}
    if len(n) != 1:
        raise ValueError(f"texts, images, frames and audios must have one entry per row; got lengths "
                         f"{ {k: len(v) for k, v in columns.items()} }")
    rows = n.pop()
    inputs = []
    if texts is not None:
        data = np.array([[("" if t is None else str(t)).encode("utf-8")] for t in texts], dtype=object)
        inputs.append(_tensor(module, "TEXT", data, "BYTES"))
    for name, values in (("IMAGE", images), ("AUDIO", audios)):
        if values is not None:
            data = np.array([[_bytes(v, f"{name}[{i}]")] for i, v in enumerate(values)], dtype=object)
            inputs.append(_tensor(module, name, data, "BYTES"))
    if frames is not None:
        per_row = [[_bytes(f, f"FRAMES[{i}][{j}]") for j, f in enumerate(row or [])] for i, row in enumerate(frames)]
        width = max(1, max(len(r) for r in per_row))
        data = np.array([r + [b""] * (width - len(r)) for r in per_row], dtype=object).reshape(rows, width)
        inputs.append(_tensor(module, "FRAMES", data, "BYTES"))
    if dim is not None:
        inputs.append(_tensor(module, "DIM", np.full((rows, 1), int(dim), dtype=np.int32), "INT32"))
    for name, value in (("TASK", task), ("SIDE", side)):
        if value is not None:
            inputs.append(_tensor(module, name, np.array([[str(value).encode()]] * rows, dtype=object), "BYTES"))
    return inputs


def _address(cfg: ServeConfig, protocol: Protocol) -> str:
    return f"{cfg.host}:{cfg.http_port if protocol == 'http' else cfg.grpc_port}"


def _unavailable(cfg: ServeConfig, protocol: Protocol, err: Exception) -> ServingUnavailable:
    return ServingUnavailable(f"no Triton server answers on {protocol} {_address(cfg, protocol)} ({err}); "
                              "run `sail serve up` (and `sail promote` if no model is loaded)")


def infer(client, cfg: ServeConfig, protocol: Protocol = "http", model_version: str = "", sid: bool = False,
          **rows) -> tuple[np.ndarray, str] | tuple[np.ndarray, np.ndarray, str]:
    """One request of ``rows`` (``build_inputs`` keywords); returns the embeddings and the serving version,
    or, with ``sid=True``, the embeddings, the (N, L) int32 semantic IDs and the serving version."""
    from tritonclient.utils import InferenceServerException

    inputs = build_inputs(protocol=protocol, **rows)  # file and shape errors surface here, not as "unavailable"
    names = ["EMBEDDING", "SID"] if sid else ["EMBEDDING"]
    try:
        result = client.infer(cfg.triton_model, inputs, model_version=model_version,
                              outputs=[_module(protocol).InferRequestedOutput(n) for n in names])
    except InferenceServerException as err:
        message = str(err.message() or err)
        if "UNAVAILABLE" in str(err.status()) or "failed to connect" in message.lower():
            raise _unavailable(cfg, protocol, err) from None
        hint = "; promote a model first with `sail promote`" if "unknown model" in message.lower() else ""
        raise ServingRequestError(f"Triton refused the request to {cfg.triton_model!r}: {message}{hint}") from None
    except (OSError, ConnectionError) as err:
        raise _unavailable(cfg, protocol, err) from None
    if protocol == "http":
        version = str(result.get_response().get("model_version", ""))
    else:
        version = str(result.get_response().model_version)
    if not sid:
        return result.as_numpy("EMBEDDING"), version
    codes = result.as_numpy("SID")
    if codes is None:  # the backend answers {EMBEDDING, SID} without SID when it has no codebooks (model.py)
        raise ServingRequestError(f"the served version {version} of {cfg.triton_model!r} has no semantic IDs (it "
                                  "returned no SID output); promote a version registered with semantic IDs "
                                  "(promote(..., sid_dir=...)) or call without sid=True")
    return result.as_numpy("EMBEDDING"), codes.astype(np.int32, copy=False), version


def infer_batch(client, texts: list[str], dim: int | None, cfg: ServeConfig, protocol: Protocol = "http",
                model_version: str = "") -> tuple[np.ndarray, str]:
    """One text-only request; returns the embeddings and the model version that served them."""
    if not texts:
        raise ValueError("no texts to embed: pass at least one string")
    return infer(client, cfg, protocol, model_version, texts=texts, dim=dim)


def embed(texts: Sequence[str | None] | None = None, dim: int | None = None, cfg: ServeConfig | None = None,
          protocol: Protocol = "http", model_version: str = "", timeout: float = 60.0, *,
          images: Sequence[Media] | None = None, audios: Sequence[Media] | None = None,
          frames: Sequence[Sequence[Media] | None] | None = None, task: str | None = None,
          side: str | None = None, sid: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Embed N rows (N, dim or full size) via Triton, in requests of at most ``serve.limits.max_rows`` rows
    (null: ``cfg.max_batch_size``).

    Each given list has one entry per row; ``None`` leaves that modality out of
    the row. ``frames`` holds a list of keyframes (bytes or paths) per row.
    With ``sid=True`` returns ``(embeddings, codes)``: ``codes`` (N, L) int32 are the
    semantic IDs of the rows' full-width embeddings (``ServingRequestError`` when the
    served version has none).
    """
    cfg = cfg or ServeConfig()
    columns = {"texts": texts, "images": images, "audios": audios, "frames": frames}
    given = {k: list(v) for k, v in columns.items() if v is not None}
    if not given or not max(len(v) for v in given.values()):
        raise ValueError("nothing to embed: pass texts, images, audios or frames (at least one row)")
    n = max(len(v) for v in given.values())
    client = make_client(cfg, protocol, timeout)
    try:
        step = cfg.limit_values()["max_rows"]
        chunks = [infer(client, cfg, protocol, model_version, sid=sid, dim=dim, task=task, side=side,
                        **{k: v[i : i + step] for k, v in given.items()}) for i in range(0, n, step)]
    finally:
        client.close()
    vectors = np.concatenate([c[0] for c in chunks], axis=0)
    return (vectors, np.concatenate([c[1] for c in chunks], axis=0)) if sid else vectors


def embed_files(text: str | None, image: Path | None, audio: Path | None, dim: int | None = None,
                cfg: ServeConfig | None = None, protocol: Protocol = "http", frames: Sequence[Path] | None = None,
                task: str | None = None, side: str | None = None,
                sid: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One item from a text and/or an image file (JPEG/PNG) and/or a WAV file -> its (dim,) embedding
    (with ``sid=True``: ``(embedding, codes)``, ``codes`` its (L,) int32 semantic ID).

    For ``sail embed TEXT --image PATH --audio PATH``. Raises ``ValueError`` when
    nothing is given and ``FileNotFoundError`` for a missing file.
    """
    if not (text and str(text).strip()) and image is None and audio is None and not frames:
        raise ValueError("nothing to embed: give a text, --image PATH and/or --audio PATH")
    rows = {"texts": [text] if text else None, "images": [Path(image)] if image is not None else None,
            "audios": [Path(audio)] if audio is not None else None,
            "frames": [[Path(f) for f in frames]] if frames else None}
    if sid:
        vectors, codes = embed(dim=dim, cfg=cfg, protocol=protocol, task=task, side=side, sid=True, **rows)
        return vectors[0], codes[0]
    return embed(dim=dim, cfg=cfg, protocol=protocol, task=task, side=side, **rows)[0]
