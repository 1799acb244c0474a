"""Find and read the tables of a data folder for validation.

Tables are read as stored, so that the contracts see the file's real column
types. A CSV has no types: its numeric schema columns are parsed leniently
(values that do not parse stay text), so the type expectation points at the
offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sail_core.data import schema
from sail_core.data.cast import lenient_column
from sail_core.data.io import find_table, pair_files, read_raw, read_text_table

COLUMNS = {"items": schema.ITEM_COLUMNS, "interactions": schema.INTERACTION_COLUMNS,
           "item_splits": schema.ITEM_SPLIT_COLUMNS, "pairs": schema.PAIR_COLUMNS}


@dataclass(frozen=True)
class TableSource:
    """One table to validate: ``name`` (``items``, ``interactions``, ``item_splits``, ``pairs/<dataset>``), suite and file."""

    name: str
    suite: str
    path: Path

    @property
    def columns(self) -> dict[str, str]:
        return COLUMNS[self.suite]


def _item_splits_table(src: Path) -> Path:
    try:
        return find_table(src, schema.ITEM_SPLITS)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{src / (schema.ITEM_SPLITS + '.parquet')} not found: the data folder records no item split (train/val/test "
            "per item), which training and evaluation need. Rebuild it with `sail data demo` or `sail data import`"
        ) from None


def discover(src: Path) -> list[TableSource]:
    """Items first (the others are checked against its ids), then interactions, the item split, each pairs file."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"data folder {src} does not exist; build it with `sail data demo --out {src}`")
    tables = [
        TableSource(schema.ITEMS, "items", find_table(src, schema.ITEMS)),
        TableSource(schema.INTERACTIONS, "interactions", find_table(src, schema.INTERACTIONS)),
        TableSource(schema.ITEM_SPLITS, "item_splits", _item_splits_table(src)),
    ]
    for dataset, path in pair_files(src).items():
        tables.append(TableSource(f"{schema.PAIRS_DIR}/{dataset}", "pairs", path))
    return tables


def read_for_validation(table: TableSource) -> pd.DataFrame:
    """The table as stored (parquet) or as lenient-typed text (CSV), with a 0..n-1 index."""
    if table.path.suffix.lower() == ".csv":
        df = read_text_table(table.path)
        for column, dtype in table.columns.items():
            if column in df.columns:
                df[column] = lenient_column(df[column], dtype)
    else:
        df = read_raw(table.path)
    return df.reset_index(drop=True)
