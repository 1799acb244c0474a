"""Triton python-backend model: any subset of text, cover image, keyframes and audio in, embedding out.

Inputs (per request; ``B`` rows, batched by Triton's dynamic batcher; all optional):
    TEXT    TYPE_STRING [B, 1]   raw UTF-8 text (the server adds the task instruction)
    IMAGE   TYPE_STRING [B, 1]   cover image bytes, JPEG or PNG
    FRAMES  TYPE_STRING [B, F]   keyframe image bytes in time order; rows with fewer frames pad with b""
    AUDIO   TYPE_STRING [B, 1]   WAV bytes (PCM, any rate, mono or stereo)
    DIM     TYPE_INT32  [B, 1]   a Matryoshka dim from export.json (one value for the whole request)
    TASK    TYPE_STRING [B, 1]   a dataset name (q2i, copair_i2i, ...) or task (i2i, q2i, cls)
    SIDE    TYPE_STRING [B, 1]   "query" or "target" (default: query for text-only rows, target with media)
An empty element (b"") means "this row has no such modality"; a row with none is an error.
Outputs (the client names the ones it wants):
    EMBEDDING  TYPE_FP32  [B, dim]  L2-normalised
    SID        TYPE_INT32 [B, L]    semantic IDs: the residual k-means codes of the row's full-width
                                    embedding (before Matryoshka truncation) under the version's
                                    ``sid/codebooks.npz`` (:func:`sail_core.preprocess.semantic_ids.encode`);
                                    asking for SID from a version without codebooks is an error
                                    (see ``_outputs`` for a request that names no outputs)

The version folder holds this file, ``embedder.py``, the export folder's files,
a copy of ``sail_core/preprocess/`` and, when promoted with them, ``sid/``. Runs in the Triton runtime environment: numpy<2, onnxruntime, tokenizers, pillow; no torch. A bad
request gets a ``TritonError`` naming the problem; the other requests of the
same batch are served normally. The request limits (``serve.limits``: text
characters, image bytes and pixels, audio seconds, FRAMES per row, rows per
request) come from the config's parameters and are checked before any decode.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _strings(request, name, text=False):
    """The input ``name`` as a list of rows (each a list of bytes/str), or None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    raw = tensor.as_numpy()
    raw = raw.reshape(raw.shape[0], -1) if raw.ndim else raw.reshape(1, 1)
    decode = (lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)) if text else \
        (lambda v: bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode("utf-8"))
    return [[decode(v) for v in row] for row in raw]


def _first(column):
    return None if column is None else [row[0] if row else None for row in column]


def _dim(request):
    tensor = pb_utils.get_input_tensor_by_name(request, "DIM")
    if tensor is None:
        return None
    dims = {int(d) for d in tensor.as_numpy().reshape(-1)}
    if len(dims) != 1:
        raise ValueError(f"DIM must hold one value for the whole request, got {sorted(dims)}")
    return dims.pop()


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        if version_dir not in sys.path:
            sys.path.insert(0, version_dir)
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        providers = [p.strip() for p in params.get("onnx_providers", "CPUExecutionProvider").split(",") if p.strip()]
        threads = int(params.get("intra_op_threads", "0") or 0)
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        from embedder import Limits, OnnxEmbedder  # noqa: E402  (lives next to this file)

        # serve.limits and the serve thread/batch settings, written into config.pbtxt by serving/repository.py
        # (absent: the defaults)
        self.embedder = OnnxEmbedder(
            version_dir, providers, threads, device_id, limits=Limits.from_mapping(params),
            inter_op_threads=int(params.get("inter_op_threads", "0") or 0),
            allow_spinning=params.get("allow_spinning", "1") != "0",
            encoder_batch=int(params.get("encoder_batch", "0") or 0),
            **({"vision_batch": int(params["vision_batch"])} if params.get("vision_batch") else {}))
        self.version = args["model_version"]
        self.codebooks = None  # semantic-ID codebooks, when the version was promoted with them
        codebooks = os.path.join(version_dir, "sid", "codebooks.npz")
        if os.path.exists(codebooks):
            from sail_core.preprocess.semantic_ids import load_codebooks  # noqa: E402  (the copy in version_dir)

            self.codebooks = load_codebooks(codebooks)
            width = int(self.codebooks[0].shape[1])
            if width != self.embedder.hidden_size:
                raise ValueError(f"{codebooks} holds codebooks of dim {width} but the model embeds at "
                                 f"{self.embedder.hidden_size}; fit them on this model's catalogue embeddings")

    def _outputs(self, request):
        """The names of the outputs to answer ``request`` with.

        A request that names no outputs gets all of them (Triton fills every output in),
        so a version without codebooks answers {EMBEDDING, SID} with EMBEDDING alone, as
        before SIDs existed; the client, which names both for ``sid=True``, then finds no
        SID in the answer and says why. A request for SID without EMBEDDING is refused here.
        """
        names = set(request.requested_output_names()) or {"EMBEDDING"}
        if "SID" in names and self.codebooks is None:
            if "EMBEDDING" in names:
                return {"EMBEDDING"}
            raise ValueError(f"the served version {self.version} has no semantic IDs (no sid/codebooks.npz in its "
                             "folder); promote a version registered with semantic IDs (promote(..., sid_dir=...)) "
                             "or ask for EMBEDDING only")
        return names

    def _parse(self, request):
        """(decoded rows, dim, output names) for one request."""
        outputs = self._outputs(request)
        dim = self.embedder.check_dim(_dim(request))
        texts = _first(_strings(request, "TEXT", text=True))
        rows = self.embedder.decode(
            texts=texts,
            images=_first(_strings(request, "IMAGE")),
            frames=_strings(request, "FRAMES"),
            audios=_first(_strings(request, "AUDIO")),
            tasks=_first(_strings(request, "TASK", text=True)),
            sides=_first(_strings(request, "SIDE", text=True)),
        )
        return rows, dim, outputs

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = []  # (index, payload, dim, output names) of the valid requests
        for i, request in enumerate(requests):
            try:
                payload, dim, outputs = self._parse(request)
                parsed.append((i, payload, dim, outputs))
            except (ValueError, UnicodeDecodeError) as err:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
            except Exception as err:  # noqa: BLE001  (a reader's surprise fails this request only, never the batch)
                message = (f"the request could not be read by model version {self.version} "
                           f"({type(err).__name__}: {err}); check its inputs against the model's config.pbtxt")
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
        if not parsed:
            return responses
        # One engine call for all valid requests of this batch.
        everything = [x for _, payload, _, _ in parsed for x in payload]
        try:
            full = self.embedder.embed_rows(everything)
        except Exception as err:  # noqa: BLE001  (report the engine's failure to every caller)
            message = f"embedding failed in model version {self.version}: {err}"
            for i, *_ in parsed:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
            return responses
        from embedder import truncate_normalise  # noqa: E402

        start = 0
        for i, payload, dim, outputs in parsed:
            z = full[start : start + len(payload)]
            start += len(payload)
            tensors = []
            if "SID" in outputs:  # from the full-width embedding, whatever DIM asks
                from sail_core.preprocess.semantic_ids import encode  # noqa: E402

                tensors.append(pb_utils.Tensor("SID", np.ascontiguousarray(encode(z, self.codebooks), dtype=np.int32)))
            if "EMBEDDING" in outputs:
                if dim != self.embedder.hidden_size:
                    z = truncate_normalise(z, dim)
                tensors.append(pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(z, dtype=np.float32)))
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self):
        self.embedder = None
