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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than allowed; raised before any pixel is decoded."""

    def __init__(self, width: int, height: int, limit: int):
        self.width, self.height, self.limit = width, height, limit
        super().__init__(f"the image declares {width} x {height} = {width * height:,} pixels, "
                         f"above the limit of {limit:,}")


def _open_header(src: str | PathLike | bytes, max_pixels: int | None):
    """The image opened lazily (PIL parses the header; no pixel is decoded until ``load``).

    With ``max_pixels``, PNG and JPEG bytes are opened by their PIL plugin class, which skips
    PIL's own decompression-bomb check: that check refuses above about 179 megapixels without
    naming the size, and only warns below it, so our limit must come first and name the size.
    Other formats, and every call without ``max_pixels``, go through ``Image.open`` and its check.
    """
    from PIL import Image, JpegImagePlugin, PngImagePlugin

    if max_pixels is not None and isinstance(src, (bytes, bytearray)):
        head = bytes(src[:8])
        if head.startswith(PNG_SIGNATURE):
            return PngImagePlugin.PngImageFile(io.BytesIO(src))
        if head.startswith(JPEG_SIGNATURE):
            return JpegImagePlugin.JpegImageFile(io.BytesIO(src))
    return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)


def load_image(src: str | PathLike | bytes | np.ndarray, size: int, max_pixels: int | None = None) -> np.ndarray:
    """Decode (path, bytes or HxWx3 uint8 array), resize the short side, centre-crop: (3, size, size) float32.

    ``max_pixels``: refuse (:class:`ImageTooLarge`) an image whose header declares more
    pixels, before decoding any of them (a 20,000 x 20,000 PNG of a few bytes, a PNG bomb).
    """
    from PIL import Image, UnidentifiedImageError

    where = "image bytes" if isinstance(src, (bytes, bytearray)) else str(src)
    try:
        if isinstance(src, np.ndarray):
            img = Image.fromarray(src.astype(np.uint8))
        else:
            img = _open_header(src, max_pixels)
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLarge(w, h, max_pixels)
        img = img.convert("RGB")
    except Image.DecompressionBombError as err:
        raise ValueError(f"{where} is refused as a possible decompression bomb ({err}); send a smaller image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
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
