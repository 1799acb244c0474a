"""InfoNCE on cosine similarity with in-batch (and hard) negatives, at every Matryoshka dim.

For query ``q_i`` with positive target ``t_i`` the loss is::

    l_i = -log( exp(cos(q_i, t_i)/tau) / sum_{c in C_i} exp(cos(q_i, c)/tau) )

where the candidates ``C`` are all targets of the (global) batch plus all hard
negatives of the (global) batch, shared by every row as in
sentence-transformers' MultipleNegativesRankingLoss. ``C_i`` drops a candidate
that is a duplicate of the row's own positive (same target key, other than the
positive itself) or is the query item itself, so duplicates never count as
negatives. Under ``torch.distributed`` the targets and hard negatives of every
rank are gathered *with gradient*; each rank averages over its own rows, and
DDP's gradient averaging then equals the single-process full-batch loss.

MRL: the loss is computed on the re-normalised prefix of each Matryoshka dim and
reported as one term per dim (``nce_384_loss``, ``nce_128_loss``, ...). The
trainer sums every term whose name ends in ``_loss``.

References: van den Oord et al. 2018 (InfoNCE); Kusupati et al. 2022 (MRL);
SAIL-Embedding (arXiv 2510.12709), section on losses.

Example::

    loss = InfoNCELoss({"q2i": 0.05}, dims=[384, 128])
    terms = loss(q, t, "q2i", target_keys=keys)      # {"nce_384_loss": ..., "nce_128_loss": ...}
    total = sum(v for k, v in terms.items() if k.endswith("_loss"))
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sail_core.losses.gather import gather_no_grad, gather_with_grad, world
from sail_core.losses.keys import NO_KEY
from sail_core.losses.temperature import LearnableTemperatures


def _keys_or_none(keys: torch.Tensor | None, n: int) -> torch.Tensor:
    return torch.full((n,), NO_KEY, dtype=torch.int64) if keys is None else keys.to(torch.int64).reshape(-1)


def compute_loss_from_embeddings(
    query: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor | float,
    *,
    hard_negatives: torch.Tensor | None = None,
    query_keys: torch.Tensor | None = None,
    target_keys: torch.Tensor | None = None,
    hard_negative_keys: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    hard_negative_valid: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Mean InfoNCE over this rank's (valid) rows.

    Args:
        query: (B, D) query embeddings (normalised here; cosine similarity).
        target: (B, D) positive targets, row-aligned with ``query``.
        temperature: scalar tau (tensor keeps its gradient).
        hard_negatives: optional (B, H, D) extra negatives; every rank must use the same H.
        query_keys, target_keys: optional (B,) int64 keys (see :mod:`sail_core.losses.keys`);
            a candidate whose key equals row i's target key (other than column i) or row i's
            query key is masked out of row i's denominator.
        hard_negative_keys: optional (B, H) int64 keys of the hard negatives.
        valid: optional (B,) bool: rows whose pair exists (pattern matching: both sides have the
            pattern's modality). An invalid row is neither a query nor a candidate; its embeddings
            may be anything. The loss is the mean over valid rows of the *global* batch: under DDP
            each rank divides its sum by (global valid count / world), so DDP's gradient average
            equals the single-process loss. No valid row anywhere gives 0 (with a graph).
        hard_negative_valid: optional (B, H) bool: hard negatives that exist (others are masked).
        gather: gather candidates from all ranks when a process group is initialised.
    """
    if query.shape != target.shape or query.dim() != 2:
        raise ValueError(f"query and target must both be (B, D); got {tuple(query.shape)} and {tuple(target.shape)}")
    b, d = query.shape
    rank, size = world() if gather else (0, 1)
    q = F.normalize(query, dim=-1)
    t = F.normalize(target, dim=-1)
    t_keys = _keys_or_none(target_keys, b)
    q_keys = _keys_or_none(query_keys, b)

    rows_valid = torch.ones(b, dtype=torch.bool) if valid is None else valid.to(torch.bool).reshape(-1).cpu()
    if rows_valid.shape[0] != b:
        raise ValueError(f"valid must be (B={b},); got {tuple(valid.shape)}")

    cands, cand_keys, cand_valid = [t], [t_keys], [rows_valid]
    if hard_negatives is not None:
        if hard_negatives.dim() != 3 or hard_negatives.shape[0] != b or hard_negatives.shape[2] != d:
            raise ValueError(f"hard_negatives must be (B={b}, H, D={d}); got {tuple(hard_negatives.shape)}")
        cands.append(F.normalize(hard_negatives, dim=-1).reshape(-1, d))
        cand_keys.append(_keys_or_none(hard_negative_keys, cands[-1].shape[0]))
        hv = torch.ones(hard_negatives.shape[:2], dtype=torch.bool) if hard_negative_valid is None else hard_negative_valid
        cand_valid.append(hv.to(torch.bool).reshape(-1).cpu())
    if size > 1:
        cands = [gather_with_grad(c) for c in cands]
        cand_keys = [gather_no_grad(k) for k in cand_keys]
        cand_valid = [gather_no_grad(v.to(torch.int64)).bool() for v in cand_valid]
    candidates = torch.cat(cands)
    keys = torch.cat(cand_keys).to(q.device)
    present = torch.cat(cand_valid).to(q.device)

    logits = q @ candidates.T / temperature
    labels = torch.arange(b, device=q.device) + rank * b
    t_keys, q_keys = t_keys.to(q.device), q_keys.to(q.device)
    duplicate = (keys[None, :] == t_keys[:, None]) & (t_keys[:, None] != NO_KEY)
    is_query = (keys[None, :] == q_keys[:, None]) & (q_keys[:, None] != NO_KEY)
    mask = duplicate | is_query
    mask[torch.arange(b, device=q.device), labels] = False
    mask |= ~present[None, :]
    logits = logits.masked_fill(mask, float("-inf"))
    if valid is None:
        return F.cross_entropy(logits, labels)
    rows = rows_valid.to(q.device)
    total = F.cross_entropy(logits[rows], labels[rows], reduction="sum") + 0.0 * (q.sum() + candidates.sum())
    count = rows.sum().to(torch.float32)
    if size > 1:
        count = count.clone()
        dist.all_reduce(count)
        count = count / size
    return total / count.clamp_min(1e-6) if float(count) > 0 else total


