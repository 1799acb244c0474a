"""Pair rows of one dataset -> the model inputs of EVERY pattern it lists, de-duplicated.

For each row and each pattern ``Q->T`` of ``cfg.datasets[d].patterns`` the query
side is shown as modality Q with the dataset's query instruction and the target
side as T with its target instruction (:class:`sail_core.features.item_inputs.ItemInputs`).
A side that lacks the modality gets index -1 and the row is skipped for that
pattern. Identical inputs (same side, modality and instruction: an item that is
the target of several rows, a genre label, a self-pair's item) are built once.
Hard negatives are items shown as the target modality of the dataset's FIRST pattern (its primary
pattern; one negative per query costs one backbone pass per pattern otherwise).
``extra_patterns`` (the auxiliary losses' views, e.g. ``image->omni`` for mICL) are indexed the
same way but kept apart in ``PatternBatch.extra``: no InfoNCE term is computed on them.

The result is one list of :class:`OmniSample` (embedded in one pass) and, per
pattern, a :class:`sail_core.losses.patterns.PatternPairs` of indices into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from sail_core.config import DatasetConfig
from sail_core.losses.keys import key_tensor, side_key
from sail_core.losses.patterns import PatternPairs, split_pattern
from sail_core.model.assembly import OmniSample
from sail_core.features.item_inputs import ItemInputs


@dataclass
class PatternBatch:
    dataset: str
    samples: list[OmniSample]
    pairs: list[PatternPairs]
    query_keys: torch.Tensor                   # (B,) int64
    target_keys: torch.Tensor                  # (B,) int64
    negative_keys: torch.Tensor | None = None  # (B, H) int64
    extra: dict[str, PatternPairs] | None = None  # auxiliary views (mICL, late fusion), by pattern
    scores: torch.Tensor | None = None         # (B,) float32: the rows' graded `score` (CoSENT), NaN where unset

    def __len__(self) -> int:
        return int(self.query_keys.shape[0])


def _present(value) -> bool:
    return value is not None and value is not pd.NA and value == value


def _side(r: dict, prefix: str, where: str) -> tuple[str | None, str | None]:
    item, text = r.get(f"{prefix}_item"), r.get(f"{prefix}_text")
    if _present(item):
        return str(item), None
    if _present(text):
        return None, str(text)
    raise ValueError(f"{where}: neither {prefix}_item nor {prefix}_text is set")


class _Builder:
    """Unique samples keyed by (side, modality, instruction)."""

    def __init__(self, inputs: ItemInputs, train: bool, rng: np.random.Generator,
                 sample_rng: Callable[[tuple], np.random.Generator] | None = None):
        self.inputs, self.train, self.rng, self.sample_rng = inputs, train, rng, sample_rng
        self.samples: list[OmniSample] = []
        self.where: dict[tuple, int] = {}

    def index(self, item: str | None, text: str | None, modality: str, instruction: str) -> int:
        if not self.inputs.has(item, modality):
            return -1
        key = (item, text, modality, instruction)
        if key not in self.where:
            self.where[key] = len(self.samples)
            rng = self.sample_rng(key) if self.sample_rng is not None else self.rng
            self.samples.append(self.inputs.side(item, text, modality, instruction, self.train, rng))
        return self.where[key]


def build_pattern_batch(
    rows: pd.DataFrame,
    dataset: str,
    ds_cfg: DatasetConfig,
    inputs: ItemInputs,
    train: bool = False,
    rng: np.random.Generator | None = None,
    negatives: list[list[str]] | None = None,
    patterns: list[str] | None = None,
    extra_patterns: list[str] | None = None,
    sample_rng: Callable[[tuple], np.random.Generator] | None = None,
) -> PatternBatch:
    """Inputs and per-pattern indices for ``rows`` (``patterns`` defaults to ``ds_cfg.patterns``).

    Training draws (text-field dropout, keyframe picks) come from ``rng`` in sample order, or, with
    ``sample_rng``, from ``sample_rng(key)`` for each sample's ``(item, text, modality, instruction)``: then a
    sample gets the same draws whichever rank builds it and whatever else is in the batch (the training loop
    keys it by seed and step, so that N ranks see what one process sees on the same global batch)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    records = rows.to_dict("records")
    if negatives is not None and (len(negatives) != len(records) or len({len(n) for n in negatives}) != 1):
        raise ValueError("negatives must hold the same number of item ids for every row of the batch")
    sides = [(_side(r, "query", f"pairs/{dataset} row {i}"), _side(r, "target", f"pairs/{dataset} row {i}"))
             for i, r in enumerate(records)]
    for (qi, _), (ti, _) in sides:
        for item in (qi, ti):
            if item is not None:
                inputs.item(item)  # clear error for an unknown item
    build = _Builder(inputs, train, rng, sample_rng)
    def pattern_pairs(pattern: str, with_negatives: bool) -> PatternPairs:
        qm, tm = split_pattern(pattern)
        q_idx = [build.index(*q, qm, ds_cfg.query_instruction) for q, _ in sides]
        t_idx = [build.index(*t, tm, ds_cfg.target_instruction) for _, t in sides]
        neg = None
        if with_negatives:
            neg = torch.tensor([[build.index(str(n), None, tm, ds_cfg.target_instruction) for n in row]
                                for row in negatives], dtype=torch.int64)
        return PatternPairs(pattern, torch.tensor(q_idx, dtype=torch.int64), torch.tensor(t_idx, dtype=torch.int64), neg)

    pairs = [pattern_pairs(p, negatives is not None and i == 0) for i, p in enumerate(patterns or ds_cfg.patterns)]
    extra = {p: pattern_pairs(p, False) for p in (extra_patterns or [])}
    scores = None
    if "score" in rows.columns:
        scores = torch.tensor(pd.to_numeric(rows["score"], errors="coerce").to_numpy(np.float32, na_value=np.nan))
    q_keys = key_tensor([side_key(*q) for q, _ in sides])
    t_keys = key_tensor([side_key(*t) for _, t in sides])
    n_keys = None
    if negatives is not None:
        n_keys = torch.tensor([[side_key(str(n), None) for n in row] for row in negatives], dtype=torch.int64)
    return PatternBatch(dataset, build.samples, pairs, q_keys, t_keys, n_keys, extra or None, scores)
