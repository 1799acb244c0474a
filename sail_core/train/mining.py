"""Dynamic hard-negative mining for one dataset (METHOD.md, "Training": stage III).

The current model scores the dataset's training pairs and their non-matching pairs,
:func:`f1_threshold` picks the threshold λ* that best separates the two, and each query
keeps its highest-scoring non-positives *below* λ*; candidates at or above λ* look like
unlabelled positives (probable false negatives) and are dropped.

**Selection rule** (:func:`mine`), per dataset:

1. *Queries* are the distinct query sides of the training pairs whose target is an item,
   one per :func:`~sail_core.losses.keys.side_key` (the key the training pool looks them up
   by). A query's *positives* are all the target items it has in those pairs.
2. *Catalogue*: the train items only (``train_item_ids``; the pipeline passes
   :func:`sail_core.data.splits.train_items`). Held-out (val/test) items are never embedded
   as candidates, so they can neither be mined nor dropped.
3. *Positive scores*: the cosine of every distinct (query, positive) pair.
4. *Non-matching scores*: for each query, exact inner-product search (FAISS ``flat``) over the
   catalogue; the first ``search_k`` hits that are neither a positive of the query nor the
   query's own item are its *candidates*, in descending score.
5. λ*, F1* = :func:`f1_threshold` (positive scores, candidate scores).
6. Kept: per query, the first ``per_query`` candidates with ``score < λ*`` (the highest-scoring
   ones below λ*). Dropped: every candidate with ``score >= λ*``.

Embeddings are streamed to ``.npy`` files in ``workdir`` one block at a time
(:class:`sail_core.index.vectors.VectorWriter`), as :func:`sail_core.eval.embed.embed_to_file`
does; that function is not imported because ``sail_core.train`` and ``sail_core.eval`` are
independent layers (pyproject ``[tool.importlinter]``). Memory holds one block of embeddings,
one block of search hits and the candidate scores (``queries x search_k``).

The table written by :func:`write_hard_negatives` is ``hard_negatives/<dataset>.parquet``
(:mod:`sail_core.data.pair_data`): ``query_item``, ``query_text`` (one of them set),
``negative_item`` (string dtype) and ``score`` (the miner's cosine, float; informative only).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from sail_core.data.io import write_table
from sail_core.data.pair_data import HARD_NEGATIVES_DIR
from sail_core.index.search import QUERY_BLOCK, build_index, search
from sail_core.index.vectors import VectorWriter
from sail_core.losses.keys import side_key

HARD_NEGATIVE_COLUMNS: dict[str, str] = {
    "query_item": "string",
    "query_text": "string",
    "negative_item": "string",
    "score": "float32",
}
_PAIR_BLOCK = 65_536  # (query, item) pairs scored at a time


# -- the threshold -----------------------------------------------------------------------------------


def f1_threshold(pos_scores, neg_scores) -> tuple[float, float, dict[str, np.ndarray]]:
    """``(λ*, F1*, curve)``: the threshold that maximises F1 when ``score >= λ`` predicts "positive".

    The candidate thresholds are the distinct values of ``pos_scores ∪ neg_scores``. At λ,
    ``TP = #pos >= λ``, ``FP = #neg >= λ``, ``P = #pos``; ``precision = TP / (TP + FP)``,
    ``recall = TP / P`` and ``F1 = 2 TP / (TP + FP + P)``.

    Ties:

    - *equal scores*: a score equal to λ is predicted positive (``>=``), so a positive and a
      negative with the same score always fall on the same side; no threshold splits them.
    - *equal F1*: F1 is one division of two integers, so equal fractions compare equal exactly;
      among the thresholds that reach the maximum the **smallest** is λ* (the highest recall:
      the miner then drops the most candidates as probable false negatives).

    When every positive scores above every negative, λ* is the lowest positive score and F1* = 1;
    with no negatives at all, likewise. ``curve``: ``threshold`` (ascending), ``precision``,
    ``recall``, ``f1`` (float64 arrays of the same length). Raises ``ValueError`` without any
    positive score or on NaN.
    """
    pos = np.sort(np.asarray(pos_scores, dtype=np.float64).ravel())
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64).ravel())
    if len(pos) == 0:
        raise ValueError("f1_threshold needs at least one positive score")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("f1_threshold: scores contain NaN; the encoder returned invalid embeddings")
    thresholds = np.unique(np.concatenate([pos, neg]))
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")  # count of pos >= λ
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    f1 = (2 * tp) / (tp + fp + len(pos))
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = tp / len(pos)
    best = int(np.flatnonzero(f1 == f1.max())[0])  # ascending thresholds: the smallest maximiser
    curve = {"threshold": thresholds, "precision": precision.astype(np.float64), "recall": recall.astype(np.float64),
             "f1": f1.astype(np.float64)}
    return float(thresholds[best]), float(f1[best]), curve


# -- mining ------------------------------------------------------------------------------------------


class MiningResult(NamedTuple):
    """What :func:`mine` returns: the hard-negative table, JSON-ready stats and the F1 curve."""

    frame: pd.DataFrame
    stats: dict
    curve: dict[str, np.ndarray]


def _is_set(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value is not pd.NA


def _embed(encoder, sides: list, path: Path, block: int) -> np.ndarray:
    """``sides`` through ``encoder``, ``block`` at a time, into the ``.npy`` file ``path`` (mapped back read-only)."""
    writer = VectorWriter(path, len(sides), encoder.dim)
    for s in range(0, len(sides), block):
        writer.append(encoder(sides[s : s + block]))
    return writer.close()


def _row_dots(a: np.ndarray, rows_a: np.ndarray, b: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """``a[rows_a[i]] · b[rows_b[i]]`` for every i, in blocks (float32)."""
    out = np.empty(len(rows_a), dtype=np.float32)
    for s in range(0, len(rows_a), _PAIR_BLOCK):
        ia, ib = rows_a[s : s + _PAIR_BLOCK], rows_b[s : s + _PAIR_BLOCK]
        out[s : s + len(ia)] = np.einsum("ij,ij->i", np.asarray(a[ia], np.float32), np.asarray(b[ib], np.float32))
    return out


def mine(pairs: pd.DataFrame, encoder, train_item_ids: Sequence[str], workdir: str | Path, *,
         query_instruction: str = "", target_instruction: str = "", query_modality: str = "omni",
         target_modality: str = "omni", per_query: int = 8, search_k: int = 64, block: int = 512,
         seed: int = 0, dataset: str = "") -> MiningResult:
    """Mine hard negatives for one dataset; the rule is in the module docstring.

    ``pairs``: the dataset's training pairs (``query_item``/``query_text``, ``target_item``; a
    ``split`` column, when present, must say ``train`` everywhere); rows without a target item
    (e.g. ``cls`` labels) are ignored. ``encoder``: ``__call__(sides) -> (n, dim)`` L2-normalised
    float32 rows and ``.dim``, a side being ``(item_id | None, text | None, modality, instruction)``
    (:class:`sail_core.eval.embed.ModelEncoder`). Item queries are shown as ``query_modality``,
    text queries as ``text``, catalogue items as ``target_modality``. ``train_item_ids``: the only
    items that may be negatives. ``workdir``: where the embeddings are written.

    Returns ``MiningResult(frame, stats, curve)``: ``frame`` in :data:`HARD_NEGATIVE_COLUMNS`
    (one row per kept negative, by query then descending score); ``stats`` with ``lambda_star``,
    ``f1_star``, ``queries``, ``positives`` (distinct pairs scored), ``candidates`` (non-matching
    pairs scored), ``kept``, ``dropped`` (candidates at/above λ*), ``queries_with_negatives``,
    ``mean_cos_kept``, ``mean_cos_random`` (one random train non-positive per query),
    ``mean_cos_positive`` (NaN where there is nothing to average); ``curve`` from :func:`f1_threshold`.
    """
    if per_query < 1 or search_k < 1:
        raise ValueError(f"mine: per_query ({per_query}) and search_k ({search_k}) must be >= 1")
    name = f" {dataset!r}" if dataset else ""
    missing = [c for c in ("query_item", "query_text", "target_item") if c not in pairs.columns]
    if missing:
        raise ValueError(f"mine{name}: the pairs lack columns {missing}")
    if "split" in pairs.columns:
        split = pairs["split"].astype(object)
        if (split != "train").any():
            raise ValueError(f"mine{name}: {int((split != 'train').sum())} pair(s) are not in the train split; "
                             "mine on load_pairs(data_dir, dataset, 'train') only")
    train = list(dict.fromkeys(str(i) for i in train_item_ids))
    if not train:
        raise ValueError(f"mine{name}: no train item to draw negatives from")
    allowed = set(train)

    # queries (one per side key), their positives, the target rows
    query_sides, query_rep, query_of_key = [], [], {}
    targets, target_row = list(train), {t: n for n, t in enumerate(train)}
    pos_q, pos_t = [], []
    for qi, qt, ti in zip(pairs["query_item"].astype(object), pairs["query_text"].astype(object),
                          pairs["target_item"].astype(object)):
        if not _is_set(ti):
            continue
        qi = str(qi) if _is_set(qi) else None
        qt = str(qt) if _is_set(qt) and qi is None else None
        key = side_key(qi, qt)
        if key < 0:
            raise ValueError(f"mine{name}: a pair has neither query_item nor query_text")
        if key not in query_of_key:
            query_of_key[key] = len(query_sides)
            query_sides.append((qi, qt, query_modality if qi is not None else "text", query_instruction))
            query_rep.append((qi, qt))
        ti = str(ti)
        if ti not in target_row:  # a positive outside the train items: scored, never a candidate
            target_row[ti] = len(targets)
            targets.append(ti)
        pos_q.append(query_of_key[key])
        pos_t.append(target_row[ti])
    if not query_sides:
        raise ValueError(f"mine{name}: no training pair with a target item; hard negatives are items, so a "
                         "dataset with text targets (cls) cannot be mined")
    n_q, n_targets, n_train = len(query_sides), len(targets), len(train)
    pos_codes = np.unique(np.asarray(pos_q, np.int64) * n_targets + np.asarray(pos_t, np.int64))
    own = np.array([target_row.get(qi, -1) if qi is not None else -1 for qi, _ in query_rep], dtype=np.int64)
    own = np.where(own < n_train, own, -1)  # only a train row can be hit by the search
    exclude_codes = np.unique(np.concatenate([pos_codes, (np.arange(n_q) * n_targets + own)[own >= 0]]))
    per_q_excluded = np.bincount(exclude_codes // n_targets, weights=(exclude_codes % n_targets) < n_train,
                                 minlength=n_q)
    depth = int(min(n_train, search_k + int(per_q_excluded.max(initial=0))))

    # embeddings, streamed to disk
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"mine-{dataset}" if dataset else "mine"
    q_vecs = _embed(encoder, query_sides, workdir / f"{stem}-queries.npy", block)
    t_vecs = _embed(encoder, [(t, None, target_modality, target_instruction) for t in targets],
                    workdir / f"{stem}-targets.npy", block)

    pos_scores = _row_dots(q_vecs, pos_codes // n_targets, t_vecs, pos_codes % n_targets)

    # candidates: the first search_k non-positive, non-own train hits of each query
    index = build_index(t_vecs[:n_train], "flat")
    cand_q, cand_t, cand_s = [], [], []
    for s in range(0, n_q, QUERY_BLOCK):
        scores, ids = search(index, q_vecs[s : s + QUERY_BLOCK], depth)
        rows = np.arange(s, s + len(ids), dtype=np.int64)[:, None]
        codes = rows * n_targets + ids
        # exclude_codes is never empty (every query has a positive)
        excluded = exclude_codes[np.searchsorted(exclude_codes, codes).clip(max=len(exclude_codes) - 1)] == codes
        valid = (ids >= 0) & ~excluded
        take = valid & (np.cumsum(valid, axis=1) <= search_k)
        cand_q.append(np.broadcast_to(rows, ids.shape)[take])  # row-major: by query, then descending score
        cand_t.append(ids[take])
        cand_s.append(scores[take].astype(np.float32))
    cand_q = np.concatenate(cand_q) if cand_q else np.zeros(0, np.int64)
    cand_t = np.concatenate(cand_t) if cand_t else np.zeros(0, np.int64)
    cand_s = np.concatenate(cand_s) if cand_s else np.zeros(0, np.float32)

    lam, f1, curve = f1_threshold(pos_scores, cand_s)

    below = cand_s < lam
    # rank of each below-λ* candidate within its query (candidates are grouped by query)
    starts = np.searchsorted(cand_q, np.arange(n_q))
    cum = np.cumsum(below)
    before = np.concatenate([[0], cum])[starts][cand_q] if len(cand_q) else np.zeros(0, np.int64)
    keep = below & (cum - before <= per_query)
    kq, kt, ks = cand_q[keep], cand_t[keep], cand_s[keep]

    negatives = [train[t] for t in kt]
    leaked = set(negatives) - allowed
    if leaked:  # cannot happen: the index holds the train rows only; kept as the guard the pool relies on
        raise AssertionError(f"mine{name}: mined negatives outside the train items: {sorted(leaked)[:5]}")
    frame = pd.DataFrame({
        "query_item": pd.array([query_rep[q][0] for q in kq], dtype="string"),
        "query_text": pd.array([query_rep[q][1] for q in kq], dtype="string"),
        "negative_item": pd.array(negatives, dtype="string"),
        "score": ks.astype(np.float32),
    })

    # random train non-positives, one per query, for the "is the miner live" comparison
    rng = np.random.default_rng([seed, 11])
    rand_t = rng.integers(0, n_train, size=n_q)
    rand_codes = np.arange(n_q, dtype=np.int64) * n_targets + rand_t
    ok = ~np.isin(rand_codes, exclude_codes)
    rand_scores = _row_dots(q_vecs, np.flatnonzero(ok), t_vecs, rand_t[ok])

    def _mean(x) -> float:
        return float(np.mean(x)) if len(x) else float("nan")

    stats = {
        "dataset": dataset,
        "lambda_star": lam,
        "f1_star": f1,
        "queries": n_q,
        "positives": int(len(pos_scores)),
        "candidates": int(len(cand_s)),
        "kept": int(keep.sum()),
        "dropped": int((~below).sum()),
        "queries_with_negatives": int(len(np.unique(kq))),
        "mean_cos_kept": _mean(ks),
        "mean_cos_random": _mean(rand_scores),
        "mean_cos_positive": _mean(pos_scores),
        "per_query": int(per_query),
        "search_k": int(search_k),
        "train_items": n_train,
    }
    return MiningResult(frame, stats, curve)


# -- outputs -----------------------------------------------------------------------------------------


def write_hard_negatives(folder: str | Path, dataset: str, frame: pd.DataFrame) -> Path:
    """Write ``folder/hard_negatives/<dataset>.parquet`` (:data:`HARD_NEGATIVE_COLUMNS`, atomically).

    ``frame`` needs ``query_item``, ``query_text`` and ``negative_item``; ``score`` is optional
    (written as NaN when absent). Every row needs exactly one query side and a negative item.
    """
    missing = [c for c in ("query_item", "query_text", "negative_item") if c not in frame.columns]
    if missing:
        raise ValueError(f"hard negatives for {dataset!r} lack columns {missing}")
    out = pd.DataFrame({c: frame[c].astype(object).where(frame[c].notna(), None) for c in
                        ("query_item", "query_text", "negative_item")})
    out["score"] = frame["score"] if "score" in frame.columns else np.nan
    out = out.astype(HARD_NEGATIVE_COLUMNS).reset_index(drop=True)
    one_side = out["query_item"].notna() ^ out["query_text"].notna()
    if not one_side.all() or out["negative_item"].isna().any():
        raise ValueError(f"hard negatives for {dataset!r}: every row needs exactly one of query_item/query_text "
                         "and a negative_item")
    return write_table(out, Path(folder) / HARD_NEGATIVES_DIR / f"{dataset}.parquet")


def f1_curve_png(curve: dict, path: str | Path, title: str = "hard-negative threshold") -> Path:
    """Precision, recall and F1 against the threshold, λ* marked; written with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(curve["threshold"])
    f1 = np.asarray(curve["f1"])
    best = int(np.flatnonzero(f1 == f1.max())[0]) if len(f1) else None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(t, curve["precision"], label="precision", lw=1.2)
    ax.plot(t, curve["recall"], label="recall", lw=1.2)
    ax.plot(t, f1, label="F1", lw=1.8, color="black")
    if best is not None:
        ax.axvline(t[best], color="red", ls="--", lw=1, label=f"λ* = {t[best]:.3f} (F1 {f1[best]:.3f})")
    ax.set(xlabel="threshold λ (score >= λ predicts positive)", ylabel="value", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
