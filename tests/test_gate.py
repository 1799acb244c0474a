"""Gate arithmetic on hand-made per-query values (paired intervals, the two rules, masks, fallback), and the
thresholds' two spellings (list and mapping)."""

import numpy as np
import pytest

from sail_core.config import ConfigError, GateMetric, load_config
from sail_core.eval.intervals import paired_interval
from sail_core.pipeline.gating import check_gate, gate_metrics, gate_overrides


def _gm(metric: str, min_delta: float) -> list[GateMetric]:
    return [GateMetric(metric=metric, min_delta=min_delta)]


RNG = np.random.default_rng(0)
BETTER = (RNG.random(400) < 0.6).astype(float)           # candidate hits on 60% of queries
WORSE = np.where(RNG.random(400) < 0.5, 0.0, BETTER)      # the reference misses half of those


def test_beats_needs_the_whole_paired_interval_above_min_delta():
    low, high = paired_interval(BETTER, WORSE)
    assert 0 < low < high
    ok = check_gate({"i2i.recall_at_10": BETTER}, {"i2i.recall_at_10": WORSE}, _gm("eval.i2i.recall_at_10", 0.0),
                    "untrained model")
    assert ok.passed and ok.reference == "untrained model"
    c = ok.checks[0]
    assert c["delta"] == pytest.approx(BETTER.mean() - WORSE.mean()) and c["delta_ci"] == [low, high]
    assert c["queries"] == 400 and c["excluded"] == 0
    miss = check_gate({"i2i.recall_at_10": BETTER}, {"i2i.recall_at_10": WORSE},
                      _gm("eval.i2i.recall_at_10", low + 0.001))
    assert not miss.passed and "MISS" in miss.summary() and "interval low >" in miss.summary()


def test_a_model_does_not_beat_itself_but_is_not_worse():
    same = {"i2i.recall_at_10": BETTER}
    assert not check_gate(same, same, _gm("eval.i2i.recall_at_10", 0.0)).passed
    ok = check_gate(same, same, _gm("eval.i2i.recall_at_10", 0.0), rule="not_worse")
    assert ok.passed and ok.checks[0]["delta_ci"] == [0.0, 0.0] and "interval high >=" in ok.summary()
    worse = check_gate({"i2i.recall_at_10": WORSE}, {"i2i.recall_at_10": BETTER},
                       _gm("eval.i2i.recall_at_10", 0.0), rule="not_worse")
    assert not worse.passed  # shown to be worse: the whole interval is below 0
    assert check_gate({"i2i.recall_at_10": WORSE}, {"i2i.recall_at_10": BETTER},
                      _gm("eval.i2i.recall_at_10", -0.5), rule="not_worse").passed  # within an allowed loss
    with pytest.raises(ValueError, match="not one of beats, not_worse"):
        check_gate(same, same, _gm("eval.i2i.recall_at_10", 0.0), rule="better")


def test_the_demo_promotes_a_first_model_that_beats_and_keeps_an_equal_one():
    cfg = load_config(profile="demo")
    assert (cfg.gate.first_rule, cfg.gate.champion_rule) == ("beats", "not_worse")


def test_masked_queries_are_left_out_of_the_comparison():
    cand, ref = BETTER.copy(), WORSE.copy()
    ref[:100] = 1.0                       # the reference "knows" the first 100 queries (it trained on them)
    keep = np.arange(400) >= 100
    res = check_gate({"i2i.recall_at_10": cand}, {"i2i.recall_at_10": ref}, _gm("eval.i2i.recall_at_10", 0.0),
                     "champion v1 (re-scored)", keep={"i2i": keep})
    c = res.checks[0]
    assert c["queries"] == 300 and c["excluded"] == 100
    assert c["delta"] == pytest.approx(cand[100:].mean() - ref[100:].mean())
    assert "100 queries left out" in res.summary()


def test_a_metric_the_reference_lacks_falls_back():
    res = check_gate({"audio2text.recall_at_10": BETTER}, {}, _gm("eval.audio2text.recall_at_10", 0.0),
                     "text reference", fallback={"audio2text.recall_at_10": WORSE})
    assert res.passed and res.checks[0]["reference_name"] == "untrained model"


def test_different_queries_are_refused():
    with pytest.raises(ValueError, match="same queries"):
        check_gate({"i2i.recall_at_10": BETTER}, {"i2i.recall_at_10": WORSE[:10]}, _gm("eval.i2i.recall_at_10", 0.0))


def test_profile_gate_metrics_drive_the_check():
    cfg = load_config(profile="demo")
    cand = {m.metric[len("eval."):]: WORSE for m in cfg.gate.metrics}
    ref = {m.metric[len("eval."):]: BETTER for m in cfg.gate.metrics}
    res = check_gate(cand, ref, cfg.gate.metrics)
    assert [c["metric"] for c in res.checks] == [m.metric for m in cfg.gate.metrics] and not res.passed


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="was not computed"):
        check_gate({"i2i.recall_at_10": BETTER}, {}, _gm("eval.q2i.recall_at_10", 0.0))
    with pytest.raises(ValueError, match="must start with 'eval.'"):
        check_gate({"i2i.recall_at_10": BETTER}, {}, _gm("i2i.recall_at_10", 0.0))



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
