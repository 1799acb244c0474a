"""InfoNCE: hand-computed 2x2, a naive per-row reference, hard negatives, duplicate masking, MRL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sail_core.losses.infonce import InfoNCELoss, compute_loss_from_embeddings
from sail_core.losses.keys import NO_KEY, side_key


def naive_infonce(q, t, tau, hn=None, q_keys=None, t_keys=None, hn_keys=None) -> float:
    """Per-row Python loop: -log(exp(s_ii/tau) / sum over allowed candidates)."""
    q = F.normalize(q, dim=-1).tolist()
    t = F.normalize(t, dim=-1).tolist()
    b = len(q)
    cands = list(t)
    ckeys = list(t_keys) if t_keys is not None else [NO_KEY] * b
    if hn is not None:
        h = hn.shape[1]
        flat = F.normalize(hn, dim=-1).reshape(b * h, -1).tolist()
        cands += flat
        ckeys += list(hn_keys.reshape(-1).tolist()) if hn_keys is not None else [NO_KEY] * (b * h)
    total = 0.0
    for i in range(b):
        def cos(a, c):
            return sum(x * y for x, y in zip(a, c))

        pos = math.exp(cos(q[i], cands[i]) / tau)
        denom = 0.0
        for j, c in enumerate(cands):
            if j != i:
                if t_keys is not None and ckeys[j] != NO_KEY and ckeys[j] == t_keys[i]:
                    continue
                if q_keys is not None and ckeys[j] != NO_KEY and ckeys[j] == q_keys[i]:
                    continue
            denom += math.exp(cos(q[i], c) / tau)
        total += -math.log(pos / denom)
    return total / b


def test_hand_computed_2x2():
    # q0 = t0 = e1, q1 = t1 = e2: cos matrix is the identity.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = q.clone()
    tau = 0.5
    # each row: -log(e^2 / (e^2 + e^0)) = log(1 + e^-2)
    expected = math.log(1 + math.exp(-2.0))
    got = compute_loss_from_embeddings(q, t, tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # swapped targets: the positive has cos 0, the negative cos 1 -> log(1 + e^2)
    got_swapped = compute_loss_from_embeddings(q, t.flip(0), tau)
    assert got_swapped.item() == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-6)


def test_matches_naive_reference_random():
    g = torch.Generator().manual_seed(0)
    q, t = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    got = compute_loss_from_embeddings(q, t, 0.07)
    assert got.item() == pytest.approx(naive_infonce(q, t, 0.07), rel=1e-5)


def test_hard_negatives_join_the_denominator():
    g = torch.Generator().manual_seed(1)
    q, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    hn = torch.randn(4, 3, 6, generator=g)
    with_hn = compute_loss_from_embeddings(q, t, 0.1, hard_negatives=hn)
    without = compute_loss_from_embeddings(q, t, 0.1)
    assert with_hn.item() == pytest.approx(naive_infonce(q, t, 0.1, hn=hn), rel=1e-5)
    assert with_hn.item() > without.item()  # more negatives, larger denominator


def test_duplicate_targets_are_not_negatives():
    g = torch.Generator().manual_seed(2)
    q, t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    t[2] = t[0]  # same target item twice in the batch
    keys = torch.tensor([side_key(i, None) for i in ["a", "b", "a", "c"]])
    masked = compute_loss_from_embeddings(q, t, 0.05, target_keys=keys)
    unmasked = compute_loss_from_embeddings(q, t, 0.05)
    assert masked.item() == pytest.approx(naive_infonce(q, t, 0.05, t_keys=keys.tolist()), rel=1e-5)
    assert masked.item() < unmasked.item()
    # Equivalent by hand: row 0 sees candidates {0, 1, 3}, row 2 sees {1, 2, 3}.
    qn, tn = F.normalize(q, dim=-1), F.normalize(t, dim=-1)
    s = qn @ tn.T / 0.05
    rows = [(0, [0, 1, 3]), (1, [0, 1, 2, 3]), (2, [1, 2, 3]), (3, [0, 1, 2, 3])]
    by_hand = sum(-(s[i, i] - torch.logsumexp(s[i, cols], 0)) for i, cols in rows) / 4
    assert masked.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_query_item_and_hard_negative_duplicates_are_masked():
    g = torch.Generator().manual_seed(3)
    q, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    hn = torch.randn(3, 2, 4, generator=g)
    q_keys = torch.tensor([side_key(i, None) for i in ["x", "y", "z"]])
    t_keys = torch.tensor([side_key(i, None) for i in ["y", "x", "w"]])  # i2i symmetric pair x<->y
    hn_keys = torch.tensor([[side_key("w", None), side_key("v", None)], [NO_KEY, NO_KEY], [NO_KEY, NO_KEY]])
    got = compute_loss_from_embeddings(
        q, t, 0.1, hard_negatives=hn, query_keys=q_keys, target_keys=t_keys, hard_negative_keys=hn_keys
    )
    ref = naive_infonce(q, t, 0.1, hn=hn, q_keys=q_keys.tolist(), t_keys=t_keys.tolist(), hn_keys=hn_keys)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_gradient_matches_naive_autograd():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(5, 6, generator=g, requires_grad=True)
    t = torch.randn(5, 6, generator=g, requires_grad=True)
    loss = compute_loss_from_embeddings(q, t, 0.2)
    loss.backward()
    q2, t2 = q.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    s = F.normalize(q2, dim=-1) @ F.normalize(t2, dim=-1).T / 0.2
    ref = torch.stack([-(s[i, i] - torch.logsumexp(s[i], 0)) for i in range(5)]).mean()
    ref.backward()
    assert torch.allclose(q.grad, q2.grad, atol=1e-6) and torch.allclose(t.grad, t2.grad, atol=1e-6)


def test_matryoshka_terms_and_temperature():
    loss = InfoNCELoss({"a": 0.05, "b": 0.1}, dims=[8, 4])
    g = torch.Generator().manual_seed(5)
    q, t = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    terms = loss(q, t, "b")
    assert set(terms) == {"nce_8_loss", "nce_4_loss"}
    assert terms["nce_4_loss"].item() == pytest.approx(naive_infonce(q[:, :4], t[:, :4], 0.1), rel=1e-5)
    assert terms["nce_8_loss"].item() == pytest.approx(naive_infonce(q, t, 0.1), rel=1e-5)
    sum(terms.values()).backward()
    assert loss.temperatures.log_tau["b"].grad is not None and loss.temperatures.log_tau["a"].grad is None
    assert loss.temperatures.values()["a"] == pytest.approx(0.05)


def test_temperature_is_clamped_and_validated():
    loss = InfoNCELoss({"a": 0.05})
    with torch.no_grad():
        loss.temperatures.log_tau["a"].fill_(math.log(1e-6))
    assert loss.temperatures("a").item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="temperature_init"):
        InfoNCELoss({"a": 5.0})
    with pytest.raises(KeyError, match="no temperature"):
        loss.temperatures("missing")


def test_valid_mask_equals_loss_on_the_valid_rows_only():
    """Invalid rows (pattern matching: a side lacks the modality) are neither queries nor candidates."""
    from sail_core.losses.infonce import compute_loss_from_embeddings

    g = torch.Generator().manual_seed(3)
    q, t = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    keys = torch.arange(6)
    valid = torch.tensor([True, False, True, True, False, True])
    masked = compute_loss_from_embeddings(q, t, 0.1, query_keys=keys + 100, target_keys=keys, valid=valid)
    subset = compute_loss_from_embeddings(q[valid], t[valid], 0.1, query_keys=keys[valid] + 100, target_keys=keys[valid])
    assert masked.item() == pytest.approx(subset.item(), rel=1e-6)
    # garbage in invalid rows changes nothing
    q2, t2 = q.clone(), t.clone()
    q2[~valid], t2[~valid] = 1e3, -1e3
    again = compute_loss_from_embeddings(q2, t2, 0.1, query_keys=keys + 100, target_keys=keys, valid=valid)
    assert again.item() == pytest.approx(masked.item(), rel=1e-6)
    none = compute_loss_from_embeddings(q, t, 0.1, valid=torch.zeros(6, dtype=torch.bool))
    assert none.item() == 0.0


def test_self_pairs_keep_their_own_target_as_positive():
    """xmodal: query item == target item; the own column must stay the positive (not masked as 'the query')."""
    from sail_core.losses.infonce import compute_loss_from_embeddings

    g = torch.Generator().manual_seed(4)
    q, t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    keys = torch.tensor([11, 12, 13, 14])
    got = compute_loss_from_embeddings(q, t, 0.1, query_keys=keys, target_keys=keys)
    plain = compute_loss_from_embeddings(q, t, 0.1)
    assert torch.isfinite(got) and got.item() == pytest.approx(plain.item(), rel=1e-6)
