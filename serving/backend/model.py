"""Triton python-backend model: text in, Matryoshka embedding out.

Inputs (per request, batched by Triton's dynamic batcher):
    TEXT  TYPE_STRING [B, 1]   UTF-8 strings, already formatted (instruction applied by the caller)
    DIM   TYPE_INT32  [B, 1]   optional; one of export.json's matryoshka_dims (all rows equal)
Output:
    EMBEDDING  TYPE_FP32 [B, dim]   L2-normalised

The version folder holds this file, ``embedding.py``, ``model.onnx``,
``tokenizer.json``, ``export.json`` and a copy of ``sail_core/preprocess/``.
Runs in the Triton runtime environment: numpy<2, onnxruntime, tokenizers, no torch.
A bad request gets a ``TritonError`` naming the problem; the other requests of
the same batch are served normally.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        if version_dir not in sys.path:
            sys.path.insert(0, version_dir)
        from embedding import OnnxTextEmbedder  # noqa: E402  (lives next to this file)

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        providers = [p.strip() for p in params.get("onnx_providers", "CPUExecutionProvider").split(",") if p.strip()]
        threads = int(params.get("intra_op_threads", "0") or 0)
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        self.embedder = OnnxTextEmbedder(version_dir, providers=providers, intra_op_threads=threads,
                                         device_id=device_id)
        self.version = args["model_version"]

    @staticmethod
    def _decode(request):
        raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
        dim_tensor = pb_utils.get_input_tensor_by_name(request, "DIM")
        dim = None
        if dim_tensor is not None:
            dims = {int(d) for d in dim_tensor.as_numpy().reshape(-1)}
            if len(dims) != 1:
                raise ValueError(f"DIM must hold one value for the whole request, got {sorted(dims)}")
            dim = dims.pop()
        return texts, dim

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = []  # (index, texts, dim) of the valid requests
        for i, request in enumerate(requests):
            try:
                texts, dim = self._decode(request)
                self.embedder.check_texts(texts)
                parsed.append((i, texts, self.embedder.check_dim(dim)))
            except (ValueError, UnicodeDecodeError) as err:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
        if parsed:
            # One onnxruntime call for all valid requests of this batch.
            all_texts = [t for _, texts, _ in parsed for t in texts]
            try:
                full = self.embedder.embed_full(all_texts)
            except Exception as err:  # noqa: BLE001  (report the engine's failure to every caller)
                message = f"embedding failed in model version {self.version}: {err}"
                for i, _, _ in parsed:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                return responses
            start = 0
            from embedding import truncate_normalise  # noqa: E402

            for i, texts, dim in parsed:
                z = full[start : start + len(texts)]
                start += len(texts)
                if dim != self.embedder.hidden_size:
                    z = truncate_normalise(z, dim)
                out = pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(z, dtype=np.float32))
                responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
        return responses

    def finalize(self):
        self.embedder = None
