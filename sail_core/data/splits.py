"""Leak-free train / validation / test splits: by item, and by time for data derived from interactions.

**Item split** (:func:`split_items`). Every catalogue item is in exactly one split:
``test`` (the reported figures), ``val`` (balancing, mining, early checks; never
reported) or ``train``. With ``N`` items, ``n_test = round(holdout_fraction * N)``
(at least 1) and ``n_val = round(val_fraction * N)``; at least one item stays in
train. Held-out items are drawn from two strata, in this order:

1. the *evaluable* items, those with at least one copair event after their
   user's time cutoff (:func:`sail_core.data.pairs.copair_edges`); only such an
   item can be the held-out side of a ``copair_i2i`` test pair;
2. only when stratum 1 runs out, the other items (logged as a warning and
   counted in the data summary as ``held_out_not_evaluable``).

Within a stratum the order is a permutation, seeded by ``seed``, of the sorted
item ids; test items are taken first, then validation items. So the split
depends only on the set of ids, the interactions and the seed, never on row
order. Why the strata: about a quarter of MovieLens-100k's items have no
positive co-rating after any user's cutoff; a uniform draw would put them in
test, where ``copair_i2i`` has no pair to evaluate them with. Drawing held-out
items among the evaluable ones gives every test item a copair test pair; the
non-evaluable items are kept, in train (none is dropped). The price: held-out
items lean towards the items people rated, which is where item-to-item
recommendation is asked for.

**Time cutoff** (:func:`user_cutoffs`). For user ``u`` with ``n`` events (rows
of the interactions table, any rating) sorted by timestamp, the cutoff ``T_u`` is
the timestamp of the event at 0-based position ``floor(train_time_fraction * n)``.
An event is *before* the cutoff when its timestamp is ``< T_u`` and *after* it
when ``>= T_u``: at most ``train_time_fraction`` of a user's events are before
(fewer when several share ``T_u``'s second), and no second is on both sides.

**Pair split** (:func:`pair_splits`). A pair is ``test`` when one of its item
sides is a test item, else ``val`` when one is a validation item, else
``train``. Training pairs therefore hold train items only; the other side of a
test pair may be a train item (it stays a train item). Derived data adds the
time rule (:mod:`sail_core.data.pairs`): training copairs use events before the
user's cutoff only, held-out copairs have their target event after it.

**Record.** The split is written per item to ``item_splits.parquet``
(``item_id``, ``split``; :data:`sail_core.data.schema.ITEM_SPLIT_COLUMNS`) next
to the items; the data contracts check it and the validated folder keeps it.
:func:`item_splits` reads it back: evaluation asks it which items are held out,
training which items may be negatives (:func:`train_items`). For pair tables a
user supplies, :func:`splits_from_pairs` derives the item split from the
pairs' own ``split`` column and :func:`check_pair_splits` refuses pairs whose
split disagrees with their items.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sail_core.data import schema
from sail_core.data.cast import cast_table
from sail_core.data.io import find_table, read_text_table, write_table

LOG = logging.getLogger(__name__)
_SPLIT_STREAM = 9  # the item split's own random stream: default_rng([seed, 9])
_ITEM_SIDES = ("query_item", "target_item")


# -- time --------------------------------------------------------------------------------------------


def user_cutoffs(interactions: pd.DataFrame, train_time_fraction: float) -> pd.Series:
    """Each user's cutoff timestamp ``T_u`` (see the module docstring), indexed by ``user_id`` (str)."""
    events = pd.DataFrame({
        "user_id": interactions["user_id"].astype(str).to_numpy(),
        "timestamp": interactions["timestamp"].to_numpy(dtype="int64"),
    }).sort_values(["user_id", "timestamp"], kind="stable")
    counts = events.groupby("user_id", sort=True).size()  # users in the same order as the sorted rows
    first_row = counts.cumsum() - counts
    position = np.floor(train_time_fraction * counts).astype("int64")
    timestamps = events["timestamp"].to_numpy()[(first_row + position).to_numpy()]
    return pd.Series(timestamps, index=counts.index.astype(str), name="cutoff")


