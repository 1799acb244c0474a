"""The collaborative teacher of CRE: item ID embeddings from the interactions (``implicit``'s ALS or BPR).

**What it sees.** Positive events (``rating >= data.positive_rating``) of **train items** strictly
**before** each user's time cutoff (:func:`sail_core.data.splits.user_cutoffs`). Validation and test
items never appear, so for them the content embedding is the only option (cold start), and no event
after a cutoff is used, so its own evaluation below is on the future.

**Its own quality** (:func:`teacher_metrics`): for every user with a positive event on a train item
after the cutoff, the teacher ranks the train items the user has no event with before the cutoff
(``user_factors @ item_factors``); Recall@k = relevant items in the top k / relevant items, NDCG@k with
binary gains. Per-user values, so intervals can be bootstrapped over users.

**The evaluation teacher** (:func:`fit_eval_teacher`): the same algorithm on every item's positive
events, all time. It is never used to train; it only defines the collaborative neighbours that the
recommendation metrics (Gid-i2i, Kendall tau) score held-out items against, the way the report's
Gid-i2i uses the production recommender's ID embeddings as the ground truth.

Tables: ``id_embeddings.parquet`` / ``eval_id_embeddings.parquet`` (``item_id`` string, ``vector``
list of float32), contract-checked by the ``id_embeddings`` suite (``data_contracts/id_embeddings.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sail_core.config import Config, TeacherConfig
from sail_core.data.io import read_interactions
from sail_core.data.splits import after_cutoff, item_splits, user_cutoffs

LOG = logging.getLogger(__name__)
ID_EMBEDDINGS, EVAL_ID_EMBEDDINGS = "id_embeddings", "eval_id_embeddings"


@dataclass
class Events:
    """Positive events with their side of the cutoff: ``user_id``, ``item_id``, ``timestamp``, ``after``."""

    frame: pd.DataFrame
    splits: dict[str, str]


def positive_events(cfg: Config, data_dir: Path) -> Events:
    """The positive events of ``data_dir`` (any item), sorted by user and time, with ``after`` = at or after
    the user's cutoff (cutoffs from all events, as the pair builder computes them)."""
    inter = read_interactions(Path(data_dir))
    cut = user_cutoffs(inter, cfg.data.train_time_fraction)
    frame = pd.DataFrame({
        "user_id": inter["user_id"].astype(str).to_numpy(),
        "item_id": inter["item_id"].astype(str).to_numpy(),
        "timestamp": inter["timestamp"].to_numpy(dtype="int64"),
        "rating": inter["rating"].to_numpy(dtype="float64"),
    })
    frame["after"] = after_cutoff(frame["user_id"], frame["timestamp"], cut)
    frame = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    return Events(frame, item_splits(Path(data_dir)))


def _matrix(users: list[str], items: list[str], pairs: pd.DataFrame) -> sp.csr_matrix:
    u = pd.Index(users).get_indexer(pairs["user_id"])
    i = pd.Index(items).get_indexer(pairs["item_id"])
    data = np.ones(len(pairs), dtype=np.float32)
    m = sp.csr_matrix((data, (u, i)), shape=(len(users), len(items)), dtype=np.float32)
    m.data[:] = 1.0  # a repeated (user, item) counts once
    return m


def _fit(t: TeacherConfig, user_items: sp.csr_matrix, seed: int):
    """An ``implicit`` model fitted on ``user_items`` (CPU, one thread and one BLAS thread: reproducible, and
    implicit's own advice)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        if t.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(factors=t.factors, regularization=t.regularization, alpha=t.alpha,
                                            iterations=t.iterations, random_state=seed, num_threads=1)
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(factors=t.factors, learning_rate=t.learning_rate,
                                                regularization=t.regularization, iterations=t.iterations,
                                                random_state=seed, num_threads=1)
        model.fit(user_items, show_progress=False)
    return model


def _frame(items: list[str], vectors: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.array(items, dtype="string"),
                         "vector": [np.asarray(v, dtype=np.float32) for v in vectors]})


@dataclass
class Teacher:
    """A fitted teacher: its item table, user factors and the matrices it was fitted on."""

    items: list[str]
    users: list[str]
    item_factors: np.ndarray   # (I, F)
    user_factors: np.ndarray   # (U, F)
    seen: sp.csr_matrix        # (U, I) events before the cutoff (any rating), excluded from its ranking

    def table(self) -> pd.DataFrame:
        return _frame(self.items, self.item_factors)


def _training_events(cfg: Config, events: Events) -> tuple[pd.DataFrame, list[str], list[str]]:
    """``(positive events, users, items)`` the training teacher learns from (module docstring)."""
    f = events.frame
    train = {i for i, s in events.splits.items() if s == "train"}
    pos = f[(f["rating"] >= cfg.data.positive_rating) & ~f["after"] & f["item_id"].isin(train)]
    if pos.empty:
        raise ValueError("the teacher has no positive event of a train item before the time cutoff; check "
                         "data.positive_rating and data.train_time_fraction")
    return pos, sorted(pos["user_id"].unique()), sorted(pos["item_id"].unique())


def seen_matrix(cfg: Config, events: Events) -> sp.csr_matrix:
    """(users, items) of the training teacher: 1 where the user has any event with the item before the cutoff."""
    _, users, items = _training_events(cfg, events)
    f = events.frame
    before = f[~f["after"] & f["item_id"].isin(set(items)) & f["user_id"].isin(set(users))]
    return _matrix(users, items, before)


def fit_teacher(cfg: Config, events: Events) -> Teacher:
    """The training teacher: train items' positive events before the cutoff (see the module docstring)."""
    pos, users, items = _training_events(cfg, events)
    model = _fit(cfg.cre.teacher, _matrix(users, items, pos), cfg.train.seed)
    return Teacher(items, users, np.asarray(model.item_factors, dtype=np.float32),
                   np.asarray(model.user_factors, dtype=np.float32), seen_matrix(cfg, events))


