"""``--set`` / ``overrides``: dotted keys, list items by index, whole values as YAML; unknown keys refused.

The README's gate commands run here, as written, through the real CLI on the tiny profile
(``--dry-run`` stops after the configuration is accepted; without it the gate fails for
lack of a pipeline run, after the configuration was accepted)."""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from sail_core.cli import app
from sail_core.config import ConfigError, load_config

runner = CliRunner()

# The README's gate commands, as written there (it runs them on the tiny profile).
README_GATE_COMMANDS = [
    ".venv/bin/sail --set gate.metrics.0.min_delta=0.02 gate",
    ".venv/bin/sail --set 'gate.metrics=[{metric: eval.i2i.recall_at_10, min_delta: 0.02}]' gate",
]


def _invoke(command: str, *extra: str):
    args = shlex.split(command)[1:]  # drop .venv/bin/sail
    return runner.invoke(app, ["--profile", "tiny", *extra, *args])


@pytest.mark.parametrize("command", README_GATE_COMMANDS)
def test_readme_gate_commands_accept_the_configuration(command):
    result = _invoke(command, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would call sail_core.pipeline" in result.output and "gate(" in result.output


@pytest.mark.parametrize("command", README_GATE_COMMANDS)
def test_readme_gate_commands_reach_the_gate(command, tmp_path):
    result = _invoke(command, "--workdir", str(tmp_path))
    assert result.exit_code == 1, result.output            # 2 would be a configuration error
    assert "configuration error" not in result.output
    assert "no pipeline run recorded" in result.output


def test_the_old_readme_form_is_refused_with_the_new_forms():
    result = runner.invoke(app, ["--profile", "tiny", "--set", "gate.metrics.eval.i2i.recall_at_10=0.02", "gate"])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "gate.metrics is a list of 3, so the next part must be an index 0..2, got 'eval'" in out
    assert "gate.metrics=[{metric: eval.i2i.recall_at_10, min_delta: 0.02}]" in out


def test_index_and_yaml_forms_set_what_they_say():
    cfg = load_config(profile="tiny", overrides={"gate.metrics.1.min_delta": 0.02})
    assert [m.min_delta for m in cfg.gate.metrics] == [-1.0, 0.02, -1.0]
    cfg = load_config(profile="tiny", overrides={"train.stages.0.steps": 6, "model.qwen2.layers": 2})
    assert cfg.train.stages[0].steps == 6 and cfg.model.qwen2.layers == 2  # qwen2: a section base leaves unset
    cfg = load_config(profile="tiny", overrides={"datasets.q2i.patterns": ["text->text"]})
    assert cfg.datasets["q2i"].patterns == ["text->text"]


@pytest.mark.parametrize(
    "key, needle",
    [
        ("gate.threshold", "unknown key 'gate.threshold'; allowed keys at gate: champion_rule, first_reference, first_rule, metrics"),
        ("gate.metrics.0.delta", "unknown key 'gate.metrics.0.delta'; allowed keys at gate.metrics.0: metric, min_delta"),
        ("gate.metrics.3.min_delta", "gate.metrics is a list of 3, so the next part must be an index 0..2, got '3'"),
        ("train.stages.0.stepz", "allowed keys at train.stages.0: balance, batch_size, checkpoint_every"),
        ("model.max_length.x", "model.max_length holds the value 32, not keys"),
        ("nothing", "unknown key 'nothing'; allowed keys at the top level: contracts, cre, data, datasets"),
    ],
)
def test_unknown_keys_are_refused_not_created(key, needle):
    with pytest.raises(ConfigError) as e:
        load_config(profile="tiny", overrides={key: 1})
    assert needle in str(e.value)


def test_cli_set_refuses_unknown_key_with_allowed_keys():
    result = runner.invoke(app, ["--profile", "tiny", "--set", "serve.port=9000", "config", "show"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "unknown key 'serve.port'" in out and "allowed keys at serve: allow_spinning, " in out
    assert "grpc_port, host, http_port" in out  # sorted, so the near misses sit side by side


def test_cli_set_value_is_typed_and_checked():
    result = runner.invoke(app, ["--profile", "tiny", "--set", "gate.metrics.0.min_delta=lots", "config", "show"])
    assert result.exit_code == 2 and "'gate.metrics.0.min_delta'" in result.output
