"""The evaluate step: the trained omni model and the untrained baseline, same data, same run.

The baseline is ``build_model(cfg.model)`` seeded with ``cfg.train.seed``: the
pretrained backbone (demo: MiniLM) and frozen towers with freshly initialised
Perceiver resampler, audio adapter and media-type embeddings, i.e. exactly the
model training starts from. Frozen-tower media features are computed once per
data folder (:mod:`sail_core.features.media_cache`) and shared by both models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from sail_core.config import Config
from sail_core.eval.crossmodal import CROSS_MODAL, cross_modal
from sail_core.eval.embed import SideEmbedder
from sail_core.eval.intervals import paired_differences, with_intervals
from sail_core.eval.report import write_report
from sail_core.eval.retrieval import item_retrieval
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.omni import build_model, load_model

LOG = logging.getLogger(__name__)


def score_model(model, inputs: ItemInputs, data_dir: Path, cfg: Config, notes: list[str] | None = None,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Per-query Recall@k (``cfg.eval.ks``) of every task in ``cfg.eval.tasks``, unprefixed names
    (``i2i.recall_at_10``); the same queries in the same order for any model on the same data."""
    notes = notes if notes is not None else []
    embed = SideEmbedder(model, inputs, cfg.eval.batch_size, progress)
    scores: dict[str, np.ndarray] = {}
    for task in cfg.eval.tasks:
        if task in CROSS_MODAL:
            scores.update(cross_modal(embed, Path(data_dir), cfg, task, notes))
        else:
            scores.update(item_retrieval(embed, Path(data_dir), cfg, task))
    return scores


def evaluate_model(model, inputs: ItemInputs, data_dir: Path, cfg: Config, notes: list[str] | None = None,
                   progress: bool = True) -> dict[str, float]:
    """Recall@k of every task: the means of :func:`score_model`'s per-query values."""
    return {k: float(v.mean()) for k, v in score_model(model, inputs, data_dir, cfg, notes, progress).items()}


def baseline_model(cfg: Config):
    """The untrained model: pretrained backbone, fresh Perceiver/adapter (seeded with ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg.model)


def evaluate(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path, cache_dir: Path | None = None) -> dict:
    """Evaluate ``model_dir`` and the baseline on ``data_dir``'s held-out data, on the same queries.

    Returns ``{"eval.<task>.recall_at_<k>": ..., "baseline.<task>.recall_at_<k>": ...}`` (plus
    ``.dim<d>.`` variants for i2i/q2i), each with its 95% bootstrap interval over queries
    (``..._ci_low``, ``..._ci_high``), and ``delta.<task>.recall_at_<k>`` (trained - baseline) with its
    paired bootstrap interval. Writes ``metrics.json``, ``eval_report.md`` and ``recall.png`` to
    ``out_dir``. A task the data cannot support (no held-out item with audio, say) is skipped and named
    in the report and the log.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    trained_model = load_model(model_dir)
    inputs = ItemInputs.from_data_dir(data_dir, trained_model.cfg, cache_dir,
                                      feature_threads=cfg.train.feature_threads)
    notes: list[str] = []
    trained = score_model(trained_model, inputs, data_dir, cfg, notes)
    del trained_model
    baseline = score_model(baseline_model(cfg), inputs, data_dir, cfg, [])
    for note in notes:
        LOG.warning("evaluate: %s", note)
    result = {**with_intervals(trained, "eval"), **with_intervals(baseline, "baseline"),
              **paired_differences(trained, baseline)}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    write_report(result, out_dir, notes)
    return result
