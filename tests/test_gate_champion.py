"""The gate's yardstick: the champion is re-scored from its registered ONNX export on the candidate's own test
queries (real MLflow registry, real export run in onnxruntime), never compared by the numbers it logged, and
queries about items it trained on are left out."""

from __future__ import annotations

import numpy as np
import pytest

from sail_core.data.splits import item_splits
from sail_core.eval.evaluate import baseline_model, evaluate, model_scores, read_per_query
from sail_core.eval.queries import build_queries
from sail_core.features.item_inputs import ItemInputs
from sail_core.pipeline import registry, tracking
from sail_core.pipeline.champion import TRAIN_ITEMS, compare_with_champion
from sail_core.pipeline.gating import check_gate

import tiny_pairs_data

pytestmark = pytest.mark.export  # builds and runs a real ONNX export (about a minute on 2 cores)
from exports import cached_export


def test_a_champion_trained_on_other_data_is_rescored_not_read(tmp_path):
    cfg = tiny_pairs_data.fast_config(**{"registry.mlflow_model": "test-champion-rescore"})
    name = cfg.registry.mlflow_model
    data, cache = tiny_pairs_data.media_data()
    export_dir, champion_model, _ = cached_export(1)

    out = tmp_path / "eval"
    evaluate(cfg, baseline_model(cfg).save(tmp_path / "candidate"), data, out, cache_dir=cache)
    per, queries = read_per_query(out)

    # The champion's run: trained on other data (its training items include 3 of today's test items with a cover,
    # and one that is not in this catalogue at all), and it logged figures that mean nothing on today's queries.
    test_items = sorted(queries[queries["task"] == "image2text"]["held_out"])
    assert set(test_items) <= {i for i, s in item_splits(data).items() if s == "test"}
    champ_run = tracking.start_pipeline_run(cfg, "champion-run", {})
    tracking.log_metrics(champ_run, {f"eval.{t}.recall_at_10": 1.0 for t in ("i2i", "image2text", "audio2text")})
    tracking.log_text(champ_run, "".join(f"{i}\n" for i in test_items[:3] + ["item-from-other-data"]), TRAIN_ITEMS)
    version = registry.register_onnx(champ_run, export_dir, name, {"data_hash": "other"})
    registry.set_champion(name, version)

    cand_run = tracking.start_pipeline_run(cfg, "candidate-run", {})
    champ = registry.by_alias(name, registry.CHAMPION)
    reference, keep, overlap = compare_with_champion(cfg, champ, data, queries, cand_run)
    # without the feature cache, the export decodes every file itself: the same figures
    from sail_core.pipeline.champion import ExportEncoder, rescore

    bare = ItemInputs.from_data_dir(data, cfg.model, media_features=False)
    assert ExportEncoder(export_dir, ItemInputs.from_data_dir(data, cfg.model, cache)).cached
    decoded, _ = rescore(cfg, export_dir, bare, data, {"image2text", "audio2text"})
    for metric in ("image2text.recall_at_10", "audio2text.recall_at_10"):
        assert decoded[metric].mean() == pytest.approx(reference[metric].mean(), abs=0.03), metric

    # re-scored: the same queries as the candidate, and the figures the export earns on them (checked against the
    # champion's PyTorch model scored by the same code), not the 1.0 it logged
    for metric, values in reference.items():
        assert values.shape == per["eval"][metric].shape, metric
    inputs = ItemInputs.from_data_dir(data, champion_model.cfg, progress=False)
    torch_scores = model_scores(cfg, champion_model, inputs, build_queries(cfg, data, inputs, []), tmp_path / "t")
    assert set(reference) == {n for n in per["eval"] if n.split(".")[0] in ("i2i", "image2text", "audio2text")}
    for metric in ("i2i.recall_at_10", "image2text.recall_at_10", "audio2text.recall_at_10"):
        assert reference[metric].mean() < 1.0
        assert reference[metric].mean() == pytest.approx(torch_scores[metric].mean(), abs=0.03), metric
    logged = tracking.run_metrics(cand_run)
    assert logged["champion.image2text.recall_at_10"] == pytest.approx(reference["image2text.recall_at_10"].mean())

    # the overlap: 3 known items, and the queries about them are out of the comparison
    assert overlap["train_items_known"] and overlap["overlap_items"] == 3
    assert overlap["excluded_queries"]["image2text"] == 3 and keep["image2text"].sum() == len(keep["image2text"]) - 3
    result = check_gate(per["eval"], reference, cfg.gate.metrics, f"champion v{version} (re-scored)", keep)
    by_metric = {c["metric"]: c for c in result.checks}
    assert by_metric["eval.image2text.recall_at_10"]["excluded"] == 3
    kept = keep["image2text"]
    assert by_metric["eval.image2text.recall_at_10"]["reference"] == pytest.approx(
        reference["image2text.recall_at_10"][kept].mean())
    assert set(keep) == {"i2i", "image2text", "audio2text"}  # the gated tasks only
    assert np.all(keep["i2i"] == [not (set(h.split("|")) & set(test_items[:3]))
                                  for h in queries[queries["task"] == "i2i"].sort_values("query")["held_out"]])
