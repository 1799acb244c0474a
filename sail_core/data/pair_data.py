"""Read what training needs from a data folder: item texts, train pairs, mined hard negatives.

Layout (see :mod:`sail_core.data.schema`): ``items.parquet``,
``pairs/<dataset>.parquet``; optional ``hard_negatives/<dataset>.parquet`` with
columns ``query_item``, ``query_text`` (one of them set) and ``negative_item``,
one row per mined negative, written by hard-negative mining (stage III). Mined
negatives must be train items (:func:`sail_core.data.splits.train_items`); the
training pool refuses any other (:class:`sail_core.train.hard_negatives.HardNegativePool`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sail_core.data import schema

HARD_NEGATIVES_DIR = "hard_negatives"


def plain_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with ``None`` for every null (``pd.NA`` cannot be tested with ``x == x``)."""
    return frame.astype(object).where(frame.notna(), None)


def load_pairs(data_dir: Path, dataset: str, split: str) -> pd.DataFrame:
    """The ``split`` rows (``train``, ``val`` or ``test``) of ``pairs/<dataset>.parquet``, index reset."""
    if split not in schema.SPLITS:
        raise ValueError(f"load_pairs: split {split!r} is not one of {list(schema.SPLITS)}")
    path = Path(data_dir) / schema.PAIRS_DIR / f"{dataset}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"pair table {path} for dataset {dataset!r} not found; the data builder writes one file per "
            "configured dataset: rebuild the data or remove the dataset from the stage/eval config"
        )
    pairs = pd.read_parquet(path)
    missing = [c for c in schema.PAIR_COLUMNS if c not in pairs.columns and c != "score"]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {list(schema.PAIR_COLUMNS)}")
    return plain_nulls(pairs[pairs["split"] == split].reset_index(drop=True))


def load_hard_negatives(data_dir: Path, dataset: str) -> pd.DataFrame:
    """Mined negatives for ``dataset``; raises with a fix when the miner has not run."""
    path = Path(data_dir) / HARD_NEGATIVES_DIR / f"{dataset}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"stage asks for hard negatives but {path} does not exist; run hard-negative mining for "
            f"{dataset!r} first, or set hard_negatives: 0 in the stage config"
        )
    return plain_nulls(pd.read_parquet(path))
