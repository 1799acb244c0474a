"""ONNX export entry point: the omni-modal embedder (issue 3) or the text embedder (issue 2).

``export_onnx(model, out_dir, ...)`` dispatches on the model type:

- :class:`sail_core.model.omni.OmniEmbedder` -> :func:`sail_core.export.omni.export_omni`:
  ``model.onnx`` (encoder on precomputed frozen features), ``vision_encoder.onnx``,
  the speech ONNX models, ``tokenizer.json``, ``export.json`` (format ``sail-omni-onnx/1``),
  with a parity check per modality combination;
- :class:`sail_core.model.embedder.SailEmbedder` -> :func:`sail_core.export.text.export_text_onnx`:
  the text-only graph (format ``sail-embedding-onnx/1``).

Both raise :class:`ExportParityError` when ONNX and PyTorch disagree, and the
Triton backend serves both formats (``serving/backend/model.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from sail_core.export.common import EXPORT_META, ONNX_FILE, PARITY_TOLERANCE, TOKENIZER_FILE, ExportParityError

__all__ = ["ExportParityError", "export_onnx", "read_export_meta"]


def export_onnx(model, out_dir: str | Path, opset: int = 18, tolerance: float = PARITY_TOLERANCE,
                datasets: dict | None = None) -> dict:
    """Export ``model`` to ``out_dir`` and check parity with PyTorch; returns the figures (see the exporters).

    ``datasets`` (``cfg.datasets``, omni only) gives the per-task instructions
    the server wraps inputs in; default: the current ``params.yaml``'s.
    Always present in the result: ``onnx_path``, ``max_abs_diff``, ``parity_ok``,
    ``export_seconds``, ``out_dir``; omni adds ``parity`` (per combination).
    """
    from sail_core.model.embedder import SailEmbedder

    if isinstance(model, SailEmbedder):
        from sail_core.export.text import export_text_onnx

        return export_text_onnx(model, out_dir, opset=opset, tolerance=tolerance)
    from sail_core.export.omni import export_omni

    return export_omni(model, out_dir, datasets=datasets, opset=opset, tolerance=tolerance)


def read_export_meta(onnx_dir: str | Path) -> dict:
    """The ``export.json`` of an export folder, with a clear error if it is not one."""
    onnx_dir = Path(onnx_dir)
    meta = onnx_dir / EXPORT_META
    missing = [n for n in (ONNX_FILE, TOKENIZER_FILE, EXPORT_META) if not (onnx_dir / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{onnx_dir} is not an ONNX export folder (missing {', '.join(missing)}); run `sail export` first"
        )
    data = json.loads(meta.read_text())
    missing = [n for n in data.get("files", []) if not (onnx_dir / n).exists()]
    if missing:
        raise FileNotFoundError(f"{onnx_dir} is an incomplete ONNX export (missing {', '.join(missing)}); "
                                "run `sail export` again")
    return data
