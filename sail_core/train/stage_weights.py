"""A stage's dataset sampling weights: as configured, or from adaptive balancing.

A stage with ``balance: true`` (and ``train.balance.enabled``) gets its weights from
:func:`sail_core.train.balancing.balance`: the stage's *starting* model (the early checkpoint:
stage I's output for stage II) embeds up to ``train.balance.rows`` query sides of each of the
stage's datasets (their train split, first pattern) and of every configured dataset's
**validation** split (one validation set per task; never the test split), k-means (faiss) each
set, matches the centroids by Sinkhorn (POT) and softmaxes the costs. The result is saved beside
the stage's model (``balance.json``); a later stage that asks for balancing reuses it from the
model it starts from instead of recomputing, so the weights computed once from the early
checkpoint carry through stages II and III.

The weights the sampler uses are ``mix * balanced + (1 - mix) * configured`` (both normalised over
the stage's datasets), so that a dataset the match finds far from the validation sets is still
seen (``mix = 1``: the balanced weights alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sail_core.config import Config, StageConfig
from sail_core.data.pair_data import load_pairs
from sail_core.features.embed import embed_samples
from sail_core.features.item_inputs import ItemInputs
from sail_core.train.balancing import balance
from sail_core.train.patterns import build_pattern_batch

BALANCE_FILE = "balance.json"


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@torch.no_grad()
def _query_embeddings(cfg: Config, name: str, split: str, model, inputs: ItemInputs, data_dir: Path,
                      rows: int, seed: int) -> np.ndarray | None:
    """Up to ``rows`` query embeddings of ``name``'s ``split`` pairs (first pattern), float32; None when empty."""
    pairs = load_pairs(data_dir, name, split)
    if pairs.empty:
        return None
    if len(pairs) > rows:
        pairs = pairs.sample(rows, random_state=seed).reset_index(drop=True)
    ds = cfg.datasets[name]
    batch = build_pattern_batch(pairs, name, ds, inputs, train=False, patterns=ds.patterns[:1])
    main = batch.pairs[0]
    keep = main.query_index[main.query_index >= 0]
    if not len(keep) or not batch.samples:
        return None
    z = embed_samples(model, model, batch.samples, inputs.collate_modes, chunk=64)
    return torch.nn.functional.normalize(z[keep], dim=-1).float().numpy()


def compute_balance(cfg: Config, stage: StageConfig, model, inputs: ItemInputs, data_dir: Path) -> dict:
    """Run :func:`~sail_core.train.balancing.balance` with ``model``; returns its JSON dict."""
    b = cfg.train.balance
    was_training = model.training
    model.eval()
    try:
        train = {n: _query_embeddings(cfg, n, "train", model, inputs, data_dir, b.rows, cfg.train.seed)
                 for n in stage.datasets}
        val = {n: _query_embeddings(cfg, n, "val", model, inputs, data_dir, b.rows, cfg.train.seed)
               for n in cfg.datasets}
    finally:
        model.train(was_training)
    train = {n: x for n, x in train.items() if x is not None}
    val = {f"val.{n}": x for n, x in val.items() if x is not None}
    if not val:
        raise ValueError(f"stage {stage.name!r} asks for balancing but no dataset has validation pairs in "
                         f"{data_dir}/pairs (data.val_fraction = {cfg.data.val_fraction}); raise it, or set "
                         "train.balance.enabled: false")
    return balance(train, val, k=b.k, reg=b.reg, temperature=b.temperature, seed=cfg.train.seed).to_dict()


def stage_weights(cfg: Config, stage: StageConfig, model, inputs: ItemInputs, data_dir: Path,
                  init_from: Path | None) -> tuple[dict[str, float], dict | None]:
    """The sampler's weights for ``stage`` and, when balanced, the record to log and save (``balance.json``)."""
    configured = _normalised({n: cfg.task_weight(n) for n in stage.datasets})
    if not (stage.balance and cfg.train.balance.enabled):
        return configured, None
    saved = Path(init_from) / BALANCE_FILE if init_from else None
    record = None
    if saved is not None and saved.exists():
        record = json.loads(saved.read_text())
        if not set(stage.datasets) <= set(record["balance"]["weights"]):
            record = None  # this stage trains a dataset the earlier match did not cover: match again
        else:
            record = {**record, "carried_from": str(saved)}
    if record is None:
        record = {"balance": compute_balance(cfg, stage, model, inputs, data_dir), "computed_in": stage.name}
    balanced = _normalised({n: record["balance"]["weights"][n] for n in stage.datasets})
    mix = cfg.train.balance.mix
    final = {n: mix * balanced[n] + (1 - mix) * configured[n] for n in stage.datasets}
    return final, {**record, "configured": configured, "balanced": balanced, "mix": mix, "weights": final}
