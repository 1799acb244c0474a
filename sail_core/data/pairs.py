"""Derive the four pair datasets from items and interactions.

* ``copair_i2i`` (item -> item): items that one user rated positively
  (``rating >= positive_rating``) one after the other, within
  ``copair_window_days``. Pairs are counted over users (``score`` = number of
  users who co-rated them) and the most frequent are kept.
* ``q2i`` (query text -> item): search queries built from genres, year and a
  title keyword (:mod:`sail_core.data.queries`), never the literal title.
* ``cls`` (item -> label text): one row per (item, tag); the target is the tag.
* ``xmodal`` (item -> the same item): one self-pair per item. Its patterns
  (``image->text``, ``frames->text``, ``audio->text``) pair an item's media
  with its own text; held-out items give the cross-modal test pairs.

Every dataset is split by item (:mod:`sail_core.data.splits`) and capped at
``max_pairs_per_dataset`` rows by a seeded sample (copair: by frequency).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sail_core.config import DataConfig
from sail_core.data import schema
from sail_core.data.queries import pick_queries
from sail_core.data.splits import assign_split, holdout_items

DATASETS = ("copair_i2i", "q2i", "cls", "xmodal")
QUERIES_PER_ITEM = 2
_DAY_S = 86_400


def split_tags(tags) -> list[str]:
    """``"Action, Comedy"`` -> ``["Action", "Comedy"]`` (null -> ``[]``)."""
    if tags is None or not bool(pd.notna(tags)):
        return []
    return [t.strip() for t in str(tags).split(",") if t.strip()]


def _frame(cols: dict) -> pd.DataFrame:
    n = len(next(iter(cols.values()))) if cols else 0
    out = {}
    for name, dtype in schema.PAIR_COLUMNS.items():
        values = cols.get(name)
        out[name] = pd.Series(pd.NA if values is None else values, index=range(n), dtype=dtype)
    return pd.DataFrame(out)


def _sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(df) <= n:
        return df
    keep = np.sort(rng.choice(len(df), size=n, replace=False))
    return df.iloc[keep]


def copair_pairs(interactions: pd.DataFrame, item_ids: set[str], cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Consecutive positive items in each user's time-ordered history, within the window."""
    keep = (interactions["rating"] >= cfg.positive_rating).fillna(False).to_numpy(dtype=bool)
    keep &= interactions["item_id"].isin(item_ids).to_numpy(dtype=bool)
    pos = pd.DataFrame(
        {
            "user_id": interactions["user_id"].to_numpy(dtype=object)[keep],
            "item_id": interactions["item_id"].to_numpy(dtype=object)[keep],
            "timestamp": interactions["timestamp"].to_numpy(dtype="float64", na_value=np.nan)[keep],
        }
    ).dropna()
    pos = pos.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    user = pos["user_id"].to_numpy()
    item = pos["item_id"].to_numpy()
    ts = pos["timestamp"].to_numpy()
    # consecutive events of the same user, within the window, of two different items
    ok = (user[1:] == user[:-1]) & (ts[1:] - ts[:-1] <= cfg.copair_window_days * _DAY_S) & (item[1:] != item[:-1])
    a, b = item[:-1][ok].astype(str), item[1:][ok].astype(str)
    first = a <= b
    edges = pd.DataFrame({"user_id": user[1:][ok], "lo": np.where(first, a, b), "hi": np.where(first, b, a)})
    edges = edges.drop_duplicates()
    counts = edges.groupby(["lo", "hi"], sort=True).size().rename("users").reset_index()
    counts["tie"] = rng.random(len(counts))  # seeded tie-break among equally frequent pairs
    counts = counts.sort_values(["users", "tie"], ascending=[False, True], kind="stable").head(cfg.max_pairs_per_dataset)
    flip = rng.random(len(counts)) < 0.5  # both directions appear as queries
    q = np.where(flip, counts["hi"], counts["lo"])
    t = np.where(flip, counts["lo"], counts["hi"])
    return _frame({"query_item": q, "target_item": t, "score": counts["users"].to_numpy(dtype=float)})


def q2i_pairs(items: pd.DataFrame, cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Up to :data:`QUERIES_PER_ITEM` metadata queries per item."""
    q, t = [], []
    for row in items.sort_values("item_id").itertuples(index=False):
        for text in pick_queries(row.title, row.year, split_tags(row.tags), QUERIES_PER_ITEM, rng):
            q.append(text)
            t.append(row.item_id)
    return _sample(_frame({"query_text": q, "target_item": t}), cfg.max_pairs_per_dataset, rng)


def cls_pairs(items: pd.DataFrame, cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One row per (item, tag): the item is the query, the tag the target text."""
    q, t = [], []
    for row in items.sort_values("item_id").itertuples(index=False):
        for tag in split_tags(row.tags):
            q.append(row.item_id)
            t.append(tag)
    return _sample(_frame({"query_item": q, "target_text": t}), cfg.max_pairs_per_dataset, rng)


def xmodal_pairs(items: pd.DataFrame, cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One self-pair per item (``query_item == target_item``), in item-id order."""
    ids = sorted(items["item_id"].dropna().astype(str).unique())
    return _sample(_frame({"query_item": ids, "target_item": ids}), cfg.max_pairs_per_dataset, rng)


def derive_pairs(items: pd.DataFrame, interactions: pd.DataFrame, cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """``{"copair_i2i", "q2i", "cls", "xmodal"}`` pair tables in the schema's columns and dtypes.

    ``items`` and ``interactions`` are in schema dtypes. Deterministic for
    ``cfg.seed``. Raises ``ValueError`` when a dataset comes out empty, or when
    ``copair_i2i``/``q2i`` has no test rows (the held-out items are never paired).
    """
    item_ids = set(items["item_id"].astype(str))
    held_out = holdout_items(item_ids, cfg.holdout_fraction, cfg.seed)
    builders = {
        "copair_i2i": lambda rng: copair_pairs(interactions, item_ids, cfg, rng),
        "q2i": lambda rng: q2i_pairs(items, cfg, rng),
        "cls": lambda rng: cls_pairs(items, cfg, rng),
        "xmodal": lambda rng: xmodal_pairs(items, cfg, rng),  # last: the others keep their seeds
    }
    out: dict[str, pd.DataFrame] = {}
    for k, (name, build) in enumerate(builders.items()):
        pairs = build(np.random.default_rng([cfg.seed, k])).reset_index(drop=True)
        if pairs.empty:
            raise ValueError(
                f"derived dataset {name!r} is empty: "
                + {
                    "copair_i2i": f"no user rated two items >= {cfg.positive_rating} within "
                    f"{cfg.copair_window_days} days; lower data.positive_rating or raise data.copair_window_days",
                    "q2i": "no item has tags or a year to build queries from; fill items.tags/year or supply pairs",
                    "cls": "no item has tags; fill items.tags or supply pairs/cls",
                    "xmodal": "the items table is empty",
                }[name]
            )
        pairs["split"] = assign_split(pairs, held_out)
        if name in ("copair_i2i", "q2i", "xmodal") and not (pairs["split"] == "test").any():
            raise ValueError(
                f"derived dataset {name!r} has no test pairs: none of its {len(pairs)} pairs touches one of "
                f"the {len(held_out)} held-out items; raise data.holdout_fraction or data.max_items"
            )
        out[name] = pairs
    return out
