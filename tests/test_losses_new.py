"""CoSENT, mICL and the late-fusion gate against naive references (hand-computed or explicit Python loops).

The last test runs CoSENT in two real gloo processes (CPU) and checks that the
gathered loss and gradients equal the single-process loss on the whole batch,
as tests/test_losses_distributed.py does for InfoNCE.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sail_core.losses import (
    CoSENTLoss,
    InfoNCELoss,
    LateFusionGate,
    LateFusionLoss,
    MICLLoss,
    compute_loss_from_embeddings,
    cosent_from_cosines,
    cosent_from_embeddings,
)
from sail_core.losses.keys import side_key
from sail_core.paths import free_ports


# -- naive references ------------------------------------------------------------------------------------------------
def _unit(row: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in row))
    return [x / n for x in row]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_cosent(cos: list[float], scores: list[float], tau: float) -> tuple[float, int]:
    """log(1 + sum over ordered pairs with s_i > s_j of exp((cos_j - cos_i)/tau)), by a double loop."""
    total, pairs = 1.0, 0
    for i in range(len(cos)):
        for j in range(len(cos)):
            if scores[i] > scores[j]:
                total += math.exp((cos[j] - cos[i]) / tau)
                pairs += 1
    return math.log(total), pairs


def naive_pair_cosines(q: torch.Tensor, t: torch.Tensor) -> list[float]:
    return [_dot(_unit(a), _unit(b)) for a, b in zip(q.tolist(), t.tolist())]


def naive_nce(q: torch.Tensor, t: torch.Tensor, tau: float, rows: list[int] | None = None) -> float:
    """Mean over ``rows`` of -log softmax of the own target among the targets of ``rows`` (plain loops)."""
    rows = list(range(q.shape[0])) if rows is None else rows
    qs, ts = [_unit(r) for r in q.tolist()], [_unit(r) for r in t.tolist()]
    total = 0.0
    for i in rows:
        denom = sum(math.exp(_dot(qs[i], ts[j]) / tau) for j in rows)
        total += -math.log(math.exp(_dot(qs[i], ts[i]) / tau) / denom)
    return total / len(rows)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def naive_fusion(gate: LateFusionGate, v: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """m_hat row by row: g = sigmoid(w . [v/|v|; m/|m|] + b), m_hat = normalize(g v + (1 - g) m)."""
    w, b = gate.proj.weight.detach().reshape(-1).tolist(), float(gate.proj.bias.detach())
    fused, gs = [], []
    for vr, mr in zip(v.tolist(), m.tolist()):
        vu, mu = _unit(vr), _unit(mr)
        g = _sigmoid(_dot(w, vu + mu) + b)
        fused.append(_unit([g * a + (1 - g) * c for a, c in zip(vu, mu)]))
        gs.append(g)
    return torch.tensor(fused, dtype=torch.float64), gs


def _on_circle(cosines: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """q_i = e1, t_i = (c_i, sqrt(1 - c_i^2)): cos(q_i, t_i) = c_i exactly."""
    q = torch.tensor([[1.0, 0.0]] * len(cosines), dtype=torch.float64)
    t = torch.tensor([[c, math.sqrt(1 - c * c)] for c in cosines], dtype=torch.float64)
    return q, t


# -- CoSENT ---------------------------------------------------------------------------------------------------------
def test_cosent_closed_form_on_hand_picked_cosines():
    cos = [0.9, 0.5, 0.7, 0.1]
    scores = torch.tensor([3.0, 2.0, 2.0, 1.0])
    tau = 0.05
    # ordered pairs with s_i > s_j: (0,1) (0,2) (0,3) (1,3) (2,3); exponents (cos_j - cos_i)/tau
    expected = math.log(1 + math.exp(-8) + math.exp(-4) + math.exp(-16) + math.exp(-8) + math.exp(-12))
    q, t = _on_circle(cos)
    terms = CoSENTLoss()(q, t, scores)
    assert set(terms) == {"cosent_loss", "cosent_pairs"}
    assert terms["cosent_loss"].item() == pytest.approx(expected, rel=1e-9)
    assert terms["cosent_pairs"].item() == 5
    # a violated order (the top-scored pair has the lowest cosine) costs more, as the double loop says
    bad = [0.1, 0.5, 0.7, 0.9]
    got, pairs = cosent_from_cosines(torch.tensor(bad, dtype=torch.float64), scores, tau)
    assert got.item() == pytest.approx(naive_cosent(bad, scores.tolist(), tau)[0], rel=1e-9)
    assert got.item() > expected and pairs.item() == 5
    # scale 1/tau: tau = 1/20 is the default
    assert CoSENTLoss(tau=1 / 20)(q, t, scores)["cosent_loss"].item() == pytest.approx(expected, rel=1e-9)


def test_cosent_matches_double_loop_on_random_pairs():
    g = torch.Generator().manual_seed(0)
    q, t = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    scores = torch.tensor([1, 3, 2, 3, 0, 1, 2])  # integer co-rating counts, with ties
    got, pairs = cosent_from_embeddings(q, t, scores, 0.05)
    ref, ref_pairs = naive_cosent(naive_pair_cosines(q, t), scores.tolist(), 0.05)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    assert pairs.item() == ref_pairs


@pytest.mark.parametrize("n", [0, 1, 4], ids=["empty", "one-row", "all-equal"])
def test_cosent_degenerate_batches_give_zero_with_a_gradient(n):
    q = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    terms = CoSENTLoss(weight=2.0)(q, t, torch.full((n,), 5.0))
    assert terms["cosent_loss"].item() == 0.0 and terms["cosent_pairs"].item() == 0
    terms["cosent_loss"].backward()
    assert q.grad is not None and t.grad is not None
    assert torch.all(q.grad == 0) and torch.all(t.grad == 0)


def test_cosent_gradient_matches_naive_autograd():
    g = torch.Generator().manual_seed(1)
    q0, t0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    scores = [2.0, 0.0, 1.0, 2.0, 1.0]
    q, t = q0.clone().requires_grad_(), t0.clone().requires_grad_()
    loss = CoSENTLoss(weight=0.5, tau=0.1)(q, t, torch.tensor(scores))["cosent_loss"]
    loss.backward()
    # reference: per-row cosines and a Python double loop over scalar tensors
    q2, t2 = q0.clone().requires_grad_(), t0.clone().requires_grad_()
    cos = [torch.dot(q2[i], t2[i]) / (q2[i].norm() * t2[i].norm()) for i in range(5)]
    total = torch.ones((), dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            if scores[i] > scores[j]:
                total = total + torch.exp((cos[j] - cos[i]) / 0.1)
    ref = 0.5 * torch.log(total)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad).all() and q.grad.abs().sum() > 0
    assert torch.allclose(q.grad, q2.grad, atol=1e-10) and torch.allclose(t.grad, t2.grad, atol=1e-10)


def test_cosent_matryoshka_terms_weight_and_valid_rows():
    g = torch.Generator().manual_seed(2)
    q, t = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scores = torch.tensor([4.0, 1.0, 3.0, 1.0, 2.0, 0.0])
    terms = CoSENTLoss(weight=0.5, dims=[8, 4])(q, t, scores)
    assert set(terms) == {"cosent_8_loss", "cosent_4_loss", "cosent_pairs"}
    for d in (8, 4):
        ref, pairs = naive_cosent(naive_pair_cosines(q[:, :d], t[:, :d]), scores.tolist(), 0.05)
        assert terms[f"cosent_{d}_loss"].item() == pytest.approx(0.5 * ref, rel=1e-5)
    assert terms["cosent_pairs"].item() == pairs == 14
    # invalid rows take part in no pair, whatever their embeddings
    valid = torch.tensor([True, False, True, True, False, True])
    q2, t2 = q.clone(), t.clone()
    q2[~valid], t2[~valid] = 1e3, -1e3
    masked = CoSENTLoss()(q2, t2, scores, valid=valid)
    ref, pairs = naive_cosent(naive_pair_cosines(q[valid], t[valid]), scores[valid].tolist(), 0.05)
    assert masked["cosent_loss"].item() == pytest.approx(ref, rel=1e-5) and masked["cosent_pairs"].item() == pairs
    with pytest.raises(ValueError, match="exceeds"):
        CoSENTLoss(dims=[16])(q, t, scores)
    with pytest.raises(ValueError, match="tau"):
        CoSENTLoss(tau=0.0)


# -- mICL -----------------------------------------------------------------------------------------------------------
def test_micl_is_infonce_of_each_modality_against_the_targets():
    g = torch.Generator().manual_seed(3)
    v, x, t = (torch.randn(5, 6, generator=g) for _ in range(3))
    terms = MICLLoss(weight=0.3)(v, x, t, 0.07)
    assert set(terms) == {"micl_vision_loss", "micl_text_loss"}
    assert terms["micl_vision_loss"].item() == pytest.approx(0.3 * naive_nce(v, t, 0.07), rel=1e-5)
    assert terms["micl_text_loss"].item() == pytest.approx(0.3 * naive_nce(x, t, 0.07), rel=1e-5)
    # and it is exactly the project's InfoNCE, with duplicate-key masking passed through
    keys = torch.tensor([side_key(i, None) for i in ["a", "b", "a", "c", "d"]])
    keyed = MICLLoss()(v, x, t, 0.07, target_keys=keys)
    assert keyed["micl_vision_loss"].item() == pytest.approx(
        compute_loss_from_embeddings(v, t, 0.07, target_keys=keys).item(), rel=1e-6)
    assert keyed["micl_text_loss"].item() == pytest.approx(
        compute_loss_from_embeddings(x, t, 0.07, target_keys=keys).item(), rel=1e-6)


def test_micl_separate_validity_and_gradients_reach_everything():
    g = torch.Generator().manual_seed(4)
    v, x, t = (torch.randn(6, 4, generator=g).requires_grad_() for _ in range(3))
    nce = InfoNCELoss({"copair_i2i": 0.05})  # the dataset's learnable tau, shared with the main NCE
    vision_valid = torch.tensor([True, True, False, True, True, False])  # items without an image
    text_valid = torch.tensor([True, True, True, True, True, True])
    terms = MICLLoss()(v, x, t, nce.temperatures("copair_i2i"), vision_valid=vision_valid, text_valid=text_valid)
    rows = [i for i, ok in enumerate(vision_valid.tolist()) if ok]
    assert terms["micl_vision_loss"].item() == pytest.approx(naive_nce(v.detach(), t.detach(), 0.05, rows), rel=1e-5)
    assert terms["micl_text_loss"].item() == pytest.approx(naive_nce(x.detach(), t.detach(), 0.05), rel=1e-5)
    sum(v_ for k, v_ in terms.items() if k.endswith("_loss")).backward()
    for tensor in (v, x, t, nce.temperatures.log_tau["copair_i2i"]):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert torch.all(v.grad[~vision_valid] == 0) and v.grad[vision_valid].abs().sum() > 0


# -- late fusion ----------------------------------------------------------------------------------------------------
def test_gate_limits_and_unit_norm():
    g = torch.Generator().manual_seed(5)
    v, m = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    gate = LateFusionGate(6, init_bias=60.0)  # g = sigmoid(60) = 1 in float32
    fused, gv = gate(v, m)
    assert torch.allclose(gv, torch.ones(4)) and torch.allclose(fused, F.normalize(v, dim=-1), atol=1e-6)
    gate = LateFusionGate(6, init_bias=-60.0)  # g = 0
    fused, gv = gate(v, m)
    assert torch.allclose(gv, torch.zeros(4), atol=1e-20) and torch.allclose(fused, F.normalize(m, dim=-1), atol=1e-6)
    # default: w = 0, b = 0 -> g = 1/2, the normalised midpoint of the unit vectors
    fused, gv = LateFusionGate(6)(v, m)
    assert torch.allclose(gv, torch.full((4,), 0.5))
    assert torch.allclose(fused, F.normalize(F.normalize(v, dim=-1) + F.normalize(m, dim=-1), dim=-1), atol=1e-6)
    assert torch.allclose(fused.norm(dim=-1), torch.ones(4), atol=1e-6)
    with pytest.raises(ValueError, match="D=6"):
        LateFusionGate(6)(v[:, :4], m[:, :4])


def test_late_fusion_loss_equals_naive_nce_of_the_fused_vector():
    torch.manual_seed(6)
    v, m, t = (torch.randn(5, 4, dtype=torch.float64) for _ in range(3))
    loss_fn = LateFusionLoss(4, weight=0.25).double()
    with torch.no_grad():  # a trained-looking gate: per-item g differs
        loss_fn.gate.proj.weight.copy_(torch.randn(1, 8, dtype=torch.float64))
        loss_fn.gate.proj.bias.fill_(0.3)
    fused, gate_values = loss_fn.gate(v, m)
    ref_fused, ref_g = naive_fusion(loss_fn.gate, v, m)
    assert torch.allclose(fused, ref_fused, atol=1e-12)
    assert torch.allclose(gate_values, torch.tensor(ref_g, dtype=torch.float64))
    assert torch.allclose(fused.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    assert len({round(x, 6) for x in ref_g}) == 5
    terms = loss_fn(v, m, t, 0.1)
    assert set(terms) == {"late_fusion_loss", "gate_mean"}
    assert terms["late_fusion_loss"].item() == pytest.approx(0.25 * naive_nce(ref_fused, t, 0.1), rel=1e-10)
    assert terms["gate_mean"].item() == pytest.approx(sum(ref_g) / 5, rel=1e-10)


def test_late_fusion_valid_rows_gradients_and_gate_mean():
    torch.manual_seed(7)
    v, m, t = (torch.randn(6, 4).requires_grad_() for _ in range(3))
    tau = InfoNCELoss({"xmodal": 0.05}).temperatures
    loss_fn = LateFusionLoss(4)
    valid = torch.tensor([True, False, True, True, True, False])  # rows 1 and 5: no vision
    terms = loss_fn(v, m, t, tau("xmodal"), valid=valid)
    ref_fused, ref_g = naive_fusion(loss_fn.gate, v.detach(), m.detach())
    rows = [0, 2, 3, 4]
    assert terms["late_fusion_loss"].item() == pytest.approx(naive_nce(ref_fused, t.detach(), 0.05, rows), rel=1e-5)
    assert terms["gate_mean"].item() == pytest.approx(sum(ref_g[i] for i in rows) / 4, rel=1e-6)
    terms["late_fusion_loss"].backward()
    for name, p in [*loss_fn.named_parameters(), ("v", v), ("m", m), ("t", t), ("tau", tau.log_tau["xmodal"])]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert not terms["gate_mean"].requires_grad
    none = loss_fn(v, m, t, 0.05, valid=torch.zeros(6, dtype=torch.bool))
    assert none["late_fusion_loss"].item() == 0.0 and "gate_mean" not in none


# -- CoSENT over two gloo ranks -------------------------------------------------------------------------------------
B, D = 6, 5


def _cosent_data():
    g = torch.Generator().manual_seed(11)
    q, t = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    scores = torch.tensor([3.0, 1.0, 2.0, 3.0, 0.0, 1.0])  # ties across the two ranks' halves
    return q, t, scores


def _cosent_worker(rank: int, world: int, port: int, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, t, scores = _cosent_data()
        rows = slice(rank * B // world, (rank + 1) * B // world)
        ql, tl = q[rows].clone().requires_grad_(), t[rows].clone().requires_grad_()
        terms = CoSENTLoss(weight=0.5, dims=[D, 2])(ql, tl, scores[rows])
        sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
        out[rank] = ({k: v.item() for k, v in terms.items()}, ql.grad / world, tl.grad / world)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_cosent_over_two_ranks_equals_the_concatenated_batch():
    world = 2
    out = mp.Manager().dict()
    mp.spawn(_cosent_worker, args=(world, free_ports(1)[0], out), nprocs=world, join=True)

    q, t, scores = _cosent_data()
    q.requires_grad_(), t.requires_grad_()
    full = CoSENTLoss(weight=0.5, dims=[D, 2])(q, t, scores)
    sum(v for k, v in full.items() if k.endswith("_loss")).backward()
    ref, pairs = naive_cosent(naive_pair_cosines(q.detach(), t.detach()), scores.tolist(), 0.05)
    assert full[f"cosent_{D}_loss"].item() == pytest.approx(0.5 * ref, rel=1e-5)

    half = B // world
    for r in range(world):
        terms, gq, gt = out[r]
        assert set(terms) == set(full)
        for k, v in full.items():  # every rank computes the global loss
            assert terms[k] == pytest.approx(v.item(), rel=1e-5), k
        assert terms["cosent_pairs"] == pairs
        rows = slice(r * half, (r + 1) * half)
        assert torch.allclose(gq, q.grad[rows], atol=1e-6) and torch.allclose(gt, t.grad[rows], atol=1e-6)
