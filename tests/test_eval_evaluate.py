"""evaluate(): the trained omni model, the untrained baseline and the plain text reference on a tiny media
data set (real MiniLM, real frozen EfficientNet-Lite0 and speech_embedding features, real FAISS)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from sail_core.data.splits import item_splits
from sail_core.eval.catalogue_index import build_catalogue, check_catalogue, model_fingerprint
from sail_core.eval.embed import EmbeddingStore, ModelEncoder
from sail_core.eval.evaluate import baseline_model, evaluate, model_scores, read_per_query
from sail_core.eval.queries import build_queries
from sail_core.eval.recall import per_query_recall
from sail_core.eval.report import write_report
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.pooling import matryoshka

import tiny_pairs_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data, cache = tiny_pairs_data.media_data()
    cfg = tiny_pairs_data.fast_config()
    model_dir = baseline_model(cfg).save(root / "model")  # the "trained" model is the baseline itself
    return cfg, data, cache, model_dir, root


def _metric_names(cfg) -> set[str]:
    dims = [d for d in cfg.model.matryoshka_dims if d < 384]
    names = set()
    for task in cfg.eval.tasks:
        for k in (cfg.eval.label_ks if task == "cls" else cfg.eval.ks):
            names.add(f"{task}.recall_at_{k}")
            if task in ("i2i", "q2i"):
                names.update(f"{task}.dim{d}.recall_at_{k}" for d in dims)
    return names


def test_evaluate_returns_all_keys_with_intervals(tiny):
    cfg, data, cache, model_dir, root = tiny
    out = root / "eval"
    result = evaluate(cfg, model_dir, data, out, cache_dir=cache)
    names = _metric_names(cfg)
    ends = ("", "_ci_low", "_ci_high")
    expected = {f"{p}.{n}{e}" for p in ("eval", "baseline", "delta") for n in names for e in ends}
    ref_names = {n for n in names if n.split(".")[0] in ("i2i", "q2i", "cls") and ".dim" not in n}
    expected |= {f"{p}.{n}{e}" for p in ("reference", "vs_reference") for n in ref_names for e in ends}
    counts = {k for k in result if k.endswith((".queries", ".held_out_items"))}
    assert set(result) - counts == expected
    for name in names:
        for prefix in ("eval", "baseline"):
            low, value, high = (result[f"{prefix}.{name}{e}"] for e in ("_ci_low", "", "_ci_high"))
            assert 0.0 <= low <= value <= high <= 1.0, name
    # the saved model *is* the seeded baseline, so trained == baseline exactly: a zero-width paired interval
    for task in cfg.eval.tasks:
        k = 3 if task == "cls" else 10
        assert result[f"eval.{task}.recall_at_{k}"] == pytest.approx(result[f"baseline.{task}.recall_at_{k}"])
        assert result[f"delta.{task}.recall_at_{k}_ci_low"] == result[f"delta.{task}.recall_at_{k}_ci_high"] == 0.0
    assert result["eval.i2i.recall_at_1"] <= result["eval.i2i.recall_at_10"] <= result["eval.i2i.recall_at_50"]
    assert result["eval.cls.recall_at_1"] <= result["eval.cls.recall_at_3"]
    assert result["eval.omni2omni.recall_at_10"] == pytest.approx(result["eval.i2i.recall_at_10"])
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result)
    report = (out / "eval_report.md").read_text()
    assert "95% bootstrap intervals" in report and "text reference" in report and "Queries per task" in report
    assert (out / "recall.png").stat().st_size > 0
    per, queries = read_per_query(out)
    assert set(per) == {"eval", "baseline", "reference"}
    assert per["eval"]["i2i.recall_at_10"].mean() == pytest.approx(result["eval.i2i.recall_at_10"])
    assert len(queries[queries["task"] == "i2i"]) == len(per["eval"]["i2i.recall_at_10"])


def test_only_test_items_are_queried(tiny):
    """Cross-modal and cls queries are exactly the test items; every i2i/q2i query involves one."""
    cfg, data, cache, *_ = tiny
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    test = {i for i, s in item_splits(data).items() if s == "test"}
    queries = build_queries(cfg, data, inputs, [])
    for task in ("image2text", "frames2text", "cls"):
        asked = {qs_side[0] for qs in queries[task] for qs_side in qs.sides}
        assert asked and asked <= test, task
    for task in ("i2i", "q2i"):
        assert all(h and set(h) <= test for qs in queries[task] for h in qs.held_out), task


def test_faiss_scores_match_a_naive_reference(tiny, tmp_path):
    """Per-query recall through stored embeddings + FAISS equals torch's dense scores (sail_core.eval.recall)."""
    cfg, data, cache, *_ = tiny
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    queries = build_queries(cfg, data, inputs, [])
    model = baseline_model(cfg)
    got = model_scores(cfg, model, inputs, queries, tmp_path / "store")
    store = EmbeddingStore(ModelEncoder(model, inputs, 64), tmp_path / "naive", progress=False)
    for task in ("i2i", "image2text", "cls"):
        qs = queries[task][0]
        corpus = torch.from_numpy(np.array(store.get(qs.corpus_key, qs.corpus)))
        q = torch.from_numpy(np.array(store.get("q" + qs.name, qs.sides)))
        d = 64 if qs.matryoshka else corpus.shape[1]
        ref = per_query_recall(matryoshka(q, d), matryoshka(corpus, d), [sorted(r) for r in qs.relevant], qs.ks,
                               exclude_index=qs.exclude)
        prefix = f"{task}.dim64" if qs.matryoshka else task
        for k in qs.ks:
            np.testing.assert_allclose(got[f"{prefix}.recall_at_{k}"][: len(qs.sides)], ref[k].numpy(), err_msg=f"{task}@{k}")