def after_cutoff(user_ids, timestamps, cutoffs: pd.Series) -> np.ndarray:
    """True where an event (``user_ids[i]`` at ``timestamps[i]``) is at or after its user's cutoff."""
    cut = cutoffs.reindex(pd.Index(np.asarray(user_ids, dtype=object).astype(str))).to_numpy(dtype="float64")
    if np.isnan(cut).any():
        raise ValueError("after_cutoff: some users have no cutoff; compute the cutoffs on the same interactions")
    return np.asarray(timestamps, dtype="float64") >= cut


# -- items -------------------------------------------------------------------------------------------


def split_sizes(n_items: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """``(n_test, n_val)`` for ``n_items`` items: rounded shares, test at least 1, train at least 1."""
    if n_items < 2:
        raise ValueError(f"an item split needs at least 2 items (one held out, one to train on); got {n_items}")
    n_test = min(n_items - 1, max(1, int(round(test_fraction * n_items))))
    n_val = min(n_items - 1 - n_test, int(round(val_fraction * n_items)))
    return n_test, n_val


def split_items(item_ids, evaluable, test_fraction: float, val_fraction: float, seed: int) -> dict[str, str]:
    """``{item_id: "train" | "val" | "test"}`` for every id in ``item_ids``; rule in the module docstring.

    ``evaluable``: the ids drawn first for the held-out splits (ids not in ``item_ids`` are ignored).
    """
    ids = sorted(set(str(i) for i in item_ids))
    n_test, n_val = split_sizes(len(ids), test_fraction, val_fraction)
    first = sorted(set(str(i) for i in evaluable) & set(ids))
    rest = sorted(set(ids) - set(first))
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    order = [first[i] for i in rng.permutation(len(first))] + [rest[i] for i in rng.permutation(len(rest))]
    if len(first) < n_test + n_val:
        LOG.warning("only %d of %d items are evaluable (a copair event after the user's cutoff); %d held-out "
                    "items are drawn among the others", len(first), len(ids), n_test + n_val - len(first))
    splits = dict.fromkeys(ids, "train")
    splits.update(dict.fromkeys(order[:n_test], "test"))
    splits.update(dict.fromkeys(order[n_test:n_test + n_val], "val"))
    return splits


def split_counts(splits: dict[str, str]) -> dict[str, int]:
    """``{"train": n, "val": n, "test": n}``."""
    values = list(splits.values())
    return {s: values.count(s) for s in schema.SPLITS}


# -- pairs -------------------------------------------------------------------------------------------


def pair_splits(pairs: pd.DataFrame, splits: dict[str, str]) -> pd.Series:
    """Each pair's split from its item sides: ``test`` > ``val`` > ``train`` (dtype string).

    An item side that ``splits`` does not know counts as train; text sides are ignored.
    """
    rank = {"train": 0, "val": 1, "test": 2}
    worst = np.zeros(len(pairs), dtype=np.int64)
    for col in _ITEM_SIDES:
        if col in pairs.columns:
            side = pairs[col].astype(object).map(lambda i: rank[splits.get(str(i), "train")] if pd.notna(i) else 0)
            worst = np.maximum(worst, side.to_numpy(dtype=np.int64))
    names = np.array(["train", "val", "test"], dtype=object)
    return pd.Series(names[worst], index=pairs.index, dtype="string")


def splits_from_pairs(item_ids, pairs: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The item split implied by pair tables with a ``split`` column (user-supplied pairs).

    An item is ``train`` when a train pair touches it; otherwise ``val`` when a validation pair
    touches it (a val pair may not hold a test item, but a test pair may hold a val item);
    otherwise ``test`` when a test pair does; an item in no pair is ``train`` (it is evaluated
    nowhere). So an item is held out exactly when no training pair shows it. Covers the ids in
    ``item_ids`` and every item side of the pairs.
    """
    touched = {s: set() for s in schema.SPLITS}
    for df in pairs.values():
        for col in _ITEM_SIDES:
            if col in df.columns:
                for split in schema.SPLITS:
                    rows = (df["split"] == split).fillna(False).to_numpy(dtype=bool) & df[col].notna().to_numpy()
                    touched[split].update(df.loc[rows, col].astype(str))
    out = dict.fromkeys((str(i) for i in item_ids), "train")
    out.update(dict.fromkeys(touched["test"], "test"))
    out.update(dict.fromkeys(touched["val"], "val"))
    out.update(dict.fromkeys(touched["train"], "train"))
    return out


def check_pair_splits(pairs: dict[str, pd.DataFrame], splits: dict[str, str]) -> None:
    """Raise ``ValueError`` when a pair's ``split`` is not the one its items give (:func:`pair_splits`).

    That is: a train pair touching a held-out item, a validation pair touching a test item, or a
    held-out pair touching no item of its split.
    """
    for name, df in pairs.items():
        expected = pair_splits(df, splits)
        bad = (df["split"].astype("string") != expected).fillna(True).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            sides = {c: df[c].iloc[row] for c in _ITEM_SIDES if c in df.columns and pd.notna(df[c].iloc[row])}
            where = ", ".join(f"{c} {v!r} is {splits.get(str(v), 'train')}" for c, v in sides.items()) or "no item side"
            raise ValueError(
                f"pairs/{name}: {int(bad.sum())} row(s) have a split that their items contradict; row {row} says "
                f"{df['split'].iloc[row]!r} but its items make it {expected.iloc[row]!r} ({where}). A train pair may "
                "only hold train items, a val pair needs a val item and no test item, a test pair needs a test "
                "item; an item is held out when no train pair touches it. Fix the 'split' column"
            )


# -- the recorded split ------------------------------------------------------------------------------


def write_item_splits(folder: Path, splits: dict[str, str], item_ids=None) -> Path:
    """Write ``folder/item_splits.parquet`` (sorted by id); with ``item_ids``, only those items."""
    keep = sorted(splits if item_ids is None else set(str(i) for i in item_ids) & set(splits))
    frame = pd.DataFrame({"item_id": pd.array(keep, dtype="string"),
                          "split": pd.array([splits[i] for i in keep], dtype="string")})
    return write_table(frame, Path(folder) / f"{schema.ITEM_SPLITS}.parquet")


def item_splits(data_dir: Path) -> dict[str, str]:
    """``{item_id: "train" | "val" | "test"}`` of a data folder, as recorded in ``item_splits.parquet``.

    Exact: a train item on the other side of a test pair is ``train``. An item missing from the
    table (its split row was quarantined) is in no split: it is never a negative and never evaluated.
    """
    try:
        path = find_table(data_dir, schema.ITEM_SPLITS)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{Path(data_dir) / (schema.ITEM_SPLITS + '.parquet')} not found: the data folder records no item split "
            "(train/val/test per item). Rebuild it with `sail data demo` or `sail data import`, which write it"
        ) from None
    table = cast_table(read_text_table(path), schema.ITEM_SPLIT_COLUMNS, str(path), required=schema.ITEM_SPLIT_REQUIRED)
    bad = ~table["split"].isin(schema.SPLITS).to_numpy(dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: split {table['split'].iloc[row]!r} (row {row}) is not one of {list(schema.SPLITS)}; "
                         "validate the data folder (`sail validate`) or rebuild it")
    if not table["item_id"].is_unique:
        dup = table.loc[table["item_id"].duplicated(), "item_id"].iloc[0]
        raise ValueError(f"{path}: item {dup!r} is listed twice; each item has one split. Rebuild the data folder")
    return dict(zip(table["item_id"].astype(str), table["split"].astype(str)))


def train_items(data_dir: Path, item_ids) -> list[str]:
    """The ids of ``item_ids`` that are train items of ``data_dir``, in the given order (the negatives' pool)."""
    splits = item_splits(data_dir)
    return [str(i) for i in item_ids if splits.get(str(i)) == "train"]
