"""Write a complete data folder: items, interactions and pair datasets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sail_core.data import schema
from sail_core.data.io import write_table


def write_data_dir(
    out: Path,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    pairs: dict[str, pd.DataFrame],
) -> dict:
    """Write ``out/items.parquet``, ``out/interactions.parquet``, ``out/pairs/<name>.parquet``.

    Stale pair files of datasets not in ``pairs`` are removed so that the folder
    holds exactly this build. Returns summary counts.
    """
    out = Path(out)
    write_table(items[list(schema.ITEM_COLUMNS)], out / f"{schema.ITEMS}.parquet")
    write_table(interactions[list(schema.INTERACTION_COLUMNS)], out / f"{schema.INTERACTIONS}.parquet")
    pairs_dir = out / schema.PAIRS_DIR
    pairs_dir.mkdir(parents=True, exist_ok=True)
    for stale in pairs_dir.iterdir():
        if stale.is_file() and stale.suffix in (".parquet", ".csv") and stale.stem not in pairs:
            stale.unlink()
    summary_pairs = {}
    for name, df in pairs.items():
        write_table(df[list(schema.PAIR_COLUMNS)], pairs_dir / f"{name}.parquet")
        counts = df["split"].value_counts()
        summary_pairs[name] = {s: int(counts.get(s, 0)) for s in schema.SPLITS}
    summary = {
        "out": str(out),
        "items": int(len(items)),
        "interactions": int(len(interactions)),
        "users": int(interactions["user_id"].nunique()),
        "pairs": summary_pairs,
    }
    return summary
