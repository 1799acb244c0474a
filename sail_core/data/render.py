"""Deterministic demo pictures: a cover and K keyframes drawn from an item's metadata.

The pictures carry real, learnable signal about the item's text:

* **genre -> colour and motif.** Every genre has its own colour and shape
  (Comedy: yellow circles, Horror: dark-red crosses, Sci-Fi: cyan hexagons, ...).
  The first genre paints the background; every genre stamps its motif in its
  colour, on the cover's top band and, moving over time, in the keyframes.
* **year -> tone and text.** Older films are toned towards sepia (more the
  older they are) and the cover prints the year under the title.
* **title -> text.** The cover draws the title in large letters; keyframe
  ``k`` shows the title's ``k``-th word as a subtitle.

Randomness (positions, sizes, jitter) comes only from the ``rng`` passed in,
which the caller seeds from the data seed and the item id, so a seed gives the
same pixels (and, with the same Pillow/libjpeg, the same JPEG bytes). Fonts are
matplotlib's bundled DejaVu Sans, not the system's, so text renders the same on
every machine with that matplotlib.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Look:
    """How one genre is drawn: its colour and its shape."""

    color: tuple[int, int, int]
    motif: str


# The 19 MovieLens genres (and a fallback for others): distinct colours, distinct shapes.
GENRE_LOOKS: dict[str, Look] = {
    "action": Look((220, 60, 30), "bolt"),
    "adventure": Look((230, 140, 20), "triangle"),
    "animation": Look((250, 110, 200), "star"),
    "children's": Look((120, 220, 90), "heart"),
    "comedy": Look((250, 220, 40), "circle"),
    "crime": Look((90, 90, 110), "square"),
    "documentary": Look((150, 120, 80), "stripes"),
    "drama": Look((70, 60, 170), "diamond"),
    "fantasy": Look((160, 70, 220), "moon"),
    "film-noir": Look((30, 30, 30), "ring"),
    "horror": Look((130, 0, 10), "cross"),
    "musical": Look((255, 150, 120), "wave"),
    "mystery": Look((40, 90, 80), "dots"),
    "romance": Look((230, 40, 110), "heart2"),
    "sci-fi": Look((40, 210, 230), "hexagon"),
    "thriller": Look((200, 200, 200), "arrow"),
    "war": Look((95, 120, 40), "plus"),
    "western": Look((190, 110, 50), "sun"),
    "unknown": Look((128, 128, 128), "square"),
}
FALLBACK_MOTIFS = ("circle", "square", "triangle", "diamond", "star", "hexagon", "ring", "cross")


def genre_look(genre: str) -> Look:
    """The look of ``genre`` (case-insensitive); an unknown genre gets a stable derived look."""
    key = genre.strip().lower()
    if key in GENRE_LOOKS:
        return GENRE_LOOKS[key]
    import zlib

    h = zlib.crc32(key.encode())
    color = ((h >> 16) & 255, (h >> 8) & 255, h & 255)
    return Look(color, FALLBACK_MOTIFS[h % len(FALLBACK_MOTIFS)])


@lru_cache(maxsize=1)
def font_dir() -> Path:
    """matplotlib's bundled TTF folder (DejaVu Sans lives there)."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the demo covers need matplotlib's bundled DejaVu fonts: pip install matplotlib")
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
    if not (path / "DejaVuSans-Bold.ttf").is_file():
        raise FileNotFoundError(f"DejaVuSans-Bold.ttf not found in {path}; reinstall matplotlib")
    return path


