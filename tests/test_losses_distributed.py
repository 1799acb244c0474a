"""InfoNCE under torch.distributed (gloo, world size 2, CPU): gathered == single-process full batch.

Two real processes with a real gloo process group; nothing is mocked. Each rank
holds half the batch (with hard negatives and a duplicate target across ranks);
the mean of the rank losses must equal the full-batch loss, and each rank's
gradient (as DDP would average it, i.e. divided by the world size) must equal
the full-batch gradient of its rows.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sail_core.losses.infonce import compute_loss_from_embeddings
from sail_core.losses.keys import side_key
from sail_core.paths import free_ports

pytestmark = pytest.mark.distributed

B, H, D, TAU = 6, 2, 5, 0.1


def _data():
    g = torch.Generator().manual_seed(11)
    q, t, hn = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randn(B, H, D, generator=g)
    items = ["a", "b", "c", "a", "d", "e"]  # "a" is the target of row 0 (rank 0) and row 3 (rank 1)
    t_keys = torch.tensor([side_key(i, None) for i in items])
    hn_keys = torch.tensor([[side_key(f"n{i}{j}", None) for j in range(H)] for i in range(B)])
    hn_keys[4, 0] = side_key("b", None)  # a hard negative equal to row 1's positive
    return q, t, hn, t_keys, hn_keys


def _worker(rank: int, world: int, port: int, out: dict, detach: bool = False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, t, hn, t_keys, hn_keys = _data()
        rows = slice(rank * B // world, (rank + 1) * B // world)
        ql = q[rows].clone().requires_grad_()
        tl = t[rows].clone().requires_grad_(not detach)  # detach: a locked-target dataset (target_gradient false)
        hl = hn[rows].clone().requires_grad_(not detach)
        loss = compute_loss_from_embeddings(
            ql, tl, TAU, hard_negatives=hl, target_keys=t_keys[rows], hard_negative_keys=hn_keys[rows]
        )
        loss.backward()
        out[rank] = (loss.item(), ql.grad / world, None if detach else tl.grad / world, None if detach else hl.grad / world)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("detach", [False, True], ids=["targets-with-grad", "locked-targets"])
def test_gathered_loss_and_gradients_equal_full_batch(detach):
    world = 2
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(world, free_ports(1)[0], out, detach), nprocs=world, join=True)

    q, t, hn, t_keys, hn_keys = _data()
    q.requires_grad_(), t.requires_grad_(not detach), hn.requires_grad_(not detach)
    full = compute_loss_from_embeddings(q, t, TAU, hard_negatives=hn, target_keys=t_keys, hard_negative_keys=hn_keys)
    full.backward()

    mean_loss = sum(out[r][0] for r in range(world)) / world
    assert abs(mean_loss - full.item()) < 1e-5
    half = B // world
    for r in range(world):
        rows = slice(r * half, (r + 1) * half)
        _, gq, gt, gh = out[r]
        assert torch.allclose(gq, q.grad[rows], atol=1e-6)
        if detach:
            assert gt is None and gh is None and t.grad is None
            continue
        assert torch.allclose(gt, t.grad[rows], atol=1e-6)
        assert torch.allclose(gh, hn.grad[rows], atol=1e-6)
