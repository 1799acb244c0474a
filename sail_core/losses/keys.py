"""Stable int64 keys for the two sides of a pair, so duplicates can be found across ranks.

Strings cannot travel through ``all_gather``; a 63-bit hash of ``"item:<id>"`` or
``"text:<text>"`` can. Two in-batch targets with the same key are the same thing,
so neither may count as the other's negative. :data:`NO_KEY` (-1) never matches.
"""

from __future__ import annotations

import hashlib

import torch

NO_KEY = -1


def _is_null(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except TypeError:  # pd.NA
        return True


def side_key(item_id: str | None, text: str | None) -> int:
    """Key of one pair side: the item id when set, else the text; non-negative."""
    item_id = None if _is_null(item_id) else item_id
    text = None if _is_null(text) else text
    if item_id is not None:
        raw = f"item:{item_id}"
    elif text is not None:
        raw = f"text:{' '.join(str(text).split())}"
    else:
        return NO_KEY
    return int.from_bytes(hashlib.blake2b(raw.encode(), digest_size=8).digest(), "little") >> 1


def key_tensor(keys: list[int]) -> torch.Tensor:
    return torch.tensor(keys, dtype=torch.int64)
