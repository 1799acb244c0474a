"""Semantic IDs of the catalogue: residual k-means codebooks fitted on its embeddings, and every item's codes.

Layout of a semantic-ID folder (registered with the model; copied into the Triton
version folder as ``<N>/sid/`` by :func:`serving.repository.write_version`)::

    codebooks.npz   level0, level1, ... ((K_l, dim) float32) and dim: what the server encodes with
    codes.parquet   item_id (string), sid_0 .. sid_{L-1} (int32), sid (string "a-b-c")
    sid.json        sizes asked, effective sizes, dim, seed, items, and per level (prefix length 1..L)
                    the collision rate and the number of distinct prefixes

Level 0 is k-means (FAISS) of the L2-normalised vectors; level ``l`` is k-means of the
residuals left by levels ``0..l-1``. Assignment is the greedy nearest-centroid rule of
:func:`sail_core.preprocess.semantic_ids.encode` (what Triton runs), the same functions:
fitting and serving cannot disagree on a code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sail_core.preprocess.semantic_ids import nearest as _nearest
from sail_core.preprocess.semantic_ids import normalise as _normalise

CODEBOOKS, CODES, META = "codebooks.npz", "codes.parquet", "sid.json"
FILES = (CODEBOOKS, CODES, META)
REBUILD = "rebuild it with sail_core.index.semantic_ids.save_semantic_ids (the index step)"


def _kmeans(rows: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """(k, dim) float32 centroids of ``rows`` (float32) by FAISS k-means."""
    import faiss

    km = faiss.Kmeans(rows.shape[1], int(k), niter=int(niter), seed=int(seed), verbose=False)
    km.cp.min_points_per_centroid = 1  # small catalogues: no warning for fewer than 39 points a centroid
    km.train(rows)
    return np.asarray(km.centroids, dtype=np.float32).reshape(int(k), rows.shape[1])


def fit_levels(vectors: np.ndarray, sizes: list[int], seed: int = 0, niter: int = 20
               ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """``(codebooks, codes (N, L) int32, notes)``: residual k-means with ``sizes[l]`` centroids at level ``l``.

    A level with no more distinct residual rows than ``sizes[l]`` takes those rows as its
    codebook (so it has fewer centroids, and zero residual); ``notes`` says which levels.
    """
    sizes = [int(k) for k in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"codebook sizes must be a non-empty list of positive ints, got {sizes}")
    residual = _normalise(vectors)
    if not len(residual):
        raise ValueError("no vectors to fit semantic-ID codebooks on")
    codebooks, notes = [], []
    codes = np.empty((len(residual), len(sizes)), dtype=np.int32)
    for level, k in enumerate(sizes):
        rows = np.ascontiguousarray(residual, dtype=np.float32)
        distinct = np.unique(rows, axis=0)
        if len(distinct) <= k:
            codebook = distinct
            if len(distinct) < k:
                notes.append(f"level {level}: {len(distinct)} distinct residual rows, so {len(distinct)} "
                             f"centroids instead of {k}")
        else:
            codebook = _kmeans(rows, k, seed + level, niter)
        codes[:, level] = idx = _nearest(residual, codebook)
        residual = residual - codebook.astype(np.float64)[idx]
        codebooks.append(codebook)
    return codebooks, codes, notes


def fit_codebooks(vectors: np.ndarray, sizes: list[int], seed: int = 0, niter: int = 20) -> list[np.ndarray]:
    """The residual k-means codebooks of ``vectors`` (N, dim): one (K_l, dim) float32 array per level.

    Level ``l`` has ``sizes[l]`` centroids, or fewer when the level has fewer distinct
    residual rows (see :func:`fit_levels`, whose notes :func:`save_semantic_ids` records).
    """
    return fit_levels(vectors, sizes, seed, niter)[0]


def prefix_stats(codes: np.ndarray) -> tuple[list[float], list[int]]:
    """Per prefix length ``l`` = 1..L: the fraction of items whose first ``l`` codes another item shares,
    and the number of distinct prefixes."""
    rates, distinct = [], []
    for length in range(1, codes.shape[1] + 1):
        _, inverse, counts = np.unique(codes[:, :length], axis=0, return_inverse=True, return_counts=True)
        rates.append(round(float((counts[np.ravel(inverse)] > 1).mean()), 6))
        distinct.append(int(len(counts)))
    return rates, distinct


def save_semantic_ids(out_dir: str | Path, item_ids: list[str], vectors: np.ndarray, sizes: list[int],
                      seed: int = 0, niter: int = 20) -> dict:
    """Fit the codebooks on ``vectors`` (row ``r`` is ``item_ids[r]``) and write the folder; returns ``sid.json``."""
    import pandas as pd

    item_ids = [str(i) for i in item_ids]
    if len(item_ids) != len(vectors):
        raise ValueError(f"{len(item_ids)} item ids for {len(vectors)} vectors")
    codebooks, codes, notes = fit_levels(vectors, sizes, seed, niter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim = int(codebooks[0].shape[1])
    np.savez(out_dir / CODEBOOKS, dim=np.int64(dim), **{f"level{i}": c for i, c in enumerate(codebooks)})
    table = pd.DataFrame({"item_id": pd.Series(item_ids, dtype="string")})
    for level in range(codes.shape[1]):
        table[f"sid_{level}"] = codes[:, level].astype(np.int32)
    table["sid"] = pd.Series(["-".join(map(str, row)) for row in codes.tolist()], dtype="string")
    table.to_parquet(out_dir / CODES, index=False)
    rates, distinct = prefix_stats(codes)
    meta = {"sizes": [int(k) for k in sizes], "effective_sizes": [len(c) for c in codebooks], "dim": dim,
            "seed": int(seed), "niter": int(niter), "items": len(item_ids), "levels": len(codebooks),
            "collision_rate": rates, "distinct_prefixes": distinct, "clamped": notes}
    (out_dir / META).write_text(json.dumps(meta, indent=2))
    return meta


def read_semantic_ids(folder: str | Path):
    """``(codebooks, codes DataFrame, sid.json dict)`` of a semantic-ID folder."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"semantic-ID folder {folder} does not exist; {REBUILD}")
    for name in FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"semantic-ID folder {folder} lacks {name}; {REBUILD}")
    with np.load(folder / CODEBOOKS) as npz:
        levels = sorted((k for k in npz.files if k.startswith("level")), key=lambda k: int(k[len("level"):]))
        codebooks = [np.asarray(npz[k], dtype=np.float32) for k in levels]
    return codebooks, pd.read_parquet(folder / CODES), json.loads((folder / META).read_text())
