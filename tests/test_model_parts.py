"""Omni-model building blocks: Perceiver shapes and masking, sequence compaction against a naive
loop, bidirectional Qwen2 attention (with a causal control), Matryoshka truncation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sail_core.config import load_config
from sail_core.model.assembly import compact
from sail_core.model.fusion import build_fusion
from sail_core.model.perceiver import PerceiverResampler
from sail_core.model.pooling import matryoshka

SMALL_QWEN = dict(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128)


def test_perceiver_shapes_cover_and_frames():
    torch.manual_seed(0)
    p = PerceiverResampler(media_dim=40, out_dim=24, latents=16, dim=32, depth=2, heads=4, max_frames=4)
    assert p(torch.randn(3, 49, 40)).shape == (3, 16, 24)  # cover: one frame of 49 tokens
    assert p(torch.randn(3, 4, 49, 40), torch.ones(3, 4, dtype=torch.bool)).shape == (3, 16, 24)
    with pytest.raises(ValueError, match="max_frames"):
        p(torch.randn(1, 5, 49, 40))


def test_perceiver_ignores_masked_frames_and_uses_frame_positions():
    torch.manual_seed(0)
    p = PerceiverResampler(media_dim=8, out_dim=8, latents=4, dim=16, depth=2, heads=2, max_frames=3).eval()
    media = torch.randn(1, 3, 5, 8)
    mask = torch.tensor([[True, True, False]])
    junk = media.clone()
    junk[:, 2] = 100 * torch.randn(5, 8)
    assert torch.allclose(p(media, mask), p(junk, mask), atol=1e-5)
    # same tokens, frames swapped: the per-frame position embedding makes the order visible
    swapped = media[:, [1, 0, 2]]
    assert not torch.allclose(p(media, mask), p(swapped, mask), atol=1e-4)


def test_compact_matches_naive_loop():
    torch.manual_seed(0)
    b, h = 4, 3
    segs = [(torch.randn(b, n, h), torch.rand(b, n) > 0.4) for n in (3, 1, 5, 2)]
    embeds, mask = compact(segs)
    for i in range(b):
        naive = torch.cat([e[i][m[i]] for e, m in segs])
        n = naive.shape[0]
        assert torch.equal(mask[i, :n], torch.ones(n, dtype=torch.long)) and not mask[i, n:].any()
        assert torch.allclose(embeds[i, :n], naive) and not embeds[i, n:].any()
    assert embeds.shape[1] == max(int(sum(m[i].sum() for _, m in segs)) for i in range(b))


def _qwen(bidirectional: bool):
    cfg = load_config(profile="paper", overrides={"model.qwen2": SMALL_QWEN, "model.matryoshka_dims": [64, 32, 16]}).model
    torch.manual_seed(0)
    fusion = build_fusion(cfg, vocab_size=100).eval()
    if bidirectional:
        return fusion
    from transformers import Qwen2Model

    stock = Qwen2Model(fusion.model.config).eval()  # a fresh, stock (causal) Qwen2
    return lambda x, m: stock(inputs_embeds=x, attention_mask=m).last_hidden_state


@pytest.mark.parametrize("bidirectional", [True, False])
def test_first_position_sees_last_token_only_when_bidirectional(bidirectional):
    model = _qwen(bidirectional)
    torch.manual_seed(1)
    x = torch.randn(2, 6, 64)
    mask = torch.ones(2, 6, dtype=torch.long)
    y = x.clone()
    y[:, -1] += torch.randn(64)  # change only the last token
    with torch.no_grad():
        delta = (model(x, mask)[:, 0] - model(y, mask)[:, 0]).abs().max().item()
    if bidirectional:
        assert delta > 1e-3, "first position did not change: attention is still causal"
    else:
        assert delta < 1e-6, "control failed: a stock causal Qwen2 let position 0 see the last token"


def test_bidirectional_qwen_ignores_padding():
    model = _qwen(True)
    torch.manual_seed(2)
    x = torch.randn(1, 6, 64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    y = x.clone()
    y[:, 4:] = 50 * torch.randn(2, 64)
    with torch.no_grad():
        assert torch.allclose(model(x, mask)[:, :4], model(y, mask)[:, :4], atol=1e-5)


def test_matryoshka_truncates_and_renormalises():
    z = torch.tensor([[3.0, 4.0, 12.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    z = F.normalize(z, dim=-1)
    got = matryoshka(z, 2)
    assert torch.allclose(got, torch.tensor([[0.6, 0.8], [1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(matryoshka(z, 4), z)
