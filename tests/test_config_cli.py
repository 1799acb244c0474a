"""Bad configuration fails at start-up with a message naming the key and what is allowed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sail_core.cli import app
from sail_core.config import ConfigError, load_config

runner = CliRunner()


def test_profiles_load_and_merge():
    demo, tiny = load_config(profile="demo"), load_config(profile="tiny")
    assert demo.profile == "demo" and tiny.profile == "tiny"
    assert demo.data.max_items is None and tiny.data.max_items == 120
    # deep merge keeps base keys the profile does not mention
    assert tiny.datasets == demo.datasets
    assert tiny.serve.host == "127.0.0.1"


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"train.stagez": 3})
    msg = str(e.value)
    assert "unknown key 'train.stagez'" in msg and "stages" in msg and "threads" in msg


def test_unknown_dataset_in_stage_names_allowed():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"train.stages": [{"name": "s", "datasets": ["nope"]}]})
    assert "unknown dataset 'nope'" in str(e.value) and "copair_i2i" in str(e.value)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "model.max_length=abc", "train"], "'model.max_length'"),
        (["--set", "model.backbone=gpt", "train"], "allowed: 'minilm'"),
        (["--set", "data.holdout_fraction=2", "ingest"], "'data.holdout_fraction'"),
        (["--set", "bogus.key=1", "ingest"], "unknown key 'bogus'"),
        (["--profile", "nope", "ingest"], "allowed profiles: demo"),
        (["--set", "train.stages.0.warmup_steps=100", "train"], "train.stages.0.warmup_steps = 100 must be smaller"),
        (["--set", "gate.metrics.0.metric=eval.i2i.recall_at_3", "gate"], "gate.metrics.0.metric = 'eval.i2i.recall_at_3'"),
        (["--set", "train.stages.0.datasets=[]", "train"], "train.stages.0.datasets is empty"),
        (["--set", "datasets={}", "train"], "datasets is empty"),
        (["--set", "serve.model_name=x", "promote"], "'serve.model_name' is now 'serve.triton_model'"),
        (["--set", "data.keyframes=3", "ingest"], "'data.keyframes' is now 'data.render_keyframes'"),
        (["--set", "gate.metrics.eval.i2i.recall_at_10=0.02", "gate"], "must be an index 0..2"),
    ],
)
def test_cli_rejects_bad_config(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())


def test_config_show_tiny_inherits_stage_keys_from_base():
    import yaml

    result = runner.invoke(app, ["config", "show", "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    stage = yaml.safe_load(result.output)["train"]["stages"][0]
    assert stage["steps"] == 4 and stage["media_lr"] == 1e-3 and stage["temperature_lr"] == 1e-3
    assert "media_lr: 0.001" in result.output


def test_cli_rejects_malformed_set():
    result = runner.invoke(app, ["--set", "novalue", "ingest"])
    assert result.exit_code != 0
    assert "KEY=VALUE" in result.output
