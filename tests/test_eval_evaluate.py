"""evaluate(): trained model + untrained backbone on the tiny fixture, with the real MiniLM backbone."""

from __future__ import annotations

import json

import pytest

from sail_core.config import load_config
from sail_core.eval.evaluate import evaluate
from sail_core.eval.report import write_report
from sail_core.model.embedder import build_model

import tiny_pairs_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = tiny_pairs_data.build(root / "data")
    cfg = load_config(profile="tiny")
    model_dir = build_model(cfg.model).save(root / "model")
    return cfg, data, model_dir, root


def test_evaluate_returns_all_keys_in_unit_interval(tiny):
    cfg, data, model_dir, root = tiny
    out = root / "eval"
    result = evaluate(cfg, model_dir, data, out)
    dims = [d for d in cfg.model.matryoshka_dims if d < 384]
    expected = set()
    for prefix in ("eval", "baseline"):
        for task in cfg.eval.tasks:
            for k in cfg.eval.ks:
                expected.add(f"{prefix}.{task}.recall_at_{k}")
                expected.update(f"{prefix}.{task}.dim{d}.recall_at_{k}" for d in dims)
    assert set(result) == expected
    assert all(0.0 <= v <= 1.0 for v in result.values())
    # the saved model *is* the backbone here, so trained == baseline exactly
    for task in cfg.eval.tasks:
        assert result[f"eval.{task}.recall_at_10"] == pytest.approx(result[f"baseline.{task}.recall_at_10"])
    # recall grows with k
    assert result["eval.i2i.recall_at_1"] <= result["eval.i2i.recall_at_10"] <= result["eval.i2i.recall_at_50"]
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result)
    assert (out / "eval_report.md").exists() and (out / "recall.png").stat().st_size > 0


def test_report_table(tmp_path):
    paths = write_report({"i2i.recall_at_10": 0.5, "i2i.dim64.recall_at_10": 0.25},
                         {"i2i.recall_at_10": 0.375}, tmp_path)
    text = paths[0].read_text()
    assert "| i2i | 10 | 0.5000 | 0.3750 | +0.1250 |" in text
    assert "| i2i.dim64 | 10 | 0.2500 | n/a | n/a |" in text
    assert paths[1].name == "recall.png" and paths[1].stat().st_size > 0


def test_unknown_task_is_a_clear_error(tiny):
    cfg, data, model_dir, root = tiny
    cfg = cfg.model_copy(deep=True)
    cfg.datasets = {k: v for k, v in cfg.datasets.items() if v.task != "q2i"}
    cfg.train.stages = []
    from sail_core.eval.retrieval import evaluate_model
    from sail_core.model.embedder import load_model

    with pytest.raises(ValueError, match="no dataset in `datasets` has task 'q2i'"):
        evaluate_model(load_model(model_dir), data, cfg)
