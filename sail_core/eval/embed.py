"""Eval-mode embeddings of pair sides, memoised: each (side, modality, instruction) is embedded once.

Several tasks share inputs (i2i, q2i and omni2omni all rank the catalogue's
omni items under the same target instruction), so one :class:`SideEmbedder`
per model serves every task. Inputs run sorted by length in batches of
``batch_size`` (:func:`sail_core.features.embed.embed_samples`), with a progress bar.
"""

from __future__ import annotations

import torch

from sail_core.features.item_inputs import ItemInputs
from sail_core.features.embed import embed_samples

Side = tuple  # (item_id | None, text | None, modality, instruction)


class SideEmbedder:
    def __init__(self, model, inputs: ItemInputs, batch_size: int = 128, progress: bool = True):
        self.model, self.inputs = model, inputs
        self.batch_size, self.progress = int(batch_size), progress
        self.cache: dict[Side, torch.Tensor] = {}

    def item_sides(self, item_ids: list[str], modality: str, instruction: str) -> list[Side]:
        return [(str(i), None, modality, instruction) for i in item_ids]

    @torch.no_grad()
    def __call__(self, sides: list[Side], desc: str = "embed") -> torch.Tensor:
        """(len(sides), D) normalised embeddings at the full dim."""
        todo = list(dict.fromkeys(s for s in sides if s not in self.cache))
        if todo:
            was = self.model.training
            self.model.eval()
            starts = range(0, len(todo), self.batch_size * 4)
            if self.progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"{desc} ({len(todo)})", unit="block", mininterval=2.0, leave=False)
            for s in starts:
                block = todo[s : s + self.batch_size * 4]
                samples = [self.inputs.side(i, t, m, ins) for i, t, m, ins in block]
                z = embed_samples(self.model, self.model, samples, self.inputs.collate_modes, chunk=self.batch_size)
                self.cache.update(zip(block, z.float().cpu()))
            self.model.train(was)
        if not sides:
            return torch.empty(0, self.model.dim)
        return torch.stack([self.cache[s] for s in sides])
