"""Embed a list of :class:`OmniSample` with the omni model, without wasted compute.

Samples differ a lot in length (a text-only label: a dozen tokens; an omni item:
instruction + audio + 2x16 visual latents + text), so they are sorted by their
token count and run in chunks trimmed to each chunk's longest sequence. The
result equals one padded forward of all samples (attention masks make padding
inert) up to float rounding. ``chunk=None`` runs everything as one collated
batch and one forward (DDP needs exactly one forward per backward).
"""

from __future__ import annotations

import torch

from sail_core.model.assembly import OmniSample, collate


def sample_lengths(model, samples: list[OmniSample]) -> list[int]:
    """Token count of each sample's sequence (instruction + media tokens + text + [SEP])."""
    tok = model.tokenizer
    _, instr = tok.instructions([s.instruction for s in samples])
    _, text = tok.texts([s.text for s in samples])
    q = model.perceiver.num_latents
    return [int(instr[i].sum() + text[i].sum()) + 1 + (s.audio is not None)
            + q * (s.cover is not None) + q * (s.frames is not None and len(s.frames) > 0)
            for i, s in enumerate(samples)]


def forward(net: torch.nn.Module, model, samples: list[OmniSample], modes: dict[str, str]) -> torch.Tensor:
    """One collated forward of ``samples`` through ``net``, the batch moved to the model's device."""
    batch = collate(samples, model.tokenizer, **modes)
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:  # the device, and pure-bf16 weights' dtype
        batch = {k: (v.to(weight.device, weight.dtype if v.is_floating_point() else None, non_blocking=True)
                     if torch.is_tensor(v) else v) for k, v in batch.items()}
    return net(batch)


def length_order(model, samples: list[OmniSample]) -> torch.Tensor:
    """Sample positions, longest first (chunks of similar length waste little padding)."""
    return torch.argsort(torch.tensor(sample_lengths(model, samples)), descending=True)


def embed_samples(net: torch.nn.Module, model, samples: list[OmniSample], modes: dict[str, str],
                  chunk: int | None = 64) -> torch.Tensor:
    """(len(samples), D) embeddings from ``net`` (the model or its DDP wrapper), in its current mode.

    ``modes`` are :func:`collate`'s ``vision``/``audio`` arguments (``ItemInputs.collate_modes``).
    """
    if not samples:
        raise ValueError("embed_samples got no samples")
    if chunk is None or len(samples) <= chunk:
        return forward(net, model, samples, modes)
    order = length_order(model, samples)
    parts = []
    for s in range(0, len(samples), chunk):
        idx = order[s : s + chunk].tolist()
        parts.append(forward(net, model, [samples[i] for i in idx], modes))
    z = torch.cat(parts)
    return z.new_empty(z.shape).index_put((order.to(z.device),), z)
