"""Settings that could only fail after training are refused at load, naming key, value and what is allowed."""

from __future__ import annotations

import pytest

from sail_core.config import REC_METRICS, ConfigError, embedding_width, eval_metric_names, load_config


def _refused(**overrides) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(profile="tiny", overrides=overrides)
    return str(e.value)


def test_gate_metric_names_follow_eval_tasks_ks_and_dims():
    cfg = load_config(profile="tiny")
    names = eval_metric_names(cfg.eval, cfg.model)
    assert "eval.i2i.recall_at_10" in names and "eval.omni2omni.recall_at_50" in names
    assert "eval.q2i.dim64.recall_at_1" in names and "eval.i2i.dim128.recall_at_10" in names
    assert "eval.i2i.dim384.recall_at_10" not in names          # the full width has no dim variant
    assert "eval.image2text.dim128.recall_at_10" not in names   # cross-modal tasks log the full dim only
    item_tasks = [t for t in cfg.eval.tasks if t != "cls"]
    rec = [n for n in names if n[len("eval."):] in REC_METRICS]   # the recommendation metrics, always offered
    assert len(rec) == len(REC_METRICS) and "eval.seq2item.filtered.recall_at_10" in rec
    assert len(names) - len(rec) == (len(item_tasks) * len(cfg.eval.ks) + 2 * 2 * len(cfg.eval.ks)
                                     + len(cfg.eval.label_ks))


def test_gate_metric_with_an_unconfigured_k_is_refused():
    msg = _refused(**{"gate.metrics": [{"metric": "eval.i2i.recall_at_10"}, {"metric": "eval.i2i.recall_at_5"}]})
    assert "gate.metrics.1.metric = 'eval.i2i.recall_at_5'" in msg
    assert "eval.ks [1, 10, 50]" in msg and "allowed: eval.i2i.recall_at_1, eval.i2i.recall_at_10" in msg
    assert "gate.metrics.0" not in msg


def test_gate_metric_of_a_task_not_evaluated_is_refused():
    msg = _refused(**{"eval.tasks": ["i2i", "q2i"]})   # tiny's gate also names image2text and audio2text
    assert "gate.metrics.1.metric = 'eval.image2text.recall_at_10'" in msg
    assert "gate.metrics.2.metric = 'eval.audio2text.recall_at_10'" in msg
    assert "eval.tasks ['i2i', 'q2i']" in msg


def test_gate_metric_with_a_matryoshka_dim_follows_model_dims():
    ok = load_config(profile="tiny", overrides={"gate.metrics": [{"metric": "eval.q2i.dim128.recall_at_10"}]})
    assert ok.gate.metrics[0].metric == "eval.q2i.dim128.recall_at_10"
    msg = _refused(**{"gate.metrics": [{"metric": "eval.q2i.dim128.recall_at_10"}], "model.matryoshka_dims": [384, 64]})
    assert "gate.metrics.0.metric = 'eval.q2i.dim128.recall_at_10'" in msg and "eval.q2i.dim64.recall_at_10" in msg


def test_gate_metric_that_evaluation_would_skip_is_refused():
    """audio2text needs a dataset listing audio->text for its instructions; without one evaluation skips it."""
    msg = _refused(**{"datasets.xmodal.patterns": ["image->text", "frames->text"]})
    assert "gate.metrics.2.metric = 'eval.audio2text.recall_at_10'" in msg and "audio->text" in msg


def test_gate_metric_listed_twice_is_refused():
    msg = _refused(**{"gate.metrics": [{"metric": "eval.i2i.recall_at_10"}, {"metric": "eval.i2i.recall_at_10"}]})
    assert "'gate': " in msg and "names a metric twice" in msg


def test_warmup_must_be_below_steps():
    msg = _refused(**{"train.stages.0.warmup_steps": 4})   # tiny's stage1 has 4 steps
    assert "train.stages.0.warmup_steps = 4 must be smaller than train.stages.0.steps = 4" in msg
    assert "allowed: 0..3" in msg
    assert load_config(profile="tiny", overrides={"train.stages.0.warmup_steps": 3}).train.stages[0].warmup_steps == 3


def test_empty_datasets_are_refused():
    msg = _refused(**{"train.stages.0.datasets": []})
    assert "train.stages.0.datasets is empty" in msg and "allowed: cls, copair_i2i, q2i, xmodal" in msg
    msg = _refused(**{"datasets": {}})
    assert "datasets is empty" in msg
    assert "train.stages.0.datasets.0: unknown dataset 'copair_i2i'; allowed: (none defined)" in msg
    assert "train.stages is empty" in _refused(**{"train.stages": []})


def test_stage_names_must_be_distinct():
    stage = {"name": "s", "datasets": ["q2i"], "steps": 2, "warmup_steps": 0}
    msg = _refused(**{"train.stages": [stage, stage]})
    assert "train.stages.1.name: stage 's' is listed twice" in msg


def test_eval_task_without_a_dataset_of_its_kind_is_refused():
    msg = _refused(**{"datasets.q2i.task": "cls", "gate.metrics": [{"metric": "eval.i2i.recall_at_10"}]})
    assert "eval.tasks.1 = 'q2i'" in msg and "no dataset has it" in msg


def test_matryoshka_dims_cannot_exceed_the_backbone_width():
    msg = _refused(**{"model.matryoshka_dims": [512, 128]})
    assert "'model': model.matryoshka_dims [512, 128] exceed the minilm backbone's width 384" in msg
    paper = load_config(profile="paper")
    assert embedding_width(paper.model) == paper.model.qwen2.hidden_size == paper.model.matryoshka_dims[0]


def test_every_problem_is_reported_at_once():
    msg = _refused(**{"train.stages.0.warmup_steps": 9, "gate.metrics.0.metric": "eval.i2i.recall_at_7"})
    assert "train.stages.0.warmup_steps = 9" in msg and "gate.metrics.0.metric = 'eval.i2i.recall_at_7'" in msg


def test_old_key_names_point_to_the_new_ones(tmp_path):
    msg = _refused(**{"serve.model_name": "x"})
    assert "unknown key 'serve.model_name' ('serve.model_name' is now 'serve.triton_model')" in msg
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  data: {keyframes: 3}\n  registry: {model_name: m}\nprofiles: {demo: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(params, "demo")
    assert "'data.keyframes' is now 'data.render_keyframes'" in str(e.value)
    assert "'registry.model_name' is now 'registry.mlflow_model'" in str(e.value)


def test_renamed_keys_hold_their_values():
    cfg = load_config(profile="tiny")
    assert cfg.serve.triton_model == "sail_embedding" and cfg.registry.mlflow_model == "sail-embedding"
    assert cfg.data.render_keyframes == 4 and cfg.model.inputs.keyframes == 2
    assert cfg.data.media_workers is None and cfg.train.feature_threads is None
    assert load_config(profile="tiny", overrides={"data.media_workers": 3, "train.feature_threads": 2}).train.feature_threads == 2
    assert "'data.media_workers'" in _refused(**{"data.media_workers": 0})


def test_stage_names_are_word_characters():
    """A stage name is also an Airflow task id, a DVC stage and a folder name."""
    msg = _refused(**{"train.stages": [{"name": "stage 1", "datasets": ["q2i"], "steps": 4, "warmup_steps": 1}]})
    assert "train.stages.0.name" in msg and "stage 1" in msg
