"""Recommendation metrics on plain numpy arrays, returned per query for bootstrapping.

Every per-query metric comes back as a ``(Q,)`` float64 array (NaN where it is
undefined for that query), so the caller can average it and bootstrap an
interval over queries. Scores are similarities: higher means more relevant.

Functions: ``rank_recall`` (one target per query), ``set_recall`` (a relevant
set per query), ``kendall_tau`` and ``topk_overlap`` (agreement with a teacher),
``bijective_accuracy`` (mutual nearest neighbours), ``cluster_nmi`` / ``nmi``
(k-means vs labels), ``interaction_auc`` / ``auc`` (a linear probe on
interactions), ``prefix_candidate_recall`` and ``collision_rate`` (semantic IDs).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
from scipy.stats import kendalltau
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# --- input checks -----------------------------------------------------------


def _scores_2d(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # float32 stays float32: no copy of a large matrix
    if scores.ndim != 2:
        raise ValueError(f"{name} must be 2-D (queries, candidates), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores


def _index_array(idx, n: int, name: str) -> np.ndarray:
    """``idx`` as a 1-D int64 array of indices into ``range(n)``."""
    arr = np.asarray(idx).reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} has an index outside [0, {n})")
    return arr


def _per_query_list(lists: Sequence | None, q_n: int, n: int, name: str) -> list[np.ndarray]:
    if lists is None:
        return [np.zeros(0, dtype=np.int64)] * q_n
    if len(lists) != q_n:
        raise ValueError(f"{name} has {len(lists)} entries for {q_n} queries")
    return [np.unique(_index_array(x, n, f"{name}[{i}]")) for i, x in enumerate(lists)]


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (items, dim), got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero to L2-normalise")
    return vectors / norms


# --- retrieval ----------------------------------------------------------------


def rank_recall(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: list[int],
    exclude: list[np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Recall@k of each query with a single relevant candidate.

    ``rank_q = 1 + #{c != t_q, c not in exclude[q] : scores[q, c] >= scores[q, t_q]}`` and
    ``recall@k[q] = 1.0 if rank_q <= k else 0.0``.

    Ties are broken pessimistically: a candidate scoring exactly the target's score
    counts as ranked above it. ``exclude[q]`` lists candidates removed from query q's
    ranking ("filtered" recall, e.g. items the user already interacted with); the
    target ``t_q`` is never removed, even when listed. NaN scores are rejected.

    Args:
        scores: (Q, N) similarity of each query to each candidate.
        targets: (Q,) index of each query's relevant candidate.
        ks: cut-offs, each >= 1 (k larger than N gives 1.0).
        exclude: optional, one index array per query.

    Returns:
        ``{k: (Q,) float64 array of 0.0/1.0}``.
    """
    scores = _scores_2d(scores)
    q_n, n = scores.shape
    targets = _index_array(targets, n, "targets")
    if targets.shape[0] != q_n:
        raise ValueError(f"targets has {targets.shape[0]} entries for {q_n} queries")
    ks = [_check_k(k, "ks entry") for k in ks]
    excl = _per_query_list(exclude, q_n, n, "exclude")
    rank = np.empty(q_n, dtype=np.int64)
    step = max(1, (1 << 24) // max(n, 1))  # rows per chunk: a (step, N) bool mask of ~16 MB
    for s in range(0, q_n, step):
        rows, t = np.arange(s, min(s + step, q_n)), targets[s : s + step]
        above = scores[rows] >= scores[rows, t][:, None]
        above[rows - s, t] = False
        for q in rows:
            above[q - s, excl[q]] = False  # the target's own entry is False already: it is never removed
        rank[rows] = above.sum(axis=1) + 1
    return {k: (rank <= k).astype(np.float64) for k in ks}


def _ranked(row: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Candidate indices by descending score, ties lower index first, ``removed`` dropped."""
    order = np.argsort(-row, kind="stable")
    if removed.size:
        order = order[~np.isin(order, removed)]
    return order


def set_recall(
    scores: np.ndarray,
    relevant: list[np.ndarray],
    k: int,
    exclude: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Recall@k of each query with a set of relevant candidates.

    ``recall@k[q] = |top_k(q) ∩ R_q| / |R_q|``, where ``top_k(q)`` is the first k
    candidates of query q by descending score after removing ``exclude[q]``, and
    ``R_q`` the unique indices in ``relevant[q]``.

    Ties: stable sort on ``-scores``, so among equal scores the lower candidate index
    ranks first. The denominator is ``|R_q|`` (not ``min(k, |R_q|)``), so it is below
    1 whenever ``k < |R_q|``. ``exclude`` is applied literally: a relevant candidate
    that is also excluded cannot be retrieved but still counts in ``|R_q|``. A query
    with an empty relevant set gives NaN (drop it before averaging).

    Returns:
        (Q,) float64 array.
    """
    scores = _scores_2d(scores)
    q_n, n = scores.shape
    k = _check_k(k)
    rel = _per_query_list(relevant, q_n, n, "relevant")
    excl = _per_query_list(exclude, q_n, n, "exclude")
    out = np.full(q_n, np.nan)
    for q in range(q_n):
        if rel[q].size:
            top = _ranked(scores[q], excl[q])[:k]
            out[q] = np.isin(top, rel[q]).sum() / rel[q].size
    return out


# --- agreement with a teacher ---------------------------------------------------


def kendall_tau(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-query Kendall tau-b between two score rows over the same M items.

    ``tau_b = (P - D) / sqrt((P + D + T_r) * (P + D + T_c))`` with P concordant and D
    discordant pairs, T_r / T_c pairs tied only in ``reference`` / only in
    ``candidate`` (``scipy.stats.kendalltau``, variant "b").

    A row where either side is constant, or M < 2, gives NaN; a NaN score in a row
    makes that row NaN.

    Args:
        reference: (Q, M), e.g. teacher similarities of each query's M teacher neighbours.
        candidate: (Q, M), the embedding's similarities of the same items.

    Returns:
        (Q,) float64 array in [-1, 1].
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(f"reference and candidate must be 2-D of one shape, got {reference.shape}, {candidate.shape}")
    out = np.full(reference.shape[0], np.nan)
    for q, (r, c) in enumerate(zip(reference, candidate)):
        if r.size < 2 or np.isnan(r).any() or np.isnan(c).any() or np.ptp(r) == 0 or np.ptp(c) == 0:
            continue
        out[q] = kendalltau(r, c, variant="b").statistic
    return out


def topk_overlap(
    reference: np.ndarray,
    candidate: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Per-query overlap of the two top-k lists: ``|top_k(reference[q]) ∩ top_k(candidate[q])| / k``.

    ``exclude[q]`` is one candidate index removed from both rankings of query q (the
    query item itself); -1 removes nothing. Ties: stable sort, the lower candidate
    index first. ``k`` must not exceed the candidates left in any row (ValueError).

    Args:
        reference: (Q, N) teacher scores.
        candidate: (Q, N) embedding scores over the same N candidates.
        k: list length, >= 1.
        exclude: optional (Q,) int.

    Returns:
        (Q,) float64 array in [0, 1].
    """
    reference = _scores_2d(reference, "reference")
    candidate = _scores_2d(candidate, "candidate")
    if reference.shape != candidate.shape:
        raise ValueError(f"reference {reference.shape} and candidate {candidate.shape} differ in shape")
    q_n, n = reference.shape
    k = _check_k(k)
    if exclude is None:
        excl = np.full(q_n, -1, dtype=np.int64)
    else:
        excl = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if excl.shape[0] != q_n or (excl >= n).any() or (excl < -1).any():
            raise ValueError(f"exclude must be (Q,) = ({q_n},) ints in [-1, {n})")
    if q_n and k > n - int((excl >= 0).any()):
        raise ValueError(f"k={k} exceeds the {n - int((excl >= 0).any())} candidates left per query")
    out = np.zeros(q_n)
    for q in range(q_n):
        removed = excl[q : q + 1][excl[q : q + 1] >= 0]
        a = _ranked(reference[q], removed)[:k]
        b = _ranked(candidate[q], removed)[:k]
        out[q] = np.intersect1d(a, b).size / k
    return out


def _nearest_other(unit: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each item in ``rows``: the most cosine-similar other item (ties: lowest index)."""
    n = unit.shape[0]
    chunk = max(1, (1 << 24) // n)
    out = np.empty(rows.shape[0], dtype=np.int64)
    for s in range(0, rows.shape[0], chunk):
        r = rows[s : s + chunk]
        sim = unit[r] @ unit.T
        sim[np.arange(r.shape[0]), r] = -np.inf
        out[s : s + chunk] = sim.argmax(axis=1)  # first maximum = lowest index
    return out


def bijective_accuracy(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per-query mutual-nearest-neighbour indicator under cosine similarity.

    For query item q: ``j = argmax_{i != q} cos(v_q, v_i)``; the result is 1.0 if
    ``q == argmax_{i != j} cos(v_j, v_i)`` else 0.0. Vectors are L2-normalised here
    (zero vectors are rejected). Ties: the lowest item index wins.

    Args:
        vectors: (N, D) item embeddings, N >= 2.
        queries: (Q,) item indices.

    Returns:
        (Q,) float64 array of 0.0/1.0.
    """
    unit = _l2_normalise(vectors)
    n = unit.shape[0]
    if n < 2:
        raise ValueError("bijective_accuracy needs at least 2 items")
    queries = _index_array(queries, n, "queries")
    nn_q = _nearest_other(unit, queries)
    uniq, inv = np.unique(nn_q, return_inverse=True)
    nn_j = _nearest_other(unit, uniq)[inv.reshape(-1)]
    return (nn_j == queries).astype(np.float64)


# --- clustering -------------------------------------------------------------------


def nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information ``I(L; C) / ((H(L) + H(C)) / 2)`` (natural log).

    ``sklearn.metrics.normalized_mutual_info_score`` with ``average_method="arithmetic"``;
    1.0 when both partitions are trivial (one class each), 0.0 when exactly one is.
    """
    labels = np.asarray(labels).reshape(-1)
    clusters = np.asarray(clusters).reshape(-1)
    if labels.shape != clusters.shape:
        raise ValueError(f"labels ({labels.size}) and clusters ({clusters.size}) differ in length")
    return float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))


def cluster_nmi(
    vectors: np.ndarray,
    labels: np.ndarray,
    k: int | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
) -> dict:
    """Spherical k-means on the vectors, scored by NMI against the item labels.

    Clusters: ``faiss.Kmeans(d, k, niter=25, seed=seed, spherical=True)`` with k-means++
    initialisation (faiss's default random initialisation often leaves two centroids
    in one cluster on well-separated data), trained on L2-normalised float32
    vectors; each item takes the cluster of its highest inner-product centroid.
    ``k`` defaults to the number of distinct labels. ``nmi`` is :func:`nmi` of
    (labels, clusters).

    Interval: 95% bias-shifted percentile bootstrap over items (clamped to [0, 1]): ``bootstrap`` resamples of the N
    items with replacement (``np.random.default_rng(seed)``), cluster ids kept
    fixed (no re-clustering); ``ci_low``/``ci_high`` = the 2.5th/97.5th percentiles of the
    resampled NMIs shifted by NMI - their mean (resampling inflates NMI; this removes the shift),
    NaN when ``bootstrap`` is 0.

    Returns:
        ``{"nmi": float, "ci_low": float, "ci_high": float, "k": int, "clusters": (N,) int64}``.
    """
    unit = _l2_normalise(vectors).astype(np.float32)
    labels = np.asarray(labels).reshape(-1)
    n, d = unit.shape
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries for {n} vectors")
    k = len(np.unique(labels)) if k is None else _check_k(k)
    if k > n:
        raise ValueError(f"k={k} clusters needs at least {k} vectors, got {n}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    km = faiss.Kmeans(
        d,
        k,
        niter=25,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,  # only silences faiss's small-sample warning
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )
    km.train(unit)
    _, assign = km.index.search(unit, 1)
    clusters = assign.reshape(-1).astype(np.int64)
    rng = np.random.default_rng(seed)
    boots = np.array([nmi(labels[idx], clusters[idx]) for idx in (rng.integers(0, n, n) for _ in range(bootstrap))])
    point = nmi(labels, clusters)
    # bias-shifted percentile interval: resampling with replacement duplicates items, which biases NMI upwards
    # (a plain percentile interval can miss its own point estimate); the percentiles are shifted by
    # point - mean(resampled NMIs), which keeps the spread and centres it on the point
    if bootstrap > 0:
        shift = point - float(np.mean(boots))
        lo, hi = np.clip(np.percentile(boots, [2.5, 97.5]) + shift, 0.0, 1.0)
    else:
        lo, hi = np.nan, np.nan
    return {"nmi": point, "ci_low": float(lo), "ci_high": float(hi), "k": k, "clusters": clusters}


# --- interaction probe ---------------------------------------------------------------


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: the probability that a random positive outscores a random negative, ties 1/2.

    ``sklearn.metrics.roc_auc_score(y, scores)``; NaN when ``y`` holds a single class.
    """
    y = np.asarray(y).reshape(-1)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64).reshape(-1)))


def interaction_auc(
    features_train: np.ndarray,
    y_train: np.ndarray,
    features_test: np.ndarray,
    y_test: np.ndarray,
    groups_test: np.ndarray | None = None,
    seed: int = 0,
) -> dict:
    """Linear probe: does a (user, item) feature vector predict the interaction label?

    Fits ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000,
    random_state=seed))`` on the training rows and scores the test rows with the
    positive-class probability. ``auc`` is :func:`auc` over all test rows (NaN if
    one class). ``per_group`` holds :func:`auc` within each test group (a user), in
    the sorted order of the group ids listed in ``groups``; groups whose labels are
    all one class are skipped. ``coef`` is the fitted coefficients on the
    standardised features.

    Returns:
        ``{"auc": float, "per_group": (G,) float64, "groups": (G,) group ids, "coef": list[float]}``.
    """
    x_tr = np.asarray(features_train, dtype=np.float64)
    x_te = np.asarray(features_test, dtype=np.float64)
    y_tr = np.asarray(y_train).reshape(-1)
    y_te = np.asarray(y_test).reshape(-1)
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"features must be 2-D with one width, got {x_tr.shape} and {x_te.shape}")
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0]:
        raise ValueError("features and labels differ in length")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(x_tr, y_tr)
    p = model.predict_proba(x_te)[:, 1]
    per_group, kept = [], []
    if groups_test is not None:
        groups = np.asarray(groups_test).reshape(-1)
        if groups.shape[0] != y_te.shape[0]:
            raise ValueError(f"groups_test has {groups.shape[0]} entries for {y_te.shape[0]} test rows")
        for g in np.unique(groups):
            m = groups == g
            if np.unique(y_te[m]).size == 2:
                kept.append(g)
                per_group.append(auc(y_te[m], p[m]))
    return {
        "auc": auc(y_te, p),
        "per_group": np.asarray(per_group, dtype=np.float64),
        "groups": np.asarray(kept),
        "coef": model[-1].coef_[0].tolist(),
    }


# --- semantic IDs ----------------------------------------------------------------------


def _prefix_groups(codes: np.ndarray, level: int) -> np.ndarray:
    """Group id of each item's first ``level`` codes."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (items, levels), got shape {codes.shape}")
    if isinstance(level, bool) or not 1 <= level <= codes.shape[1]:
        raise ValueError(f"level must be in [1, {codes.shape[1]}], got {level!r}")
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, inv = np.unique(codes[:, :level], axis=0, return_inverse=True)
    return inv.reshape(-1)


def prefix_candidate_recall(
    codes: np.ndarray,
    queries: np.ndarray,
    relevant: list[np.ndarray],
    level: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Recall of the candidates that share a query's semantic-ID prefix.

    For query item q, ``C_q = {i != q : codes[i, :level] == codes[q, :level]}`` (level
    is 1-based). Recall is ``|C_q ∩ R_q| / |R_q|`` over the unique relevant items
    ``R_q``; NaN when ``R_q`` is empty. q itself is never a candidate, so a relevant
    list containing q caps recall below 1.

    Returns:
        ``(recall (Q,) float64, candidate count |C_q| (Q,) int64)``.
    """
    group = _prefix_groups(codes, level)
    n = group.shape[0]
    queries = _index_array(queries, n, "queries")
    rel = _per_query_list(relevant, queries.shape[0], n, "relevant")
    counts = np.bincount(group, minlength=1)[group[queries]] - 1 if n else np.zeros(0, dtype=np.int64)
    recall = np.full(queries.shape[0], np.nan)
    for i, (q, r) in enumerate(zip(queries, rel)):
        if r.size:
            recall[i] = np.sum((group[r] == group[q]) & (r != q)) / r.size
    return recall, counts.astype(np.int64)


def collision_rate(codes: np.ndarray, level: int) -> float:
    """Fraction of items whose first ``level`` codes equal those of at least one other item.

    ``|{i : exists j != i, codes[j, :level] == codes[i, :level]}| / N``; NaN when N = 0.
    """
    group = _prefix_groups(codes, level)
    if group.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.bincount(group)[group] > 1))
