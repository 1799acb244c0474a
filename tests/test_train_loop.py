"""train_stage on the tiny profile with the real omni model (MiniLM + frozen media towers) on a media data set:
outputs, pattern-named loss terms, logging, exact resume, hard negatives, temperature lr."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sail_core.model.omni import load_model
from sail_core.train.checkpoint import list_checkpoints
from sail_core.train.loop import train_stage

import tiny_pairs_data

pytestmark = pytest.mark.train


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def media():
    return tiny_pairs_data.media_data()


@pytest.fixture(scope="module")
def data(media, tmp_path_factory):
    import shutil

    # a private copy (the hard-negative test adds files); the copy keeps mtimes, so cached features are reused
    out = tmp_path_factory.mktemp("train") / "data"
    shutil.copytree(media[0], out)
    return out


@pytest.fixture(scope="module")
def cache(media):
    return media[1]


@pytest.fixture(scope="module")
def cfg():
    return tiny_pairs_data.fast_config()


@pytest.fixture(scope="module")
def full_run(cfg, data, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    logged = []
    summary = train_stage(cfg, cfg.train.stages[0], data, out, log=lambda m, s: logged.append((s, m)), cache_dir=cache)
    return out, summary, logged


def test_outputs_summary_and_logs(cfg, full_run):
    out, summary, logged = full_run
    stage = cfg.train.stages[0]
    assert summary["steps"] == stage.steps and summary["steps_run"] == stage.steps
    assert summary["final_loss"] > 0 and summary["samples_per_s"] > 0
    assert sum(summary["dataset_counts"].values()) == stage.steps
    assert [s for s, _ in logged] == list(range(1, stage.steps + 1))
    dims = cfg.model.matryoshka_dims
    history = json.loads((out / "train_metrics.json").read_text())["history"]
    for (_, m), h in zip(logged, history):
        keys = set(m)
        assert {"loss", "lr"} | {f"temperature.{n}" for n in stage.datasets} <= keys
        # the step's dataset's patterns, one term per pattern and dim (patterns lacking rows may be absent)
        names = {f"nce_{p.replace('->', '2')}_{d}_loss" for p in cfg.datasets[h["dataset"]].patterns for d in dims}
        terms = {k for k in keys if k.endswith("_loss")}
        assert terms and terms <= names
        assert m["loss"] == pytest.approx(sum(m[k] for k in terms), rel=1e-5)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert len(metrics["history"]) == stage.steps and metrics["summary"]["stage"] == "stage1"
    assert (out / "loss_curve.png").stat().st_size > 0
    assert not (out / "checkpoints").exists()  # removed after success by default
    model = load_model(out / "model")
    assert (out / "model" / "sail_omni.json").exists()
    temps = json.loads((out / "model" / "temperatures.json").read_text())
    assert set(temps) == set(cfg.temperature_inits())  # every pair dataset and CRE task


def test_resume_after_interruption_matches_uninterrupted_run(cfg, data, cache, full_run, tmp_path):
    _, _, reference = full_run
    stage = cfg.train.stages[0]  # steps 4, checkpoint_every 2

    def crash_at_3(metrics, step):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, stage, data, tmp_path, log=crash_at_3, cache_dir=cache)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_0000002.pt"]
    logged = []
    summary = train_stage(cfg, stage, data, tmp_path, log=lambda m, s: logged.append((s, m)), cache_dir=cache)
    assert summary["resumed_from_step"] == 2 and summary["steps_run"] == 2
    assert [s for s, _ in logged] == [3, 4]
    for (s, m), (rs, rm) in zip(logged, reference[2:]):
        assert s == rs
        assert m["loss"] == pytest.approx(rm["loss"], rel=1e-4, abs=1e-5)
        assert m["lr"] == pytest.approx(rm["lr"], rel=1e-9)  # the scheduler resumed from its checkpointed state
    history = json.loads((tmp_path / "train_metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]


def test_resume_warns_when_steps_differ(cfg, data, cache, tmp_path):
    stage = cfg.train.stages[0].model_copy(update={"steps": 3, "checkpoint_every": 1, "warmup_steps": 0,
                                                   "batch_size": 4})

    def crash_at_2(metrics, step):
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, stage, data, tmp_path, log=crash_at_2, cache_dir=cache)
    with pytest.warns(UserWarning, match="checkpoint has steps=3 but this run has steps=2"):
        summary = train_stage(cfg, stage.model_copy(update={"steps": 2}), data, tmp_path, cache_dir=cache)
    assert summary["steps_run"] == 1


def test_hard_negatives_stage_init_from_and_temperature_lr(cfg, data, cache, full_run, tmp_path):
    out, _, _ = full_run
    stage = cfg.train.stages[0].model_copy(update={"name": "stage3", "steps": 2, "hard_negatives": 2, "batch_size": 4,
                                                   "datasets": ["copair_i2i", "q2i"], "temperature_lr": 0.05,
                                                   "hard_negative_datasets": ["copair_i2i", "q2i"]})
    with pytest.raises(FileNotFoundError, match="hard_negatives/copair_i2i.parquet does not exist"):
        train_stage(cfg, stage, data, tmp_path / "missing", cache_dir=cache)
    hn = data / "hard_negatives"
    hn.mkdir(exist_ok=True)
    pairs = pd.read_parquet(data / "pairs" / "copair_i2i.parquet")
    pd.DataFrame({"query_item": pairs["query_item"], "query_text": None, "negative_item": "m1"}).to_parquet(
        hn / "copair_i2i.parquet")
    pd.DataFrame({"query_item": [None], "query_text": ["nothing mined here"], "negative_item": ["m2"]}).to_parquet(
        hn / "q2i.parquet")
    logged = []
    summary = train_stage(cfg, stage, data, tmp_path / "s3", init_from=out / "model",
                          log=lambda m, s: logged.append(m), cache_dir=cache)
    assert summary["steps_run"] == 2 and all(m["loss"] > 0 for m in logged)
    drawn_hn = summary["hard_negatives"]
    assert sum(s["drawn_mined"] for s in drawn_hn.values()) > 0 and "hard_negatives.mined_share" in logged[-1]
    # temperatures carried over from stage 1, then moved by their own (large) lr
    before = json.loads((out / "model" / "temperatures.json").read_text())
    after = summary["temperatures"]
    drawn = [n for n, c in summary["dataset_counts"].items() if c]
    assert all(abs(after[n] - before[n]) > 5e-4 for n in drawn), (before, after, drawn)
    with pytest.raises(FileNotFoundError, match="no saved omni model"):
        train_stage(cfg, stage, data, tmp_path / "bad", init_from=tmp_path, cache_dir=cache)


def test_cosent_micl_late_fusion_and_balancing_are_live(cfg, data, cache, full_run, tmp_path):
    """With their weights set, each auxiliary loss logs its term; a balanced stage logs non-configured
    sampling weights computed with its starting model, saves them beside its model, and the next balanced
    stage reuses them."""
    import shutil

    out, _, _ = full_run
    data_val = tmp_path / "data"  # this data set has no validation items: make every 4th train pair a val pair
    shutil.copytree(data, data_val)
    for f in (data_val / "pairs").glob("*.parquet"):
        p = pd.read_parquet(f)
        train_rows = p.index[p["split"] == "train"]
        p.loc[train_rows[::4], "split"] = "val"
        if f.stem == "copair_i2i":  # graded scores for CoSENT (the demo's co-rating counts)
            p["score"] = (p.index % 5 + 1).astype("float32")
        p.to_parquet(f)
    data = data_val
    ds = dict(cfg.datasets)
    ds["copair_i2i"] = ds["copair_i2i"].model_copy(update={"cosent_weight": 1.0, "micl_weight": 0.5,
                                                           "late_fusion_weight": 0.5})
    aux_cfg = cfg.model_copy(update={"datasets": ds})
    stage = cfg.train.stages[0].model_copy(update={"name": "stage2", "steps": 4, "batch_size": 8, "balance": True,
                                                   "datasets": ["copair_i2i", "xmodal"], "warmup_steps": 0})
    logged = []
    summary = train_stage(aux_cfg, stage, data, tmp_path / "s2", init_from=out / "model",
                          log=lambda m, s: logged.append(m), cache_dir=cache)
    copair = [m for m in logged if "micl_vision_loss" in m]
    assert copair, "no copair_i2i step was drawn"
    for term in ("cosent_384_loss", "cosent_64_loss", "cosent_pairs", "micl_vision_loss", "micl_text_loss",
                 "late_fusion_loss", "gate_mean"):
        assert term in copair[0], term
    assert all(m["cosent_pairs"] > 0 for m in copair)
    record = summary["balance"]
    assert record["computed_in"] == "stage2" and set(record["weights"]) == {"copair_i2i", "xmodal"}
    assert abs(sum(record["weights"].values()) - 1) < 1e-6
    assert record["weights"] != record["configured"]
    assert logged[0]["weight.copair_i2i"] == pytest.approx(record["weights"]["copair_i2i"])
    saved = tmp_path / "s2" / "model"
    assert (saved / "balance.json").exists() and (saved / "aux_losses.pt").exists()
    # the next balanced stage reuses the weights matched once with the early checkpoint
    stage3 = stage.model_copy(update={"name": "stage3", "steps": 1})
    again = train_stage(aux_cfg, stage3, data, tmp_path / "s3", init_from=saved, cache_dir=cache)
    assert again["balance"]["carried_from"].endswith("balance.json")
    assert again["sampling_weights"] == pytest.approx(record["weights"])
    # the switch turns balancing off: the configured weights, normalised
    off = aux_cfg.model_copy(update={"train": aux_cfg.train.model_copy(update={
        "balance": aux_cfg.train.balance.model_copy(update={"enabled": False})})})
    plain = train_stage(off, stage3, data, tmp_path / "s3off", init_from=out / "model", cache_dir=cache)
    assert plain["balance"] is None and plain["sampling_weights"] == pytest.approx({"copair_i2i": 0.25, "xmodal": 0.75})