def test_catalogue_index_is_the_models_and_is_reused(tiny, tmp_path):
    cfg, data, cache, model_dir, root = tiny
    from sail_core.model.omni import load_model

    model = load_model(model_dir)
    inputs = ItemInputs.from_data_dir(data, model.cfg, cache, progress=False)
    meta = build_catalogue(cfg, model, inputs, tmp_path / "index", progress=False,
                           model_hash=model_fingerprint(model_dir))
    assert meta["count"] == len(inputs.items) and meta["dim"] == 384
    again = build_catalogue(cfg, model, inputs, tmp_path / "again", progress=False,
                            model_hash=model_fingerprint(model_dir))
    for name in ("index.json", "item_ids.txt", "titles.txt", "vectors.npy", "index.faiss"):  # same model, same folder
        assert (tmp_path / "index" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["embed_seconds"] >= 0 and "embed_seconds" not in json.loads((tmp_path / "again" / "index.json").read_text())
    assert check_catalogue(tmp_path / "index", model_dir)["kind"] == "flat"
    other = baseline_model(cfg)
    torch.nn.init.normal_(next(other.parameters()))
    with pytest.raises(ValueError, match="built with another model"):
        check_catalogue(tmp_path / "index", other.save(tmp_path / "other"))
    queries = build_queries(cfg, data, inputs, [])
    from_index = model_scores(cfg, model, inputs, queries, tmp_path / "a", catalogue_dir=tmp_path / "index")
    fresh = model_scores(cfg, model, inputs, queries, tmp_path / "b")
    for name in from_index:
        np.testing.assert_allclose(from_index[name], fresh[name], err_msg=name)


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
    queries = build_queries(cfg, copy, inputs, notes)
    assert set(queries) == {"image2text"}
    assert notes and "audio2text skipped" in notes[0] and "has audio" in notes[0]


def test_report_table(tmp_path):
    metrics = {"eval.i2i.recall_at_10": 0.5, "eval.i2i.recall_at_10_ci_low": 0.4, "eval.i2i.recall_at_10_ci_high": 0.6,
               "baseline.i2i.recall_at_10": 0.375, "delta.i2i.recall_at_10": 0.125,
               "delta.i2i.recall_at_10_ci_low": 0.05, "delta.i2i.recall_at_10_ci_high": 0.2,
               "reference.i2i.recall_at_10": 0.55, "vs_reference.i2i.recall_at_10": -0.05,
               "vs_reference.i2i.recall_at_10_ci_low": -0.1, "vs_reference.i2i.recall_at_10_ci_high": 0.01,
               "eval.i2i.dim64.recall_at_10": 0.25, "eval.i2i.queries": 600, "eval.i2i.held_out_items": 510}
    paths = write_report(metrics, tmp_path, ["audio2text skipped: no audio"])
    text = paths[0].read_text()
    assert ("| i2i | 10 | 0.5000 [0.4000, 0.6000] | 0.3750 [0.3750, 0.3750] | +0.1250 [+0.0500, +0.2000] | yes "
            "| 0.5500 [0.5500, 0.5500] | -0.0500 [-0.1000, +0.0100] | - |" in text)
    assert "| i2i.dim64 | 10 | 0.2500 [0.2500, 0.2500] | n/a | n/a | n/a | n/a | n/a | n/a |" in text
    assert "- i2i: 600 queries (510 test items)" in text
    assert "- audio2text skipped: no audio" in text
    assert paths[1].name == "recall.png" and paths[1].stat().st_size > 0


def test_unknown_task_is_a_clear_error(tiny):
    cfg, data, cache, model_dir, root = tiny
    cfg = cfg.model_copy(deep=True)
    cfg.datasets = {k: v for k, v in cfg.datasets.items() if v.task != "q2i"}
    cfg.eval.tasks = ["q2i"]
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    with pytest.raises(ValueError, match="no dataset in `datasets` has task 'q2i'"):
        build_queries(cfg, data, inputs, [])
