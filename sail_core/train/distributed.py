"""Training under ``torchrun``: the process group from the environment, the device, precision, and rank roles.

``torchrun --nproc_per_node N sail train`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_from_env`
joins them into one process group (gloo on the CPU, NCCL on CUDA) before any training code runs;
without those variables (a plain ``sail train``) it does nothing and everything runs as rank 0 of 1.

Rank roles: rank 0 does everything with side effects outside the training folder (MLflow, the
workspace and object store, mining, deciding whether a stage is reused); :func:`lead_then_share`
runs such a decision on rank 0 and hands its result, or its failure, to every rank, so that a
failing rank 0 never leaves the others waiting forever.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from sail_core.losses.gather import world

T = TypeVar("T")


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; ``(rank, world_size)``."""
    if dist.is_available() and dist.is_initialized():
        return world()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={size} is set but {key} is not: start distributed training with "
                               "`torchrun --nproc_per_node N sail train`, which sets all of them")
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world()


def shutdown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train_device(spec: str) -> torch.device:
    """``train.device`` as a torch device: ``cuda`` is this process's GPU under torchrun (``LOCAL_RANK``)."""
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {spec!r} but torch sees no CUDA device on this machine; "
                           "set train.device: cpu (or --set train.device=cpu)")
    if spec == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(spec)


def autocast(device: torch.device, precision: str):
    """The forward's precision context: bf16 autocast for ``bf16-autocast`` and ``bf16`` (pure bf16 weights
    still meet fp32 inputs: media features, masks), none for ``fp32``."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def lead_then_share(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its (picklable) result on every rank.

    If ``fn`` raises on rank 0, rank 0 re-raises it and every other rank raises a RuntimeError that
    names it, instead of waiting for a result that never comes.
    """
    rank, size = world()
    if size == 1:
        return fn()
    box: list = [None]
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except BaseException as exc:
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"rank 0 failed, so rank {rank} stops too: {value}")
    return value


def all_ranks(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(value: float) -> float:
    """The mean of a float over the ranks (the step's global loss from each rank's share)."""
    _, size = world()
    if size == 1:
        return value
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return float(t.item()) / size
