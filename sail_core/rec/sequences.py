"""User sequences for seq2item: the training sequences (four builders) and the evaluation sequences.

**Training** (:func:`training_sequences`). Per user, the positive events (``rating >=
data.positive_rating``) of **train items before the time cutoff**, in time order. Every event from the
second on is a *target* (the most recent ``targets_per_user`` of them; each prefix's latest item is its
target), and its *candidates* are the ``candidates`` most recent earlier items. A builder selects up to
``max_length`` candidates as the target's sequence (kept in time order); each builder listed in
``cre.seq2item.builders`` gives one row per target:

* ``content_single``: the candidates with the highest cosine to the target in the starting model's
  embedding (one interest peak, around the target).
* ``collab_single``: the candidates with the highest Jaccard overlap of users with the target (the sets
  of users with an event on each item before their cutoffs).
* ``content_multi`` / ``collab_multi``: several interest peaks. Items are grouped into interest
  clusters (k-means of the catalogue: the content embeddings, or the teacher's ID embeddings); the
  history's ``peaks`` most frequent clusters are its peaks (ties: the cluster holding the candidate most
  similar to the target), and the sequence takes items from the peaks in turn, each peak's items by
  similarity to the target (cosine / Jaccard).

Selecting with the target is a training-data choice (the report's: sequences relevant to the next item);
the evaluation never does it.

**Evaluation** (:func:`eval_sequences`). Per user with a positive event at or after the cutoff: the
target is the first such event's item (any split), the sequence the last ``max_length`` positive items
before the cutoff (any split; no future event on the query side), and ``seen`` every item the user has
an event with before the cutoff (the filtered metric removes them from the candidates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sail_core.config import Config
from sail_core.rec.teacher import Events

SEQUENCE_COLUMNS = ["user_id", "target_item", "items", "builder"]


def _kmeans_labels(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    k = max(1, min(k, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0]


def jaccard_matrix(user_items) -> np.ndarray:
    """(I, I) Jaccard overlap of the items' user sets from a binary (U, I) sparse matrix."""
    m = (user_items > 0).astype(np.float32)
    inter = np.asarray((m.T @ m).todense(), dtype=np.float32)
    size = np.diag(inter)
    union = size[:, None] + size[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def single_peak(sim: np.ndarray, k: int) -> np.ndarray:
    """Positions (into the candidates) of the ``k`` most similar to the target, ties to the later candidate."""
    order = np.lexsort((-np.arange(len(sim)), -sim))
    return np.sort(order[:k])


def multi_peak(sim: np.ndarray, clusters: np.ndarray, peaks: int, k: int) -> np.ndarray:
    """Positions of up to ``k`` candidates taken in turn from the ``peaks`` most frequent clusters (module doc)."""
    labels, counts = np.unique(clusters, return_counts=True)
    best = np.array([sim[clusters == c].max() for c in labels])
    chosen = labels[np.lexsort((-best, -counts))][:peaks]
    queues = [list(np.flatnonzero(clusters == c)[np.argsort(-sim[clusters == c], kind="stable")]) for c in chosen]
    picked: list[int] = []
    while len(picked) < k and any(queues):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
    return np.sort(np.asarray(picked, dtype=np.int64))


def training_sequences(cfg: Config, events: Events, items: list[str], content: np.ndarray, teacher_items: list[str],
                       teacher_vectors: np.ndarray, user_items, clusters: int = 16) -> pd.DataFrame:
    """The training rows (``user_id``, ``target_item``, ``items`` list, ``builder``); see the module docstring.

    Args:
        items: the items of ``content`` (the starting model's embeddings, one row each).
        teacher_items, teacher_vectors: the training teacher's table (train items with positive events).
        user_items: (U, I) events before the cutoff on ``teacher_items`` (the teacher's ``seen``), for Jaccard.
        clusters: interest clusters of the multi-peak builders.
    """
    s = cfg.cre.seq2item
    f = events.frame
    known = pd.Index(teacher_items)
    pos = f[(f["rating"] >= cfg.data.positive_rating) & ~f["after"] & f["item_id"].isin(set(teacher_items))]
    content_index = pd.Index(items).get_indexer(known)
    if (content_index < 0).any():
        raise ValueError("training_sequences: some teacher items have no content embedding; embed every train item")
    emb = content[content_index].astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    jac = jaccard_matrix(user_items) if {"collab_single", "collab_multi"} & set(s.builders) else None
    content_clusters = _kmeans_labels(emb, clusters, cfg.train.seed) if "content_multi" in s.builders else None
    collab_clusters = _kmeans_labels(teacher_vectors, clusters, cfg.train.seed) if "collab_multi" in s.builders else None
    rows = []
    for user, g in pos.groupby("user_id", sort=True):
        seq = known.get_indexer(g["item_id"])
        for t in range(max(1, len(seq) - s.targets_per_user), len(seq)):
            target, cand = seq[t], seq[max(0, t - s.candidates):t]
            cand = cand[cand != target]
            if not len(cand):
                continue
            for builder in s.builders:
                if builder.startswith("content"):
                    sim, cl = emb[cand] @ emb[target], content_clusters
                else:
                    sim, cl = jac[cand, target], collab_clusters
                pick = single_peak(sim, s.max_length) if builder.endswith("single") else \
                    multi_peak(sim, cl[cand], s.peaks, s.max_length)
                rows.append((user, teacher_items[target], [teacher_items[i] for i in cand[pick]], builder))
    return pd.DataFrame(rows, columns=SEQUENCE_COLUMNS)


def eval_sequences(cfg: Config, events: Events) -> pd.DataFrame:
    """The evaluation rows (``user_id``, ``target_item``, ``items``, ``seen``, ``target_split``); module docstring."""
    f = events.frame
    item, after = f["item_id"].to_numpy(dtype=object), f["after"].to_numpy()
    positive = (f["rating"] >= cfg.data.positive_rating).to_numpy()
    rows = []
    for user, idx in f.groupby("user_id", sort=True).indices.items():   # idx: the user's rows in time order
        before, later = idx[~after[idx]], idx[after[idx] & positive[idx]]
        history = item[before[positive[before]]].tolist()[-cfg.cre.seq2item.max_length:]
        if not len(later) or not history:
            continue
        target = str(item[later[0]])
        rows.append((user, target, history, sorted(set(item[before].tolist()) - {target}),
                     events.splits.get(target, "train")))
    return pd.DataFrame(rows, columns=["user_id", "target_item", "items", "seen", "target_split"])
