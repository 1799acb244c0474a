"""95% bootstrap intervals over queries, for a metric and for the difference of two models on the same queries.

A metric is the mean of per-query values (each query's Recall@k); its interval resamples the queries
with replacement (``scipy.stats.bootstrap``, percentile method, a fixed seed so that a run reproduces
its own intervals). Two models scored on the same queries are compared by the interval of the mean
per-query difference, resampling queries once for both (a paired bootstrap): the difference is
"real" when that interval excludes 0.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


def interval(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The bootstrap interval of ``mean(values)``; (v, v) when there are fewer than two values."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size < 2 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean())
    ci = bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def paired_interval(a, b, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The paired bootstrap interval of ``mean(a) - mean(b)``, ``a[i]`` and ``b[i]`` scored on the same query."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs the same queries on both sides: {a.shape} vs {b.shape}")
    return interval(a - b, level, resamples, seed)


def with_intervals(per_query: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """``{prefix.name: mean, prefix.name_ci_low: .., prefix.name_ci_high: ..}`` for every metric."""
    out = {}
    for name, values in per_query.items():
        low, high = interval(values)
        out[f"{prefix}.{name}"] = float(np.mean(values)) if len(values) else float("nan")
        out[f"{prefix}.{name}_ci_low"], out[f"{prefix}.{name}_ci_high"] = low, high
    return out


def paired_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray], prefix: str = "delta") -> dict[str, float]:
    """``{prefix.name: mean(a - b), prefix.name_ci_low: .., prefix.name_ci_high: ..}`` for the metrics in both."""
    out = {}
    for name in sorted(a.keys() & b.keys()):
        low, high = paired_interval(a[name], b[name])
        out[f"{prefix}.{name}"] = float(np.mean(a[name]) - np.mean(b[name]))
        out[f"{prefix}.{name}_ci_low"], out[f"{prefix}.{name}_ci_high"] = low, high
    return out
