"""Bootstrap intervals over queries, checked against a naive resampling loop and against known cases."""

from __future__ import annotations

import numpy as np
import pytest

from sail_core.eval.intervals import interval, paired_differences, paired_interval, with_intervals


def _naive(values: np.ndarray, resamples: int = 4000, seed: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_interval_matches_a_naive_bootstrap_and_the_normal_approximation():
    hits = (np.random.default_rng(0).random(600) < 0.2).astype(float)
    low, high = interval(hits)
    n_low, n_high = _naive(hits)
    assert low == pytest.approx(n_low, abs=0.006) and high == pytest.approx(n_high, abs=0.006)
    p, se = hits.mean(), np.sqrt(hits.mean() * (1 - hits.mean()) / len(hits))
    assert low == pytest.approx(p - 1.96 * se, abs=0.008) and high == pytest.approx(p + 1.96 * se, abs=0.008)
    assert interval(hits) == (low, high)  # a fixed seed: a run reproduces its own intervals


def test_degenerate_cases():
    assert interval([0.0, 0.0, 0.0]) == (0.0, 0.0)
    assert interval([0.5]) == (0.5, 0.5)
    assert all(np.isnan(v) for v in interval([]))
    with pytest.raises(ValueError, match="same queries"):
        paired_interval([1.0, 0.0], [1.0])


def test_paired_interval_sees_a_small_consistent_gain_that_unpaired_intervals_hide():
    """Model b is a copy of a that gets 12 more of 400 queries right: the unpaired intervals overlap, the
    paired interval of the difference excludes 0."""
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.3).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:12]] = 1.0
    a_low, a_high = interval(a)
    b_low, b_high = interval(b)
    assert b_low < a_high  # overlapping intervals
    low, high = paired_interval(b, a)
    assert 0 < low <= 12 / 400 <= high


def test_named_metrics_with_intervals_and_differences():
    scores = {"i2i.recall_at_10": np.array([1.0, 0.0, 1.0, 1.0])}
    base = {"i2i.recall_at_10": np.array([0.0, 0.0, 1.0, 0.0]), "only_here": np.array([1.0])}
    out = with_intervals(scores, "eval")
    assert out["eval.i2i.recall_at_10"] == 0.75
    assert out["eval.i2i.recall_at_10_ci_low"] <= 0.75 <= out["eval.i2i.recall_at_10_ci_high"]
    diff = paired_differences(scores, base)
    assert set(diff) == {"delta.i2i.recall_at_10", "delta.i2i.recall_at_10_ci_low", "delta.i2i.recall_at_10_ci_high"}
    assert diff["delta.i2i.recall_at_10"] == 0.5 and diff["delta.i2i.recall_at_10_ci_low"] >= 0.0
