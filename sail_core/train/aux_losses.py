"""The losses beside pattern-matched InfoNCE, wired for one training step: CoSENT, mICL, late fusion.

Each is switched on per dataset by a weight in its configuration (0 = off) and reads embeddings
that the step's single forward pass already computed (:mod:`sail_core.train.patterns`):

* ``cosent_weight``: :class:`~sail_core.losses.cosent.CoSENTLoss` on the rows' graded ``score``
  (``copair_i2i``: the co-rating count), on the query and target embeddings of the dataset's
  first pattern, at every Matryoshka dim. Rows without a score are left out.
* ``micl_weight``: :class:`~sail_core.losses.micl.MICLLoss`: the query item shown as ``image``
  only and as ``text`` only, each with InfoNCE against the first pattern's target.
* ``late_fusion_weight``: :class:`~sail_core.losses.late_fusion.LateFusionLoss`: the gated mix of
  the query item's ``image`` and ``omni`` embeddings, InfoNCE against the first pattern's target.
  One gate per dataset; its parameters live here (this module joins the optimiser, its gradients
  are averaged over ranks by the loop, and it is saved with the checkpoint and beside the model
  as ``aux_losses.pt`` so that the next stage continues from it). Not exported: ``m`` is served.

mICL and late fusion use the dataset's learnable temperature and no hard negatives. The extra
views are requested with :func:`extra_patterns` (the builder de-duplicates: with ``image->image``
and ``text->text`` among the dataset's patterns, mICL costs no extra backbone pass).
"""

from __future__ import annotations

import torch
from torch import nn

from sail_core.config import Config, DatasetConfig
from sail_core.losses.cosent import CoSENTLoss
from sail_core.losses.infonce import InfoNCELoss
from sail_core.losses.late_fusion import LateFusionLoss
from sail_core.losses.micl import MICLLoss
from sail_core.losses.patterns import split_pattern
from sail_core.train.patterns import PatternBatch

AUX_FILE = "aux_losses.pt"


def extra_patterns(ds: DatasetConfig) -> list[str]:
    """The auxiliary views a dataset's losses need: ``image->T``, ``text->T``, ``omni->T`` (T: its first
    pattern's target modality)."""
    target = split_pattern(ds.patterns[0])[1]
    views = []
    if ds.micl_weight:
        views += [f"image->{target}", f"text->{target}"]
    if ds.late_fusion_weight:
        views += [f"image->{target}", f"omni->{target}"]
    return list(dict.fromkeys(views))


class AuxLosses(nn.Module):
    """CoSENT, mICL and late fusion for the datasets that switch them on; ``forward`` gives named terms."""

    def __init__(self, cfg: Config, dim: int, gather: bool = True):
        super().__init__()
        self.cfg = cfg
        self.cosent = CoSENTLoss(weight=1.0, dims=cfg.model.matryoshka_dims, gather=gather)
        self.micl = MICLLoss(weight=1.0, gather=gather)
        self.late_fusion = nn.ModuleDict({
            name: LateFusionLoss(dim, weight=ds.late_fusion_weight, gather=gather)
            for name, ds in cfg.datasets.items() if ds.late_fusion_weight})
        for name, ds in cfg.datasets.items():
            if (ds.micl_weight or ds.late_fusion_weight) and ds.task != "i2i":
                raise ValueError(f"datasets.{name}: micl_weight / late_fusion_weight need item queries (task i2i), "
                                 f"and {name!r} has task {ds.task!r}; set them to 0 for it")

    def forward(self, z: torch.Tensor, batch: PatternBatch, nce: InfoNCELoss,
                detach_targets: bool = False) -> dict[str, torch.Tensor]:
        ds = self.cfg.datasets[batch.dataset]
        main = batch.pairs[0]
        tau = nce.temperatures(batch.dataset)

        def rows(index: torch.Tensor) -> torch.Tensor:
            return z[index.clamp_min(0).to(z.device)]

        target = rows(main.target_index)
        if detach_targets:
            target = target.detach()
        terms: dict[str, torch.Tensor] = {}
        if ds.cosent_weight:
            if batch.scores is None:
                raise ValueError(f"datasets.{batch.dataset}.cosent_weight is set but its pairs have no `score` "
                                 "column; CoSENT needs graded pairs (set cosent_weight: 0 for this dataset)")
            graded = main.valid & ~torch.isnan(batch.scores)
            self.cosent.weight = ds.cosent_weight
            terms.update(self.cosent(rows(main.query_index), target, torch.nan_to_num(batch.scores),
                                     valid=graded))
        keys = dict(query_keys=batch.query_keys, target_keys=batch.target_keys)
        target_modality = split_pattern(ds.patterns[0])[1]
        if ds.micl_weight:
            vision = batch.extra[f"image->{target_modality}"]
            text = batch.extra[f"text->{target_modality}"]
            self.micl.weight = ds.micl_weight
            terms.update(self.micl(rows(vision.query_index), rows(text.query_index), target, tau,
                                   vision_valid=vision.valid & main.valid, text_valid=text.valid & main.valid, **keys))
        if ds.late_fusion_weight:
            vision = batch.extra[f"image->{target_modality}"]
            omni = batch.extra[f"omni->{target_modality}"]
            terms.update(self.late_fusion[batch.dataset](rows(vision.query_index), rows(omni.query_index), target, tau,
                                                         valid=vision.valid & omni.valid & main.valid, **keys))
        return terms
