"""Gather tensors from every rank, keeping the gradient path (for in-batch negatives under DDP).

``torch.distributed.all_gather`` returns tensors with no autograd history, so
negatives from other ranks would not receive gradients. :func:`gather_with_grad`
wraps it in an autograd function whose backward all-reduces (sums) the incoming
gradient and returns this rank's slice: every rank's loss then sends gradient to
the embeddings that produced it, whichever rank they live on. It works with the
``gloo`` (CPU) and ``nccl`` backends alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over ranks along dim 0, with gradient.

    Returns ``tensor`` itself when not running distributed.
    """
    if world()[1] == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` over ranks along dim 0 (ids, masks: no gradient)."""
    if world()[1] == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world()[1])]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
