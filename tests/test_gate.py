"""Gate arithmetic on hand-made numbers."""

import pytest

from sail_core.pipeline.gate import baseline_key, check_gate


def test_against_baseline_passes_and_fails_with_margin():
    cand = {"eval.i2i.recall_at_10": 0.30, "baseline.i2i.recall_at_10": 0.20}
    ok = check_gate(cand, {"eval.i2i.recall_at_10": 0.05})
    assert ok.passed and ok.reference == "baseline"
    assert ok.checks[0]["delta"] == pytest.approx(0.10)
    miss = check_gate(cand, {"eval.i2i.recall_at_10": 0.15})
    assert not miss.passed
    assert "missed by 0.0500" in miss.summary() and "eval.i2i.recall_at_10" in miss.summary()


def test_against_champion_uses_champion_value():
    cand = {"eval.q2i.recall_at_1": 0.40, "baseline.q2i.recall_at_1": 0.10}
    res = check_gate(cand, {"eval.q2i.recall_at_1": 0.0}, champion={"eval.q2i.recall_at_1": 0.45}, champion_label="champion v2")
    assert not res.passed and res.reference == "champion v2"
    assert res.checks[0]["delta"] == pytest.approx(-0.05)


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="was not computed"):
        check_gate({"eval.i2i.recall_at_10": 0.1}, {"eval.i2i.recall_at_99": 0.0})
    with pytest.raises(ValueError, match="must start with 'eval.'"):
        baseline_key("i2i.recall_at_10")
