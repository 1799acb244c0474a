"""Serve H mined hard negatives per query row, topped up with random catalogue items.

Mined negatives come from ``hard_negatives/<dataset>.parquet`` (see
:mod:`sail_core.data.pair_data`). A query with fewer than H mined negatives is
filled with random items, so every row has exactly H and the tensor shapes match
across ranks; a random item that happens to be a positive is masked by its key
in the loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sail_core.losses.keys import side_key


class HardNegativePool:
    def __init__(self, mined: pd.DataFrame, item_ids: list[str], per_query: int, seed: int):
        if per_query < 1:
            raise ValueError("HardNegativePool needs per_query >= 1")
        self.per_query = int(per_query)
        self.item_ids = list(item_ids)
        self.rng = np.random.default_rng([seed, 2])
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
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
