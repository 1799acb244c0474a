"""CoSENT: a ranking loss on the cosines of graded pairs (e.g. ``copair_i2i``'s co-rating count).

For a batch of pairs ``(q_i, t_i)`` with graded scores ``s_i`` and cosines
``cos_i = cos(q_i, t_i)``, the loss is::

    L = log( 1 + sum_{(i, j): s_i > s_j} exp( (cos_j - cos_i) / tau ) )

over every *ordered* pair of rows of the (global) batch whose scores differ: a
pair with the higher score should have the higher cosine, and each violation
(``cos_j > cos_i`` although ``s_i > s_j``) is penalised smoothly, like a
softmax over "margins". Only the *order* of the scores matters, not their
values. ``tau`` is fixed (default 0.05, i.e. Su Jianlin's scale 20); it is not
learnable, since CoSENT's loss can always be lowered by sharpening the scale.
It is computed as ``logsumexp([0, (cos_j - cos_i)/tau for s_i > s_j])`` so
that it never overflows.

Degenerate batches: with all scores equal, fewer than two (valid) rows, or no
valid row, no pair qualifies and ``L = log(1) = 0``, still attached to the
graph (the gradient exists and is zero).

Distributed: CoSENT does not split into a sum of per-row terms (one log over
all pairs), so each rank gathers every rank's cosines *with gradient* (and the
scores and validity without) and computes the same global loss. The backward
of the gather sums the ranks' (identical) gradients, so a rank's gradient is
``world`` times the global one, and DDP's averaging over ranks gives exactly
the single-process gradient on the concatenated batch: the same convention
as :mod:`sail_core.losses.infonce`. Every rank must hold the same number of
rows (as for InfoNCE).

MRL: with ``dims`` the loss is computed on the re-normalised prefix of each
Matryoshka dim, one term per dim (``cosent_384_loss``, ``cosent_128_loss``...);
without, one term ``cosent_loss`` on the full embedding.

References: Su Jianlin, "CoSENT (1): a more effective sentence embedding scheme
than Sentence-BERT" (kexue.fm/archives/8847, 2022); SAIL-Embedding
(arXiv 2510.12709), section on losses; ../shared/METHOD.md, "Losses".

Example::

    loss = CoSENTLoss(weight=0.5, dims=[384, 128])
    terms = loss(q, t, scores)   # {"cosent_384_loss", "cosent_128_loss", "cosent_pairs"}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sail_core.losses.gather import gather_no_grad, gather_with_grad, world

DEFAULT_TAU = 0.05


def _rows_valid(valid: torch.Tensor | None, n: int, device) -> torch.Tensor:
    if valid is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    ok = valid.to(device, torch.bool).reshape(-1)
    if ok.shape[0] != n:
        raise ValueError(f"valid must be (N={n},); got {tuple(valid.shape)}")
    return ok


def cosent_from_cosines(
    cos: torch.Tensor, scores: torch.Tensor, tau: float = DEFAULT_TAU, *, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoSENT on given cosines: ``(loss, pairs)``, ``pairs`` the number of ordered pairs ``s_i > s_j`` used.

    Args:
        cos: (N,) cosines of the pairs (any values; kept in the graph).
        scores: (N,) graded scores; only their order matters. NaN scores never qualify.
        tau: the fixed temperature (scale ``1/tau``).
        valid: optional (N,) bool; invalid rows take part in no pair.
    """
    if tau <= 0:
        raise ValueError(f"CoSENT tau must be > 0; got {tau}")
    cos = cos.reshape(-1)
    if cos.dtype in (torch.float16, torch.bfloat16):  # exp((cos_j - cos_i)/tau) at scale 20: keep float32
        cos = cos.float()
    n = cos.shape[0]
    scores = scores.reshape(-1).to(cos.device)
    if scores.shape[0] != n:
        raise ValueError(f"scores must be (N={n},); got {tuple(scores.shape)}")
    ok = _rows_valid(valid, n, cos.device)
    higher = (scores[:, None] > scores[None, :]) & ok[:, None] & ok[None, :]  # higher[i, j]: s_i > s_j
    diff = (cos[None, :] - cos[:, None]) / tau  # diff[i, j] = (cos_j - cos_i) / tau
    logits = diff.masked_fill(~higher, float("-inf")).reshape(-1)
    loss = torch.logsumexp(torch.cat([cos.new_zeros(1), logits]), dim=0)
    return loss, higher.sum()


