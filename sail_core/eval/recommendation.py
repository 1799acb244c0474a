"""The recommendation metrics of a model, from its **catalogue index** (the vectors the index step stored
with the model that is exported and served), never from vectors a distillation wrote.

All on the split and time cutoff of :mod:`sail_core.data.splits`; every per-query value is kept so that
runs can be compared query by query (``rec_per_query.parquet``). The definitions of the metrics
themselves are in :mod:`sail_core.eval.rec_metrics`; here is which queries they run on:

* ``seq2item`` / ``seq2item_cold``: :func:`sail_core.rec.sequences.eval_sequences` (history before the
  cutoff, target = the first positive after it); the query is the sequence encoder (``cre.pt`` saved with
  the model; mean pooling by default) over the history's catalogue vectors, ranked against the whole
  catalogue. ``recall_at_k`` (vanilla) and ``filtered.recall_at_k`` (the user's earlier items removed).
  ``_cold``: only users whose target is a test item (held out of content training and of the teacher).
* ``gid_i2i``: each test item (with an evaluation-teacher vector) queries the catalogue (itself
  excluded); relevant = its 50 nearest items by the evaluation teacher's ID embeddings
  (:func:`sail_core.rec.teacher.fit_eval_teacher`). ``recall_at_50``.
* ``collab``: on the same queries, ``kendall_tau`` between the teacher's and the embedding's similarities
  of the 50 teacher neighbours (0 for a query whose similarities are all equal: no order to agree with),
  and ``top10_overlap`` of the two top-10 lists.
* ``bijective``: ``accuracy`` on the test items (query -> top neighbour -> its top neighbour).
* ``nmi``: k-means of the catalogue (k = the number of distinct first genres) against each item's first
  listed genre (``tags``), with a bootstrap interval over items (one value, not per query).
* ``auc``: per user (split in two halves by user id: fit on one, score the other), positives = items
  rated >= ``data.positive_rating`` after the cutoff, negatives = as many items the user never rated,
  drawn at random; features: log popularity before the cutoff, the user's mean rating before it, the
  share of the user's earlier items with the item's first genre; ``with_embedding`` adds the cosine of
  the item to the mean of the user's earlier positives. Users are split by a CRC32 of their id.
  ``auc.without_embedding`` / ``auc.with_embedding`` are per-user AUCs (the overall AUCs are logged as
  ``..._overall``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sail_core.config import Config
from sail_core.data.io import read_items
from sail_core.eval import rec_metrics as rm
from sail_core.rec.sequence_encoder import SequenceEncoder, load_sequence_encoder, pack
from sail_core.rec.sequences import eval_sequences
from sail_core.rec.teacher import EVAL_ID_EMBEDDINGS, Events, positive_events, read_id_embeddings

SEQ_KS = (1, 10, 25)
GID_K, TOP_OVERLAP = 50, 10


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def seq2item_metrics(cfg: Config, vectors: np.ndarray, ids: list[str], events: Events, model_dir: Path | None) -> dict:
    rows = eval_sequences(cfg, events)
    where = {i: n for n, i in enumerate(ids)}
    rows = rows[rows["target_item"].isin(where) & rows["items"].map(lambda s: all(i in where for i in s))]
    if rows.empty:
        return {}
    # the candidate pools with its own sequence encoder (cre.pt); a model without one (untrained, MiniLM) by mean
    encoder = load_sequence_encoder(cfg, model_dir, vectors.shape[1]) if model_dir else \
        SequenceEncoder("mean", vectors.shape[1], cfg.cre.seq2item.max_length)
    index, mask = pack([[where[i] for i in s] for s in rows["items"]], cfg.cre.seq2item.max_length)
    with torch.no_grad():
        pooled = encoder(torch.as_tensor(vectors)[index], mask)
    scores = _normalised(pooled.numpy()) @ vectors.T
    targets = rows["target_item"].map(where).to_numpy()
    seen = [np.asarray([where[i] for i in s if i in where], dtype=np.int64) for s in rows["seen"]]
    cold = (rows["target_split"] == "test").to_numpy()
    out = {}
    for name, exclude in (("recall", None), ("filtered.recall", seen)):
        for k, v in rm.rank_recall(scores, targets, list(SEQ_KS), exclude).items():
            out[f"seq2item.{name}_at_{k}"] = v
            if cold.any():
                out[f"seq2item_cold.{name}_at_{k}"] = v[cold]
    return out


def collaborative_metrics(vectors: np.ndarray, ids: list[str], test: list[str], teacher_dir: Path) -> dict:
    t_ids, t_vec = read_id_embeddings(teacher_dir, EVAL_ID_EMBEDDINGS)
    where = {i: n for n, i in enumerate(ids)}
    t_ids_in = [i for i in t_ids if i in where]
    t_vec = _normalised(t_vec[[t_ids.index(i) for i in t_ids_in]] if len(t_ids_in) != len(t_ids) else t_vec)
    cat = np.asarray([where[i] for i in t_ids_in])               # catalogue rows of the teacher's items
    queries = [i for i in test if i in set(t_ids_in)]
    if len(queries) < 2 or len(t_ids_in) <= GID_K:
        return {}
    q_t = np.asarray([t_ids_in.index(i) for i in queries])      # rows in the teacher table
    teacher_scores = t_vec[q_t] @ t_vec.T
    teacher_scores[np.arange(len(q_t)), q_t] = -np.inf
    neighbours = np.argsort(-teacher_scores, axis=1, kind="stable")[:, :GID_K]   # teacher-table rows
    emb = vectors[cat]
    emb_scores = emb[q_t] @ emb.T
    emb_scores[np.arange(len(q_t)), q_t] = -np.inf
    relevant = [n for n in neighbours]
    gid = rm.set_recall(emb_scores, relevant, GID_K)
    take = lambda s: np.take_along_axis(s, neighbours, axis=1)  # noqa: E731
    tau = rm.kendall_tau(take(teacher_scores), take(emb_scores))
    t_fin, e_fin = np.where(np.isfinite(teacher_scores), teacher_scores, -1e9), np.where(np.isfinite(emb_scores), emb_scores, -1e9)
    overlap = rm.topk_overlap(t_fin, e_fin, TOP_OVERLAP, exclude=q_t)
    return {f"gid_i2i.recall_at_{GID_K}": gid, "collab.kendall_tau": np.nan_to_num(tau, nan=0.0),
            f"collab.top{TOP_OVERLAP}_overlap": overlap}


def _first_genres(items: pd.DataFrame, ids: list[str]) -> np.ndarray:
    tags = items.set_index(items["item_id"].astype(str))["tags"].reindex(ids)
    return np.asarray([str(t).split(",")[0].strip() if isinstance(t, str) and t.strip() else "(none)" for t in tags])


def auc_metrics(cfg: Config, vectors: np.ndarray, ids: list[str], events: Events, genres: np.ndarray) -> tuple[dict, dict]:
    import zlib

    f = events.frame
    where = {i: n for n, i in enumerate(ids)}
    item = f["item_id"].map(where).to_numpy(dtype=float)
    after, rating = f["after"].to_numpy(), f["rating"].to_numpy()
    known = ~np.isnan(item)
    popularity = np.log1p(np.bincount(item[known & ~after].astype(int), minlength=len(ids)))
    rng = np.random.default_rng(cfg.train.seed)
    every = np.arange(len(ids))
    cols = {k: [] for k in ("user", "half", "y", "pop", "mean_rating", "genre_share", "cosine")}
    for user, rows in f.groupby("user_id", sort=True).indices.items():
        ok = rows[known[rows]]
        pos_after = np.unique(item[ok[after[ok] & (rating[ok] >= cfg.data.positive_rating)]].astype(int))
        before = rows[~after[rows]]
        hist = item[before[known[before] & (rating[before] >= cfg.data.positive_rating)]].astype(int)
        if not len(pos_after) or not len(hist):
            continue
        pool = np.setdiff1d(every, item[ok].astype(int))
        neg = rng.choice(pool, size=min(len(pool), len(pos_after)), replace=False)
        candidates = np.concatenate([pos_after, neg])
        profile = _normalised(vectors[hist].mean(0, keepdims=True))[0]
        n = len(candidates)
        cols["user"] += [user] * n
        cols["half"] += [zlib.crc32(str(user).encode()) % 2] * n
        cols["y"] += [1] * len(pos_after) + [0] * len(neg)
        cols["pop"] += list(popularity[candidates])
        cols["mean_rating"] += [float(rating[before].mean())] * n
        cols["genre_share"] += list((genres[hist][None, :] == genres[candidates][:, None]).mean(1))
        cols["cosine"] += list(vectors[candidates] @ profile)
    frame = pd.DataFrame(cols)
    if frame.empty or frame["user"].nunique() < 4:
        return {}, {}
    half = frame["half"].to_numpy()
    per, overall = {}, {}
    for name, use in (("without_embedding", ["pop", "mean_rating", "genre_share"]),
                      ("with_embedding", ["pop", "mean_rating", "genre_share", "cosine"])):
        train, test = frame[half == 0], frame[half == 1]
        res = rm.interaction_auc(train[use].to_numpy(), train["y"].to_numpy(), test[use].to_numpy(),
                                 test["y"].to_numpy(), groups_test=test["user"].to_numpy(), seed=cfg.train.seed)
        per[f"auc.{name}"] = np.asarray(res["per_group"], dtype=np.float64)
        overall[f"auc.{name}_overall"] = float(res["auc"])
    return per, overall


def recommendation_metrics(cfg: Config, data_dir: Path, vectors: np.ndarray, ids: list[str], teacher_dir: Path | None,
                           model_dir: Path | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``(per-query values by metric, single values)`` of the catalogue ``vectors`` (rows = ``ids``); see the
    module docstring. Metrics that need the teacher are skipped without ``teacher_dir``."""
    vectors = _normalised(vectors)
    events = positive_events(cfg, data_dir)
    test = sorted(i for i, s in events.splits.items() if s == "test")
    per = seq2item_metrics(cfg, vectors, ids, events, model_dir)
    if teacher_dir is not None:
        per.update(collaborative_metrics(vectors, ids, test, Path(teacher_dir)))
    where = {i: n for n, i in enumerate(ids)}
    per["bijective.accuracy"] = rm.bijective_accuracy(vectors, np.asarray([where[i] for i in test if i in where]))
    genres = _first_genres(read_items(data_dir), ids)
    nmi = rm.cluster_nmi(vectors, genres, seed=cfg.train.seed, bootstrap=500)
    single = {"nmi": nmi["nmi"], "nmi_ci_low": nmi["ci_low"], "nmi_ci_high": nmi["ci_high"], "nmi_k": float(nmi["k"])}
    auc_per, auc_overall = auc_metrics(cfg, vectors, ids, events, genres)
    per.update(auc_per)
    single.update(auc_overall)
    return per, single
