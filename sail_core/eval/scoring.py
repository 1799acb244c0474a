"""Per-query Recall@k of one model on the evaluation's query sets, by exact FAISS search over stored
embeddings.

The corpus of a query set is embedded once per model (or read from the catalogue index the
``index`` step stored) into a ``.npy`` file; an exact inner-product index is built from it in
blocks (at a Matryoshka dim: its prefix, re-normalised), and the queries are searched in blocks.
Memory holds the index and a block, never a query x corpus score matrix.

Metric names: ``<task>.recall_at_<k>`` at the full dim, ``<task>.dim<d>.recall_at_<k>`` at the
smaller Matryoshka dims (i2i, q2i). Query sets of one task (several datasets) are pooled: their
per-query values are concatenated in a fixed order.
"""

from __future__ import annotations

import numpy as np

from sail_core.eval.embed import EmbeddingStore
from sail_core.eval.queries import QuerySet
from sail_core.index.search import BLOCK, recall_from_ranked, search


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def exact_index(vectors: np.ndarray, dim: int):
    """An exact inner-product index over the first ``dim`` columns of ``vectors``, re-normalised, in blocks."""
    import faiss

    index = faiss.IndexFlatIP(dim)
    for s in range(0, len(vectors), BLOCK):
        index.add(np.ascontiguousarray(_unit(vectors[s : s + BLOCK, :dim])))
    return index


def score_set(store: EmbeddingStore, qs: QuerySet, dims: list[int]) -> dict[str, np.ndarray]:
    corpus = store.get(qs.corpus_key, qs.corpus, f"embed {qs.corpus_key.split(':')[0]} ({qs.name})")
    queries = store.get(f"queries:{qs.name}", qs.sides, f"embed {qs.name} queries")
    out = {}
    full = dims[0]
    for d in dims if qs.matryoshka else dims[:1]:
        _, ids = search(exact_index(corpus, d), _unit(queries[:, :d]), max(qs.ks), exclude=qs.exclude)
        prefix = qs.task if d == full else f"{qs.task}.dim{d}"
        for k, values in recall_from_ranked(ids, qs.relevant, qs.ks).items():
            out[f"{prefix}.recall_at_{k}"] = values
    return out


def score(store: EmbeddingStore, queries: dict[str, list[QuerySet]], tasks=None) -> dict[str, np.ndarray]:
    """Per-query Recall@k of every metric of ``queries`` (restricted to ``tasks`` when given)."""
    pooled: dict[str, list[np.ndarray]] = {}
    for task, sets in queries.items():
        if tasks is not None and task not in tasks:
            continue
        for qs in sets:
            for name, values in score_set(store, qs, store.encoder.dims).items():
                pooled.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in pooled.items()}


def held_out_per_query(queries: dict[str, list[QuerySet]]) -> dict[str, list[tuple[str, ...]]]:
    """The test items each pooled query of each task involves, in :func:`score`'s order."""
    return {task: [h for qs in sets for h in qs.held_out] for task, sets in queries.items()}


def query_keys(queries: dict[str, list[QuerySet]]) -> dict[str, list[str]]:
    return {task: [k for qs in sets for k in qs.keys()] for task, sets in queries.items()}