class InfoNCELoss(nn.Module):
    """Matryoshka InfoNCE with one learnable temperature per dataset.

    Args:
        temperature_inits: dataset name -> initial tau (``cfg.datasets[name].temperature_init``).
        dims: Matryoshka dims, descending; ``None`` = the full dim only.
        gather: gather negatives over ranks when distributed.

    Returns from ``forward``: ``{"nce_<dim>_loss": scalar, ...}``.
    """

    def __init__(self, temperature_inits: dict[str, float], dims: list[int] | None = None, gather: bool = True):
        super().__init__()
        self.temperatures = LearnableTemperatures(temperature_inits)
        self.dims = list(dims) if dims else None
        self.gather = gather

    @classmethod
    def from_config(cls, cfg) -> "InfoNCELoss":
        """From a :class:`sail_core.config.Config`: every dataset's tau, the model's Matryoshka dims."""
        inits = cfg.temperature_inits()
        return cls(inits, dims=cfg.model.matryoshka_dims)

    def forward(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        dataset: str,
        *,
        hard_negatives: torch.Tensor | None = None,
        query_keys: torch.Tensor | None = None,
        target_keys: torch.Tensor | None = None,
        hard_negative_keys: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        hard_negative_valid: torch.Tensor | None = None,
        prefix: str = "nce",
    ) -> dict[str, torch.Tensor]:
        """``{"<prefix>_<dim>_loss": ...}`` for each Matryoshka dim; see :func:`compute_loss_from_embeddings`."""
        tau = self.temperatures(dataset)
        full = query.shape[-1]
        dims = self.dims or [full]
        if max(dims) > full:
            raise ValueError(f"Matryoshka dim {max(dims)} exceeds the embedding size {full}; fix model.matryoshka_dims")
        terms: dict[str, torch.Tensor] = {}
        for dim in dims:
            terms[f"{prefix}_{dim}_loss"] = compute_loss_from_embeddings(
                query[..., :dim],
                target[..., :dim],
                tau,
                hard_negatives=None if hard_negatives is None else hard_negatives[..., :dim],
                query_keys=query_keys,
                target_keys=target_keys,
                hard_negative_keys=hard_negative_keys,
                valid=valid,
                hard_negative_valid=hard_negative_valid,
                gather=self.gather,
            )
        return terms
