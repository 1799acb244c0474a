"""Adaptive multi-source data balancing: sampling weights from an optimal-transport match.

The method (docs: METHOD.md, "Adaptive multi-source data balancing"):

1. Embed a sample (about 10k rows) of every training dataset with an early checkpoint, and
   k-means each dataset (:func:`dataset_centroids`).
2. Match each dataset's centroids against each validation set with entropic optimal transport
   (Sinkhorn) and read the transport cost (:func:`match_cost`).
3. Average each dataset's costs over the validation sets and softmax them into sampling weights
   (:func:`sampling_weights`): the lower a dataset's cost to the validation sets, the more weight.

:func:`balance` runs the three steps and returns a :class:`BalanceResult` (weights, costs, cluster
counts) whose :meth:`~BalanceResult.to_dict` is plain JSON for the stage's log.

Exact definitions
-----------------
* **Rows** are L2-normalised first, so the geometry is cosine; a zero row is an error.
* **Clusters:** spherical k-means (``faiss.Kmeans(..., spherical=True)``, centroids renormalised
  after every iteration) with ``k_used = min(k, n_rows)``. Every row is then assigned to its nearest
  centroid (highest cosine); a centroid's **mass** is its share of the rows (cluster size / n), so
  the matched distributions keep each dataset's proportions rather than counting a small cluster
  like a large one. An empty cluster gets mass 0.
* **Validation side:** each validation set is clustered the same way (same ``k`` cap, same seed),
  so the match is centroids against centroids with cluster-size masses (the METHOD's "Sinkhorn
  match of centroids"). Validation sets are the validation split of each task, never the test split.
* **Cost matrix:** ``C[i, j] = 1 - cos(c_i, v_j)`` (in ``[0, 2]``).
* **Transport cost:** ``sum(P * C)``, ``P`` the entropic plan of ``ot.sinkhorn2`` (log-domain
  Sinkhorn, regularisation ``reg``, marginals = the two mass vectors). The returned value is the
  linear part only, without the entropy term. Because ``sum(P) = 1`` it equals
  ``1 - sum(P * cos)``, i.e. one minus the METHOD's similarity score ``Σ P ⊙ cos``.
* **Several validation sets:** ``cost[d] = mean over validation sets v of cost(d, v)``, an
  unweighted mean, so every task counts once whatever its size.
* **Weights:** ``w[d] = softmax(-cost[d] / temperature)`` over the datasets; they sum to 1. Since
  the costs are ``1 - score``, this is the same as ``softmax(score / temperature)``. A small
  temperature sharpens the weights, a large one flattens them towards uniform. Costs lie in
  ``[0, 2]``; choose the temperature from the spread of the logged costs (on the synthetic test
  data near and far datasets differ by ~0.5, and 0.05 is then close to one-hot).

Inputs are plain numpy arrays: the caller embeds with the model. ``faiss`` and ``ot`` are imported
lazily (``import ot`` costs seconds). The k-means runs on one faiss thread (see :func:`_kmeans`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

VALIDATION_DEFAULT_NAME = "validation"


def _check_embeddings(x: np.ndarray, what: str, dtype: type = np.float32) -> np.ndarray:
    """2-D, finite, non-empty, no zero rows; returned L2-normalised as ``dtype``."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D array (rows x dim) of embeddings, got shape {x.shape}; "
            "stack the per-sample embeddings into one matrix"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{what} has no embeddings (0 rows); embed at least one sample from it or leave it out "
            "of the balancing"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{what} has embeddings of dimension 0; pass the model's embedding vectors")
    x = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or inf values; re-embed it with a healthy checkpoint")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise ValueError(
            f"{what} has a zero embedding (row {bad}); cosine is undefined for it, drop such rows"
        )
    return np.ascontiguousarray(x / norms, dtype=dtype)


