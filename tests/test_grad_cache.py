"""GradCache gives the gradients of the uncached loss (sail_core/train/grad_cache.py).

The real omni model (MiniLM + media features) on a copair_i2i batch of 12 rows with every pattern of the
dataset, graded scores (CoSENT on), mICL and late fusion on, and 2 hard negatives per query: the step's
samples are embedded in chunks of 5 without a graph, the loss is taken on the cached embeddings, then each
chunk is re-run with a graph. Every parameter's gradient (backbone, towers, temperature, late-fusion gate)
must equal that of one forward and backward of the whole batch: per tensor, the norm of the difference
within 1e-3 of the gradient's norm (chunks are padded to other lengths than one batch: float rounding).

1. Dropout off (``model.dropout`` 0, no field dropout): against one plain forward of all samples.
2. Dropout on (the backbone's 0.1, field dropout 0.15): the chunks' re-runs must replay the first pass's
   random draws. The reference runs the same length-sorted chunks with a graph from the same seed, so both
   see the same masks; a re-run that drew new masks would give different gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_pairs_data
from sail_core.data.pair_data import load_pairs
from sail_core.features.embed import forward, length_order
from sail_core.features.item_inputs import ItemInputs
from sail_core.losses.infonce import InfoNCELoss
from sail_core.losses.patterns import pattern_losses
from sail_core.model.omni import build_model
from sail_core.train.aux_losses import AuxLosses, extra_patterns
from sail_core.train.loop import step_loss
from sail_core.train.patterns import build_pattern_batch

pytestmark = pytest.mark.train

CHUNK = 5


def _setup(dropout: float, field_dropout: float):
    data, cache = tiny_pairs_data.media_data()
    ds = {"cosent_weight": 1.0, "micl_weight": 0.5, "late_fusion_weight": 0.5}
    cfg = tiny_pairs_data.fast_config(**{"model.dropout": dropout, "model.inputs.field_dropout": field_dropout})
    datasets = dict(cfg.datasets)
    datasets["copair_i2i"] = datasets["copair_i2i"].model_copy(update=ds)
    cfg = cfg.model_copy(update={"datasets": datasets})
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    rows = load_pairs(data, "copair_i2i", "train").iloc[:12]
    items = sorted(inputs.items)
    rng = np.random.default_rng(0)
    negatives = [[str(items[i]) for i in rng.choice(len(items), 2, replace=False)] for _ in range(len(rows))]
    batch = build_pattern_batch(rows, "copair_i2i", cfg.datasets["copair_i2i"], inputs, train=True,
                                rng=np.random.default_rng(1), negatives=negatives,
                                extra_patterns=extra_patterns(cfg.datasets["copair_i2i"]))
    assert batch.negative_keys is not None and batch.scores is not None and len(batch.samples) > 2 * CHUNK
    loss_fn = InfoNCELoss(cfg.temperature_inits(), dims=cfg.model.matryoshka_dims)
    aux = AuxLosses(cfg, model.dim)
    return model, inputs, batch, loss_fn, aux


def _grads(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters()
            if p.grad is not None}


def _zero(*modules) -> None:
    for m in modules:
        m.zero_grad(set_to_none=True)


def _terms_loss(terms: dict) -> torch.Tensor:
    return torch.stack([v for k, v in terms.items() if k.endswith("_loss")]).sum()


def _compare(reference: dict, cached: dict) -> None:
    """Per tensor: ||cached - reference|| <= 1e-3 ||reference|| + 1e-6 x the largest gradient anywhere (the
    second term covers tensors whose true gradient is 0, such as attention key biases, where only float noise
    is left)."""
    assert set(reference) == set(cached) and len(reference) > 50
    scale = max(float(g.abs().max()) for g in reference.values())
    for name, g in reference.items():
        diff = float((cached[name] - g).norm())
        assert diff <= 1e-3 * float(g.norm()) + 1e-6 * scale, f"{name}: |diff| {diff:.3e}, |g| {float(g.norm()):.3e}"


def test_cached_gradients_equal_one_plain_backward():
    model, inputs, batch, loss_fn, aux = _setup(dropout=0.0, field_dropout=0.0)
    modes = inputs.collate_modes
    terms, finish = step_loss(model, model, loss_fn, batch, modes, one_forward=True, aux=aux)
    assert any(k.startswith("cosent") for k in terms) and "late_fusion_loss" in terms
    loss = _terms_loss(terms)
    loss.backward()
    finish()
    reference = _grads(model, loss_fn, aux)

    _zero(model, loss_fn, aux)
    terms, finish = step_loss(model, model, loss_fn, batch, modes, one_forward=True, aux=aux,
                               grad_cache_chunk=CHUNK)
    cached_loss = _terms_loss(terms)
    cached_loss.backward()
    assert not any(n.startswith("0.") for n in _grads(model, loss_fn, aux)), "the model has no gradient before phase 3"
    finish()
    assert abs(float(cached_loss.detach()) - float(loss.detach())) < 1e-5
    _compare(reference, _grads(model, loss_fn, aux))


def test_the_re_run_replays_each_chunks_random_draws():
    model, inputs, batch, loss_fn, aux = _setup(dropout=0.1, field_dropout=0.15)
    modes = inputs.collate_modes
    order = length_order(model, batch.samples).tolist()
    chunks = [order[s : s + CHUNK] for s in range(0, len(order), CHUNK)]

    torch.manual_seed(7)  # reference: the same chunks, with a graph, in the same order
    parts = [forward(model, model, [batch.samples[i] for i in idx], modes) for idx in chunks]
    position = torch.tensor([i for idx in chunks for i in idx])
    z = torch.cat(parts)
    z = z.new_empty(z.shape).index_put((position,), z)
    terms = pattern_losses(loss_fn, z, batch.dataset, batch.pairs, query_keys=batch.query_keys,
                           target_keys=batch.target_keys, negative_keys=batch.negative_keys)
    terms.update(aux(z, batch, loss_fn))
    loss = _terms_loss(terms)
    loss.backward()
    reference = _grads(model, loss_fn, aux)

    _zero(model, loss_fn, aux)
    torch.manual_seed(7)
    terms, finish = step_loss(model, model, loss_fn, batch, modes, one_forward=True, aux=aux,
                               grad_cache_chunk=CHUNK)
    cached_loss = _terms_loss(terms)
    cached_loss.backward()
    finish()
    assert abs(float(cached_loss.detach()) - float(loss.detach())) < 1e-5
    _compare(reference, _grads(model, loss_fn, aux))
