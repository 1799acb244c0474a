"""Gate arithmetic on hand-made numbers, and the thresholds' two spellings (list and mapping)."""

import pytest

from sail_core.config import ConfigError, GateMetric, load_config
from sail_core.pipeline.gating import baseline_key, check_gate, gate_metrics, gate_overrides


def _gm(metric: str, min_delta: float) -> list[GateMetric]:
    return [GateMetric(metric=metric, min_delta=min_delta)]


def test_against_baseline_passes_and_fails_with_margin():
    cand = {"eval.i2i.recall_at_10": 0.30, "baseline.i2i.recall_at_10": 0.20}
    ok = check_gate(cand, _gm("eval.i2i.recall_at_10", 0.05))
    assert ok.passed and ok.reference == "baseline"
    assert ok.checks[0]["delta"] == pytest.approx(0.10)
    miss = check_gate(cand, _gm("eval.i2i.recall_at_10", 0.15))
    assert not miss.passed
    assert "missed by 0.0500" in miss.summary() and "eval.i2i.recall_at_10" in miss.summary()


def test_against_champion_uses_champion_value():
    cand = {"eval.q2i.recall_at_1": 0.40, "baseline.q2i.recall_at_1": 0.10}
    res = check_gate(cand, _gm("eval.q2i.recall_at_1", 0.0), champion={"eval.q2i.recall_at_1": 0.45},
                     champion_label="champion v2")
    assert not res.passed and res.reference == "champion v2"
    assert res.checks[0]["delta"] == pytest.approx(-0.05)


def test_profile_gate_metrics_drive_the_check():
    cfg = load_config(profile="tiny")
    cand = {}
    for m in cfg.gate.metrics:
        cand[m.metric], cand[baseline_key(m.metric)] = 0.1, 0.5
    res = check_gate(cand, cfg.gate.metrics)  # tiny allows a loss of up to 1.0
    assert res.passed and [c["metric"] for c in res.checks] == [m.metric for m in cfg.gate.metrics]


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="was not computed"):
        check_gate({"eval.i2i.recall_at_10": 0.1}, _gm("eval.i2i.recall_at_99", 0.0))
    with pytest.raises(ValueError, match="must start with 'eval.'"):
        baseline_key("i2i.recall_at_10")


def test_gate_metrics_reads_list_and_mapping_forms():
    as_list = [{"metric": "eval.i2i.recall_at_10", "min_delta": 0.02}, {"metric": "eval.q2i.recall_at_1"}]
    as_map = {"eval.i2i.recall_at_10": 0.02, "eval.q2i.recall_at_1": 0.0}
    assert gate_metrics(as_list) == gate_metrics(as_map) == [
        GateMetric(metric="eval.i2i.recall_at_10", min_delta=0.02), GateMetric(metric="eval.q2i.recall_at_1", min_delta=0.0)]
    assert gate_metrics({"metric": "eval.i2i.recall_at_10", "min_delta": 0.1}) == _gm("eval.i2i.recall_at_10", 0.1)
    assert gate_metrics(None) == gate_metrics({}) == gate_metrics([]) == []


def test_gate_metrics_rejects_a_bad_entry_with_the_fix():
    with pytest.raises(ConfigError, match=r"entry 0 .*min_delta.*write it as \{metric: eval.i2i.recall_at_10"):
        gate_metrics([{"metric": "eval.i2i.recall_at_10", "min_delta": "a lot"}])
    with pytest.raises(ConfigError, match="entry 0 .*metric"):
        gate_metrics([{"metrc": "eval.i2i.recall_at_10"}])
    with pytest.raises(ConfigError, match="must be a list of"):
        gate_metrics("eval.i2i.recall_at_10")


def test_gate_overrides_feed_load_config():
    """What the DAG does with its gate_thresholds form: a mapping or a list in, the profile's gate replaced."""
    assert gate_overrides({}) == {} and gate_overrides(None) == {}
    cfg = load_config(profile="tiny", overrides=gate_overrides({"eval.q2i.recall_at_1": 0.05}))
    assert cfg.gate.metrics == _gm("eval.q2i.recall_at_1", 0.05)
    cfg = load_config(profile="tiny", overrides=gate_overrides([{"metric": "eval.i2i.dim64.recall_at_50", "min_delta": 0.1}]))
    assert cfg.gate.metrics == _gm("eval.i2i.dim64.recall_at_50", 0.1)
    with pytest.raises(ConfigError, match=r"gate.metrics.0.metric = 'eval.i2i.recall_at_99'.*allowed: .*eval.i2i.recall_at_10"):
        load_config(profile="tiny", overrides=gate_overrides({"eval.i2i.recall_at_99": 0.0}))


def test_the_gate_step_stays_the_gate_step_once_the_gate_module_is_imported():
    import sail_core.pipeline.gating  # noqa: F401
    from sail_core import pipeline

    assert pipeline.gate.__module__ == "sail_core.pipeline.steps" and callable(pipeline.gate)
