"""Embedding matrices on disk: ``.npy`` files written in batches and read memory-mapped.

A :class:`VectorWriter` fills an ``(n, dim)`` float32 ``.npy`` file batch by batch, so
that no more than one batch is ever held in memory; :func:`open_vectors` maps it back
read-only. Rows are L2-normalised by the model; inner product is cosine similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VectorWriter:
    """Write ``n`` rows of ``dim`` float32 into ``path`` in order, one batch at a time."""

    def __init__(self, path: str | Path, n: int, dim: int):
        self.path, self.n, self.dim, self.filled = Path(path), int(n), int(dim), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(self.n, self.dim))

    def append(self, batch) -> None:
        rows = np.asarray(batch, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"{self.path}: batch of shape {rows.shape} does not fit rows of dim {self.dim}")
        if self.filled + len(rows) > self.n:
            raise ValueError(f"{self.path}: {self.filled + len(rows)} rows written into a file of {self.n}")
        self._out[self.filled : self.filled + len(rows)] = rows
        self.filled += len(rows)

    def close(self) -> np.memmap:
        """Flush; raises when fewer rows were written than announced. Returns the file, mapped read-only."""
        self._out.flush()
        del self._out
        if self.filled != self.n:
            raise ValueError(f"{self.path}: {self.filled} of {self.n} rows were written")
        return open_vectors(self.path)


def write_vectors(path: str | Path, batches, n: int, dim: int) -> np.memmap:
    """Stream ``batches`` (arrays of shape (b, dim)) into ``path``; returns the file mapped read-only."""
    writer = VectorWriter(path, n, dim)
    for batch in batches:
        writer.append(batch)
    return writer.close()


def open_vectors(path: str | Path) -> np.memmap:
    """The ``(n, dim)`` float32 matrix in ``path``, memory-mapped read-only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding file {path} not found; the step that embeds it has not run here")
    return np.load(path, mmap_mode="r")
