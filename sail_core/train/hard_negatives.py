"""Serve H mined hard negatives per query row, topped up with random catalogue items.

Mined negatives come from ``hard_negatives/<dataset>.parquet`` (see
:mod:`sail_core.data.pair_data`). A query with fewer than H mined negatives is
filled with random items, so every row has exactly H and the tensor shapes match
across ranks; a random item that happens to be a positive is masked by its key
in the loss.

Only train items may be negatives: ``item_ids`` is the pool of allowed negatives (the
training loop passes the train items, :func:`sail_core.data.splits.train_items`), the
random fill draws from it alone, and a mined negative outside it (a val or test item,
or an id not in the catalogue) is refused with a ``ValueError``: a miner that proposes
held-out items leaks them into training, and the fix belongs in the miner.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sail_core.losses.keys import side_key


class HardNegativePool:
    """``per_query`` negatives per query row: its mined ones, topped up at random from ``item_ids``.

    ``item_ids``: the items allowed as negatives (the train items); every mined negative must be one.
    """

    def __init__(self, mined: pd.DataFrame, item_ids: list[str], per_query: int, seed: int):
        if per_query < 1:
            raise ValueError("HardNegativePool needs per_query >= 1")
        self.per_query = int(per_query)
        self.item_ids = [str(i) for i in item_ids]
        if len(self.item_ids) < self.per_query:
            raise ValueError(f"HardNegativePool: {len(self.item_ids)} train item(s) to draw negatives from, fewer "
                             f"than hard_negatives={self.per_query} per query; lower the stage's hard_negatives")
        _refuse_outside(mined, set(self.item_ids))
        self.rng = np.random.default_rng([seed, 2])
        self.drawn_mined = self.drawn_random = 0
        self.by_query: dict[int, list[str]] = {}
        for r in mined.to_dict("records"):
            key = side_key(r.get("query_item"), r.get("query_text"))
            self.by_query.setdefault(key, []).append(str(r["negative_item"]))

    def draw(self, query_keys: list[int]) -> list[list[str]]:
        out = []
        for key in query_keys:
            pool = self.by_query.get(int(key), [])
            if len(pool) >= self.per_query:
                picked = [pool[i] for i in self.rng.choice(len(pool), self.per_query, replace=False)]
            else:
                fill = self.rng.choice(len(self.item_ids), self.per_query - len(pool), replace=False)
                picked = list(pool) + [self.item_ids[i] for i in fill]
            out.append(picked)
            mined = min(len(pool), self.per_query)
            self.drawn_mined += mined
            self.drawn_random += self.per_query - mined
        return out

    def stats(self) -> dict:
        """Mined queries, negatives drawn so far (mined / random top-up) and the mined share."""
        total = self.drawn_mined + self.drawn_random
        return {"queries_with_mined": len(self.by_query), "drawn_mined": self.drawn_mined,
                "drawn_random": self.drawn_random, "mined_share": self.drawn_mined / total if total else 0.0}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "drawn": [self.drawn_mined, self.drawn_random]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.drawn_mined, self.drawn_random = state.get("drawn", [0, 0])


def _refuse_outside(mined: pd.DataFrame, allowed: set[str]) -> None:
    """Raise when a mined negative is not an allowed (train) item."""
    negatives = mined["negative_item"].astype(str) if len(mined) else pd.Series([], dtype=str)
    bad = negatives[~negatives.isin(allowed)]
    if len(bad):
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(bad))[:5])
        raise ValueError(
            f"{len(bad)} mined hard negative(s) of {len(mined)} are not train items (held out in val/test, or not "
            f"in the catalogue), e.g. {shown}: training on them leaks held-out items. Mine negatives among the "
            "train items only (sail_core.data.splits.train_items) and rerun the miner"
        )
