"""Shared pieces of the ONNX exporters: file names, the parity error, an onnxruntime session."""

from __future__ import annotations

import json
from pathlib import Path

EXPORT_META = "export.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "embedding"
PARITY_TOLERANCE = 1e-4


class ExportParityError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch embeddings."""


def onnx_session(path: Path):
    """A CPU onnxruntime session with warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def write_meta(out_dir: Path, meta: dict) -> None:
    (Path(out_dir) / EXPORT_META).write_text(json.dumps(meta, indent=2))
