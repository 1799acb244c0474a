"""GradCache: a contrastive step whose batch is not bounded by activation memory.

An InfoNCE loss couples every sample of the batch, so a plain step keeps the
whole batch's activations alive until the backward. GradCache (Gao et al. 2021,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"; the
idea behind sentence-transformers' Cached losses) splits the step in three:

1. embed the samples in chunks **without** a graph, recording the RNG state before
   each chunk (dropout, modality dropout);
2. take the loss on the cached embeddings ``z`` (a leaf that requires grad) and
   backpropagate it: the loss's own parameters (temperatures, gates) get their
   gradients, and ``z.grad`` holds d loss / d z;
3. re-run each chunk **with** a graph under its recorded RNG state (so it produces
   the very same embeddings) and backpropagate ``z.grad`` of its rows through it.

The model's gradients equal those of one big forward and backward, up to float
rounding (tests/test_grad_cache.py checks it with CoSENT and hard negatives in
the batch); peak activation memory is one chunk's. Under DDP the re-runs of all
but the last chunk happen under ``no_sync``, so gradients are reduced once.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from sail_core.features.embed import forward, length_order
from sail_core.model.assembly import OmniSample


def _rng_devices(model) -> list[int]:
    device = next(model.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []


def _rng_state(devices: list[int]) -> tuple:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def cached_embed(net: torch.nn.Module, model, samples: list[OmniSample], modes: dict[str, str], chunk: int,
                 precision=nullcontext) -> tuple[torch.Tensor, Callable[[], None]]:
    """Phase 1: ``(z, backward)``. ``z`` (``len(samples)`` x D, fp32) is a leaf that requires grad; compute the
    loss from it and call ``loss.backward()``, then ``backward()`` runs phase 3.

    Args:
        net: the model or its DDP wrapper (``no_sync`` is used when it has one).
        model: the unwrapped model (tokenizer, device).
        samples, modes: as :func:`sail_core.features.embed.embed_samples`.
        chunk: samples per forward.
        precision: a factory of the forward's autocast context.
    """
    if chunk < 1:
        raise ValueError(f"GradCache chunk must be at least 1, got {chunk}")
    devices = _rng_devices(model)
    order = length_order(model, samples).tolist()
    chunks = [order[s : s + chunk] for s in range(0, len(order), chunk)]
    states, parts = [], []
    with torch.no_grad():
        for idx in chunks:
            states.append(_rng_state(devices))
            with precision():
                parts.append(forward(net, model, [samples[i] for i in idx], modes).float())
    cached = torch.cat(parts)
    position = torch.tensor([i for idx in chunks for i in idx], device=cached.device)
    z = cached.new_empty(cached.shape).index_put((position,), cached).requires_grad_(True)

    def backward() -> None:
        if z.grad is None:  # the loss did not use the embeddings
            return
        for n, idx in enumerate(chunks):
            last = n == len(chunks) - 1
            sync = net.no_sync() if hasattr(net, "no_sync") and not last else nullcontext()
            cpu_state, cuda_states = states[n]
            with torch.random.fork_rng(devices=devices), sync:
                torch.set_rng_state(cpu_state)
                for d, s in zip(devices, cuda_states):
                    torch.cuda.set_rng_state(s, d)
                with precision():
                    again = forward(net, model, [samples[i] for i in idx], modes).float()
                again.backward(z.grad[torch.tensor(idx, device=z.grad.device)])

    return z, backward
