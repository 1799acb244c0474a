"""Derive the four pair datasets from items and interactions, with the leak-free split.

The item split and the per-user time cutoff are defined in :mod:`sail_core.data.splits`;
:func:`derive_item_splits` draws the item split, :func:`derive_pairs` builds the pairs.

* ``copair_i2i`` (item -> item): two positive events (``rating >= positive_rating``)
  of one user that follow each other in the user's time-ordered positive
  history, on two different items, within ``copair_window_days`` (an *edge*,
  :func:`copair_edges`). Its split is the pair's split by items (test > val >
  train), and time decides which edges count:

  - ``train``: both items are train items and both events are before the
    user's cutoff (the later one is, so the earlier one is too). Counted over
    users, unordered; the query side is drawn at random.
  - ``val`` / ``test``: the pair touches a val / test item (the other side may
    be a train item) and its later event, the *target*, is at or after the
    user's cutoff. Directed in time: ``query_item`` is the earlier event's
    item, ``target_item`` the later one's; counted over users per direction.

  Edges that fit neither (train items with an event after the cutoff, held-out
  items with the target before it) are not used. ``score`` = number of users;
  each split keeps its ``max_pairs_per_dataset`` most frequent pairs (seeded
  tie-break).
* ``q2i`` (query text -> item): search queries built from genres, year and a
  title keyword (:mod:`sail_core.data.queries`), never the literal title;
  :data:`QUERIES_PER_ITEM` distinct templates for a train item, but
  :data:`HELD_OUT_QUERIES_PER_ITEM` for a val/test item, so that test queries
  are not near-duplicates of each other (one per held-out item).
* ``cls`` (item -> label text): one row per (item, tag); the target is the tag.
* ``xmodal`` (item -> the same item): one self-pair per item. Its patterns
  (``image->text``, ``frames->text``, ``audio->text``) pair an item's media
  with its own text; test items give the cross-modal test pairs.

The split of a ``q2i``, ``cls`` or ``xmodal`` row is its item's split. Each split
of these datasets is capped at ``max_pairs_per_dataset`` rows by a seeded
sample. Rows come in split order: train, val, test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sail_core.config import DataConfig
from sail_core.data import schema
from sail_core.data.queries import pick_queries
from sail_core.data.splits import after_cutoff, check_pair_splits, pair_splits, split_items, user_cutoffs

DATASETS = ("copair_i2i", "q2i", "cls", "xmodal")
QUERIES_PER_ITEM = 2
HELD_OUT_QUERIES_PER_ITEM = 1
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


def _by_split(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``df`` in split order (train, val, test), each split capped at ``n`` rows by a seeded sample."""
    parts = [_sample(df[(df["split"] == s).to_numpy(dtype=bool)], n, rng) for s in schema.SPLITS]
    return pd.concat(parts, ignore_index=True)


# -- copair_i2i --------------------------------------------------------------------------------------


def copair_edges(interactions: pd.DataFrame, item_ids: set[str], cfg: DataConfig) -> pd.DataFrame:
    """Every copair event: one row per pair of consecutive positive events of a user (see the module docstring).

    Columns: ``user_id``, ``first_item`` and ``second_item`` (in time order; equal timestamps by item
    id), ``after`` (True when the second event is at or after the user's cutoff,
    :func:`sail_core.data.splits.user_cutoffs`, computed on all of ``interactions``).
    """
    cutoffs = user_cutoffs(interactions, cfg.train_time_fraction)
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
    return pd.DataFrame({
        "user_id": user[1:][ok].astype(str),
        "first_item": item[:-1][ok].astype(str),
        "second_item": item[1:][ok].astype(str),
        "after": after_cutoff(user[1:][ok], ts[1:][ok], cutoffs),
    })


def evaluable_items(edges: pd.DataFrame) -> set[str]:
    """Items on either side of a copair edge whose target event is after the user's cutoff."""
    late = edges[edges["after"].to_numpy(dtype=bool)]
    return set(late["first_item"]) | set(late["second_item"])


def _most_frequent(edges: pd.DataFrame, query: np.ndarray, target: np.ndarray, n: int,
                   rng: np.random.Generator) -> pd.DataFrame:
    """``(query, target, users)`` per distinct pair, counted over distinct users, the ``n`` most frequent."""
    keyed = pd.DataFrame({"user_id": edges["user_id"].to_numpy(), "query": query, "target": target}).drop_duplicates()
    counts = keyed.groupby(["query", "target"], sort=True).size().rename("users").reset_index()
    counts["tie"] = rng.random(len(counts))  # seeded tie-break among equally frequent pairs
    return counts.sort_values(["users", "tie"], ascending=[False, True], kind="stable").head(n)


def copair_pairs(interactions: pd.DataFrame, splits: dict[str, str], cfg: DataConfig,
                 rng: np.random.Generator) -> pd.DataFrame:
    """The ``copair_i2i`` table for the item split ``splits`` (rules in the module docstring)."""
    edges = copair_edges(interactions, set(splits), cfg)
    sides = edges.rename(columns={"first_item": "query_item", "second_item": "target_item"})
    edge_split = pair_splits(sides, splits).to_numpy(dtype=object)
    after = edges["after"].to_numpy(dtype=bool)
    parts = []
    train = edges[(edge_split == "train") & ~after]
    a, b = train["first_item"].to_numpy(), train["second_item"].to_numpy()
    first = a <= b  # unordered: counted once per user whichever came first
    counts = _most_frequent(train, np.where(first, a, b), np.where(first, b, a), cfg.max_pairs_per_dataset, rng)
    flip = rng.random(len(counts)) < 0.5  # both directions appear as queries
    parts.append(_frame({"query_item": np.where(flip, counts["target"], counts["query"]),
                         "target_item": np.where(flip, counts["query"], counts["target"]),
                         "score": counts["users"].to_numpy(dtype=float), "split": ["train"] * len(counts)}))
    for split in schema.HELD_OUT:
        held = edges[(edge_split == split) & after]
        counts = _most_frequent(held, held["first_item"].to_numpy(), held["second_item"].to_numpy(),
                                cfg.max_pairs_per_dataset, rng)
        parts.append(_frame({"query_item": counts["query"].to_numpy(), "target_item": counts["target"].to_numpy(),
                             "score": counts["users"].to_numpy(dtype=float), "split": [split] * len(counts)}))
    return pd.concat(parts, ignore_index=True)


