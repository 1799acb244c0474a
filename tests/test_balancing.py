"""Adaptive multi-source balancing (sail_core/train/balancing.py): Sinkhorn cost, softmax weights, balance()."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from sail_core.train.balancing import (
    BalanceResult,
    balance,
    cluster,
    dataset_centroids,
    match_cost,
    sampling_weights,
)

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mixture(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float = 0.2) -> np.ndarray:
    """n points around the given centres (Gaussian clusters)."""
    idx = rng.integers(len(centers), size=n)
    return (centers[idx] + spread * rng.standard_normal((n, centers.shape[1])) / np.sqrt(centers.shape[1])).astype(
        np.float32
    )


def _naive_sinkhorn_cost(a: np.ndarray, b: np.ndarray, cost: np.ndarray, reg: float, iters: int = 20_000) -> float:
    """Textbook Sinkhorn-Knopp in plain numpy: P = diag(u) K diag(v), K = exp(-C/reg); returns sum(P*C)."""
    kernel = np.exp(-cost / reg)
    u = np.ones_like(a)
    v = np.ones_like(b)
    for _ in range(iters):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    plan = u[:, None] * kernel * v[None, :]
    assert np.allclose(plan.sum(1), a, atol=1e-9) and np.allclose(plan.sum(0), b, atol=1e-9)
    return float((plan * cost).sum())


# ---- match_cost -------------------------------------------------------------------------------


def test_match_cost_of_identical_sets_is_near_zero():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((5, DIM)))
    assert match_cost(x, x, reg=0.01) == pytest.approx(0.0, abs=1e-8)
    # scaling a row does not change cosine geometry
    assert match_cost(x * 3.0, x, reg=0.01) == pytest.approx(0.0, abs=1e-8)


def test_match_cost_of_two_single_points_is_their_cosine_distance():
    x = np.array([[1.0, 0.0, 0.0]])
    y = np.array([[1.0, 1.0, 0.0]])
    assert match_cost(x, y, reg=0.05) == pytest.approx(1.0 - 1.0 / np.sqrt(2.0), abs=1e-12)
    assert match_cost(x, -x, reg=0.05) == pytest.approx(2.0, abs=1e-12)


def test_match_cost_agrees_with_a_naive_sinkhorn_on_non_uniform_masses():
    rng = np.random.default_rng(1)
    x = _unit(rng.standard_normal((4, DIM)))
    y = _unit(rng.standard_normal((3, DIM)))
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([5.0, 1.0, 2.0])
    reg = 0.2
    expected = _naive_sinkhorn_cost(a / a.sum(), b / b.sum(), 1.0 - x @ y.T, reg)
    assert match_cost(x, y, reg, mass=a, validation_mass=b) == pytest.approx(expected, abs=1e-7)
    # uniform masses when none are given
    expected_uniform = _naive_sinkhorn_cost(np.full(4, 0.25), np.full(3, 1 / 3), 1.0 - x @ y.T, reg)
    assert match_cost(x, y, reg) == pytest.approx(expected_uniform, abs=1e-7)


def test_match_cost_with_small_reg_approaches_the_exact_assignment():
    rng = np.random.default_rng(2)
    x = _unit(rng.standard_normal((4, DIM)))
    y = _unit(rng.standard_normal((4, DIM)))
    cost = 1.0 - x @ y.T
    exact = min(sum(cost[i, p[i]] for i in range(4)) / 4 for p in itertools.permutations(range(4)))
    assert match_cost(x, y, reg=0.005) == pytest.approx(exact, abs=5e-3)


def test_match_cost_ignores_points_of_zero_mass():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0]])
    assert match_cost(x, y, 0.05, mass=[1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


# ---- sampling_weights -------------------------------------------------------------------------


def test_sampling_weights_match_a_hand_computed_softmax():
    costs = {"a": 0.1, "b": 0.2, "c": 0.4}
    t = 0.1
    # exp(-c/t): e^-1, e^-2, e^-4
    e = [np.exp(-1.0), np.exp(-2.0), np.exp(-4.0)]
    total = sum(e)
    w = sampling_weights(costs, t)
    assert list(w) == ["a", "b", "c"]
    assert w["a"] == pytest.approx(e[0] / total, rel=1e-12)
    assert w["b"] == pytest.approx(e[1] / total, rel=1e-12)
    assert w["c"] == pytest.approx(e[2] / total, rel=1e-12)
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)


def test_sampling_weights_temperature_sharpens_or_flattens():
    costs = {"a": 0.3, "b": 0.5}
    assert sampling_weights(costs, 100.0)["a"] == pytest.approx(0.5, abs=1e-3)
    assert sampling_weights(costs, 0.001)["a"] == pytest.approx(1.0, abs=1e-12)
    # equal costs -> uniform; huge costs do not overflow
    assert sampling_weights({"a": 1e6, "b": 1e6}, 1e-6) == {"a": 0.5, "b": 0.5}


# ---- balance ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    """Three training datasets (near / part-overlapping / far from the validation sets), two tasks."""
    rng = np.random.default_rng(3)
    centers = _unit(rng.standard_normal((8, DIM)))
    far_centers = _unit(rng.standard_normal((4, DIM)))
    datasets = {
        "near": _mixture(rng, centers[:4], 600),
        "mid": _mixture(rng, centers[2:8], 600),
        "far": _mixture(rng, far_centers, 600),
    }
    validation = {"task_a": _mixture(rng, centers[:3], 150), "task_b": _mixture(rng, centers[1:4], 120)}
    return datasets, validation


def test_nearby_dataset_gets_more_weight_and_weights_are_not_uniform(demo):
    datasets, validation = demo
    r = balance(datasets, validation, k=8, reg=0.05, temperature=0.05, seed=0)
    assert r.costs["near"] < r.costs["mid"] < r.costs["far"]
    assert r.weights["near"] > r.weights["mid"] > r.weights["far"]
    assert sum(r.weights.values()) == pytest.approx(1.0, abs=1e-12)
    uniform = 1.0 / len(datasets)
    assert max(abs(w - uniform) for w in r.weights.values()) > 0.1


def test_cost_over_several_validation_sets_is_their_unweighted_mean(demo):
    datasets, validation = demo
    r = balance(datasets, validation, k=8, reg=0.05, temperature=0.05, seed=0)
    for name in datasets:
        assert set(r.per_validation[name]) == {"task_a", "task_b"}
        assert r.costs[name] == pytest.approx(np.mean(list(r.per_validation[name].values())), abs=1e-15)
    assert r.weights == sampling_weights(r.costs, 0.05)
    # one array is one validation set named "validation"
    single = balance(datasets, validation["task_a"], k=8, reg=0.05, temperature=0.05, seed=0)
    assert list(single.validation_clusters) == ["validation"]
    for name in datasets:
        assert single.costs[name] == pytest.approx(r.per_validation[name]["task_a"], abs=1e-12)


def test_balance_is_deterministic_for_a_fixed_seed(demo):
    datasets, validation = demo
    a = balance(datasets, validation, k=8, reg=0.05, temperature=0.05, seed=7).to_dict()
    b = balance(datasets, validation, k=8, reg=0.05, temperature=0.05, seed=7).to_dict()
    assert a == b
    c1 = dataset_centroids(datasets["mid"], 6, seed=11)
    c2 = dataset_centroids(datasets["mid"], 6, seed=11)
    np.testing.assert_array_equal(c1, c2)


def test_k_is_capped_at_the_number_of_rows(demo):
    datasets, validation = demo
    small = {"tiny": datasets["near"][:3], "near": datasets["near"]}
    r = balance(small, {"t": validation["task_a"][:5]}, k=8, reg=0.05, temperature=0.05, seed=0)
    assert r.clusters == {"tiny": 3, "near": 8}
    assert r.validation_clusters == {"t": 5}
    c = dataset_centroids(datasets["near"][:3], k=10, seed=0)
    assert c.shape == (3, DIM)
    np.testing.assert_allclose(c, _unit(datasets["near"][:3]), rtol=1e-6)


def test_dataset_centroids_are_unit_vectors_and_sizes_count_every_row(demo):
    datasets, _ = demo
    centroids, sizes = cluster(datasets["mid"], 6, seed=0)
    assert centroids.shape == (6, DIM) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    assert sizes.sum() == len(datasets["mid"])


def test_balance_result_to_dict_is_json(demo):
    datasets, validation = demo
    r = balance(datasets, validation, k=4, reg=0.05, temperature=0.05, seed=0)
    assert isinstance(r, BalanceResult)
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {"weights", "costs", "per_validation", "clusters", "validation_clusters", "rows", "params"}
    assert d["params"] == {"k": 4, "reg": 0.05, "temperature": 0.05, "seed": 0, "niter": 25}
    assert d["rows"]["datasets"]["near"] == 600 and d["rows"]["validation"]["task_b"] == 120


# ---- errors -----------------------------------------------------------------------------------


def test_empty_dataset_is_a_clear_error(demo):
    datasets, validation = demo
    with pytest.raises(ValueError, match=r"dataset 'empty' has no embeddings \(0 rows\).*embed at least one"):
        balance({**datasets, "empty": np.zeros((0, DIM), np.float32)}, validation, k=4, reg=0.05,
                temperature=0.05, seed=0)
    with pytest.raises(ValueError, match="at least one training dataset"):
        balance({}, validation)
    with pytest.raises(ValueError, match="at least one validation set.*turn balancing off"):
        balance(datasets, {})


def test_dimension_mismatch_is_a_clear_error(demo):
    datasets, validation = demo
    with pytest.raises(ValueError, match=r"dimensions differ.*'task_a': 8.*same checkpoint"):
        balance(datasets, {**validation, "task_a": validation["task_a"][:, :8]}, k=4, reg=0.05,
                temperature=0.05, seed=0)
    with pytest.raises(ValueError, match="dimension 16 but the validation embeddings have dimension 8"):
        match_cost(datasets["near"][:4], validation["task_a"][:4, :8], reg=0.05)


def test_other_bad_inputs_are_clear_errors(demo):
    datasets, validation = demo
    with pytest.raises(ValueError, match="zero embedding \\(row 1\\)"):
        dataset_centroids(np.array([[1.0, 0.0], [0.0, 0.0]]), k=2, seed=0)
    with pytest.raises(ValueError, match="2-D array"):
        dataset_centroids(np.ones(4), k=2, seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        dataset_centroids(np.array([[1.0, np.nan]]), k=1, seed=0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        balance(datasets, validation, k=0)
    with pytest.raises(ValueError, match="reg .* must be > 0"):
        match_cost(datasets["near"][:2], datasets["near"][:2], reg=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sampling_weights({"a": 0.1}, 0.0)
    with pytest.raises(ValueError, match="at least one dataset"):
        sampling_weights({}, 0.1)
    with pytest.raises(ValueError, match=r"\['b'\] are not finite"):
        sampling_weights({"a": 0.1, "b": float("nan")}, 0.1)
    with pytest.raises(ValueError, match="3 masses for 2 points"):
        match_cost(datasets["near"][:2], datasets["near"][:2], 0.05, mass=[1, 1, 1])
