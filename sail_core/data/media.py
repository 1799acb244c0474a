"""Media files of a data folder: their layout, and rendering the demo's media in parallel.

Layout (paths in the items table are relative to the data folder)::

    media/covers/<item_id>.jpg        cover_path
    media/frames/<item_id>_<k>.jpg    frame_paths, k = 0..K-1 joined by "|" in time order
    media/audio/<item_id>.wav         audio_path

:func:`render_media` draws every item's cover and keyframes
(:mod:`sail_core.data.render`) and speaks its title and genres
(:mod:`sail_core.data.speech`) with a process pool, showing progress. Each
item's randomness is seeded by ``(seed, crc32(item_id))``, so an item's media
do not depend on which other items are in the slice nor on the worker that drew them.
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
import multiprocessing
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

MEDIA_DIR = "media"
COVERS, FRAMES, AUDIO = "covers", "frames", "audio"
MEDIA_COLUMNS = ("cover_path", "frame_paths", "audio_path")
FRAME_SEP = "|"
JPEG_QUALITY = 90

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def file_stem(item_id: str) -> str:
    """A file-name-safe stem for ``item_id``: the id itself when safe, else a sanitised form plus a hash."""
    item_id = str(item_id)
    if _SAFE.match(item_id):
        return item_id
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._")[:60] or "item"
    return f"{clean}-{zlib.crc32(item_id.encode()):08x}"


def cover_rel(item_id: str, suffix: str = ".jpg") -> str:
    return f"{MEDIA_DIR}/{COVERS}/{file_stem(item_id)}{suffix}"


def frame_rel(item_id: str, k: int, suffix: str = ".jpg") -> str:
    return f"{MEDIA_DIR}/{FRAMES}/{file_stem(item_id)}_{k}{suffix}"


def audio_rel(item_id: str, suffix: str = ".wav") -> str:
    return f"{MEDIA_DIR}/{AUDIO}/{file_stem(item_id)}{suffix}"


def split_frames(value) -> list[str]:
    """``"a.jpg|b.jpg"`` -> ``["a.jpg", "b.jpg"]``; null or blank -> ``[]``."""
    if value is None or not bool(pd.notna(value)):
        return []
    return [p.strip() for p in str(value).split(FRAME_SEP) if p.strip()]


def join_frames(paths: list[str]) -> str | None:
    """Inverse of :func:`split_frames` (``[]`` -> ``None``)."""
    return FRAME_SEP.join(paths) if paths else None


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """The generator that draws one item's media: fixed by the data seed and the item id only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(item_id).encode())])


@dataclass(frozen=True)
class _Job:
    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


def _render_one(job: _Job, out: str, seed: int, keyframes: int, size: int, audio: bool) -> tuple[str, str | None, str | None]:
    """Draw and speak one item into ``out``; returns its relative (cover, frames, audio) paths."""
    from sail_core.data import render, speech

    rng = item_rng(seed, job.item_id)
    root = Path(out)
    cover = cover_rel(job.item_id)
    render.render_cover(job.title, job.year, list(job.genres), size, rng).save(
        root / cover, "JPEG", quality=JPEG_QUALITY)
    frames = []
    for k, img in enumerate(render.render_keyframes(job.title, list(job.genres), keyframes, size, rng)):
        frames.append(frame_rel(job.item_id, k))
        img.save(root / frames[-1], "JPEG", quality=JPEG_QUALITY)
    wav = None
    if audio:
        wav = audio_rel(job.item_id)
        voice = speech.pick_voice(rng)
        speech.speak_to_wav(speech.spoken_text(job.title, list(job.genres)), voice, root / wav)
    return cover, join_frames(frames), wav


def _render_chunk(jobs: list[_Job], out: str, seed: int, keyframes: int, size: int, audio: bool):
    return [_render_one(j, out, seed, keyframes, size, audio) for j in jobs]


def default_workers() -> int:
    """CPUs this process may use: the worker count when ``data.media_workers`` is null."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _jobs(items: pd.DataFrame) -> list[_Job]:
    from sail_core.data.pairs import split_tags

    jobs = []
    for row in items.itertuples(index=False):
        year = int(row.year) if bool(pd.notna(row.year)) else None
        jobs.append(_Job(str(row.item_id), str(row.title), year, tuple(split_tags(row.tags))))
    return jobs


def render_media(
    items: pd.DataFrame,
    out: Path,
    seed: int,
    keyframes: int,
    size: int,
    audio: bool = True,
    workers: int | None = None,
) -> pd.DataFrame:
    """Render every item's media under ``out/media`` and return ``items`` with the media columns set.

    Stale files under ``out/media`` (items no longer in the slice) are removed
    first. ``audio=True`` needs ``espeak-ng`` (checked before any work starts).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sail_core.data import speech

    if audio:
        speech.espeak_path()  # fail fast, with the install hint
    out = Path(out)
    media = out / MEDIA_DIR
    if media.exists():
        shutil.rmtree(media)
    for sub in (COVERS, FRAMES, AUDIO):
        (media / sub).mkdir(parents=True, exist_ok=True)
    jobs = _jobs(items)
    workers = max(1, min(workers or default_workers(), len(jobs) // 8 or 1))
    if multiprocessing.current_process().daemon:  # a daemon process may not start children
        workers = 1
    chunk = max(1, min(32, len(jobs) // (workers * 8) or 1))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    args = (str(out), int(seed), int(keyframes), int(size), bool(audio))
    results: list[tuple[str, str | None, str | None]] = []
    columns = [TextColumn("[bold]media"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("render", total=len(jobs))
        if workers == 1:
            for c in chunks:
                results += _render_chunk(c, *args)
                progress.advance(task, len(c))
        else:
            # spawn, not fork: the caller may hold threads (torch, Airflow) that fork would copy half-way
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for c, done in zip(chunks, pool.map(_render_chunk, chunks, *[[a] * len(chunks) for a in args])):
                    results += done
                    progress.advance(task, len(c))
    items = items.copy()
    items["cover_path"] = pd.Series([r[0] for r in results], index=items.index, dtype="string")
    items["frame_paths"] = pd.Series([r[1] for r in results], index=items.index, dtype="string")
    items["audio_path"] = pd.Series([r[2] for r in results], index=items.index, dtype="string")
    if not keyframes:
        items["frame_paths"] = pd.Series(pd.NA, index=items.index, dtype="string")
    return items