def _kmeans(x_normed: np.ndarray, k: int, seed: int, niter: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of L2-normalised rows -> (centroids (k_used, d), sizes (k_used,))."""
    import faiss

    n, d = x_normed.shape
    k_used = min(int(k), n)
    if k_used == n:
        # one cluster per row: the rows themselves (faiss would only reproduce them)
        return x_normed.copy(), np.ones(n, dtype=np.int64)
    km = faiss.Kmeans(
        d,
        k_used,
        niter=int(niter),
        seed=int(seed),
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,  # no "please provide at least ..." warning on small sets
        max_points_per_centroid=max(256, -(-n // k_used)),  # train on every row, no subsampling
    )
    # Single-threaded, restored afterwards: 10k x 384 rows, k=64 take ~0.2 s on one thread, while
    # OpenMP threads contending with other work (torch's pool, other jobs) made it ~5x slower.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km.train(x_normed)
    finally:
        faiss.omp_set_num_threads(threads)
    centroids = np.asarray(km.centroids, dtype=np.float32).reshape(k_used, d)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    assign = np.argmax(x_normed @ centroids.T, axis=1)
    sizes = np.bincount(assign, minlength=k_used).astype(np.int64)
    return centroids, sizes


def dataset_centroids(embeddings: np.ndarray, k: int, seed: int, *, niter: int = 25) -> np.ndarray:
    """Spherical k-means centroids of one dataset's embeddings.

    The rows are L2-normalised, then clustered with ``faiss.Kmeans(spherical=True)``; the
    centroids are unit vectors. ``k`` is capped at the number of rows (``min(k, n)``; with
    ``k >= n`` the normalised rows themselves are the centroids). Deterministic for a fixed
    ``seed``. Use :func:`cluster` to also get the cluster sizes.

    Returns:
        ``(min(k, n), dim)`` float32 array of unit-norm centroids.
    """
    return cluster(embeddings, k, seed, niter=niter)[0]


def cluster(
    embeddings: np.ndarray, k: int, seed: int, *, niter: int = 25, what: str = "the embeddings"
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`dataset_centroids`, plus the size of each cluster (rows nearest to it by cosine)."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1 (the number of k-means clusters), got {k}")
    return _kmeans(_check_embeddings(embeddings, what), int(k), int(seed), niter)


def _mass(m: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if m is None:
        return np.full(n, 1.0 / n)
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if m.shape[0] != n:
        raise ValueError(f"{what} has {m.shape[0]} masses for {n} points; give one mass per point")
    if np.any(m < 0) or not np.all(np.isfinite(m)) or m.sum() <= 0:
        raise ValueError(f"{what} must be non-negative, finite and not all zero (cluster sizes work)")
    return m / m.sum()


def match_cost(
    centroids: np.ndarray,
    validation_embeddings: np.ndarray,
    reg: float,
    *,
    mass: np.ndarray | None = None,
    validation_mass: np.ndarray | None = None,
    num_iter_max: int = 10_000,
) -> float:
    """Entropic optimal-transport cost between a dataset's centroids and a validation set.

    Both point sets are L2-normalised; ``C = 1 - cos`` between them; ``P`` is the entropic plan of
    ``ot.sinkhorn2(a, b, C, reg, method="sinkhorn_log")`` with marginals ``a = mass`` and
    ``b = validation_mass`` (each normalised to sum 1; uniform when not given — :func:`balance`
    passes cluster sizes). Returns ``sum(P * C)`` (the linear cost, no entropy term), in ``[0, 2]``:
    0 when the two sets coincide (and ``reg`` is small), ``1 - cos(x, y)`` for two single points.

    ``validation_embeddings`` may be the validation set's raw embeddings or its own centroids.
    """
    import ot

    if not reg > 0:
        raise ValueError(f"reg (the Sinkhorn entropic regularisation) must be > 0, got {reg}")
    x = _check_embeddings(centroids, "the dataset centroids", np.float64)
    y = _check_embeddings(validation_embeddings, "the validation embeddings", np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"the dataset centroids have dimension {x.shape[1]} but the validation embeddings have "
            f"dimension {y.shape[1]}; embed both with the same checkpoint and output dimension"
        )
    a = _mass(mass, x.shape[0], "mass")
    b = _mass(validation_mass, y.shape[0], "validation_mass")
    # points of mass 0 (empty clusters) carry nothing; drop them (log-domain Sinkhorn takes log(mass))
    x, a = x[a > 0], a[a > 0]
    y, b = y[b > 0], b[b > 0]
    cost = np.clip(1.0 - x @ y.T, 0.0, 2.0)
    value = ot.sinkhorn2(a, b, cost, float(reg), method="sinkhorn_log", numItermax=int(num_iter_max), warn=True)
    return float(value)


def sampling_weights(costs: Mapping[str, float], temperature: float) -> dict[str, float]:
    """``softmax(-cost / temperature)`` over the datasets: lower cost -> more weight; sums to 1.

    Keys keep the order of ``costs``. Numerically stable (the minimum cost is subtracted first).
    """
    if not costs:
        raise ValueError("sampling_weights needs the cost of at least one dataset")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (softmax of -cost/temperature), got {temperature}")
    names = list(costs)
    c = np.array([float(costs[n]) for n in names], dtype=np.float64)
    if not np.all(np.isfinite(c)):
        bad = [n for n, v in zip(names, c) if not np.isfinite(v)]
        raise ValueError(f"costs of {bad} are not finite; check those datasets' embeddings")
    z = -(c - c.min()) / float(temperature)
    e = np.exp(z)
    w = e / e.sum()
    return {n: float(v) for n, v in zip(names, w)}


@dataclass
class BalanceResult:
    """What :func:`balance` found; ``to_dict()`` is JSON-able (for the stage log and the next stage).

    Attributes:
        weights: dataset -> sampling weight (sums to 1).
        costs: dataset -> mean transport cost over the validation sets.
        per_validation: dataset -> validation set -> transport cost.
        clusters: dataset -> number of k-means clusters used (``min(k, rows)``).
        validation_clusters: validation set -> number of clusters used.
        rows: dataset or validation set -> number of embedded rows.
        params: k, reg, temperature, seed.
    """

    weights: dict[str, float]
    costs: dict[str, float]
    per_validation: dict[str, dict[str, float]]
    clusters: dict[str, int]
    validation_clusters: dict[str, int]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    params: dict[str, float | int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "weights": {k: float(v) for k, v in self.weights.items()},
            "costs": {k: float(v) for k, v in self.costs.items()},
            "per_validation": {d: {v: float(c) for v, c in m.items()} for d, m in self.per_validation.items()},
            "clusters": {k: int(v) for k, v in self.clusters.items()},
            "validation_clusters": {k: int(v) for k, v in self.validation_clusters.items()},
            "rows": {g: {k: int(v) for k, v in m.items()} for g, m in self.rows.items()},
            "params": dict(self.params),
        }


def balance(
    per_dataset_embeddings: Mapping[str, np.ndarray],
    validation_embeddings: Mapping[str, np.ndarray] | np.ndarray,
    k: int = 64,
    reg: float = 0.05,
    temperature: float = 0.05,
    seed: int = 0,
    *,
    niter: int = 25,
) -> BalanceResult:
    """Sampling weights of the training datasets from their match to the validation sets.

    Each dataset and each validation set is clustered (spherical k-means, ``min(k, rows)`` clusters,
    ``seed``); each dataset is matched against each validation set with :func:`match_cost` on
    centroids weighted by cluster size; a dataset's cost is the **unweighted mean over the
    validation sets** (one per task, from the task's validation split); the weights are
    ``softmax(-cost / temperature)`` (:func:`sampling_weights`).

    Args:
        per_dataset_embeddings: dataset name -> ``(rows, dim)`` embeddings from an early checkpoint.
        validation_embeddings: task name -> ``(rows, dim)`` validation embeddings, or one array
            (named ``"validation"``).
        k: clusters per set (capped at the set's rows).
        reg: Sinkhorn entropic regularisation (costs are in ``[0, 2]``).
        temperature: softmax temperature of ``-cost``.
        seed: k-means seed (the same for every set; results are deterministic).
    """
    if not per_dataset_embeddings:
        raise ValueError("balance needs at least one training dataset's embeddings")
    if isinstance(validation_embeddings, np.ndarray):
        validation_embeddings = {VALIDATION_DEFAULT_NAME: validation_embeddings}
    if not validation_embeddings:
        raise ValueError(
            "balance needs at least one validation set (the validation split of a task); "
            "turn balancing off in the configuration when there is none"
        )
    if int(k) < 1:
        raise ValueError(f"k must be at least 1 (the number of k-means clusters), got {k}")
    if not reg > 0:
        raise ValueError(f"reg (the Sinkhorn entropic regularisation) must be > 0, got {reg}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (softmax of -cost/temperature), got {temperature}")

    def _prepare(group: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
        return {name: _check_embeddings(x, f"{kind} {name!r}") for name, x in group.items()}

    train = _prepare(per_dataset_embeddings, "dataset")
    val = _prepare(validation_embeddings, "validation set")
    dims = {f"dataset {n!r}": x.shape[1] for n, x in train.items()}
    dims.update({f"validation set {n!r}": x.shape[1] for n, x in val.items()})
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{n}: {d}" for n, d in dims.items())
        raise ValueError(
            f"embedding dimensions differ ({listing}); embed every dataset and validation set with "
            "the same checkpoint and the same output (Matryoshka) dimension"
        )

    def _clusters(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _kmeans(x, int(k), int(seed), int(niter))

    train_cl = {n: _clusters(x) for n, x in train.items()}
    val_cl = {n: _clusters(x) for n, x in val.items()}

    per_validation: dict[str, dict[str, float]] = {}
    for d, (cd, sd) in train_cl.items():
        per_validation[d] = {
            v: match_cost(cd, cv, reg, mass=sd, validation_mass=sv) for v, (cv, sv) in val_cl.items()
        }
    costs = {d: float(np.mean(list(m.values()))) for d, m in per_validation.items()}
    weights = sampling_weights(costs, temperature)
    return BalanceResult(
        weights=weights,
        costs=costs,
        per_validation=per_validation,
        clusters={n: int(c.shape[0]) for n, (c, _) in train_cl.items()},
        validation_clusters={n: int(c.shape[0]) for n, (c, _) in val_cl.items()},
        rows={
            "datasets": {n: int(x.shape[0]) for n, x in train.items()},
            "validation": {n: int(x.shape[0]) for n, x in val.items()},
        },
        params={
            "k": int(k), "reg": float(reg), "temperature": float(temperature), "seed": int(seed), "niter": int(niter)
        },
    )
