"""Perceiver resampler: a fixed number of learned latent queries summarise a variable set of visual tokens.

Flamingo-style (Alayrac et al., 2022): each block is pre-norm cross-attention of
the latents over ``[media; latents]``, then a feed-forward layer, both residual.
The outputs are projected to the fusion backbone's hidden size and become the
vision tokens.

Grouping (the report leaves "16 per image or per item" open): we resample per
*visual group*. The cover is one group (one frame); an item's K keyframes
together are another group, each frame's tokens tagged with a learned per-frame
position embedding. So an item with a cover and keyframes contributes
``2 x latents`` vision tokens, and the number of keyframes does not change the
sequence length. Missing frames are masked out of the attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverBlock(nn.Module):
    """Latents attend to ``[media; latents]`` (pre-norm), then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"perceiver dim {dim} must be divisible by heads {heads} (model.perceiver)")
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, latents: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor | None) -> torch.Tensor:
        """latents (B, Q, D), media (B, N, D), media_mask (B, N) bool (True = attend) -> (B, Q, D)."""
        b, q, d = latents.shape
        lat = self.norm_latents(latents)
        kv_in = torch.cat([self.norm_media(media), lat], dim=1)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        split = lambda t: t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        mask = None
        if media_mask is not None:
            keep = torch.cat([media_mask.bool(), media_mask.new_ones(b, q, dtype=torch.bool)], dim=1)
            mask = keep[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.to_q(lat)), split(k), split(v), attn_mask=mask)
        latents = latents + self.to_out(out.transpose(1, 2).reshape(b, q, d))
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    """(B, T, N, media_dim) frames of visual tokens -> (B, latents, out_dim) vision tokens."""

    def __init__(
        self,
        media_dim: int,
        out_dim: int,
        latents: int = 16,
        dim: int = 384,
        depth: int = 2,
        heads: int = 8,
        ff_mult: int = 4,
        max_frames: int = 16,
    ):
        super().__init__()
        self.max_frames = max_frames
        self.media_proj = nn.Linear(media_dim, dim)
        self.frame_pos = nn.Parameter(torch.zeros(max_frames, dim))
        self.latents = nn.Parameter(torch.randn(latents, dim) * dim**-0.5)
        self.blocks = nn.ModuleList(PerceiverBlock(dim, heads, ff_mult) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, out_dim)
        nn.init.normal_(self.frame_pos, std=0.02)

    @property
    def num_latents(self) -> int:
        return self.latents.shape[0]

    def forward(self, media: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """media (B, T, N, Dm) or (B, N, Dm) (one frame); frame_mask (B, T) bool, True = frame present."""
        if media.dim() == 3:
            media = media.unsqueeze(1)
        b, t, n, _ = media.shape
        if t > self.max_frames:
            raise ValueError(
                f"{t} frames exceed the perceiver's position table ({self.max_frames}); "
                "raise model.perceiver.max_frames or lower model.inputs.keyframes"
            )
        x = self.media_proj(media)
        x = x + self.frame_pos[:t].to(x.dtype)[None, :, None, :]
        x = x.reshape(b, t * n, -1)
        token_mask = None
        if frame_mask is not None:
            token_mask = frame_mask.bool()[:, :, None].expand(b, t, n).reshape(b, t * n)
        lat = self.latents.to(x.dtype).unsqueeze(0).expand(b, -1, -1)
        for block in self.blocks:
            lat = block(lat, x, token_mask)
        return self.proj_out(self.norm_out(lat))
