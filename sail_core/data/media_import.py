"""Bring a user's media files into a data folder, for ``sail data import``.

The items file names its media in ``cover_path``, ``frame_paths`` (``|``-joined,
in time order) and ``audio_path``: paths relative to the items file's folder,
or absolute. Each file that exists is copied to the data folder's standard
place (``media/covers/<id><ext>``, ``media/frames/<id>_<k><ext>``,
``media/audio/<id><ext>``; :mod:`sail_core.data.media`) and its path is
rewritten relative to the data folder. A file that does not exist is not an
import error: its path is kept as written, and the data contracts quarantine
the row with the reason ("cover photos/7.jpg is missing").

The new ``media/`` folder is assembled beside the old one and swapped in at
the end, so importing into the folder that holds the sources is safe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from sail_core.data.media import MEDIA_COLUMNS, MEDIA_DIR, audio_rel, cover_rel, frame_rel, join_frames, split_frames


def _one(value) -> list[str]:
    if value is None or not bool(pd.notna(value)) or not str(value).strip():
        return []
    return [str(value).strip()]


def import_media(items: pd.DataFrame, base: Path, out: Path) -> tuple[pd.DataFrame, dict]:
    """Copy the media that ``items`` names (relative to ``base``) into ``out/media``; rewrite the paths.

    Returns ``(items with rewritten media columns, summary)``; the summary
    counts the copied files and lists (up to 20) the missing ones.
    """
    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{MEDIA_DIR}.import-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    items = items.copy()
    used: set[str] = set()
    copied, missing = 0, []
    columns = {c: [] for c in MEDIA_COLUMNS}
    try:
        for row_no, row in enumerate(items.itertuples(index=False)):
            item_id = str(row.item_id)
            for col in MEDIA_COLUMNS:
                value = getattr(row, col)
                given = split_frames(value) if col == "frame_paths" else _one(value)
                rewritten = []
                for k, rel in enumerate(given):
                    src = Path(rel) if Path(rel).is_absolute() else base / rel
                    if not src.is_file():
                        missing.append(f"{col} {rel} (row {row_no})")
                        rewritten.append(rel)
                        continue
                    suffix = src.suffix.lower()
                    dest = {"cover_path": lambda: cover_rel(item_id, suffix),
                            "frame_paths": lambda: frame_rel(item_id, k, suffix),
                            "audio_path": lambda: audio_rel(item_id, suffix)}[col]()
                    if dest in used:  # a duplicate item id (the contracts quarantine both rows)
                        dest = f"{dest[: -len(suffix) or None]}-r{row_no}{suffix}"
                    used.add(dest)
                    target = staging / Path(dest).relative_to(MEDIA_DIR)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)
                    copied += 1
                    rewritten.append(dest)
                columns[col].append(join_frames(rewritten) if col == "frame_paths" else (rewritten[0] if rewritten else None))
        final = out / MEDIA_DIR
        if final.exists():
            shutil.rmtree(final)
        if staging.exists():
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    for col in MEDIA_COLUMNS:
        items[col] = pd.Series(columns[col], index=items.index, dtype="string")
    return items, {"copied": copied, "missing": len(missing), "missing_first": missing[:20]}
