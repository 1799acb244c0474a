"""The demo data set: MovieLens-100k (from recbole) as items, interactions and pairs.

Items carry title, year and genres (as comma-separated ``tags``) and, with
``data.media``, a rendered cover, ``data.render_keyframes`` keyframes and a spoken
track of the title and genres (:mod:`sail_core.data.media`); ``ocr``, ``asr``
and ``author`` stay null.
``max_items`` keeps the most-rated items and ``max_users`` the most active
users on those items, so small slices keep the densest collaborative signal.
Items are split into train, val and test and the pairs derived with the
per-user time cutoff (:mod:`sail_core.data.splits`, :mod:`sail_core.data.pairs`);
the item split is written to ``item_splits.parquet``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from sail_core.config import DataConfig
from sail_core.data import movielens, schema
from sail_core.data.media import render_media
from sail_core.data.pairs import derive_item_splits, derive_pairs
from sail_core.data.splits import split_counts, write_item_splits
from sail_core.data.tables import write_data_dir


def _top(counts: pd.Series, n: int | None) -> set[str]:
    """The ``n`` keys with the largest counts; ties broken by numeric id, then text."""
    df = counts.rename("n").reset_index()
    key = df.columns[0]
    df["num"] = pd.to_numeric(df[key], errors="coerce")
    df = df.sort_values(["n", "num", key], ascending=[False, True, True], kind="stable")
    return set(df[key] if n is None else df[key].head(n))


def demo_tables(cfg: DataConfig, folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(items, interactions)`` in schema dtypes, sliced by ``max_items`` / ``max_users``."""
    movies = movielens.read_movies(folder)
    ratings = movielens.read_ratings(folder)
    ratings = ratings[ratings["item_id"].isin(set(movies["item_id"]))]
    item_ids = _top(ratings["item_id"].value_counts(), cfg.max_items)
    if cfg.max_items is not None and len(item_ids) < cfg.max_items:
        unrated = movies.loc[~movies["item_id"].isin(item_ids), "item_id"]
        item_ids |= set(sorted(unrated, key=lambda s: (len(s), s))[: cfg.max_items - len(item_ids)])
    movies = movies[movies["item_id"].isin(item_ids)]
    ratings = ratings[ratings["item_id"].isin(item_ids)]
    user_ids = _top(ratings["user_id"].value_counts(), cfg.max_users)
    ratings = ratings[ratings["user_id"].isin(user_ids)]

    items = pd.DataFrame({c: pd.Series(pd.NA, index=movies.index, dtype=d) for c, d in schema.ITEM_COLUMNS.items()})
    items["item_id"] = movies["item_id"]
    items["title"] = movies["title"]
    items["year"] = movies["year"]
    items["tags"] = pd.Series([", ".join(g) if g else pd.NA for g in movies["genres"]], index=movies.index, dtype="string")
    items = items.sort_values("item_id", key=lambda s: pd.to_numeric(s), kind="stable").reset_index(drop=True)
    interactions = (
        ratings[list(schema.INTERACTION_COLUMNS)]
        .sort_values(["timestamp", "user_id", "item_id"], kind="stable")
        .reset_index(drop=True)
    )
    return items, interactions


def build_demo(out: Path, cfg: DataConfig, workers: int | None = None) -> dict:
    """Build the demo data folder at ``out``; deterministic for ``cfg.seed``. Returns summary counts.

    With ``cfg.media`` it renders the media into ``out/media`` with ``workers``
    processes (default: ``cfg.media_workers``, null = the CPUs available); that needs ``espeak-ng``.
    """
    items, interactions = demo_tables(cfg)
    splits = derive_item_splits(items, interactions, cfg)
    pairs = derive_pairs(items, interactions, cfg, splits)
    if cfg.media:
        t0 = time.perf_counter()
        items = render_media(items, Path(out), cfg.seed, cfg.render_keyframes, cfg.image_size, audio=True,
                             workers=workers or cfg.media_workers)
        media_s = time.perf_counter() - t0
    summary = write_data_dir(Path(out), items, interactions, pairs)
    write_item_splits(Path(out), splits)
    summary["item_splits"] = split_counts(splits)
    summary["source"] = f"MovieLens-100k from {movielens.ml100k_dir()}"
    if cfg.media:
        summary["media"] = {
            "covers": int(items["cover_path"].notna().sum()),
            "keyframes": int(cfg.render_keyframes * items["frame_paths"].notna().sum()),
            "audio": int(items["audio_path"].notna().sum()),
            "seconds": round(media_s, 1),
        }
    return summary
