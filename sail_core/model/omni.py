"""The omni-modal SAIL embedder: one tower for queries and targets, any modality subset.

``forward(batch) -> (B, H)``: audio, cover and keyframes become tokens
(adapter; vision tower + Perceiver resampler), are placed with the instruction
and text token embeddings as ``[instruction] [audio] [vision] [text]``
(:mod:`sail_core.model.assembly`), run through the bidirectional fusion
backbone (:mod:`sail_core.model.fusion`), and the embedding is
``L2(mean_pool(tanh(h)))`` over non-padding tokens. There is no projection
head; Matryoshka dims are re-normalised prefixes (:func:`matryoshka`).

In training, *modality dropout* drops each present modality of a sample (audio,
cover, keyframes, text) with probability ``model.inputs.field_dropout``, never
all of them; text fields are dropped before tokenisation by
:func:`sail_core.preprocess.segments.drop_text_fields`.

Batch keys (see :func:`sail_core.model.assembly.collate`):
``instr_ids``/``instr_mask`` (B, Li), ``text_ids``/``text_mask`` (B, Lt);
``audio_feats`` (B, Da) or ``audio_chunks`` (C, 1, T, mels) + ``audio_chunk_index`` (C,),
with ``audio_mask`` (B,); ``cover_feats`` (cached tower features) or
``cover_pixels`` (B, 3, S, S), with ``cover_mask`` (B,); ``frame_feats`` or
``frame_pixels`` (B, K, ...), with ``frame_mask`` (B, K). Absent keys mean the
modality is absent for the whole batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sail_core.config import ModelConfig
from sail_core.model.assembly import compact
from sail_core.model.audio import AudioEncoder
from sail_core.model.fusion import build_fusion, minilm_path
from sail_core.model.perceiver import PerceiverResampler
from sail_core.model.pooling import matryoshka, mean_tanh_pool
from sail_core.model.vision import EfficientNetLite0Tower, build_vision_tower
from sail_core.preprocess.segments import SegmentTokenizer

MODEL_CONFIG = "sail_omni.json"
OMNI_WEIGHTS = "omni.safetensors"
MODALITIES = ("audio", "cover", "frames", "text")


class OmniEmbedder(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: nn.Module, tokenizer_file: str | Path):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        hidden = backbone.hidden_size
        dims = cfg.matryoshka_dims
        if dims[0] > hidden:
            raise ValueError(f"model.matryoshka_dims {dims} exceed the backbone hidden size {hidden}")
        self.vision_tower = build_vision_tower(cfg.vision, cfg.attn_implementation)
        p = cfg.perceiver
        self.perceiver = PerceiverResampler(
            self.vision_tower.out_dim, hidden, p.latents, p.dim, p.depth, p.heads, p.ff_mult, p.max_frames
        )
        self.audio = AudioEncoder(cfg.audio, hidden)
        # learned type embeddings for the media tokens: 0 audio, 1 cover, 2 keyframes
        self.media_type = nn.Parameter(torch.randn(3, hidden) * 0.02)
        self.tokenizer_file = Path(tokenizer_file)
        self.tokenizer = SegmentTokenizer(self.tokenizer_file, cfg.max_length, cfg.inputs.max_instruction_length)
        self.gradient_checkpointing = False
        if cfg.gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Activation checkpointing in the backbone and in a trainable transformers vision tower."""
        self.gradient_checkpointing = on
        nets = [self.backbone.model]
        if not getattr(self.vision_tower, "frozen", True) and hasattr(self.vision_tower.net, "supports_gradient_checkpointing"):
            nets.append(self.vision_tower.net)
        for net in nets:
            if on:
                net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                net.activation_checkpointing_disable()

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    # -- modality masks -------------------------------------------------------------------------
    def modality_masks(self, batch: dict[str, torch.Tensor], b: int, device) -> dict[str, torch.Tensor]:
        """Per-sample presence masks; in training, modality dropout (never drops everything present)."""
        none = torch.zeros(b, dtype=torch.bool, device=device)
        masks = {
            "audio": batch.get("audio_mask", none).bool().to(device),
            "cover": batch.get("cover_mask", none).bool().to(device),
            "frames": batch["frame_mask"].bool().to(device) if "frame_mask" in batch else none[:, None],
            "text": batch["text_mask"].bool().to(device),
        }
        p = self.cfg.inputs.field_dropout
        if not self.training or p <= 0:
            return masks
        present = torch.stack([masks["audio"], masks["cover"], masks["frames"].any(1), masks["text"].any(1)], dim=1)
        keep = present & (torch.rand(present.shape, device=device) >= p)
        lost = present.any(1) & ~keep.any(1)
        if lost.any():
            pick = torch.multinomial(present[lost].float(), 1).squeeze(1)
            keep[lost.nonzero().squeeze(1), pick] = True
        masks["audio"] = masks["audio"] & keep[:, 0]
        masks["cover"] = masks["cover"] & keep[:, 1]
        masks["frames"] = masks["frames"] & keep[:, 2:3]
        masks["text"] = masks["text"] & keep[:, 3:4]
        return masks

    # -- vision ---------------------------------------------------------------------------------
    def _visual_tokens(self, batch: dict, prefix: str, rows: torch.Tensor) -> torch.Tensor:
        """Tower tokens of the selected rows: (n, T, N, D) (T=1 for the cover)."""
        tower = self.vision_tower
        feats = batch.get(f"{prefix}_feats")
        source = feats if feats is not None else batch.get(f"{prefix}_pixels")
        if source is None:
            raise ValueError(f"{prefix}_mask is set but the batch has neither {prefix}_feats nor {prefix}_pixels")
        x = source[rows.to(source.device)]
        lead = x.shape[:2] if prefix == "frame" else x.shape[:1]
        flat = x.reshape(-1, *x.shape[len(lead):])
        if feats is None:
            flat = tower.features(flat)
        tokens = tower.to_tokens(flat)
        return tokens.reshape(*lead, *tokens.shape[1:]) if prefix == "frame" else tokens.unsqueeze(1)

    def _vision_segment(self, batch, prefix: str, mask: torch.Tensor, kind: int, b: int, like: torch.Tensor):
        """(B, Q, H) resampled tokens + (B, Q) mask for one visual group (cover or keyframes)."""
        q = self.perceiver.num_latents
        present = mask if mask.dim() == 1 else mask.any(1)
        rows = present.nonzero().squeeze(1)
        out = like.new_zeros(b, q, self.dim)
        if rows.numel():
            media = self._visual_tokens(batch, prefix, rows)
            frame_mask = mask[rows] if mask.dim() == 2 else None
            tokens = self.perceiver(media, frame_mask)
            out = out.index_put((rows,), tokens.to(out.dtype) + self.media_type[kind].to(out.dtype))
        return out, present[:, None].expand(b, q)

    # -- forward --------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, L, H) and the attention mask (B, L)."""
        word = self.backbone.word_embeddings
        device = word.weight.device
        instr_ids = batch["instr_ids"].to(device)
        b = instr_ids.shape[0]
        masks = self.modality_masks(batch, b, device)
        instr = word(instr_ids)
        segments = [(instr, batch["instr_mask"].to(device))]
        if masks["audio"].any():
            a = self.audio({k: v.to(device) for k, v in batch.items() if k.startswith("audio_")}, b)
            a = a.to(instr.dtype) + self.media_type[0].to(instr.dtype)
            segments.append((a.unsqueeze(1), masks["audio"][:, None]))
        if masks["cover"].any():
            segments.append(self._vision_segment(batch, "cover", masks["cover"], 1, b, instr))
        if masks["frames"].any():
            segments.append(self._vision_segment(batch, "frame", masks["frames"], 2, b, instr))
        segments.append((word(batch["text_ids"].to(device)), masks["text"]))
        sep = word(torch.full((b, 1), self.tokenizer.sep_id, device=device))
        segments.append((sep, torch.ones(b, 1, dtype=torch.bool, device=device)))
        embeds, attention_mask = compact([(e.to(instr.dtype), m) for e, m in segments])
        return self.backbone(embeds, attention_mask), attention_mask

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H) L2-normalised ``mean_pool(tanh(h))``."""
        hidden, mask = self.encode(batch)
        return F.normalize(mean_tanh_pool(hidden, mask).float(), dim=-1)

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor], dim: int | None = None) -> torch.Tensor:
        """Eval-mode embedding, optionally truncated to a Matryoshka ``dim`` and re-normalised."""
        was = self.training
        self.eval()
        z = self(batch)
        self.train(was)
        if dim is not None and dim not in self.cfg.matryoshka_dims:
            raise ValueError(f"unknown Matryoshka dim {dim}; allowed: {self.cfg.matryoshka_dims}")
        return matryoshka(z, dim) if dim else z

    # -- persistence ----------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        skip = "vision_tower." if isinstance(self.vision_tower, EfficientNetLite0Tower) and self.vision_tower.frozen else None
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not (skip and k.startswith(skip))}

    def save(self, out: str | Path) -> Path:
        """Config, tokenizer and weights (the packaged frozen EfficientNet is not copied)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self._saved_state(), str(out / OMNI_WEIGHTS))
        shutil.copy(self.tokenizer_file, out / "tokenizer.json")
        (out / MODEL_CONFIG).write_text(json.dumps(self.cfg.model_dump(), indent=2))
        return out


