"""Shared by tests/test_export_onnx.py and tests/test_serving_triton.py: real exports of the demo model, built once per
pytest process (they take seconds each), and the PyTorch reference for raw-media rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from sail_core.config import load_config
from sail_core.model.assembly import OmniSample, collate

ITEM = "Represent this movie for retrieval."
QUERY = "Represent this search query to find matching movies."
_CACHE: dict[int, tuple[Path, object, dict]] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="sail-test-exports-"))


def nudged_model(variant: int):
    """The demo model (real MiniLM + EfficientNet-Lite0) with its new parts nudged by ``variant``'s seed,
    so that the perceiver, the audio adapter and the media types matter as after training."""
    from sail_core.model.omni import build_model

    torch.manual_seed(variant)
    model = build_model(load_config(profile="demo").model).eval()
    with torch.no_grad():
        for p in [*model.perceiver.parameters(), *model.audio.parameters(), model.media_type]:
            p.add_(0.02 * torch.randn(p.shape))
        if variant > 1:  # a visibly different text path too
            for p in model.backbone.model.encoder.layer[-1].parameters():
                p.add_(0.05 * torch.randn(p.shape))
    return model


def cached_export(variant: int = 1) -> tuple[Path, object, dict]:
    """``(export folder, model, export result)`` for ``variant``; exported once per process."""
    if variant not in _CACHE:
        from sail_core.export.onnx import export_onnx

        model = nudged_model(variant)
        out = _ROOT / f"v{variant}"
        _CACHE[variant] = (out, model, export_onnx(model, out, datasets=load_config(profile="demo").datasets))
    return _CACHE[variant]


def torch_embed(model, texts, images, frames, audios, instructions, dim=None) -> np.ndarray:
    """PyTorch embeddings of raw rows (image/WAV bytes), preprocessed as serving does."""
    from sail_core.model.pooling import matryoshka
    from sail_core.preprocess.audio import SpeechEmbedder, read_wav
    from sail_core.preprocess.image import keyframe_indices, load_image

    size, k = model.cfg.vision.image_size, model.cfg.inputs.keyframes
    speech = SpeechEmbedder(chunk_seconds=load_config(profile="demo").model.audio.chunk_seconds)
    rows = []
    for t, i, f, a, ins in zip(texts, images, frames, audios, instructions):
        f = [f[j] for j in keyframe_indices(len(f), k)] if f else None
        rows.append(OmniSample(
            instruction=ins, text=t,
            cover=load_image(i, size) if i else None,
            frames=np.stack([load_image(x, size) for x in f]) if f else None,
            audio=speech(*read_wav(a)) if a else None,
        ))
    z = model.embed(collate(rows, model.tokenizer, vision="pixels"))
    return (matryoshka(z, dim) if dim else z).numpy()
