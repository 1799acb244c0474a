"""Stochastic specialisation sampler: one dataset per step, weights respected, exact resume, rank slices."""

from __future__ import annotations

import numpy as np
import pytest

from sail_core.train.sampler import StochasticSpecialisationSampler

SIZES = {"a": 50, "b": 30, "c": 7}
WEIGHTS = {"a": 2.0, "b": 1.0, "c": 1.0}


def test_weights_and_no_mixing():
    s = StochasticSpecialisationSampler(SIZES, WEIGHTS, batch_size=8, seed=0)
    draws = [s.next() for _ in range(4000)]
    for name, rows in draws:
        assert len(rows) == min(8, SIZES[name]) and len(set(rows.tolist())) == len(rows)
        assert rows.max() < SIZES[name]
    share = {n: sum(d[0] == n for d in draws) / len(draws) for n in SIZES}
    assert share["a"] == pytest.approx(0.5, abs=0.03)
    assert share["b"] == pytest.approx(0.25, abs=0.03)
    assert s.counts == {n: sum(d[0] == n for d in draws) for n in SIZES}


def test_rows_cover_an_epoch_without_replacement():
    s = StochasticSpecialisationSampler({"a": 40}, {"a": 1.0}, batch_size=8, seed=3)
    seen = np.concatenate([s.next()[1] for _ in range(5)])
    assert sorted(seen.tolist()) == list(range(40))


def test_state_round_trip_resumes_exactly():
    s = StochasticSpecialisationSampler(SIZES, WEIGHTS, batch_size=8, seed=1)
    for _ in range(13):
        s.next()
    state = s.state_dict()
    expected = [s.next() for _ in range(20)]
    t = StochasticSpecialisationSampler(SIZES, WEIGHTS, batch_size=8, seed=99)
    t.load_state_dict(state)
    got = [t.next() for _ in range(20)]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert all(np.array_equal(g[1], e[1]) for g, e in zip(got, expected))
    with pytest.raises(ValueError, match="data changed"):
        StochasticSpecialisationSampler({"a": 51, "b": 30, "c": 7}, WEIGHTS, 8, 1).load_state_dict(state)


def test_ranks_share_the_dataset_and_split_the_global_batch():
    ranks = [StochasticSpecialisationSampler(SIZES, WEIGHTS, batch_size=4, seed=5, rank=r, world=2) for r in range(2)]
    for _ in range(30):
        (n0, r0), (n1, r1) = ranks[0].next(), ranks[1].next()
        assert n0 == n1 and len(r0) == len(r1)
        assert not set(r0.tolist()) & set(r1.tolist())


def test_too_small_dataset_is_rejected():
    with pytest.raises(ValueError, match="'c' has 1 train pairs"):
        StochasticSpecialisationSampler({"c": 1}, {"c": 1.0}, 8, 0)