# -- item-side datasets ------------------------------------------------------------------------------


def _item_split(item_ids, splits: dict[str, str]) -> list[str]:
    return [splits.get(str(i), "train") for i in item_ids]


def q2i_pairs(items: pd.DataFrame, splits: dict[str, str], cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Metadata queries: :data:`QUERIES_PER_ITEM` per train item, :data:`HELD_OUT_QUERIES_PER_ITEM` per held-out item."""
    q, t = [], []
    for row in items.sort_values("item_id").itertuples(index=False):
        k = QUERIES_PER_ITEM if splits.get(str(row.item_id), "train") == "train" else HELD_OUT_QUERIES_PER_ITEM
        for text in pick_queries(row.title, row.year, split_tags(row.tags), k, rng):
            q.append(text)
            t.append(row.item_id)
    frame = _frame({"query_text": q, "target_item": t, "split": _item_split(t, splits)})
    return _by_split(frame, cfg.max_pairs_per_dataset, rng)


def cls_pairs(items: pd.DataFrame, splits: dict[str, str], cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One row per (item, tag): the item is the query, the tag the target text."""
    q, t = [], []
    for row in items.sort_values("item_id").itertuples(index=False):
        for tag in split_tags(row.tags):
            q.append(row.item_id)
            t.append(tag)
    frame = _frame({"query_item": q, "target_text": t, "split": _item_split(q, splits)})
    return _by_split(frame, cfg.max_pairs_per_dataset, rng)


def xmodal_pairs(items: pd.DataFrame, splits: dict[str, str], cfg: DataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One self-pair per item (``query_item == target_item``), in item-id order within each split."""
    ids = sorted(items["item_id"].dropna().astype(str).unique())
    frame = _frame({"query_item": ids, "target_item": ids, "split": _item_split(ids, splits)})
    return _by_split(frame, cfg.max_pairs_per_dataset, rng)


# -- everything --------------------------------------------------------------------------------------


def derive_item_splits(items: pd.DataFrame, interactions: pd.DataFrame, cfg: DataConfig) -> dict[str, str]:
    """``{item_id: "train" | "val" | "test"}`` for every item: held-out items drawn among the evaluable ones first."""
    item_ids = set(items["item_id"].astype(str))
    evaluable = evaluable_items(copair_edges(interactions, item_ids, cfg))
    return split_items(item_ids, evaluable, cfg.holdout_fraction, cfg.val_fraction, cfg.seed)


_EMPTY_FIX = {
    "copair_i2i": "no user rated two items >= {positive_rating} within {copair_window_days} days (before or after "
                  "their time cutoff); lower data.positive_rating or raise data.copair_window_days",
    "q2i": "no item has tags or a year to build queries from; fill items.tags/year or supply pairs",
    "cls": "no item has tags; fill items.tags or supply pairs/cls",
    "xmodal": "the items table is empty",
}


def derive_pairs(items: pd.DataFrame, interactions: pd.DataFrame, cfg: DataConfig,
                 splits: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """``{"copair_i2i", "q2i", "cls", "xmodal"}`` pair tables in the schema's columns and dtypes.

    ``items`` and ``interactions`` are in schema dtypes; ``splits`` is the item split (default:
    :func:`derive_item_splits`). Deterministic for ``cfg.seed``. Raises ``ValueError`` when a dataset
    comes out empty, or when ``copair_i2i``/``q2i``/``xmodal`` has no test rows (or, a bug, when a row's
    split is not the one its items give).
    """
    if splits is None:
        splits = derive_item_splits(items, interactions, cfg)
    builders = {
        "copair_i2i": lambda rng: copair_pairs(interactions, splits, cfg, rng),
        "q2i": lambda rng: q2i_pairs(items, splits, cfg, rng),
        "cls": lambda rng: cls_pairs(items, splits, cfg, rng),
        "xmodal": lambda rng: xmodal_pairs(items, splits, cfg, rng),  # last: the others keep their seeds
    }
    out: dict[str, pd.DataFrame] = {}
    for k, (name, build) in enumerate(builders.items()):
        pairs = build(np.random.default_rng([cfg.seed, k])).reset_index(drop=True)
        if pairs.empty:
            raise ValueError(f"derived dataset {name!r} is empty: " + _EMPTY_FIX[name].format(**cfg.model_dump()))
        if name in ("copair_i2i", "q2i", "xmodal") and not (pairs["split"] == "test").any():
            n_test = sum(1 for s in splits.values() if s == "test")
            raise ValueError(
                f"derived dataset {name!r} has no test pairs: none of its {len(pairs)} pairs touches one of the "
                f"{n_test} test items after its user's time cutoff; raise data.holdout_fraction, "
                "data.max_items or data.copair_window_days, or lower data.train_time_fraction"
            )
        out[name] = pairs
    check_pair_splits(out, splits)  # a build-time guard: every row's split is the one its items give
    return out
