"""Embedding matrices on disk: ``.npy`` files written in batches and read memory-mapped.

A :class:`VectorWriter` fills an ``(n, dim)`` float32 ``.npy`` file batch by batch, so
that no more than one batch is ever held in memory; :func:`open_vectors` maps it back
read-only. Rows are L2-normalised by the model; inner product is cosine similarity.

The writer appends to the file with plain writes, not through a writable memory map:
a mapped page that has been written stays in the process's resident set (and dirty)
until the whole map is closed, so filling a 1.5 GB file that way peaks at 1.5 GB.
:func:`release_pages` likewise drops the pages of a read-only map that a reader has
finished with (the index build reads the file once, block by block).
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np


class VectorWriter:
    """Write ``n`` rows of ``dim`` float32 into ``path`` in order, one batch at a time."""

    def __init__(self, path: str | Path, n: int, dim: int):
        self.path, self.n, self.dim, self.filled = Path(path), int(n), int(dim), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self.path, "wb")  # noqa: SIM115  (closed by close())
        np.lib.format.write_array_header_1_0(
            self._out, {"descr": "<f4", "fortran_order": False, "shape": (self.n, self.dim)})

    def append(self, batch) -> None:
        rows = np.ascontiguousarray(batch, dtype="<f4")
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"{self.path}: batch of shape {rows.shape} does not fit rows of dim {self.dim}")
        if self.filled + len(rows) > self.n:
            raise ValueError(f"{self.path}: {self.filled + len(rows)} rows written into a file of {self.n}")
        self._out.write(memoryview(rows).cast("B"))
        self.filled += len(rows)

    def close(self) -> np.memmap:
        """Flush; raises (and removes the incomplete file) when fewer rows were written than announced.
        Returns the file, mapped read-only."""
        self._out.close()
        if self.filled != self.n:
            self.path.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {self.filled} of {self.n} rows were written (incomplete file removed)")
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


def release_pages(rows: np.ndarray) -> None:
    """Drop the pages of ``rows``, a read-only memory map (``open_vectors``) or a slice of one, from this
    process's resident set. The file is unchanged and stays in the page cache; touching the rows again
    reads them back. A no-op for arrays in memory, writable maps, and where ``madvise`` is missing."""
    mm = getattr(rows, "_mmap", None)
    if (mm is None or getattr(rows, "mode", None) != "r" or rows.size == 0 or not hasattr(mm, "madvise")
            or not hasattr(mmap, "MADV_DONTNEED")):
        return
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    lo = rows.__array_interface__["data"][0] - base
    hi = lo + rows.nbytes if rows.flags.c_contiguous else len(mm)
    lo -= lo % mmap.PAGESIZE
    mm.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(mm)) - lo)
