"""Image preprocessing (numpy + PIL only, no torch): decode, resize, normalise; keyframe sampling.

Both vision towers (EfficientNet-Lite0 and SigLIP) take RGB scaled to [-1, 1]
(mean 0.5, std 0.5 on [0, 1]); checked on EfficientNet-Lite0's ImageNet head,
which ranks a daisy, a temple and Grace Hopper's uniform correctly with this
normalisation and worse with the ImageNet mean/std. The Triton python backend
imports this module, so it must stay torch-free.
"""

from __future__ import annotations

import io
from os import PathLike

import numpy as np

MEAN = 0.5
STD = 0.5


def load_image(src: str | PathLike | bytes | np.ndarray, size: int) -> np.ndarray:
    """Decode (path, bytes or HxWx3 uint8 array), resize the short side, centre-crop: (3, size, size) float32."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(src, np.ndarray):
            img = Image.fromarray(src.astype(np.uint8))
        else:
            img = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
        img = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        where = "image bytes" if isinstance(src, (bytes, bytearray)) else str(src)
        raise ValueError(f"{where} is not a decodable image ({err}); send JPEG or PNG") from None
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1).copy()


def keyframe_indices(n_frames: int, k: int, train: bool = False, rng: np.random.Generator | None = None) -> list[int]:
    """Pick ``k`` of ``n_frames`` uniformly over time: the centre of each of ``k`` equal segments,
    or (``train``) a uniformly random frame inside each segment. Fewer frames than ``k``: all of them."""
    if n_frames <= 0 or k <= 0:
        return []
    if n_frames <= k:
        return list(range(n_frames))
    edges = np.linspace(0, n_frames, k + 1)
    if train:
        rng = rng or np.random.default_rng()
        picks = [int(rng.integers(int(np.ceil(a)), max(int(np.ceil(a)) + 1, int(np.ceil(b))))) for a, b in zip(edges[:-1], edges[1:])]
    else:
        picks = [int((a + b) / 2) for a, b in zip(edges[:-1], edges[1:])]
    return [min(p, n_frames - 1) for p in picks]
