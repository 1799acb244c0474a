"""Held-out evaluation split, made by item.

A deterministic share of items (``holdout_fraction``, chosen by ``seed``) is
held out. Any pair that touches a held-out item, on either side, is a ``test``
pair; all others are ``train``. So no held-out item is ever seen in training
pairs, and evaluation measures generalisation to unseen items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_items(item_ids: pd.Series | list[str], fraction: float, seed: int) -> set[str]:
    """The held-out item ids: ``round(fraction * n)`` items (at least 1), fixed by ``seed``.

    The choice depends only on the set of ids and the seed, not on their order.
    """
    ids = sorted(set(str(i) for i in item_ids))
    if not ids:
        return set()
    n = min(len(ids) - 1, max(1, int(round(fraction * len(ids))))) if len(ids) > 1 else 0
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=n, replace=False)
    return {ids[i] for i in chosen}


def assign_split(pairs: pd.DataFrame, held_out: set[str]) -> pd.Series:
    """``test`` where ``query_item`` or ``target_item`` is held out, else ``train`` (dtype string)."""
    touches = pd.Series(False, index=pairs.index)
    for col in ("query_item", "target_item"):
        if col in pairs.columns:
            touches |= pairs[col].isin(held_out).fillna(False).astype(bool)
    return pd.Series(np.where(touches, "test", "train"), index=pairs.index, dtype="string")
