"""Sequence encoders of seq2item: a user's item embeddings -> one query embedding.

* ``mean``: the mean of the L2-normalised item embeddings over the valid positions (no parameters).
* ``transformer``: a learned summary token prepended to the item embeddings (+ learned positions, most
  recent item last), ``encoder_layers`` pre-norm transformer layers with a padding mask, and the summary
  token's output. Its weights are trained in the CRE stage and saved with the model (``cre.pt``), so the
  evaluation pools the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LOG = logging.getLogger(__name__)
CRE_FILE = "cre.pt"   # the CRE modules saved beside a model: sequence.* (this encoder), projection.*


class SequenceEncoder(nn.Module):
    def __init__(self, kind: str, width: int, max_length: int, layers: int = 1, heads: int = 4):
        super().__init__()
        self.kind, self.max_length = kind, max_length
        if kind == "transformer":
            if width % heads:
                raise ValueError(f"cre.seq2item.encoder_heads = {heads} must divide the embedding width {width}")
            self.summary = nn.Parameter(torch.zeros(1, 1, width))
            self.positions = nn.Parameter(torch.zeros(1, max_length, width))
            nn.init.normal_(self.summary, std=0.02)
            nn.init.normal_(self.positions, std=0.02)
            layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        elif kind != "mean":
            raise ValueError(f"unknown sequence encoder {kind!r}; use mean or transformer")

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``items`` (B, L, D) item embeddings, right-aligned or not; ``mask`` (B, L) True at real items.
        Returns (B, D) (not normalised; the loss normalises)."""
        x = F.normalize(items, dim=-1) * mask[..., None]
        if self.kind == "mean":
            return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        b, length, _ = x.shape
        if length > self.max_length:
            raise ValueError(f"sequence of {length} items exceeds cre.seq2item.max_length = {self.max_length}")
        h = torch.cat([self.summary.expand(b, -1, -1), x + self.positions[:, -length:]], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)
        return self.encoder(h, src_key_padding_mask=pad)[:, 0]


def pack(sequences: list[list[int]], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index lists -> ``(index (B, L) int64, mask (B, L) bool)``, left-padded so the most recent item is last."""
    length = min(max_length, max((len(s) for s in sequences), default=1)) or 1
    index = torch.zeros(len(sequences), length, dtype=torch.int64)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for r, s in enumerate(sequences):
        s = s[-length:]
        if s:
            index[r, length - len(s):] = torch.as_tensor(s)
            mask[r, length - len(s):] = True
    return index, mask


def load_sequence_encoder(cfg, model_dir: Path, width: int) -> SequenceEncoder:
    """The sequence encoder saved with a model (``cre.pt``), else a fresh one (mean pooling has no weights)."""
    encoder = SequenceEncoder(cfg.cre.seq2item.encoder, width, cfg.cre.seq2item.max_length,
                              cfg.cre.seq2item.encoder_layers, cfg.cre.seq2item.encoder_heads)
    saved = Path(model_dir) / CRE_FILE
    if saved.exists():
        state = torch.load(saved, weights_only=True)
        encoder.load_state_dict({k.removeprefix("sequence."): v for k, v in state.items() if k.startswith("sequence.")})
    elif cfg.cre.seq2item.encoder != "mean":
        LOG.warning("%s has no %s: the transformer sequence encoder is untrained", model_dir, CRE_FILE)
    return encoder
