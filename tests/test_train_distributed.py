"""train_stage under a real 2-process gloo group (CPU): DDP path runs, ranks stay in sync, rank 0 writes.

Two real processes, the real omni model (MiniLM + frozen media features) on the media data set,
two steps of batch 4 per rank, every pattern of the drawn dataset in one forward.
DDP keeps parameters identical on every rank; a broken gradient path (loss
gather, temperature all-reduce) would make them drift apart or hang.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tiny_pairs_data
from sail_core.paths import free_ports

pytestmark = pytest.mark.distributed


def _worker(rank: int, world: int, port: int, data: str, out: str, cache: str, result: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from sail_core.train.loop import train_stage

        cfg = tiny_pairs_data.fast_config()
        stage = cfg.train.stages[0].model_copy(update={"steps": 2, "batch_size": 4, "checkpoint_every": 1,
                                                       "warmup_steps": 0})
        summary = train_stage(cfg, stage, data, out, keep_checkpoints=True, cache_dir=cache)
        result[rank] = summary
    finally:
        dist.destroy_process_group()


def test_two_rank_training(tmp_path):
    data, cache = tiny_pairs_data.media_data()  # media: patterns with missing modalities on one rank only
    out = tmp_path / "out"
    result = mp.Manager().dict()
    mp.spawn(_worker, args=(2, free_ports(1)[0], str(data), str(out), str(cache), result), nprocs=2, join=True)
    assert result[0]["steps_run"] == 2 and result[1]["steps_run"] == 2
    assert result[0]["dataset_counts"] == result[1]["dataset_counts"]  # same dataset on every rank each step
    assert result[0]["temperatures"] == result[1]["temperatures"]      # temperature grads were averaged
    assert (out / "model" / "sail_omni.json").exists() and (out / "train_metrics.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000001.pt"]
