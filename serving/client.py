"""Embed texts through the running Triton server (tritonclient, HTTP or gRPC).

    from serving.client import embed
    z = embed(["Toy Story (1995)"], dim=128, cfg=load_config().serve)   # (1, 128), L2-normalised

Texts are sent as they are: apply the task instruction first
(``sail_core.preprocess.text.with_instruction``), as training did.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sail_core.config import ServeConfig

Protocol = Literal["http", "grpc"]


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


def build_inputs(texts: list[str], dim: int | None, protocol: Protocol = "http") -> list:
    """The ``TEXT`` (and optional ``DIM``) request tensors for one batch of texts."""
    module = _module(protocol)
    data = np.array([[str(t).encode("utf-8")] for t in texts], dtype=object)
    inputs = [module.InferInput("TEXT", list(data.shape), "BYTES")]
    inputs[0].set_data_from_numpy(data)
    if dim is not None:
        dims = np.full((len(texts), 1), int(dim), dtype=np.int32)
        inputs.append(module.InferInput("DIM", list(dims.shape), "INT32"))
        inputs[1].set_data_from_numpy(dims)
    return inputs


def _address(cfg: ServeConfig, protocol: Protocol) -> str:
    return f"{cfg.host}:{cfg.http_port if protocol == 'http' else cfg.grpc_port}"


def _unavailable(cfg: ServeConfig, protocol: Protocol, err: Exception) -> ServingUnavailable:
    return ServingUnavailable(f"no Triton server answers on {protocol} {_address(cfg, protocol)} ({err}); "
                              "run `sail serve up` (and `sail promote` if no model is loaded)")


def infer_batch(client, texts: list[str], dim: int | None, cfg: ServeConfig, protocol: Protocol = "http",
                model_version: str = "") -> tuple[np.ndarray, str]:
    """One request; returns the embeddings and the model version that served them."""
    from tritonclient.utils import InferenceServerException

    if not texts:
        raise ValueError("no texts to embed: pass at least one string")
    try:
        result = client.infer(cfg.model_name, build_inputs(texts, dim, protocol), model_version=model_version,
                              outputs=[_module(protocol).InferRequestedOutput("EMBEDDING")])
    except InferenceServerException as err:
        message = str(err.message() or err)
        if "UNAVAILABLE" in str(err.status()) or "failed to connect" in message.lower():
            raise _unavailable(cfg, protocol, err) from None
        hint = "; promote a model first with `sail promote`" if "unknown model" in message.lower() else ""
        raise ServingRequestError(f"Triton refused the request to {cfg.model_name!r}: {message}{hint}") from None
    except (OSError, ConnectionError) as err:
        raise _unavailable(cfg, protocol, err) from None
    if protocol == "http":
        version = str(result.get_response().get("model_version", ""))
    else:
        version = str(result.get_response().model_version)
    return result.as_numpy("EMBEDDING"), version


def embed(texts: list[str], dim: int | None = None, cfg: ServeConfig | None = None, protocol: Protocol = "http",
          model_version: str = "", timeout: float = 60.0) -> np.ndarray:
    """Embed ``texts`` (N, dim or full size) via Triton, in chunks of ``cfg.max_batch_size``."""
    cfg = cfg or ServeConfig()
    client = make_client(cfg, protocol, timeout)
    try:
        chunks = [infer_batch(client, texts[i : i + cfg.max_batch_size], dim, cfg, protocol, model_version)[0]
                  for i in range(0, len(texts), cfg.max_batch_size)]
    finally:
        client.close()
    if not chunks:
        raise ValueError("no texts to embed: pass at least one string")
    return np.concatenate(chunks, axis=0)
