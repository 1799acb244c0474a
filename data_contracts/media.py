"""Media checks for the items contract, and the media copy of the clean output.

Great Expectations validates table values, not files, so the file checks run
first and their outcome becomes derived columns of the items frame, one per
media column (:data:`DERIVED`): null when the row's files are fine, else the
reason, e.g. ``"cover media/covers/7.jpg does not decode: cannot identify
image file"``. The items suite expects these columns to be null, so a row with
a missing or corrupt file is quarantined with that reason (and the pairs and
interactions that point at it follow as dangling). The derived columns never
reach the clean output or the quarantine table.

A file is fine when it exists inside the data folder (after following links: a
symlink out of the folder is refused) and decodes: an image declares at most
:data:`MAX_PIXELS` pixels in its header (checked before any pixel is decoded, so a
decompression bomb costs nothing), passes Pillow's ``verify()`` and then loads; an
audio file is a WAV that :func:`sail_core.preprocess.audio.read_wav` reads with more
than 0 samples.
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from sail_core.data.media import MEDIA_COLUMNS, MEDIA_DIR, default_workers, split_frames

# derived check column -> the media column it checks
DERIVED = {"_cover_error": "cover_path", "_frames_error": "frame_paths", "_audio_error": "audio_path"}
_LABEL = {"cover_path": "cover", "frame_paths": "keyframe", "audio_path": "audio"}
MAX_PIXELS = 40_000_000  # a cover or keyframe is a few hundred pixels wide; 40 MP is already absurd


def _short_error(err: Exception, path: Path) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file"
    text = str(err).replace(str(path), "").replace("''", "").strip(" :")
    return text or type(err).__name__


def image_error(path: Path) -> str | None:
    """None when ``path`` is a decodable image, else why not (without the path)."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only
            if img.width * img.height > MAX_PIXELS:
                return (f"declares {img.width} x {img.height} = {img.width * img.height:,} pixels, more than "
                        f"the limit of {MAX_PIXELS:,} (a decompression bomb or a wrong file); resize it")
            img.verify()
        with Image.open(path) as img:  # verify() leaves the image unusable; load it for real
            img.load()
            if img.width < 1 or img.height < 1:
                return "has no pixels"
    except Image.DecompressionBombError as err:  # Pillow refuses at open() above 2x its own limit
        return f"declares more than the limit of {MAX_PIXELS:,} pixels ({err}); resize it"
    except Exception as err:  # PIL raises many types for broken files
        return f"does not decode: {_short_error(err, path)}"
    return None


def audio_error(path: Path) -> str | None:
    """None when ``path`` is a WAV with samples, else why not (without the path)."""
    from sail_core.preprocess.audio import read_wav

    try:
        x, rate = read_wav(path)
    except Exception as err:
        detail = re.search(r"\((.*)\)", str(err))
        why = detail.group(1) if detail else _short_error(err, path)
        return f"does not decode as a PCM WAV: {why or 'the file ends early (truncated or empty)'}"
    if x.size == 0 or rate <= 0:
        return "has no samples"
    return None


def _file_error(root: Path, rel: str, column: str) -> str | None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        return ("is not inside the data folder: media paths must be relative to it, without '..' "
                "(`sail data import` copies media in)")
    path = root / p
    if not path.is_file():
        return "is missing"
    if not path.resolve().is_relative_to(root.resolve()):
        return (f"is a link to {path.resolve()}, outside the data folder: copy the file in instead "
                "(`sail data import` copies media in)")
    return audio_error(path) if column == "audio_path" else image_error(path)


def _row_errors(root: Path, values: tuple) -> tuple[str | None, ...]:
    out = []
    for column, value in zip(MEDIA_COLUMNS, values):
        if not isinstance(value, str):  # null, or a wrong type that the type expectation reports
            out.append(None)
            continue
        paths = split_frames(value) if column == "frame_paths" else ([value.strip()] if value.strip() else [])
        error = None
        for k, rel in enumerate(paths):
            why = _file_error(root, rel, column)
            if why:
                label = f"keyframe {k}" if column == "frame_paths" else _LABEL[column]
                error = f"{label} {rel} {why}"
                break
        out.append(error)
    return tuple(out)


def media_errors(df: pd.DataFrame, root: Path, workers: int | None = None) -> pd.DataFrame:
    """The derived check columns for ``df`` (items as stored), files resolved against ``root``."""
    root = Path(root)
    cols = [df[c] if c in df.columns else pd.Series(None, index=df.index, dtype=object) for c in MEDIA_COLUMNS]
    rows = [tuple(v if isinstance(v, str) else None for v in vals) for vals in zip(*(c.astype(object) for c in cols))]
    workers = max(1, min(workers or default_workers(), 8))
    if workers > 1 and len(rows) > 64:
        with ThreadPoolExecutor(workers) as pool:  # Pillow and file reads release the GIL
            errors = list(pool.map(lambda r: _row_errors(root, r), rows, chunksize=32))
    else:
        errors = [_row_errors(root, r) for r in rows]
    out = pd.DataFrame(errors, index=df.index, columns=list(DERIVED), dtype=object) if errors else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in DERIVED}, index=df.index)
    return out.astype(object).where(out.notna(), None)


def referenced_files(items: pd.DataFrame) -> list[str]:
    """Every relative media path the items name, in order, without repeats."""
    seen: dict[str, None] = {}
    for column in MEDIA_COLUMNS:
        if column in items.columns:
            for value in items[column].dropna():
                for rel in split_frames(value) if column == "frame_paths" else [str(value).strip()]:
                    if rel:
                        seen.setdefault(rel)
    return list(seen)


def _link_or_copy(src: Path, dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
        return "linked"
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dest)
        return "copied"


def publish_media(items: pd.DataFrame, src: Path, out: Path) -> dict:
    """Make ``out/media`` hold exactly the media of ``items`` (the clean rows), at the same relative paths.

    Files are hard-linked from ``src`` when possible, else copied. Returns counts.
    """
    src, out = Path(src), Path(out)
    final = out / MEDIA_DIR
    if final.exists():
        shutil.rmtree(final)
    counts = {"files": 0, "linked": 0, "copied": 0}
    for rel in referenced_files(items):
        how = _link_or_copy(src / rel, out / rel)
        counts["files"] += 1
        counts[how] += 1
    return counts
