"""Late-fusion gate: mix the visual embedding ``v`` into the multimodal one ``m``, and an NCE on the mix.

For an item with visual embedding ``v`` (its vision-only input through the
encoder) and multimodal embedding ``m`` (all its inputs), both L2-normalised
first::

    g     = sigmoid( w . [v; m] + b )             one scalar per item, w in R^{2D}, b in R
    m_hat = normalize( g * v + (1 - g) * m )

and the loss is InfoNCE of ``m_hat`` (as the query) against the item's
positive targets, with in-batch negatives::

    late_fusion_loss = weight * NCE(m_hat, t)

``NCE`` is :func:`sail_core.losses.infonce.compute_loss_from_embeddings`
(called, not copied): gathered negatives under ``torch.distributed``, key
masking of duplicates, ``valid`` rows. The statistic ``gate_mean`` is the mean
of ``g`` over this rank's valid rows (detached; absent when there is none).
Gradient reaches ``w``, ``b``, ``v``, ``m`` and the targets.

Design choice: a **scalar gate per item**, not one per dimension.

* Cosine geometry does not depend on the basis of the embedding space, but a
  per-coordinate gate does, and it can move ``m_hat`` off the plane of ``v``
  and ``m``. The scalar gate keeps ``m_hat`` on the arc between ``v`` and
  ``m``, and ``g`` reads plainly as "how much this item's vision is trusted"
  (logged as ``gate_mean``).
* It has ``2D + 1`` parameters. A per-dimension gate has ``2D^2 + D``, e.g.
  4.7M at D = 1536, which is a lot for an auxiliary term.
* Matryoshka: with a scalar ``g``, every prefix of ``m_hat`` is the same mix
  of the prefixes of ``v`` and ``m`` (up to the re-normalisation), so all
  served dims see one fusion.

Initialisation: ``w = 0`` and ``b = init_bias`` (default 0), so training
starts at ``g = 1/2``.

Serving decision: **do not export or serve ``m_hat``; keep serving ``m``**,
the one-pass embedding the model package already exports.

1. Cost and contract. ``m_hat`` needs ``v``: a second backbone pass on the
   vision-only input of every item that has vision. That roughly doubles the
   encoder cost of image and video items, puts the gate in the exported
   graph and changes the ONNX/Triton contract, all for a term the report
   presents as a training loss.
2. One space. Text queries (q2i, text-only items) have no ``v``, so for them
   ``m_hat`` is ``m`` anyway. Serving ``m_hat`` for some inputs and ``m`` for
   others puts two embedding functions in one index. The main NCE/MRL and
   CoSENT terms train ``m`` against ``m``. This loss trains fused queries
   against unfused targets only, and the i2i case of ``m_hat`` against
   ``m_hat`` (index against index) is trained by no term at all.
3. Training still gains. This NCE back-propagates into ``m`` and ``v``, which
   keeps the visual evidence recoverable from ``m``. Meanwhile the main losses
   keep training ``m`` directly, so serving ``m`` drops nothing that is
   optimised.

Revisit this only on a measurement. If the evaluation shows fused *queries*
(``m_hat`` against an ``m`` catalogue, the case this loss trains) beating
``m`` on i2i recall by more than the bootstrap interval, a query-side
``m_hat`` path (second pass plus the gate) may be worth its cost. That
decision belongs to the pipeline owner; nothing here touches the model
package.

References: SAIL-Embedding (arXiv 2510.12709), section on losses (late-fusion
gate); ../shared/METHOD.md, "Losses".

Example::

    lf = LateFusionLoss(dim=384, weight=0.1)
    terms = lf(v, m, t, tau, target_keys=keys)    # {"late_fusion_loss": ..., "gate_mean": ...}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sail_core.losses.infonce import compute_loss_from_embeddings


class LateFusionGate(nn.Module):
    """``m_hat = normalize(g v + (1 - g) m)`` with ``g = sigmoid(w . [v; m] + b)``, one scalar per row.

    Args:
        dim: embedding size D of ``v`` and ``m``.
        init_bias: initial ``b`` (``w`` starts at zero, so the initial gate is ``sigmoid(init_bias)``).

    ``forward(visual, multimodal)`` -> ``(m_hat (B, D) unit-norm, g (B,))``.
    """

    def __init__(self, dim: int, init_bias: float = 0.0):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"LateFusionGate dim must be > 0; got {dim}")
        self.dim = int(dim)
        self.proj = nn.Linear(2 * self.dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, float(init_bias))

    def gate(self, visual: torch.Tensor, multimodal: torch.Tensor) -> torch.Tensor:
        """(B,) gate values in (0, 1), from the normalised inputs."""
        return self(visual, multimodal)[1]

    def _inputs(self, visual: torch.Tensor, multimodal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if visual.shape != multimodal.shape or visual.dim() != 2 or visual.shape[1] != self.dim:
            raise ValueError(
                f"visual and multimodal must both be (B, D={self.dim}); "
                f"got {tuple(visual.shape)} and {tuple(multimodal.shape)}"
            )
        return F.normalize(visual, dim=-1), F.normalize(multimodal, dim=-1)

    def forward(self, visual: torch.Tensor, multimodal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, m = self._inputs(visual, multimodal)
        g = torch.sigmoid(self.proj(torch.cat([v, m], dim=-1)))  # (B, 1)
        fused = F.normalize(g * v + (1.0 - g) * m, dim=-1)
        return fused, g.squeeze(-1)


class LateFusionLoss(nn.Module):
    """Weighted InfoNCE of the gated fusion ``m_hat`` against the targets; owns its :class:`LateFusionGate`.

    Args:
        dim: embedding size D (the gate's input is ``[v; m]``, 2D).
        weight: multiplies ``late_fusion_loss`` (the config's beta).
        gather: gather negatives over ranks when distributed.
        init_bias: the gate's initial bias (ignored when ``gate`` is given).
        gate: an existing gate to use instead of a new one.

    The gate's parameters are this module's parameters: the trainer must optimise them (as it does the
    temperatures of :class:`~sail_core.losses.infonce.InfoNCELoss`, and average their gradients over ranks).

    Returns from ``forward``: ``{"late_fusion_loss": ..., "gate_mean": ...}``.
    """

    def __init__(
        self, dim: int, weight: float = 1.0, gather: bool = True, init_bias: float = 0.0,
        gate: LateFusionGate | None = None,
    ):
        super().__init__()
        self.gate = gate if gate is not None else LateFusionGate(dim, init_bias=init_bias)
        if self.gate.dim != dim:
            raise ValueError(f"gate has dim {self.gate.dim}, loss has dim {dim}")
        self.weight = float(weight)
        self.gather = gather

    def forward(
        self,
        visual: torch.Tensor,
        multimodal: torch.Tensor,
        target: torch.Tensor,
        temperature: torch.Tensor | float,
        *,
        valid: torch.Tensor | None = None,
        query_keys: torch.Tensor | None = None,
        target_keys: torch.Tensor | None = None,
        hard_negatives: torch.Tensor | None = None,
        hard_negative_keys: torch.Tensor | None = None,
        hard_negative_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``visual``/``multimodal`` (B, D): the query items' two embeddings; ``target`` (B, D): their positives;
        ``valid`` (B,): rows that have both (an item without vision has no ``v``). Other args as
        :func:`~sail_core.losses.infonce.compute_loss_from_embeddings`."""
        fused, g = self.gate(visual, multimodal)
        loss = compute_loss_from_embeddings(
            fused,
            target,
            temperature,
            valid=valid,
            query_keys=query_keys,
            target_keys=target_keys,
            hard_negatives=hard_negatives,
            hard_negative_keys=hard_negative_keys,
            hard_negative_valid=hard_negative_valid,
            gather=self.gather,
        )
        terms = {"late_fusion_loss": self.weight * loss}
        rows = g.detach() if valid is None else g.detach()[valid.to(g.device, torch.bool).reshape(-1)]
        if rows.numel():
            terms["gate_mean"] = rows.mean()
        return terms
