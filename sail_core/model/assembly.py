"""Input assembly: per-sample inputs -> a padded batch -> one ``inputs_embeds`` sequence per sample.

The sequence of a sample is::

    [CLS] Instruct: <instruction> Input: | audio (1) | cover (Q) | keyframes (Q) | text | [SEP]

i.e. METHOD.md's ``[audio; vision; text]`` inside a per-task instruction
template (the query side and the target side get different instructions).
Every segment is optional except the instruction's ``[CLS]`` and the final
``[SEP]``, so any modality subset works. Samples in a batch have different
modality sets, so each segment arrives padded with its own mask and
:func:`compact` moves every sample's real tokens to the front, in order, and
pads on the right: a gather, no Python loop over samples.

:func:`collate` turns :class:`OmniSample` objects (numpy) into the batch dict
that :class:`sail_core.model.omni.OmniEmbedder` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sail_core.preprocess.segments import SegmentTokenizer


def compact(segments: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (B, L_i, H) segments with (B, L_i) masks; real tokens first, order kept, right padding.

    Returns ``inputs_embeds`` (B, L, H) and the 2D ``attention_mask`` (B, L) int64,
    L being the longest sample. Padding positions hold zeros.
    """
    embeds = torch.cat([e for e, _ in segments], dim=1)
    mask = torch.cat([m.bool() for _, m in segments], dim=1)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    length = int(mask.sum(dim=1).max().item()) if mask.numel() else 0
    order = order[:, : max(length, 1)]
    mask = torch.gather(mask, 1, order)
    embeds = torch.gather(embeds, 1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    embeds = embeds * mask.unsqueeze(-1).to(embeds.dtype)
    return embeds, mask.long()


@dataclass
class OmniSample:
    """One input, any modality subset. Arrays are numpy.

    - ``instruction``: the task instruction of this side (query or target).
    - ``text``: the joined text fields, or None.
    - ``audio``: the clip vector (demo: (96,) from ``preprocess.audio``; clap
      precomputed: (512,)), or clap log-mel chunks (C, 1, T, mels), or None.
    - ``cover``: pixels (3, S, S) from ``preprocess.image.load_image``, or the
      frozen tower's cached features (e.g. (1280, 7, 7)), or None.
    - ``frames``: (K, ...) keyframes in the same form as ``cover``, or None.
    """

    instruction: str = ""
    text: str | None = None
    audio: np.ndarray | None = None
    cover: np.ndarray | None = None
    frames: np.ndarray | None = None


def _stack_present(arrays: list[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    present = [a for a in arrays if a is not None]
    if not present:
        return None
    shape = present[0].shape
    out = np.zeros((len(arrays), *shape), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a is not None:
            if a.shape != shape:
                raise ValueError(f"sample {i}: shape {a.shape} differs from {shape}; inputs of one kind must share a shape")
            out[i] = a
    return torch.from_numpy(out), torch.tensor([a is not None for a in arrays])


def collate(
    samples: list[OmniSample],
    tokenizer: SegmentTokenizer,
    vision: Literal["pixels", "features"] = "features",
    audio: Literal["feats", "chunks"] = "feats",
) -> dict[str, torch.Tensor]:
    """Batch dict for :class:`OmniEmbedder`: token ids/masks and the media present, with per-sample masks."""
    if not samples:
        raise ValueError("collate got no samples")
    b = len(samples)
    batch: dict[str, torch.Tensor] = {}
    ids, mask = tokenizer.instructions([s.instruction for s in samples])
    batch["instr_ids"], batch["instr_mask"] = torch.from_numpy(ids), torch.from_numpy(mask)
    ids, mask = tokenizer.texts([s.text for s in samples])
    batch["text_ids"], batch["text_mask"] = torch.from_numpy(ids), torch.from_numpy(mask)

    if audio == "feats":
        got = _stack_present([s.audio for s in samples])
        if got:
            batch["audio_feats"], batch["audio_mask"] = got
    else:
        chunks, owner = [], []
        for i, s in enumerate(samples):
            if s.audio is not None:
                chunks.append(np.asarray(s.audio, dtype=np.float32))
                owner += [i] * len(s.audio)
        if chunks:
            batch["audio_chunks"] = torch.from_numpy(np.concatenate(chunks))
            batch["audio_chunk_index"] = torch.tensor(owner, dtype=torch.long)
            batch["audio_mask"] = torch.tensor([s.audio is not None for s in samples])

    key = "pixels" if vision == "pixels" else "feats"
    got = _stack_present([s.cover for s in samples])
    if got:
        batch[f"cover_{key}"], batch["cover_mask"] = got
    frames = [s.frames for s in samples if s.frames is not None and len(s.frames)]
    if frames:
        k = max(len(f) for f in frames)
        shape = frames[0].shape[1:]
        out = np.zeros((b, k, *shape), dtype=np.float32)
        fmask = np.zeros((b, k), dtype=bool)
        for i, s in enumerate(samples):
            if s.frames is not None and len(s.frames):
                out[i, : len(s.frames)] = s.frames
                fmask[i, : len(s.frames)] = True
        batch[f"frame_{key}"], batch["frame_mask"] = torch.from_numpy(out), torch.from_numpy(fmask)
    return batch
