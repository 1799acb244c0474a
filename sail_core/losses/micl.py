"""Modality-isolated contrastive learning (mICL): vision-only and text-only embeddings, each against the targets.

The same items are embedded twice more, once from their visual input alone
(``v_i``) and once from their text alone (``x_i``), and each is trained with
InfoNCE against the item's positive target ``t_i`` with in-batch negatives::

    micl_vision_loss = weight * NCE(v, t)
    micl_text_loss   = weight * NCE(x, t)

    NCE(a, t) = mean_i -log( exp(cos(a_i, t_i)/tau) / sum_{c in C_i} exp(cos(a_i, c)/tau) )

so that neither modality can hide behind the other inside the fused embedding.
``NCE`` is :func:`sail_core.losses.infonce.compute_loss_from_embeddings` itself
(called, not copied): candidates are the targets (and hard negatives) of the
global batch, gathered with gradient under ``torch.distributed``; duplicate
targets and the query item are masked by key; rows flagged invalid are neither
queries nor candidates. The vision and text sides have separate validity masks
(an item without an image has no vision-only embedding).

``tau`` is an argument of ``forward`` so the trainer can pass the dataset's
learnable temperature (``InfoNCELoss.temperatures(dataset)``) or a constant.
The loss is computed on the full embedding only (no Matryoshka terms).

References: SAIL-Embedding (arXiv 2510.12709), section on losses (mICL);
../shared/METHOD.md, "Losses".

Example::

    micl = MICLLoss(weight=0.1)
    terms = micl(v, x, t, tau, target_keys=keys)   # {"micl_vision_loss": ..., "micl_text_loss": ...}
"""

from __future__ import annotations

import torch
from torch import nn

from sail_core.losses.infonce import compute_loss_from_embeddings


class MICLLoss(nn.Module):
    """Weighted InfoNCE of the vision-only and of the text-only embeddings against the targets.

    Args:
        weight: multiplies both ``*_loss`` terms (the config's alpha).
        gather: gather negatives over ranks when distributed.

    Returns from ``forward``: ``{"micl_vision_loss": ..., "micl_text_loss": ...}``.
    """

    def __init__(self, weight: float = 1.0, gather: bool = True):
        super().__init__()
        self.weight = float(weight)
        self.gather = gather

    def forward(
        self,
        vision: torch.Tensor,
        text: torch.Tensor,
        target: torch.Tensor,
        temperature: torch.Tensor | float,
        *,
        vision_valid: torch.Tensor | None = None,
        text_valid: torch.Tensor | None = None,
        query_keys: torch.Tensor | None = None,
        target_keys: torch.Tensor | None = None,
        hard_negatives: torch.Tensor | None = None,
        hard_negative_keys: torch.Tensor | None = None,
        hard_negative_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args as :func:`~sail_core.losses.infonce.compute_loss_from_embeddings`; ``vision``/``text`` (B, D) are
        the isolated embeddings of the items, ``target`` (B, D) their positives, ``vision_valid``/``text_valid``
        (B,) the rows that have that modality."""
        common = dict(
            query_keys=query_keys,
            target_keys=target_keys,
            hard_negatives=hard_negatives,
            hard_negative_keys=hard_negative_keys,
            hard_negative_valid=hard_negative_valid,
            gather=self.gather,
        )
        return {
            "micl_vision_loss": self.weight
            * compute_loss_from_embeddings(vision, target, temperature, valid=vision_valid, **common),
            "micl_text_loss": self.weight
            * compute_loss_from_embeddings(text, target, temperature, valid=text_valid, **common),
        }
