"""Profiles merge over base: sections key by key, train.stages by stage name, other lists whole."""

from __future__ import annotations

import pytest
import yaml

from sail_core.config import ConfigError, load_config, params_path


def _params(tmp_path, profile: dict):
    base = yaml.safe_load(params_path().read_text())["base"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"base": base, "profiles": {"p": profile}}))
    return path


def test_tiny_restates_stage1_and_inherits_the_rest():
    base, tiny = load_config(profile="demo").train.stages[0], load_config(profile="tiny").train.stages[0]
    assert (tiny.steps, tiny.batch_size, tiny.warmup_steps, tiny.checkpoint_every) == (4, 8, 1, 2)
    assert tiny.media_lr == base.media_lr == 1e-3 and tiny.temperature_lr == base.temperature_lr == 1e-3
    assert tiny.datasets == base.datasets and tiny.lr == base.lr


def test_tiny_states_only_what_differs_from_base():
    raw = yaml.safe_load(params_path().read_text())
    tiny_stage = raw["profiles"]["tiny"]["train"]["stages"][0]
    base_stage = raw["base"]["train"]["stages"][0]
    assert [k for k in tiny_stage if k != "name" and tiny_stage[k] == base_stage.get(k)] == []
    assert "ks" not in raw["profiles"]["tiny"]["eval"]


def test_a_new_stage_name_is_appended_whole(tmp_path):
    new = {"name": "polish", "datasets": ["q2i"], "steps": 5, "warmup_steps": 1}
    cfg = load_config(_params(tmp_path, {"train": {"stages": [{"name": "stage1", "steps": 17}, new]}}), "p")
    assert [s.name for s in cfg.train.stages] == ["stage1", "stage2", "stage3", "cre", "polish"]
    assert cfg.train.stages[0].steps == 17 and cfg.train.stages[0].media_lr == 1e-3
    assert cfg.train.stages[4].steps == 5 and cfg.train.stages[4].media_lr is None


def test_an_incomplete_new_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_params(tmp_path, {"train": {"stages": [{"name": "stage9", "steps": 5}]}}), "p")
    assert "'train.stages.4.datasets': Field required" in str(e.value)


def test_a_profile_can_drop_a_stage_of_base(tmp_path):
    cfg = load_config(_params(tmp_path, {"train": {"stages": [{"name": "stage3", "drop": True}]}}), "p")
    assert [s.name for s in cfg.train.stages] == ["stage1", "stage2", "cre"]
    with pytest.raises(ConfigError, match="`drop: true` removes a stage of base"):
        load_config(_params(tmp_path, {"train": {"stages": [{"name": "nope", "drop": True}]}}), "p")


def test_a_profile_stage_without_a_name_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_params(tmp_path, {"train": {"stages": [{"steps": 5}]}}), "p")
    assert "profiles.p.train.stages.0: a profile's stage needs a `name`" in str(e.value)


def test_other_lists_are_replaced_whole(tmp_path):
    cfg = load_config(_params(tmp_path, {"eval": {"ks": [5]}, "gate": {"metrics": [{"metric": "eval.q2i.recall_at_5"}]}}), "p")
    assert cfg.eval.ks == [5] and [m.metric for m in cfg.gate.metrics] == ["eval.q2i.recall_at_5"]
