"""OmniEmbedder end to end: every modality combination through the demo model (real MiniLM + real
frozen EfficientNet-Lite0 on tiny synthetic images) and through a scaled-down ``paper`` model (the
same code path: bidirectional Qwen2 + SigLIP-shaped ViT + CLAP, random weights), forward and backward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sail_core.config import load_config
from sail_core.model.assembly import OmniSample, collate
from sail_core.model.omni import build_model, load_model
from sail_core.model.pooling import matryoshka

MODALITIES = ("audio", "cover", "frames", "text")
COMBOS = [c for r in range(1, 5) for c in itertools.combinations(MODALITIES, r)]

PAPER_SMALL = {
    "model.qwen2": dict(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128),
    "model.matryoshka_dims": [64, 32, 16],
    "model.vision": dict(encoder="siglip", image_size=28, patch_size=14, hidden_size=32, layers=2, heads=2, intermediate_size=64, frozen=False),
    "model.perceiver": dict(latents=4, dim=32, depth=1, heads=2, ff_mult=2, max_frames=4),
    "model.audio": dict(
        encoder="clap", adapter_hidden=32, frozen=False,
        clap=dict(hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1], heads=[2, 2], window_size=4, num_mel_bins=16, spec_size=32, projection_dim=24),
    ),
}


def _samples(combo, rng, image_size, audio_kind, n=2, frames=2):
    def pix():
        return rng.uniform(-1, 1, (3, image_size, image_size)).astype(np.float32)

    def aud():
        if audio_kind == "feats":
            return rng.normal(size=96).astype(np.float32)
        return rng.normal(size=(int(rng.integers(1, 3)), 1, 64, 16)).astype(np.float32)

    return [
        OmniSample(
            instruction="Represent this movie for retrieval.",
            text=f"Toy Story {i} animation comedy" if "text" in combo else None,
            audio=aud() if "audio" in combo else None,
            cover=pix() if "cover" in combo else None,
            frames=np.stack([pix() for _ in range(frames)]) if "frames" in combo else None,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return build_model(load_config(profile="demo").model)


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    # field dropout off so that every modality of a combination provably gets gradients
    return build_model(load_config(profile="paper", overrides={**PAPER_SMALL, "model.inputs.field_dropout": 0.0}).model)


def test_demo_every_modality_combination(demo):
    rng = np.random.default_rng(0)
    demo.eval()
    # one mixed batch holding every combination: samples differ in modality sets
    samples = [s for combo in COMBOS for s in _samples(combo, rng, 64, "feats", n=1)]
    batch = collate(samples, demo.tokenizer, vision="pixels")
    with torch.no_grad():
        z = demo(batch)
    assert z.shape == (len(COMBOS), 384)
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(COMBOS)), atol=1e-5)
    # each sample alone gives the same embedding as inside the mixed batch (padding is inert)
    with torch.no_grad():
        for i in (0, 3, len(COMBOS) - 1):
            alone = demo(collate([samples[i]], demo.tokenizer, vision="pixels"))
            assert torch.allclose(alone[0], z[i], atol=1e-4), COMBOS[i]
    # sequence lengths: [CLS]+instruction, 1 audio, 16 per visual group, text, [SEP]
    _, mask = demo.encode(collate(_samples(("audio", "cover", "frames"), rng, 64, "feats", n=1), demo.tokenizer, vision="pixels"))
    instr = int(collate(samples[:1], demo.tokenizer)["instr_mask"].sum())
    assert int(mask.sum()) == instr + 1 + 16 + 16 + 1


def test_demo_backward_reaches_trainable_parts_not_frozen_tower(demo):
    rng = np.random.default_rng(1)
    demo.train()
    demo.zero_grad()
    batch = collate(_samples(MODALITIES, rng, 64, "feats", n=3), demo.tokenizer, vision="pixels")
    # modality dropout off: with it, some torch seeds drop the audio of all three samples
    dropout, demo.cfg.inputs.field_dropout = demo.cfg.inputs.field_dropout, 0.0
    try:
        demo(batch).sum().backward()
    finally:
        demo.cfg.inputs.field_dropout = dropout
    assert demo.perceiver.latents.grad is not None and demo.audio.adapter.net[1].weight.grad is not None
    assert all(p.grad is None for p in demo.vision_tower.parameters())
    assert not demo.vision_tower.training  # frozen tower stays in eval mode


def test_demo_cached_features_equal_pixels(demo, tmp_path):
    from PIL import Image

    from sail_core.model.vision import encode_images

    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    feats = encode_images(paths, demo.vision_tower, image_size=64, batch_size=2)
    assert feats.shape == (3, 1280, 2, 2)
    from sail_core.preprocess.image import load_image

    pix = [load_image(p, 64) for p in paths]
    demo.eval()
    a = collate([OmniSample("x", "t", cover=c) for c in pix], demo.tokenizer, vision="pixels")
    b = collate([OmniSample("x", "t", cover=f) for f in feats], demo.tokenizer, vision="features")
    with torch.no_grad():
        assert torch.allclose(demo(a), demo(b), atol=1e-4)


def test_modality_dropout_never_drops_everything(demo):
    demo.train()
    cfg = demo.cfg
    old = cfg.inputs.field_dropout
    cfg.inputs.field_dropout = 0.9
    try:
        torch.manual_seed(0)
        b = 64
        batch = {
            "text_mask": torch.ones(b, 3, dtype=torch.long),
            "audio_mask": torch.rand(b) > 0.5,
            "cover_mask": torch.ones(b, dtype=torch.bool),
            "frame_mask": torch.ones(b, 2, dtype=torch.bool),
        }
        m = demo.modality_masks(batch, b, "cpu")
        kept = torch.stack([m["audio"], m["cover"], m["frames"].any(1), m["text"].any(1)], 1)
        assert kept.any(1).all()
        assert kept.sum() < 2 * b  # p=0.9 really drops
        assert not (m["audio"] & ~batch["audio_mask"]).any()  # never adds a modality
        demo.eval()
        assert demo.modality_masks(batch, b, "cpu")["cover"].all()  # no dropout at eval
    finally:
        cfg.inputs.field_dropout = old


def test_matryoshka_dims_and_save_load_round_trip(demo, tmp_path):
    rng = np.random.default_rng(3)
    batch = collate(_samples(("text", "cover", "audio"), rng, 64, "feats", n=2), demo.tokenizer, vision="pixels")
    full = demo.embed(batch)
    for d in demo.cfg.matryoshka_dims:
        z = demo.embed(batch, dim=d)
        assert z.shape == (2, d)
        assert torch.allclose(z, matryoshka(full, d)) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="unknown Matryoshka dim"):
        demo.embed(batch, dim=100)
    demo.save(tmp_path / "m")
    assert not any("vision_tower" in k for k in __import__("safetensors.torch").torch.load_file(str(tmp_path / "m" / "omni.safetensors")))
    again = load_model(tmp_path / "m")
    assert torch.allclose(again.embed(batch), full, atol=1e-5)


@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_paper_scaled_down_forward_backward(paper, combo):
    rng = np.random.default_rng(len(combo))
    paper.train()
    paper.zero_grad()
    batch = collate(_samples(combo, rng, 28, "chunks", n=3), paper.tokenizer, vision="pixels", audio="chunks")
    z = paper(batch)
    assert z.shape == (3, 64) and torch.isfinite(z).all()
    (z @ z.T).triu(1).sum().backward()
    grads = {n for n, p in paper.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("backbone.") for n in grads)
    if "cover" in combo or "frames" in combo:
        assert any(n.startswith("vision_tower.") for n in grads) and any(n.startswith("perceiver.") for n in grads)
    if "audio" in combo:
        assert any(n.startswith("audio.tower.") for n in grads)


def test_paper_attention_is_bidirectional_end_to_end(paper):
    """Changing only the LAST text token changes the hidden state at the FIRST position ([CLS])."""
    paper.eval()
    tok = paper.tokenizer
    a = collate([OmniSample("Represent this.", "alpha beta gamma")], tok)
    b = collate([OmniSample("Represent this.", "alpha beta delta")], tok)
    assert torch.equal(a["text_ids"][0, :-1], b["text_ids"][0, :-1]) and a["text_ids"][0, -1] != b["text_ids"][0, -1]
    with torch.no_grad():
        ha, _ = paper.encode(a)
        hb, _ = paper.encode(b)
    assert (ha[0, 0] - hb[0, 0]).abs().max() > 1e-4


def test_paper_profile_full_shape_on_meta_device():
    """The real ``paper`` profile: Qwen2-1.5B-shaped backbone, ViT-L/14 at 448 px, CLAP, 16 latents."""
    cfg = load_config(profile="paper").model
    with torch.device("meta"):
        model = build_model(cfg)
    qwen = model.backbone.model.config
    assert (qwen.hidden_size, qwen.num_hidden_layers, qwen.num_attention_heads, qwen.num_key_value_heads, qwen.intermediate_size) == (1536, 28, 12, 2, 8960)
    non_embedding = sum(p.numel() for n, p in model.backbone.named_parameters() if "embed_tokens" not in n)
    assert 1.30e9 < non_embedding < 1.33e9  # Qwen2-1.5B without its embedding table
    vit = sum(p.numel() for p in model.vision_tower.parameters())
    assert 0.29e9 < vit < 0.32e9  # ViT-L
    assert model.perceiver.num_latents == 16 and model.cfg.matryoshka_dims == [1536, 768, 128]
