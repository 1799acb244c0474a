"""onnxruntime text embedder with Matryoshka truncation, in numpy (no torch).

This one file runs in two places: inside Triton's python backend (copied next
to ``model.py``) and in-process as the parity reference (``serving.backend.embedding``).
Tokenisation is ``sail_core.preprocess.text``, the same code training uses; the
repository writer copies that package into each model version folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sail_core.preprocess.text import TextPreprocessor

NORM_EPS = 1e-12  # the same clamp as torch.nn.functional.normalize


def truncate_normalise(z: np.ndarray, dim: int) -> np.ndarray:
    """Keep the first ``dim`` components of each row and re-normalise (Matryoshka)."""
    head = np.asarray(z[:, :dim], dtype=np.float32)
    norms = np.maximum(np.linalg.norm(head, axis=1, keepdims=True), NORM_EPS)
    return (head / norms).astype(np.float32)


class OnnxTextEmbedder:
    """Tokenise, run the exported graph, truncate to a Matryoshka dim.

    ``model_dir`` is an export folder: ``model.onnx``, ``tokenizer.json``, ``export.json``.
    """

    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 device_id: int = 0):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.meta = json.loads((model_dir / "export.json").read_text())
        self.hidden_size = int(self.meta["hidden_size"])
        self.dims = [int(d) for d in self.meta["matryoshka_dims"]]
        self.output = self.meta.get("output", "embedding")
        self.preprocess = TextPreprocessor(model_dir / self.meta.get("tokenizer_file", "tokenizer.json"),
                                           int(self.meta["max_length"]))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        providers = providers or ["CPUExecutionProvider"]
        provider_options = [{"device_id": device_id} if p == "CUDAExecutionProvider" else {} for p in providers]
        self.session = ort.InferenceSession(str(model_dir / self.meta.get("onnx_file", "model.onnx")), opts,
                                            providers=providers, provider_options=provider_options)

    def check_dim(self, dim: int | None) -> int:
        """The output dim for a request: ``None`` means full size; anything else must be a Matryoshka dim."""
        if dim is None:
            return self.hidden_size
        dim = int(dim)
        if dim not in self.dims:
            raise ValueError(f"DIM={dim} is not a Matryoshka dim of this model; allowed dims: {self.dims}")
        return dim

    @staticmethod
    def check_texts(texts: list[str]) -> None:
        if not texts:
            raise ValueError("TEXT is empty: send at least one string")
        for i, text in enumerate(texts):
            if not str(text).strip():
                raise ValueError(f"TEXT[{i}] is an empty string: every text must have at least one non-space character")

    def embed_full(self, texts: list[str]) -> np.ndarray:
        """(N, hidden_size) float32, L2-normalised (the graph normalises)."""
        self.check_texts(texts)
        feeds = self.preprocess(list(texts))
        return self.session.run([self.output], feeds)[0].astype(np.float32)

    def embed(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        """(N, dim) float32, L2-normalised after truncation."""
        dim = self.check_dim(dim)
        z = self.embed_full(texts)
        return z if dim == self.hidden_size else truncate_normalise(z, dim)