def build_model(cfg: ModelConfig, pretrained: bool = True, tokenizer_file: str | Path | None = None) -> OmniEmbedder:
    """The untrained omni embedder for ``cfg`` (demo: pretrained MiniLM + frozen EfficientNet; paper: random).

    ``tokenizer_file`` defaults to the packaged MiniLM's tokenizer.json (both backbones use it).
    """
    tokenizer_file = Path(tokenizer_file) if tokenizer_file else minilm_path() / "tokenizer.json"
    vocab = SegmentTokenizer(tokenizer_file, cfg.max_length).vocab_size
    return OmniEmbedder(cfg, build_fusion(cfg, vocab_size=vocab, pretrained=pretrained), tokenizer_file)


def load_model(path: str | Path) -> OmniEmbedder:
    """Load a model written by :meth:`OmniEmbedder.save`."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / MODEL_CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} is not a saved SAIL omni model (no {MODEL_CONFIG}); save one with OmniEmbedder.save")
    cfg = ModelConfig.model_validate(json.loads(cfg_file.read_text()))
    vocab = SegmentTokenizer(path / "tokenizer.json", cfg.max_length).vocab_size
    model = OmniEmbedder(cfg, build_fusion(cfg, vocab_size=vocab, pretrained=False), path / "tokenizer.json")
    state = load_file(str(path / OMNI_WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("vision_tower.")]
    if missing or unexpected:
        raise ValueError(f"{path / OMNI_WEIGHTS} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
