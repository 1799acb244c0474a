"""Trace-friendly wrappers of the omni embedder for ONNX export.

:class:`OmniEncoderGraph` computes exactly :meth:`OmniEmbedder.forward` on
*precomputed frozen features*, but without data-dependent Python control flow,
so the TorchScript exporter records one graph for every modality subset:

- instead of ``if mask.any()``, the audio token is computed for every row
  and masked; the Perceiver runs on the rows that have the visual group
  (``nonzero`` + ``index_select``, zero rows allowed) and is scattered back;
- :func:`sail_core.model.assembly.compact` sorts real tokens first with an
  ``argsort`` and cuts the batch to its longest row (``.item()``); here real
  tokens are moved first with a cumulative-sum ``scatter`` and the sequence is
  cut with ``index_select(arange(max real length))``, which the exporter keeps
  dynamic (a Range node), so a text-only batch runs the backbone on its own
  length, not on the length with every media slot.

:class:`VisionFeatures` is the frozen vision tower alone: pixels -> features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sail_core.model.pooling import mean_tanh_pool

ENCODER_INPUTS = [
    "instr_ids", "instr_mask", "text_ids", "text_mask",
    "audio_feats", "audio_mask", "cover_feats", "cover_mask", "frame_feats", "frame_mask",
]


def scatter_compact(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, H) embeds, (B, L) bool mask -> real tokens first (order kept), zero padding after, cut to the
    longest row: (B, L', H) and the (B, L') int64 attention mask."""
    m = mask.long()
    n_real = m.sum(dim=1, keepdim=True)
    dest = torch.where(mask, m.cumsum(dim=1) - 1, n_real + (1 - m).cumsum(dim=1) - 1)
    embeds = embeds * mask.unsqueeze(-1).to(embeds.dtype)
    out = torch.zeros_like(embeds).scatter(1, dest.unsqueeze(-1).expand_as(embeds), embeds)
    # cut to the longest row, as compact() does; arange over a tensor stays dynamic in the traced graph
    keep = torch.arange(n_real.max(), device=embeds.device)
    out = out.index_select(1, keep)
    return out, (keep.unsqueeze(0) < n_real).long()


class OmniEncoderGraph(nn.Module):
    """``OmniEmbedder`` on precomputed features -> (B, H) L2-normalised embedding (eval mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def _resample(self, feats, present, frame_mask, kind: int, like):
        """Perceiver tokens (B, Q, H) of the rows that have this visual group, zeros elsewhere.

        Only the present rows run the resampler (``nonzero`` + ``index_select``,
        dynamic in the graph), so a text-only batch pays nothing for vision."""
        m = self.model
        b = feats.shape[0]
        rows = present.nonzero().squeeze(1)
        # one spare row (a copy of row 0, written to slot B and cut off): the resampler never sees an
        # empty batch, which its reshapes with -1 cannot take
        take = torch.cat([rows, rows.new_zeros(1)])
        slot = torch.cat([rows, rows.new_full((1,), 0) + b])
        x = feats.index_select(0, take)  # (n+1, T, C, h, w)
        n, t = x.shape[0], x.shape[1]
        tokens = m.vision_tower.to_tokens(x.flatten(0, 1))  # ((n+1)*T, N, D)
        tokens = tokens.reshape(n, t, tokens.shape[1], tokens.shape[2])
        mask = frame_mask.index_select(0, take) if frame_mask is not None else None
        out = m.perceiver(tokens, mask) + m.media_type[kind]  # (n+1, Q, H)
        q, h = out.shape[1], out.shape[2]
        index = slot.reshape(-1, 1, 1).expand(n, q, h)
        return like.new_zeros(b + 1, q, h).scatter(0, index, out.to(like.dtype))[:b]

    def forward(self, instr_ids, instr_mask, text_ids, text_mask, audio_feats, audio_mask,
                cover_feats, cover_mask, frame_feats, frame_mask):
        m = self.model
        word = m.backbone.word_embeddings
        instr = word(instr_ids)
        dtype = instr.dtype
        tower, perceiver, types = m.vision_tower, m.perceiver, m.media_type

        audio = (m.audio.adapter(audio_feats) + types[0]).unsqueeze(1)
        frame_present = frame_mask.bool()
        cover = self._resample(cover_feats.unsqueeze(1), cover_mask.bool(), None, 1, instr)
        frames = self._resample(frame_feats, frame_present.any(dim=1), frame_present, 2, instr)
        text = word(text_ids)
        sep = word(torch.full_like(instr_ids[:, :1], m.tokenizer.sep_id))

        q = cover.shape[1]
        masks = [
            instr_mask.bool(),
            audio_mask.bool().unsqueeze(1),
            cover_mask.bool().unsqueeze(1).expand(-1, q),
            frame_present.any(dim=1, keepdim=True).expand(-1, q),
            text_mask.bool(),
            torch.ones_like(instr_mask[:, :1]).bool(),
        ]
        embeds = torch.cat([instr, audio.to(dtype), cover.to(dtype), frames.to(dtype), text, sep], dim=1)
        embeds, attention = scatter_compact(embeds, torch.cat(masks, dim=1))
        hidden = m.backbone(embeds, attention)
        return F.normalize(mean_tanh_pool(hidden, attention).float(), dim=-1)


class VisionFeatures(nn.Module):
    """The frozen vision tower: (N, 3, S, S) pixels in [-1, 1] -> its native features, e.g. (N, 1280, 7, 7)."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, pixels):
        return self.tower.features(pixels)
