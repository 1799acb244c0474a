"""ONNX export of the issue-2 text embedder (:class:`SailEmbedder`), with a parity check against PyTorch.

The exported graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic
batch and sequence axes) and returns ``embedding`` (float32, (B, H)), already
L2-normalised at full dim. Matryoshka dims are prefixes of it, truncated and
re-normalised by the consumer (the Triton python backend does it in numpy).

Exporter choice (torch 2.13, CPU, all-MiniLM-L6-v2), measured on this machine:
the TorchScript exporter (``dynamo=False``) takes about 2 s, writes one file and
matches PyTorch to about 2e-7; the dynamo exporter took about 7 s, split the
weights into an external ``.data`` file and produced a graph onnxruntime
rejected ("Duplicate definition of name (embedding)"). So we use ``dynamo=False``.

The output folder holds everything a server needs::

    model.onnx       the graph, weights inside
    tokenizer.json   the backbone's tokenizer (tokenisation runs in the server)
    export.json      dims, max_length, hidden size, matryoshka dims, parity figures
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sail_core.export.common import (
    EXPORT_META,
    ONNX_FILE,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    TOKENIZER_FILE,
    ExportParityError,
)
from sail_core.export.common import onnx_session as _onnx_session
from sail_core.model.embedder import SailEmbedder

INPUT_NAMES = ["input_ids", "attention_mask"]

# Real strings of different lengths: short, medium, one longer than max_length
# of the tiny profile, and a non-ASCII one. Padding inside a batch is exercised.
PARITY_TEXTS = [
    "Toy Story (1995)",
    "Instruct: Represent this movie for retrieval.\nInput: GoldenEye (1995) | Action, Adventure, Thriller",
    "A long description of a film about a small town where nothing ever happens until one day a "
    "stranger arrives with a suitcase full of old letters, and the whole town has to decide "
    "whether to read them or to burn them before the winter festival begins.",
    "Amélie — Le Fabuleux Destin d'Amélie Poulain (2001)",
    "x",
]


def parity_check(model: SailEmbedder, onnx_path: Path, texts: list[str] | None = None) -> float:
    """Max abs difference between PyTorch and onnxruntime embeddings on ``texts``.

    Runs the texts as one padded batch and as single-row batches, so both the
    dynamic batch axis and the dynamic sequence axis are checked.
    """
    texts = texts or PARITY_TEXTS
    session = _onnx_session(onnx_path)
    model.eval()
    worst = 0.0
    for batch in [texts] + [[t] for t in texts]:
        enc = model.tokenize(batch)
        with torch.no_grad():
            ref = model(**enc).numpy()
        got = session.run([OUTPUT_NAME], {k: v.numpy() for k, v in enc.items()})[0]
        if got.shape != ref.shape:
            raise ExportParityError(f"ONNX output shape {got.shape} != PyTorch shape {ref.shape} for {len(batch)} texts")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_text_onnx(model: SailEmbedder, out_dir: str | Path, opset: int = 18, tolerance: float = PARITY_TOLERANCE) -> dict:
    """Export ``model`` to ``out_dir/model.onnx`` and check parity with onnxruntime.

    Returns ``{"onnx_path", "max_abs_diff", "parity_ok", "export_seconds", "out_dir"}``.
    Raises :class:`ExportParityError` when the max abs difference exceeds ``tolerance``
    (the files stay on disk for inspection, but ``export.json`` records the failure).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_FILE
    was_training = model.training
    model.eval()
    # A batch of two rows of different lengths, so tracing keeps both axes symbolic.
    example = model.tokenize(["a short one", "a slightly longer example sentence for tracing"])
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            OUTPUT_NAME: {0: "batch"}}
    started = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about python-side shape checks
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(onnx_path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    export_seconds = time.perf_counter() - started
    model.train(was_training)

    shutil.copy(model.tokenizer_file, out_dir / TOKENIZER_FILE)
    max_abs_diff = parity_check(model, onnx_path)
    parity_ok = max_abs_diff <= tolerance
    meta = {
        "format": "sail-embedding-onnx/1",
        "onnx_file": ONNX_FILE,
        "tokenizer_file": TOKENIZER_FILE,
        "inputs": INPUT_NAMES,
        "output": OUTPUT_NAME,
        "backbone": model.cfg.backbone,
        "hidden_size": model.dim,
        "max_length": model.cfg.max_length,
        "matryoshka_dims": list(model.cfg.matryoshka_dims),
        "dims": list(model.cfg.matryoshka_dims),
        "normalised": True,
        "opset": opset,
        "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "torch_version": torch.__version__,
        "max_abs_diff": max_abs_diff,
        "parity_tolerance": tolerance,
        "parity_ok": parity_ok,
    }
    (out_dir / EXPORT_META).write_text(json.dumps(meta, indent=2))
    if not parity_ok:
        raise ExportParityError(
            f"ONNX export in {out_dir} differs from PyTorch by {max_abs_diff:.3g} (tolerance {tolerance:g}); "
            "the graph is not safe to serve. Check for data-dependent control flow in the model's forward, "
            "or try another opset (export_onnx(..., opset=17))."
        )
    return {"onnx_path": str(onnx_path), "max_abs_diff": max_abs_diff, "parity_ok": parity_ok,
            "export_seconds": round(export_seconds, 3), "out_dir": str(out_dir)}