def fit_eval_teacher(cfg: Config, events: Events) -> pd.DataFrame:
    """The evaluation teacher's item table: every item's positive events, all time (labels only, never trained on)."""
    f = events.frame
    pos = f[f["rating"] >= cfg.data.positive_rating]
    users, items = sorted(pos["user_id"].unique()), sorted(pos["item_id"].unique())
    model = _fit(cfg.cre.teacher, _matrix(users, items, pos), cfg.train.seed)
    return _frame(items, np.asarray(model.item_factors, dtype=np.float32))


def ranking_metrics(scores: np.ndarray, relevant: list[np.ndarray], ks: list[int]) -> dict[str, np.ndarray]:
    """Per-row ``recall_at_k`` and ``ndcg_at_k`` of ``scores`` (R, N) against each row's ``relevant`` indices.

    Recall@k = |top-k ∩ relevant| / |relevant|. NDCG@k = DCG / ideal DCG with binary gains, DCG =
    Σ_{rank r ≤ k, item relevant} 1 / log2(r + 1) (rank 1 = best). Candidates excluded from a row have
    score ``-inf``. Ties: stable order on ``-score`` (lower index first).
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = order[:, :k]
        rec, ndcg = np.zeros(len(relevant)), np.zeros(len(relevant))
        for r, rel in enumerate(relevant):
            hits = np.isin(top[r], rel)
            rec[r] = hits.sum() / len(rel)
            dcg = (hits / np.log2(np.arange(2, len(top[r]) + 2))).sum()
            ideal = (1.0 / np.log2(np.arange(2, min(k, len(rel)) + 2))).sum()
            ndcg[r] = dcg / ideal
        out[f"recall_at_{k}"], out[f"ndcg_at_{k}"] = rec, ndcg
    return out


def teacher_metrics(cfg: Config, teacher: Teacher, events: Events) -> dict[str, np.ndarray]:
    """The teacher's per-user Recall@k / NDCG@k on the positive events after the cutoff (module docstring)."""
    f = events.frame
    known = set(teacher.items)
    future = f[f["after"] & (f["rating"] >= cfg.data.positive_rating) & f["item_id"].isin(known)
               & f["user_id"].isin(set(teacher.users))]
    user_index, item_index = pd.Index(teacher.users), pd.Index(teacher.items)
    rows, relevant = [], []
    for user, g in future.groupby("user_id", sort=True):
        u = user_index.get_loc(user)
        rel = np.unique(item_index.get_indexer(g["item_id"]))
        rel = rel[~np.isin(rel, teacher.seen[u].indices)]  # re-watching a seen item is not a recommendation
        if len(rel):
            rows.append(u)
            relevant.append(rel)
    if not rows:
        return {}
    scores = teacher.user_factors[rows] @ teacher.item_factors.T
    for j, u in enumerate(rows):
        scores[j, teacher.seen[u].indices] = -np.inf
    return ranking_metrics(scores, relevant, cfg.cre.teacher.ks)


def read_id_embeddings(folder: Path, name: str = ID_EMBEDDINGS) -> tuple[list[str], np.ndarray]:
    """``(item ids, (N, F) float32)`` of a teacher table written by the teacher step."""
    path = Path(folder) / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the teacher step writes it (`sail teacher`, or the DAG's "
                                "`teacher` task); run it before the CRE stages and the evaluation")
    frame = pd.read_parquet(path)
    return frame["item_id"].astype(str).tolist(), np.stack(frame["vector"].to_numpy()).astype(np.float32)


def build_teacher(cfg: Config, data_dir: Path) -> dict:
    """Fit both teachers on ``data_dir`` and score the training one: ``{"tables": {name: frame}, "per_user":
    {metric: per-user values}, "summary": {...}}`` (the pipeline step checks the tables and writes them)."""
    events = positive_events(cfg, data_dir)
    teacher = fit_teacher(cfg, events)
    per_user = teacher_metrics(cfg, teacher, events)
    eval_table = fit_eval_teacher(cfg, events)
    summary = {"algorithm": cfg.cre.teacher.algorithm, "factors": cfg.cre.teacher.factors,
               "items": len(teacher.items), "users": len(teacher.users),
               "train_events": int(teacher.seen.nnz), "eval_items": len(eval_table),
               "scored_users": len(next(iter(per_user.values()))) if per_user else 0}
    return {"tables": {ID_EMBEDDINGS: teacher.table(), EVAL_ID_EMBEDDINGS: eval_table}, "per_user": per_user,
            "summary": summary}