@lru_cache(maxsize=64)
def font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (bold) at ``size`` pixels, cached."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(font_dir() / name), size=max(6, int(size)))


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _shade(color, factor: float) -> tuple[int, int, int]:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of ``color``."""
    if factor <= 1:
        return tuple(int(c * factor) for c in color)
    return _mix(color, (255, 255, 255), min(1.0, factor - 1.0))


def _gradient(size: int, top, bottom) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    img = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(img, (size, size, 3))


def _tone(img: np.ndarray, year) -> np.ndarray:
    """Sepia-tone by age: none from 1990 on, up to 60% for films from the 1930s or older."""
    if year is None:
        return img
    amount = float(np.clip((1990 - int(year)) / 100.0, 0.0, 0.6))
    if amount <= 0:
        return img
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    sepia = grey[..., None] * np.array([1.07, 0.74, 0.43], np.float32)[None, None, :]
    return img * (1 - amount) + np.clip(sepia, 0, 255) * amount


def _star(cx, cy, r, points=5, inner=0.45, turn=0.0):
    pts = []
    for i in range(points * 2):
        rad = r if i % 2 == 0 else r * inner
        a = turn + math.pi * i / points - math.pi / 2
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def draw_motif(draw: ImageDraw.ImageDraw, motif: str, cx: float, cy: float, r: float, color, turn: float = 0.0) -> None:
    """Stamp ``motif`` of radius ``r`` centred at ``(cx, cy)``; ``turn`` rotates the polygonal ones."""
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, int(r / 4))
    if motif == "circle":
        draw.ellipse(box, fill=color)
    elif motif == "ring":
        draw.ellipse(box, outline=color, width=w)
    elif motif == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=45 + math.degrees(turn), fill=color)
    elif motif == "diamond":
        draw.regular_polygon((cx, cy, r), 4, rotation=math.degrees(turn), fill=color)
    elif motif == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=math.degrees(turn), fill=color)
    elif motif == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, rotation=math.degrees(turn), fill=color)
    elif motif == "star":
        draw.polygon(_star(cx, cy, r, turn=turn), fill=color)
    elif motif == "sun":
        draw.polygon(_star(cx, cy, r, points=12, inner=0.7, turn=turn), fill=color)
    elif motif in ("cross", "plus"):
        t = r / 3
        if motif == "cross":  # a tall, thin (Latin) cross
            draw.rectangle((cx - t / 2, cy - r, cx + t / 2, cy + r), fill=color)
            draw.rectangle((cx - r * 0.6, cy - r * 0.45, cx + r * 0.6, cy - r * 0.45 + t), fill=color)
        else:
            draw.rectangle((cx - t / 2, cy - r, cx + t / 2, cy + r), fill=color)
            draw.rectangle((cx - r, cy - t / 2, cx + r, cy + t / 2), fill=color)
    elif motif in ("heart", "heart2"):
        q = r / 2
        draw.ellipse((cx - r, cy - r * 0.8, cx, cy + q * 0.2), fill=color)
        draw.ellipse((cx, cy - r * 0.8, cx + r, cy + q * 0.2), fill=color)
        draw.polygon([(cx - r * 0.97, cy - q * 0.1), (cx + r * 0.97, cy - q * 0.1), (cx, cy + r)], fill=color)
        if motif == "heart2":  # romance: a heart with a white core
            draw.ellipse((cx - q * 0.4, cy - q * 0.4, cx + q * 0.4, cy + q * 0.4), fill=(255, 255, 255))
    elif motif == "moon":
        draw.ellipse(box, fill=color)
        draw.pieslice(box, 100, 260, fill=_shade(color, 0.35))
    elif motif == "bolt":
        pts = [(0.15, -1), (-0.55, 0.1), (-0.05, 0.1), (-0.2, 1), (0.6, -0.2), (0.1, -0.2), (0.35, -1)]
        draw.polygon([(cx + x * r, cy + y * r) for x, y in pts], fill=color)
    elif motif == "arrow":
        pts = [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)]
        c, s = math.cos(turn), math.sin(turn)
        draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts], fill=color)
    elif motif == "stripes":
        for k in range(-2, 3):
            x = cx + k * r / 2.5
            draw.line((x - r / 3, cy + r, x + r / 3, cy - r), fill=color, width=w)
    elif motif == "dots":
        for dx in (-0.55, 0.55):
            for dy in (-0.55, 0.55):
                draw.ellipse((cx + dx * r - r / 3, cy + dy * r - r / 3, cx + dx * r + r / 3, cy + dy * r + r / 3), fill=color)
    elif motif == "wave":
        pts = [(cx - r + 2 * r * i / 16, cy + r * 0.5 * math.sin(turn + i * math.pi / 4)) for i in range(17)]
        draw.line(pts, fill=color, width=w + 1)
    else:
        raise ValueError(f"unknown motif {motif!r}")


def _text_fit(draw, text: str, max_w: float, size: int, min_size: int) -> ImageFont.FreeTypeFont:
    while size > min_size and draw.textlength(text, font=font(size)) > max_w:
        size -= 2
    return font(size)


def _outlined(draw, xy, text, fnt, fill=(255, 255, 255), anchor="mm") -> None:
    draw.text(xy, text, font=fnt, fill=fill, anchor=anchor, stroke_width=max(1, fnt.size // 12), stroke_fill=(0, 0, 0))


def render_cover(title: str, year, genres: list[str], size: int, rng: np.random.Generator) -> Image.Image:
    """The cover: genre-coloured gradient, genre band, big motif, the title, the year."""
    looks = [genre_look(g) for g in genres] or [GENRE_LOOKS["unknown"]]
    main = looks[0]
    second = looks[1].color if len(looks) > 1 else _shade(main.color, 0.3)
    base = _tone(_gradient(size, _shade(main.color, 1.25), _shade(second, 0.55)), year)
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    s = size / 224.0
    # the main genre's motif, large, behind the title
    r = size * rng.uniform(0.22, 0.3)
    draw_motif(draw, main.motif, size * rng.uniform(0.4, 0.6), size * rng.uniform(0.45, 0.6), r,
               _shade(main.color, 0.6), turn=rng.uniform(0, math.pi / 6))
    # genre band: one motif per genre, in its colour, on a dark strip
    band = int(34 * s)
    draw.rectangle((0, 0, size, band), fill=(20, 20, 24))
    n = min(len(looks), 5)
    for i, look in enumerate(looks[:n]):
        cx = size * (i + 0.5) / n
        draw_motif(draw, look.motif, cx, band / 2, band * 0.38, look.color)
    # the title, wrapped, as large as fits
    lines = textwrap.wrap(str(title), width=max(8, int(14 + rng.integers(0, 3)))) or [str(title)]
    lines = lines[:4]
    fsize = int(min(30 * s, 0.85 * size / max(len(max(lines, key=len)) * 0.6, 1)))
    fnt = min((_text_fit(draw, line, size * 0.9, max(fsize, int(12 * s)), int(9 * s)) for line in lines), key=lambda f: f.size)
    line_h = fnt.size * 1.15
    y0 = size * 0.55 - line_h * (len(lines) - 1) / 2 + rng.uniform(-4, 4) * s
    for i, line in enumerate(lines):
        _outlined(draw, (size / 2, y0 + i * line_h), line, fnt)
    if year is not None:
        _outlined(draw, (size / 2, size - 16 * s), str(int(year)), font(int(18 * s)), fill=(255, 240, 200))
    return img


def render_keyframes(title: str, genres: list[str], k: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """``k`` frames of a short "scene": genre motifs moving over a genre-coloured landscape, subtitled."""
    if k <= 0:
        return []
    looks = [genre_look(g) for g in genres] or [GENRE_LOOKS["unknown"]]
    main = looks[0]
    ground = looks[1].color if len(looks) > 1 else _shade(main.color, 0.45)
    horizon = size * rng.uniform(0.55, 0.7)
    sky = _gradient(size, _shade(main.color, 0.8), _shade(main.color, 1.4)).copy()
    sky[int(horizon):] = np.asarray(_shade(ground, 0.7), np.float32)
    background = Image.fromarray(sky.astype(np.uint8), "RGB")
    # actors: each genre's motif, 2-3 copies, each with a start point and a velocity
    actors = []
    for look in looks[:4]:
        for _ in range(int(rng.integers(2, 4))):
            actors.append(
                (look, rng.uniform(0.1, 0.9, 2) * size, rng.uniform(-0.5, 0.5, 2) * size,
                 size * rng.uniform(0.07, 0.13), rng.uniform(0, 2 * math.pi))
            )
    words = [w for w in str(title).replace(",", " ").split() if w] or [str(title)]
    s = size / 224.0
    frames = []
    for i in range(k):
        t = i / max(1, k - 1)
        img = background.copy()
        draw = ImageDraw.Draw(img)
        for look, start, vel, r, spin in actors:
            x, y = (start + vel * t) % size
            draw_motif(draw, look.motif, x, y, r * (1 + 0.3 * math.sin(spin + 3 * t)), look.color, turn=spin + 2 * t)
        word = words[i % len(words)]
        draw.rectangle((0, size - 30 * s, size, size), fill=(0, 0, 0))
        draw.text((size / 2, size - 15 * s), word, font=_text_fit(draw, word, size * 0.9, int(20 * s), int(8 * s)),
                  fill=(255, 255, 255), anchor="mm")
        frames.append(img)
    return frames
