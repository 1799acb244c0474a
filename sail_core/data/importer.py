"""Import a user's own tables (CSV or parquet) into the data-folder layout.

Inputs follow the README's "Data schema" section:

* ``items``: a ``.csv`` or ``.parquet`` file with the item columns
  (``item_id`` and ``title`` required; other columns optional, filled with null).
  Its media columns (``cover_path``, ``frame_paths``, ``audio_path``) name
  files relative to the items file's folder (or absolute); they are copied
  into ``out/media/`` and the paths rewritten relative to ``out``
  (:mod:`sail_core.data.media_import`). A missing media file is not an import
  error: ``sail validate`` quarantines its row with the reason.
* ``interactions``: a file with ``user_id, item_id, timestamp, rating`` (all required).
* ``pairs``: optional; a folder holding one file per dataset
  (``<dataset>.csv|.parquet``, pair columns; ``split`` required: ``train``,
  ``val`` or ``test``), or one file for a single dataset (named by its stem).
  When omitted, the item split and the pair datasets are derived from the
  interactions and items (:func:`sail_core.data.pairs.derive_item_splits`,
  :func:`sail_core.data.pairs.derive_pairs`).

The item split (train / val / test per item) is written to ``item_splits.parquet``
(:mod:`sail_core.data.splits`). With given pairs it is derived from their
``split`` column (:func:`sail_core.data.splits.splits_from_pairs`: an item is
held out exactly when no train pair touches it), and a pair whose split its
items contradict (a train pair touching a held-out item, a val pair touching a
test item, a held-out pair with no item of its split) is an import error. Given
pairs carry no timestamps: keeping their held-out targets after each user's
time cutoff is up to whoever made them.

Columns that the schema does not know are an error (the message lists them
and the allowed ones): the schema is the contract that validation and
training rely on, so unknown data is not carried along silently. Values are
cast to the schema's dtypes; a value that cannot be cast raises
:class:`~sail_core.data.cast.SchemaError` naming the file, column and row.
Referential checks (ids that exist in items) are left to ``sail validate``,
which quarantines bad rows with their reason. ``max_items``/``max_users``
slice the demo only; imported tables are kept whole (pair datasets are still
capped at ``max_pairs_per_dataset``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sail_core.config import DataConfig
from sail_core.data import schema
from sail_core.data.cast import SchemaError, cast_table
from sail_core.data.io import TABLE_SUFFIXES, read_text_table
from sail_core.data.media_import import import_media
from sail_core.data.pairs import derive_item_splits, derive_pairs
from sail_core.data.splits import check_pair_splits, split_counts, splits_from_pairs, write_item_splits
from sail_core.data.tables import write_data_dir


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise SchemaError(f"{what} file {path}: unsupported type {path.suffix!r}; use .csv or .parquet")
    return path


def _load(path: Path, what: str, columns: dict[str, str], required: list[str]) -> pd.DataFrame:
    path = _check_file(path, what)
    return cast_table(read_text_table(path), columns, str(path), required=required)


def _load_pairs(pairs: Path) -> dict[str, pd.DataFrame]:
    pairs = Path(pairs)
    if pairs.is_dir():
        files = sorted(p for p in pairs.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"pairs folder {pairs} holds no .csv/.parquet files (one per dataset)")
    else:
        files = [_check_file(pairs, "pairs")]
    out: dict[str, pd.DataFrame] = {}
    for path in files:
        if path.stem in out:
            raise SchemaError(f"dataset {path.stem!r} is given twice in {pairs}")
        df = _load(path, "pairs", schema.PAIR_COLUMNS, ["split"])
        bad = ~df["split"].isin(schema.SPLITS).fillna(False).astype(bool)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise SchemaError(
                f"{path}: column 'split': value {df['split'].iloc[row]!r} (row {row}) is not one of "
                f"{list(schema.SPLITS)}; {int(bad.sum())} bad row(s)"
            )
        out[path.stem] = df
    return out


def _given_splits(items: pd.DataFrame, pairs: dict[str, pd.DataFrame], where: Path) -> dict[str, str]:
    """The item split that given pair tables imply; a :class:`SchemaError` when a pair contradicts it."""
    splits = splits_from_pairs(items["item_id"].astype(str), pairs)
    try:
        check_pair_splits(pairs, splits)
    except ValueError as err:
        raise SchemaError(f"{where}: {err}") from None
    return splits


def import_tables(
    items: Path,
    interactions: Path,
    pairs: Path | None,
    out: Path,
    cfg: DataConfig,
) -> dict:
    """Import user tables into ``out`` (items, interactions, pairs/<dataset>.parquet).

    ``pairs=None`` derives the item split of ``cfg`` and ``copair_i2i``, ``q2i``, ``cls`` and
    ``xmodal`` from the data; given pairs imply the item split. Returns summary counts.
    """
    items_df = _load(items, "items", schema.ITEM_COLUMNS, schema.ITEM_REQUIRED)
    inter_df = _load(interactions, "interactions", schema.INTERACTION_COLUMNS, schema.INTERACTION_REQUIRED)
    # every table is read and checked before anything is written
    if pairs is None:
        splits = derive_item_splits(items_df, inter_df, cfg)
        pair_dfs = derive_pairs(items_df, inter_df, cfg, splits)
        source = "derived from interactions and items"
    else:
        pair_dfs = _load_pairs(pairs)
        splits = _given_splits(items_df, pair_dfs, Path(pairs))
        source = f"imported from {pairs}"
    items_df, media = import_media(items_df, Path(items).parent, Path(out))
    summary = write_data_dir(Path(out), items_df, inter_df, pair_dfs)
    write_item_splits(Path(out), splits, items_df["item_id"])
    summary["item_splits"] = split_counts({i: splits[i] for i in items_df["item_id"].astype(str)})
    summary["source"] = f"items {items}, interactions {interactions}; pairs {source}"
    summary["media"] = media
    return summary