def cosent_from_embeddings(
    query: torch.Tensor,
    target: torch.Tensor,
    scores: torch.Tensor,
    tau: float = DEFAULT_TAU,
    *,
    valid: torch.Tensor | None = None,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoSENT over the global batch of pairs ``(query_i, target_i)``: ``(loss, pairs)``.

    Args:
        query, target: (B, D) row-aligned pair sides (normalised here; cosine similarity).
        scores: (B,) graded scores of the pairs.
        tau: the fixed temperature.
        valid: optional (B,) bool: rows whose pair exists (pattern matching); others are ignored.
        gather: gather cosines, scores and validity from all ranks when a process group is initialised.
    """
    if query.shape != target.shape or query.dim() != 2:
        raise ValueError(f"query and target must both be (B, D); got {tuple(query.shape)} and {tuple(target.shape)}")
    b = query.shape[0]
    cos = (F.normalize(query, dim=-1) * F.normalize(target, dim=-1)).sum(dim=-1)
    scores = scores.reshape(-1).to(cos.device)
    if scores.shape[0] != b:
        raise ValueError(f"scores must be (B={b},); got {tuple(scores.shape)}")
    ok = _rows_valid(valid, b, cos.device)
    if gather and world()[1] > 1:
        cos = gather_with_grad(cos)
        scores = gather_no_grad(scores.to(torch.float64))
        ok = gather_no_grad(ok.to(torch.int64)).bool()
    return cosent_from_cosines(cos, scores, tau, valid=ok)


class CoSENTLoss(nn.Module):
    """Weighted CoSENT on graded pairs, optionally at every Matryoshka dim.

    Args:
        weight: multiplies every ``*_loss`` term (the config's lambda).
        tau: fixed temperature, default 0.05 (scale 20).
        dims: Matryoshka dims; ``None`` = one term ``cosent_loss`` on the full embedding.
        gather: gather over ranks when distributed.

    Returns from ``forward``: ``{"cosent_loss": weight * L}`` (or ``{"cosent_<dim>_loss": ...}`` per dim)
    and the statistic ``cosent_pairs`` (ordered pairs with ``s_i > s_j`` in the global batch; detached).
    """

    def __init__(
        self, weight: float = 1.0, tau: float = DEFAULT_TAU, dims: list[int] | None = None, gather: bool = True
    ):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"CoSENT tau must be > 0; got {tau}")
        self.weight = float(weight)
        self.tau = float(tau)
        self.dims = list(dims) if dims else None
        self.gather = gather

    def forward(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        scores: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        prefix: str = "cosent",
    ) -> dict[str, torch.Tensor]:
        full = query.shape[-1]
        if self.dims and max(self.dims) > full:
            raise ValueError(
                f"Matryoshka dim {max(self.dims)} exceeds the embedding size {full}; fix model.matryoshka_dims"
            )
        terms: dict[str, torch.Tensor] = {}
        pairs = None
        for dim in self.dims or [None]:
            q, t = (query, target) if dim is None else (query[..., :dim], target[..., :dim])
            loss, pairs = cosent_from_embeddings(q, t, scores, self.tau, valid=valid, gather=self.gather)
            terms[f"{prefix}_loss" if dim is None else f"{prefix}_{dim}_loss"] = self.weight * loss
        terms[f"{prefix}_pairs"] = pairs.detach().to(torch.float32)
        return terms
