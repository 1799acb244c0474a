"""train_stage on the tiny profile with the real MiniLM backbone: outputs, logging, exact resume, hard negatives."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sail_core.config import load_config
from sail_core.model.embedder import load_model
from sail_core.train.checkpoint import list_checkpoints
from sail_core.train.loop import train_stage

import tiny_pairs_data


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_pairs_data.build(tmp_path_factory.mktemp("train") / "data")


@pytest.fixture(scope="module")
def cfg():
    return load_config(profile="tiny")


@pytest.fixture(scope="module")
def full_run(cfg, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    logged = []
    summary = train_stage(cfg, cfg.train.stages[0], data, out, log=lambda m, s: logged.append((s, m)))
    return out, summary, logged


def test_outputs_summary_and_logs(cfg, full_run):
    out, summary, logged = full_run
    stage = cfg.train.stages[0]
    assert summary["steps"] == stage.steps and summary["steps_run"] == stage.steps
    assert summary["final_loss"] > 0 and summary["samples_per_s"] > 0
    assert sum(summary["dataset_counts"].values()) == stage.steps
    assert [s for s, _ in logged] == list(range(1, stage.steps + 1))
    keys = set(logged[-1][1])
    dims = cfg.model.matryoshka_dims
    assert {f"nce_{d}_loss" for d in dims} | {"loss", "lr"} <= keys
    assert {f"temperature.{n}" for n in stage.datasets} <= keys
    last = logged[-1][1]
    assert last["loss"] == pytest.approx(sum(last[f"nce_{d}_loss"] for d in dims), rel=1e-5)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert len(metrics["history"]) == stage.steps and metrics["summary"]["stage"] == "stage1"
    assert (out / "loss_curve.png").stat().st_size > 0
    assert not (out / "checkpoints").exists()  # removed after success by default
    model = load_model(out / "model")
    assert model.embed_texts(["Alien Day"]).shape == (1, 384)
    temps = json.loads((out / "model" / "temperatures.json").read_text())
    assert set(temps) == set(cfg.datasets)


def test_resume_after_interruption_matches_uninterrupted_run(cfg, data, full_run, tmp_path):
    _, _, reference = full_run
    stage = cfg.train.stages[0]  # steps 4, checkpoint_every 2

    def crash_at_3(metrics, step):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, stage, data, tmp_path, log=crash_at_3)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_0000002.pt"]
    logged = []
    summary = train_stage(cfg, stage, data, tmp_path, log=lambda m, s: logged.append((s, m)))
    assert summary["resumed_from_step"] == 2 and summary["steps_run"] == 2
    assert [s for s, _ in logged] == [3, 4]
    for (s, m), (rs, rm) in zip(logged, reference[2:]):
        assert s == rs
        assert m["loss"] == pytest.approx(rm["loss"], rel=1e-4, abs=1e-5)
    history = json.loads((tmp_path / "train_metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]


def test_resume_warns_when_steps_differ(cfg, data, tmp_path):
    stage = cfg.train.stages[0].model_copy(update={"steps": 3, "checkpoint_every": 1, "warmup_steps": 0})

    def crash_at_2(metrics, step):
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, stage, data, tmp_path, log=crash_at_2)
    with pytest.warns(UserWarning, match="checkpoint has steps=3 but this run has steps=2"):
        summary = train_stage(cfg, stage.model_copy(update={"steps": 2}), data, tmp_path)
    assert summary["steps_run"] == 1


def test_hard_negatives_stage_and_init_from(cfg, data, full_run, tmp_path):
    out, _, _ = full_run
    stage = cfg.train.stages[0].model_copy(update={"name": "stage3", "steps": 2, "hard_negatives": 2,
                                                   "datasets": ["copair_i2i", "q2i"]})
    with pytest.raises(FileNotFoundError, match="hard_negatives/copair_i2i.parquet does not exist"):
        train_stage(cfg, stage, data, tmp_path / "missing")
    hn = data / "hard_negatives"
    hn.mkdir(exist_ok=True)
    pairs = pd.read_parquet(data / "pairs" / "copair_i2i.parquet")
    pd.DataFrame({"query_item": pairs["query_item"], "query_text": None, "negative_item": "m1"}).to_parquet(
        hn / "copair_i2i.parquet")
    pd.DataFrame({"query_item": [None], "query_text": ["nothing mined here"], "negative_item": ["m2"]}).to_parquet(
        hn / "q2i.parquet")
    logged = []
    summary = train_stage(cfg, stage, data, tmp_path / "s3", init_from=out / "model",
                          log=lambda m, s: logged.append(m))
    assert summary["steps_run"] == 2 and all(m["loss"] > 0 for m in logged)
