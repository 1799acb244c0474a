"""FAISS indexes over embedding matrices (inner product), built and searched in blocks.

``flat`` is exact search; ``ivf`` (inverted lists, k-means trained on a sample) and
``hnsw`` (a graph) are approximate. Vectors are added and queries searched in blocks,
so peak memory is the index plus one block, whatever the catalogue size: a memory-mapped
``vectors`` file's pages are released once added (else the map's resident pages, a second
copy of the catalogue, count against the process until it is closed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sail_core.index.vectors import release_pages

BLOCK = 65_536          # rows added to an index at a time
QUERY_BLOCK = 2_048     # queries searched at a time
TRAIN_SAMPLE = 100_000  # rows an IVF quantizer is trained on (at most)
KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    import faiss

    return faiss


def build_index(vectors: np.ndarray, kind: str = "flat", nlist: int = 1024, nprobe: int = 16, hnsw_m: int = 32,
                ef_search: int = 128, seed: int = 0):
    """An inner-product index of ``vectors`` (n, d), added in blocks. IVF's ``nlist`` is capped at n / 39
    (FAISS wants about 39 training points per cluster)."""
    faiss = _faiss()
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, min(int(nlist), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        index.nprobe = min(int(nprobe), nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(ef_search)
    else:
        raise ValueError(f"index kind {kind!r} is not one of {KINDS}")
    release_pages(vectors)  # the training sample's pages
    for s in range(0, n, BLOCK):
        index.add(np.ascontiguousarray(vectors[s : s + BLOCK], dtype=np.float32))
        release_pages(vectors[s : s + BLOCK])  # the index holds its own copy
    return index


def search(index, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
           block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) of each query row, searched ``block`` queries at a time.

    ``exclude`` (one corpus id per query, -1 for none) removes that row from the query's ranking
    (an item query's own item). Rows with fewer than ``k`` hits are padded with id -1, score -inf.
    """
    nq = len(queries)
    k = int(k)
    extra = 1 if exclude is not None else 0
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    for s in range(0, nq, block):
        q = np.ascontiguousarray(queries[s : s + block], dtype=np.float32)
        d, i = index.search(q, min(k + extra, index.ntotal))
        if exclude is not None:  # move the own item's hit to the end (stable), blank it, keep k
            own = np.asarray(exclude[s : s + block]).reshape(-1, 1)
            order = np.argsort(i == own, axis=1, kind="stable")
            d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
            mine = i == own
            d[mine], i[mine] = -np.inf, -1
        width = min(k, i.shape[1])
        scores[s : s + len(q), :width], ids[s : s + len(q), :width] = d[:, :width], i[:, :width]
    return scores, ids


def save_index(index, path: str | Path) -> None:
    _faiss().write_index(index, str(path))


def load_index(path: str | Path, nprobe: int | None = None, ef_search: int | None = None):
    faiss = _faiss()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FAISS index {path} not found; run the index step (`sail index`) first")
    index = faiss.read_index(str(path))
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(nprobe)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(ef_search)
    return index


def recall_from_ranked(ids: np.ndarray, relevant: list, ks: list[int]) -> dict[int, np.ndarray]:
    """Recall@k of each query from its ranked ids (Q, K>=max k) and its relevant ids (a set or an int
    per query): ``|top_k ∩ R| / |R|``."""
    out = {k: np.zeros(len(ids)) for k in ks}
    for row, rel in zip(range(len(ids)), relevant):
        rel = {int(rel)} if np.isscalar(rel) else {int(r) for r in rel}
        if not rel:
            raise ValueError(f"query {row} has no relevant corpus row")
        ranked = ids[row].tolist()
        for k in ks:
            out[k][row] = len(rel.intersection(ranked[:k])) / len(rel)
    return out
