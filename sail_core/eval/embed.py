"""Embeddings for evaluation, streamed to disk: an encoder per model, a store per encoder.

An *encoder* turns a batch of pair sides into L2-normalised float32 rows:
:class:`ModelEncoder` (an omni model, eval mode) or
:class:`~sail_core.eval.reference.TextReference` (plain sentence-transformers).
An :class:`EmbeddingStore` runs an encoder over a list of sides in batches and writes
the rows to ``<workdir>/<key>.npy`` as it goes (:mod:`sail_core.index.vectors`), so
memory holds one batch, not the catalogue; a key asked for twice (the catalogue that
i2i, q2i and omni2omni all rank) is embedded once. Stored embeddings, such as the
catalogue the ``index`` step wrote, can be registered under a key instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from sail_core.features.embed import embed_samples
from sail_core.features.item_inputs import ItemInputs
from sail_core.index.vectors import VectorWriter, open_vectors

Side = tuple  # (item_id | None, text | None, modality, instruction)


def item_sides(item_ids: list[str], modality: str, instruction: str) -> list[Side]:
    return [(str(i), None, modality, instruction) for i in item_ids]


class ModelEncoder:
    """An omni model's eval-mode embeddings of sides (batches sorted by length inside)."""

    def __init__(self, model, inputs: ItemInputs, batch_size: int = 128):
        self.model, self.inputs, self.batch_size = model, inputs, int(batch_size)
        self.dim = model.dim
        self.dims = [model.dim] + [d for d in model.cfg.matryoshka_dims if d < model.dim]

    @torch.no_grad()
    def __call__(self, sides: list[Side]) -> np.ndarray:
        was = self.model.training
        self.model.eval()
        try:
            samples = [self.inputs.side(i, t, m, ins) for i, t, m, ins in sides]
            z = embed_samples(self.model, self.model, samples, self.inputs.collate_modes, chunk=self.batch_size)
        finally:
            self.model.train(was)
        return z.float().cpu().numpy()


def embed_to_file(encoder, sides: list[Side], path: str | Path, block: int = 512, progress: bool = True,
                  desc: str = "embed") -> np.memmap:
    """Encode ``sides`` ``block`` at a time into the ``.npy`` file ``path``; returns it mapped read-only."""
    writer = VectorWriter(path, len(sides), encoder.dim)
    starts = range(0, len(sides), block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{desc} ({len(sides)})", unit="block", mininterval=2.0, leave=False)
    for s in starts:
        writer.append(encoder(sides[s : s + block]))
    return writer.close()


class EmbeddingStore:
    """Embeddings of side lists under keys, each a ``.npy`` file in ``workdir`` written batch by batch."""

    def __init__(self, encoder, workdir: str | Path, block: int = 512, progress: bool = True):
        self.encoder, self.workdir, self.block, self.progress = encoder, Path(workdir), int(block), progress
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}

    def register(self, key: str, path: str | Path) -> None:
        """Use the embeddings already stored in ``path`` for ``key``."""
        self.files[key] = Path(path)

    def get(self, key: str, sides: list[Side], desc: str = "embed") -> np.memmap:
        """The (len(sides), dim) rows for ``sides``, memory-mapped; embedded once per key."""
        if key not in self.files:
            path = self.workdir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80] + f"-{len(self.files)}.npy")
            embed_to_file(self.encoder, sides, path, self.block, self.progress, desc)
            self.files[key] = path
        rows = open_vectors(self.files[key])
        if len(rows) != len(sides):
            raise ValueError(f"embeddings for {key!r} have {len(rows)} rows for {len(sides)} sides")
        return rows
