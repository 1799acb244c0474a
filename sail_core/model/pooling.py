"""SAIL pooling: ``z = mean_pool(tanh(h))`` over non-padding tokens, then L2 norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_tanh_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``tanh(hidden)`` over positions where ``mask`` is 1; returns (B, H), unnormalised."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    summed = (torch.tanh(hidden) * m).sum(dim=1)
    return summed / m.sum(dim=1).clamp_min(1.0)


def matryoshka(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Keep the first ``dim`` components and re-normalise (Matryoshka truncation)."""
    return F.normalize(z[..., :dim], dim=-1)
