"""Semantic IDs: the residual k-means codes of an embedding (numpy only; also runs inside Triton).

A semantic ID (SID) of a vector is one code per level. Level ``l`` picks the nearest
centroid of ``codebooks[l]`` to the current residual (squared L2, ties to the lowest
index), subtracts it, and passes the rest on::

    r = x / |x|
    for l, C in enumerate(codebooks):
        code[l] = argmin_k |r - C[k]|^2
        r = r - C[code[l]]

The codebooks are fitted by :mod:`sail_core.index.semantic_ids` and travel in the
Triton version folder (``<N>/sid/codebooks.npz``), so the server encodes a query
with the codebooks of the catalogue it was served with. The arithmetic runs in
float64 in blocks, so that numpy 1 (Triton) and numpy 2 (the library) agree.

``codebooks.npz`` holds ``level0, level1, ...`` (each ``(K_l, dim)`` float32) and ``dim``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NORM_EPS = 1e-12  # the clamp of the embedder's L2 normalisation
BLOCK = 1024      # rows whose distances to one codebook are held at a time


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, in float64."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (N, dim) matrix of vectors, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), NORM_EPS)


def nearest(residual: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(N,) int index of the centroid of ``codebook`` (K, dim) nearest each row of ``residual`` (N, dim).

    Squared L2 up to the row's own norm, ``|c|^2 - 2 r.c``; ``argmin`` takes the lowest index on ties.
    """
    c = np.asarray(codebook, dtype=np.float64)
    norms = np.einsum("kd,kd->k", c, c)
    out = np.empty(len(residual), dtype=np.int64)
    for s in range(0, len(residual), BLOCK):
        r = residual[s : s + BLOCK]
        out[s : s + len(r)] = np.argmin(norms[None, :] - 2.0 * (r @ c.T), axis=1)
    return out


def encode(vectors: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """(N, L) int32 semantic IDs of ``vectors`` (N, dim) under ``codebooks`` (L arrays of (K_l, dim))."""
    if not codebooks:
        raise ValueError("no codebooks: a semantic ID needs at least one level")
    residual = normalise(vectors)
    dims = {int(np.shape(c)[1]) for c in codebooks}
    if dims != {residual.shape[1]}:
        raise ValueError(f"vectors have dim {residual.shape[1]} but the codebooks have dim(s) {sorted(dims)}; "
                         "encode the full-width embedding the codebooks were fitted on")
    codes = np.empty((len(residual), len(codebooks)), dtype=np.int32)
    for level, codebook in enumerate(codebooks):
        codes[:, level] = idx = nearest(residual, codebook)
        residual = residual - np.asarray(codebook, dtype=np.float64)[idx]
    return codes


def load_codebooks(path: str | Path) -> list[np.ndarray]:
    """The codebooks in ``path`` (an ``.npz`` with ``level0, level1, ...`` and ``dim``), in level order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"semantic-ID codebooks {path} not found; build them with "
                                "sail_core.index.semantic_ids.save_semantic_ids")
    with np.load(path) as npz:
        levels = sorted((k for k in npz.files if k.startswith("level")), key=lambda k: int(k[len("level"):]))
        if not levels or levels != [f"level{i}" for i in range(len(levels))] or "dim" not in npz.files:
            raise ValueError(f"{path} is not a semantic-ID codebook file: it holds {sorted(npz.files)}, "
                             "expected level0, level1, ... and dim")
        dim = int(npz["dim"])
        books = [np.asarray(npz[k], dtype=np.float32) for k in levels]
    bad = [f"{k} {b.shape}" for k, b in zip(levels, books) if b.ndim != 2 or b.shape[1] != dim or not len(b)]
    if bad:
        raise ValueError(f"{path}: codebooks {', '.join(bad)} do not have shape (K, dim={dim})")
    return books
