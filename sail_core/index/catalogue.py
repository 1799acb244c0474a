"""The catalogue index folder: every item's embedding, its FAISS index, and what built them.

Layout (written by the ``index`` step, registered with the model, copied into the Triton
version folder it serves with)::

    index.json     {"kind", "dim", "count", "query_instruction", "target_instruction", "model", ...}
    item_ids.txt   one item id per line, in row order
    vectors.npy    (count, dim) float32, L2-normalised: row r is item_ids[r]
    index.faiss    FAISS inner-product index over vectors.npy
    titles.txt     optional: one display title per line, in row order

:class:`Catalogue` reads it back (vectors memory-mapped) and answers "items similar to
this item" and "items nearest this query vector".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sail_core.index.search import build_index, load_index, save_index, search
from sail_core.index.vectors import open_vectors

META, IDS, VECTORS, INDEX, TITLES = "index.json", "item_ids.txt", "vectors.npy", "index.faiss", "titles.txt"


def write_catalogue(folder: str | Path, item_ids: list[str], meta: dict, kind: str = "flat",
                    titles: list[str] | None = None, **index_args) -> dict:
    """Build ``index.faiss`` over ``folder/vectors.npy`` (already written) and write ids, titles and meta."""
    folder = Path(folder)
    vectors = open_vectors(folder / VECTORS)
    if len(vectors) != len(item_ids):
        raise ValueError(f"{folder / VECTORS} has {len(vectors)} rows for {len(item_ids)} item ids")
    index = build_index(vectors, kind, **index_args)
    save_index(index, folder / INDEX)
    (folder / IDS).write_text("".join(f"{i}\n" for i in item_ids))
    if titles is not None:
        if len(titles) != len(item_ids):
            raise ValueError(f"{len(titles)} titles for {len(item_ids)} item ids")
        (folder / TITLES).write_text("".join(" ".join(str(t).split()) + "\n" for t in titles))
    meta = {**meta, "kind": kind, "dim": int(vectors.shape[1]), "count": len(item_ids),
            **{k: v for k, v in index_args.items() if k in ("nlist", "nprobe", "hnsw_m", "ef_search")}}
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


@dataclass
class Hit:
    item_id: str
    score: float
    title: str | None = None


class Catalogue:
    """A catalogue index folder, loaded: ``similar(item_id)``, ``nearest(vector)``, ``vector(item_id)``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        missing = [n for n in (META, IDS, VECTORS, INDEX) if not (self.folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"catalogue index {self.folder} lacks {', '.join(missing)}; "
                                    "rebuild it with the index step (`sail index`)")
        self.meta = json.loads((self.folder / META).read_text())
        self.item_ids = (self.folder / IDS).read_text().split("\n")[:-1]
        self.row = {item: r for r, item in enumerate(self.item_ids)}
        titles = self.folder / TITLES
        self.titles = titles.read_text().split("\n")[:-1] if titles.exists() else None
        self.vectors = open_vectors(self.folder / VECTORS)
        self.index = load_index(self.folder / INDEX)

    def vector(self, item_id: str) -> np.ndarray:
        row = self.row.get(str(item_id))
        if row is None:
            raise KeyError(f"item {item_id!r} is not in the catalogue index {self.folder} "
                           f"({len(self.item_ids)} items, e.g. {', '.join(self.item_ids[:3])})")
        return np.asarray(self.vectors[row], dtype=np.float32)

    def nearest(self, vector: np.ndarray, k: int = 10, exclude_item: str | None = None) -> list[Hit]:
        """The ``k`` items whose vectors have the largest inner product with ``vector`` (the model's dim)."""
        q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.meta["dim"]:
            raise ValueError(f"query vector has dim {q.shape[1]}; the catalogue index {self.folder} holds "
                             f"dim {self.meta['dim']} (ask the encoder for its full dim)")
        exclude = None if exclude_item is None else np.array([self.row[str(exclude_item)]])
        scores, ids = search(self.index, q, k, exclude=exclude)
        return [Hit(self.item_ids[i], float(s), self.titles[i] if self.titles else None)
                for s, i in zip(scores[0], ids[0]) if i >= 0]

    def similar(self, item_id: str, k: int = 10) -> list[Hit]:
        """The ``k`` items nearest ``item_id``'s own vector, the item itself left out."""
        return self.nearest(self.vector(item_id), k, exclude_item=item_id)
