"""Dataset-driven pattern matching: the one-pass loss equals a naive per-pattern loop.

Real parts throughout: the demo omni model (MiniLM + frozen EfficientNet-Lite0
features + speech_embedding vectors, scaled-down Perceiver), a tiny data folder
with PIL-drawn covers/keyframes and espeak-ng speech, some items lacking a
modality. The naive reference builds each pattern's query and target inputs
by hand, runs a separate forward per pattern and side, and computes InfoNCE
with explicit Python loops over rows and candidates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sail_core.losses.infonce import InfoNCELoss
from sail_core.losses.keys import side_key
from sail_core.losses.patterns import pattern_losses, pattern_name
from sail_core.model.assembly import collate
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.omni import build_model
from sail_core.features.embed import embed_samples
from sail_core.data.pair_data import load_pairs
from sail_core.train.patterns import build_pattern_batch

import tiny_pairs_data

TAU = 0.05


@pytest.fixture(scope="module")
def setup():
    data, cache = tiny_pairs_data.media_data()
    cfg = tiny_pairs_data.fast_config()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    return cfg, data, model, inputs


def _naive_nce(q: torch.Tensor, t: torch.Tensor, q_keys: list[int], t_keys: list[int], dim: int) -> float:
    """Mean over rows of -log softmax, candidates = all targets minus duplicates of the positive / the query."""
    q = torch.nn.functional.normalize(q[:, :dim], dim=-1)
    t = torch.nn.functional.normalize(t[:, :dim], dim=-1)
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(float(q[i] @ t[i]) / TAU)
        denom = 0.0
        for j in range(len(t)):
            if j != i and (t_keys[j] == t_keys[i] or t_keys[j] == q_keys[i]):
                continue
            denom += math.exp(float(q[i] @ t[j]) / TAU)
        total += -math.log(pos / denom)
    return total / len(q)


def _naive_pattern(model, inputs, rows, ds, pattern):
    """Loss terms of one pattern from its own forward passes (rows lacking a modality dropped)."""
    qm, tm = pattern.split("->")
    keep = []
    for r in rows.to_dict("records"):
        q = (r["query_item"], r["query_text"])
        t = (r["target_item"], r["target_text"])
        if inputs.has(q[0], qm) and inputs.has(t[0], tm):
            keep.append((q, t))
    if not keep:
        return {}
    qs = [inputs.side(*q, qm, ds.query_instruction) for q, _ in keep]
    ts = [inputs.side(*t, tm, ds.target_instruction) for _, t in keep]
    with torch.no_grad():
        zq = model(collate(qs, model.tokenizer, **inputs.collate_modes))
        zt = model(collate(ts, model.tokenizer, **inputs.collate_modes))
    qk = [side_key(*q) for q, _ in keep]
    tk = [side_key(*t) for _, t in keep]
    return {f"nce_{pattern_name(pattern)}_{d}_loss": _naive_nce(zq, zt, qk, tk, d) for d in model.cfg.matryoshka_dims}


def _one_pass(model, inputs, rows, name, ds, chunk=None):
    batch = build_pattern_batch(rows, name, ds, inputs, train=False)
    loss = InfoNCELoss({name: TAU}, dims=model.cfg.matryoshka_dims)
    with torch.no_grad():
        z = embed_samples(model, model, batch.samples, inputs.collate_modes, chunk=chunk)
        terms = pattern_losses(loss, z, name, batch.pairs, query_keys=batch.query_keys, target_keys=batch.target_keys)
    return batch, {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("name", ["xmodal", "copair_i2i", "q2i", "cls"])
def test_one_pass_equals_naive_per_pattern_loop(setup, name):
    cfg, data, model, inputs = setup
    ds = cfg.datasets[name]
    rows = load_pairs(data, name, "train").iloc[:10]
    if name == "xmodal":  # a self-pair dataset with a repeated item: the own target stays the positive
        rows = rows.iloc[[0, 1, 2, 3, 4, 5, 6, 0]].reset_index(drop=True)
    batch, one = _one_pass(model, inputs, rows, name, ds)
    naive = {}
    for p in ds.patterns:
        naive.update(_naive_pattern(model, inputs, rows, ds, p))
    assert set(one) == set(naive) and one
    for k in naive:
        assert one[k] == pytest.approx(naive[k], rel=2e-4, abs=2e-4), k
    # de-duplication: fewer inputs than (rows x patterns x 2 sides)
    assert len(batch.samples) < 2 * len(rows) * len(ds.patterns)
    # length-bucketed chunks give the same terms as the single forward
    _, chunked = _one_pass(model, inputs, rows, name, ds, chunk=3)
    assert chunked == pytest.approx(one, rel=1e-4, abs=1e-4)


def test_missing_modality_skips_its_pattern_for_that_row(setup):
    cfg, data, model, inputs = setup
    ds = cfg.datasets["xmodal"]
    rows = load_pairs(data, "xmodal", "train").iloc[:12].reset_index(drop=True)
    batch = build_pattern_batch(rows, "xmodal", ds, inputs)
    audio = next(p for p in batch.pairs if p.pattern == "audio->text")
    has_audio = [inputs.has(i, "audio") for i in rows["query_item"]]
    assert not all(has_audio) and any(has_audio)  # the fixture drops audio for index % 7 == 3
    assert audio.valid.tolist() == has_audio
    assert all(batch.samples[i].audio is not None and batch.samples[i].text is None
               for i in audio.query_index.tolist() if i >= 0)


def test_modality_without_pattern_gets_no_loss(setup):
    cfg, data, model, inputs = setup
    ds = cfg.datasets["copair_i2i"].model_copy(update={"patterns": ["text->text"]})
    rows = load_pairs(data, "copair_i2i", "train").iloc[:8]
    batch, terms = _one_pass(model, inputs, rows, "copair_i2i", ds)
    assert set(terms) == {f"nce_text2text_{d}_loss" for d in cfg.model.matryoshka_dims}
    assert all(s.cover is None and s.frames is None and s.audio is None for s in batch.samples)


def test_free_text_side_is_text_only(setup):
    cfg, data, model, inputs = setup
    ds = cfg.datasets["q2i"].model_copy(update={"patterns": ["image->text", "text->image"]})
    rows = load_pairs(data, "q2i", "train").iloc[:8]
    batch, terms = _one_pass(model, inputs, rows, "q2i", ds)
    image2text = next(p for p in batch.pairs if p.pattern == "image->text")
    assert not image2text.valid.any()  # a q2i query is free text: it has no image
    assert not any(k.startswith("nce_image2text") for k in terms)
    assert any(k.startswith("nce_text2image") for k in terms)


def test_training_inputs_drop_fields_and_sample_keyframes(setup):
    cfg, data, model, inputs = setup
    rng = np.random.default_rng(0)
    item = next(i for i, it in inputs.items.items() if len(it.frames) >= 3)
    evals = {inputs.item_sample(item, "omni", "x").text for _ in range(5)}
    trains = {inputs.item_sample(item, "omni", "x", train=True, rng=rng).text for _ in range(30)}
    assert len(evals) == 1 and len(trains) > 1 and evals < trains | evals
    s = inputs.item_sample(item, "frames", "x")
    assert s.frames.shape[0] == cfg.model.inputs.keyframes and s.text is None and s.cover is None


def test_detached_targets_get_no_gradient_but_the_same_loss():
    """``target_gradient: false`` (LiT-style): same loss value, no gradient into target and
    hard-negative rows, unchanged gradient into the query rows."""
    from sail_core.losses.patterns import PatternPairs

    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(7, 16), dim=-1)
    # rows 0-2 queries, 3-5 targets, 6 a hard negative
    pairs = [PatternPairs("image->text", torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]),
                          torch.tensor([[6], [6], [-1]]))]
    loss = InfoNCELoss({"xmodal": TAU}, dims=[16, 8])
    grads, values = [], []
    for detach in (False, True):
        z = base.clone().requires_grad_(True)
        terms = pattern_losses(loss, z, "xmodal", pairs, detach_targets=detach)
        total = sum(v for k, v in terms.items() if k.endswith("_loss"))
        total.backward()
        grads.append(z.grad)
        values.append(total.item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert grads[0][3:].abs().sum() > 0  # targets and the hard negative move without detaching...
    assert torch.count_nonzero(grads[1][3:]) == 0  # ...and not at all with it
    torch.testing.assert_close(grads[1][:3], grads[0][:3])  # queries get the same gradient
