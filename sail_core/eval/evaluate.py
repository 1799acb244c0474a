"""The evaluate step: the trained model and the untrained backbone, same data, same run."""

from __future__ import annotations

import json
from pathlib import Path

from sail_core.config import Config
from sail_core.eval.report import write_report
from sail_core.eval.retrieval import evaluate_model
from sail_core.model.embedder import build_model, load_model


def evaluate(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    """Evaluate ``model_dir`` and the baseline ``build_model(cfg.model)`` on ``data_dir``'s test pairs.

    Returns ``{"eval.<task>.recall_at_<k>": ..., "baseline.<task>.recall_at_<k>": ...}`` (plus
    ``.dim<d>.`` variants) and writes ``metrics.json``, ``eval_report.md`` and ``recall.png`` to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    trained = evaluate_model(load_model(model_dir), data_dir, cfg)
    baseline = evaluate_model(build_model(cfg.model), data_dir, cfg)
    result = {f"eval.{k}": v for k, v in trained.items()}
    result.update({f"baseline.{k}": v for k, v in baseline.items()})
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    write_report(trained, baseline, out_dir)
    return result
