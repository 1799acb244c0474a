"""Turn pair rows into instruction-wrapped query/target strings and duplicate keys.

A side is an item (its :func:`schema.item_text`) or free text; the query side is
wrapped in the dataset's query instruction and the target side (and any hard
negative, which is an item) in its target instruction, with
:func:`sail_core.preprocess.text.with_instruction`, exactly as serving does.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from sail_core.config import DatasetConfig
from sail_core.losses.keys import key_tensor, side_key
from sail_core.preprocess.text import with_instruction


@dataclass
class PairBatch:
    dataset: str
    queries: list[str]
    targets: list[str]
    query_keys: torch.Tensor           # (B,) int64
    target_keys: torch.Tensor          # (B,) int64
    negatives: list[str] | None = None           # B*H strings, row-major
    negative_keys: torch.Tensor | None = None    # (B, H) int64

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def hard_negatives_per_query(self) -> int:
        return 0 if self.negative_keys is None else int(self.negative_keys.shape[1])


def _present(value) -> bool:
    return value is not None and value is not pd.NA and value == value


def side_text(item_id, text, item_texts: dict[str, str], where: str) -> str:
    """The raw text of one pair side (no instruction)."""
    if _present(item_id):
        try:
            return item_texts[str(item_id)]
        except KeyError:
            raise KeyError(f"{where}: item {item_id!r} is not in items.parquet; the pair table and items disagree") from None
    if _present(text):
        return str(text)
    raise ValueError(f"{where}: neither the *_item nor the *_text column is set")


def make_batch(rows: pd.DataFrame, dataset: str, ds_cfg: DatasetConfig, item_texts: dict[str, str]) -> PairBatch:
    """Build a :class:`PairBatch` (no hard negatives) from pair rows."""
    queries, targets, q_keys, t_keys = [], [], [], []
    for i, r in enumerate(rows.to_dict("records")):
        where = f"pairs/{dataset} row {i}"
        qi, qt = r.get("query_item"), r.get("query_text")
        ti, tt = r.get("target_item"), r.get("target_text")
        queries.append(with_instruction(ds_cfg.query_instruction, side_text(qi, qt, item_texts, where)))
        targets.append(with_instruction(ds_cfg.target_instruction, side_text(ti, tt, item_texts, where)))
        q_keys.append(side_key(qi if _present(qi) else None, qt if _present(qt) else None))
        t_keys.append(side_key(ti if _present(ti) else None, tt if _present(tt) else None))
    return PairBatch(dataset, queries, targets, key_tensor(q_keys), key_tensor(t_keys))


def with_negatives(
    batch: PairBatch, negatives: list[list[str]], ds_cfg: DatasetConfig, item_texts: dict[str, str]
) -> PairBatch:
    """Attach H hard-negative items per row (embedded with the target instruction)."""
    if len(negatives) != len(batch) or len({len(n) for n in negatives}) != 1:
        raise ValueError("negatives must hold the same number of item ids for every row of the batch")
    batch.negatives = [with_instruction(ds_cfg.target_instruction, item_texts[str(n)]) for row in negatives for n in row]
    batch.negative_keys = torch.tensor([[side_key(str(n), None) for n in row] for row in negatives], dtype=torch.int64)
    return batch
