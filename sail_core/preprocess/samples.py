"""Deterministic synthetic inputs for parity and smoke checks (numpy + Pillow + wave; no torch).

The export's parity check and the promotion smoke check send these through
the real preprocessing (image decode/resize, WAV decode/resample), so the
media are real files: PNG and JPEG bytes of different aspect ratios, and
16-bit PCM WAV bytes at a rate that needs resampling.
"""

from __future__ import annotations

import io
import wave

import numpy as np

TEXTS = [
    "Toy Story (1995) | Animation, Children's, Comedy",
    "a quiet drama about a lighthouse keeper and the letters he never sends, set on a small island in "
    "winter, where the ferry stops running in November and the radio only plays the shipping forecast",
    "Amélie (2001)",
    "Fargo (1996) | Crime, Drama, Thriller",
]


def image_bytes(seed: int, size: tuple[int, int] = (160, 120), fmt: str = "PNG") -> bytes:
    """An RGB picture (colour gradient, a few filled shapes) encoded as PNG or JPEG."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.uniform(0, 255, (2, 3))
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    grad = base[0] * (1 - t) + base[1] * t
    img = Image.fromarray(np.broadcast_to(grad, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        box = (x0, y0, x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def wav_bytes(seed: int, seconds: float = 1.5, rate: int = 22050) -> bytes:
    """A 16-bit mono PCM WAV: a gliding tone with harmonics and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(120, 300)
    phase = 2 * np.pi * (f0 * t + rng.uniform(50, 200) * t**2)
    x = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * np.hanning(t.size) ** 0.2
    x = 0.3 * x / np.abs(x).max() + 0.01 * rng.normal(size=t.size)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()
