"""evaluate(): the trained omni model + the untrained baseline on a tiny media data set (real MiniLM,
real frozen EfficientNet-Lite0 and speech_embedding features)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from sail_core.eval.crossmodal import held_out_items
from sail_core.eval.evaluate import baseline_model, evaluate, evaluate_model
from sail_core.eval.report import write_report
from sail_core.features.item_inputs import ItemInputs

import tiny_pairs_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data, cache = tiny_pairs_data.media_data()
    cfg = tiny_pairs_data.fast_config()
    model_dir = baseline_model(cfg).save(root / "model")  # the "trained" model is the baseline itself
    return cfg, data, cache, model_dir, root


def test_evaluate_returns_all_keys_with_intervals(tiny):
    cfg, data, cache, model_dir, root = tiny
    out = root / "eval"
    result = evaluate(cfg, model_dir, data, out, cache_dir=cache)
    dims = [d for d in cfg.model.matryoshka_dims if d < 384]
    names = set()
    for task in cfg.eval.tasks:
        for k in cfg.eval.ks:
            names.add(f"{task}.recall_at_{k}")
            if task in ("i2i", "q2i"):
                names.update(f"{task}.dim{d}.recall_at_{k}" for d in dims)
    expected = {f"{prefix}.{n}{end}" for prefix in ("eval", "baseline", "delta") for n in names
                for end in ("", "_ci_low", "_ci_high")}
    assert set(result) == expected
    for name in names:
        for prefix in ("eval", "baseline"):
            low, value, high = (result[f"{prefix}.{name}{e}"] for e in ("_ci_low", "", "_ci_high"))
            assert 0.0 <= low <= value <= high <= 1.0, name
    # the saved model *is* the seeded baseline, so trained == baseline exactly: a zero-width paired interval
    for task in cfg.eval.tasks:
        assert result[f"eval.{task}.recall_at_10"] == pytest.approx(result[f"baseline.{task}.recall_at_10"])
        assert result[f"delta.{task}.recall_at_10_ci_low"] == result[f"delta.{task}.recall_at_10_ci_high"] == 0.0
    # recall grows with k; omni2omni is i2i with omni on both sides
    assert result["eval.i2i.recall_at_1"] <= result["eval.i2i.recall_at_10"] <= result["eval.i2i.recall_at_50"]
    assert result["eval.omni2omni.recall_at_10"] == pytest.approx(result["eval.i2i.recall_at_10"])
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result)
    assert (out / "eval_report.md").exists() and (out / "recall.png").stat().st_size > 0
    assert "95% bootstrap intervals" in (out / "eval_report.md").read_text()


def test_held_out_items_are_test_only(tiny):
    cfg, data, *_ = tiny
    held = held_out_items(data, list(cfg.datasets))
    ids = list(pd.read_parquet(data / "items.parquet")["item_id"])
    assert held == sorted(i for n, i in enumerate(ids) if n % 5 == 0)


def test_task_without_modality_is_skipped_with_a_note(tiny, tmp_path):
    cfg, data, cache, model_dir, root = tiny
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    items = pd.read_parquet(copy / "items.parquet")
    items["audio_path"] = pd.array([None] * len(items), dtype="string")
    items.to_parquet(copy / "items.parquet", index=False)
    cfg = cfg.model_copy(deep=True)
    cfg.eval.tasks = ["audio2text", "image2text"]
    notes: list[str] = []
    inputs = ItemInputs.from_data_dir(copy, cfg.model, cache, progress=False)
    metrics = evaluate_model(baseline_model(cfg), inputs, copy, cfg, notes)
    assert set(metrics) == {f"image2text.recall_at_{k}" for k in cfg.eval.ks}
    assert notes and "audio2text skipped" in notes[0] and "has audio" in notes[0]


def test_report_table(tmp_path):
    metrics = {"eval.i2i.recall_at_10": 0.5, "eval.i2i.recall_at_10_ci_low": 0.4, "eval.i2i.recall_at_10_ci_high": 0.6,
               "baseline.i2i.recall_at_10": 0.375, "delta.i2i.recall_at_10": 0.125,
               "delta.i2i.recall_at_10_ci_low": 0.05, "delta.i2i.recall_at_10_ci_high": 0.2,
               "eval.i2i.dim64.recall_at_10": 0.25}
    paths = write_report(metrics, tmp_path, ["audio2text skipped: no audio"])
    text = paths[0].read_text()
    assert ("| i2i | 10 | 0.5000 [0.4000, 0.6000] | 0.3750 [0.3750, 0.3750] | +0.1250 [+0.0500, +0.2000] | yes |"
            in text)
    assert "| i2i.dim64 | 10 | 0.2500 [0.2500, 0.2500] | n/a | n/a | n/a |" in text
    assert "- audio2text skipped: no audio" in text
    assert paths[1].name == "recall.png" and paths[1].stat().st_size > 0


def test_unknown_task_is_a_clear_error(tiny):
    cfg, data, cache, model_dir, root = tiny
    cfg = cfg.model_copy(deep=True)
    cfg.datasets = {k: v for k, v in cfg.datasets.items() if v.task != "q2i"}
    cfg.train.stages = []
    cfg.eval.tasks = ["q2i"]
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    with pytest.raises(ValueError, match="no dataset in `datasets` has task 'q2i'"):
        evaluate_model(baseline_model(cfg), inputs, data, cfg)
