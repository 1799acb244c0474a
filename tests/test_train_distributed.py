"""train_stage under a real 2-process gloo group (CPU): DDP path runs, ranks stay in sync, rank 0 writes.

Two real processes, the real omni model (MiniLM + frozen media features) on the media data set,
two steps of batch 4 per rank, every pattern of the drawn dataset in one forward. A second run trains
copair_i2i with every auxiliary loss on (CoSENT on graded scores, mICL, late fusion) and two mined hard
negatives per query: the gathered CoSENT and the late-fusion gate (outside DDP) must stay in sync too.
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


def _worker(rank: int, world: int, port: int, data: str, out: str, cache: str, result: dict, aux: bool = False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from sail_core.train.loop import train_stage

        cfg = tiny_pairs_data.fast_config()
        stage = cfg.train.stages[0].model_copy(update={"steps": 2, "batch_size": 4, "checkpoint_every": 1,
                                                       "warmup_steps": 0})
        if aux:
            ds = dict(cfg.datasets)
            ds["copair_i2i"] = ds["copair_i2i"].model_copy(update={"cosent_weight": 1.0, "micl_weight": 0.5,
                                                                   "late_fusion_weight": 0.5})
            cfg = cfg.model_copy(update={"datasets": ds})
            stage = stage.model_copy(update={"datasets": ["copair_i2i"], "hard_negatives": 2,
                                             "hard_negative_datasets": ["copair_i2i"]})
        logged = []
        summary = train_stage(cfg, stage, data, out, keep_checkpoints=True, cache_dir=cache,
                              log=lambda m, s: logged.append(m))
        if aux and rank == 0:
            import torch as _t

            summary["logged"] = logged
            summary["gate"] = {k: v.tolist() for k, v in _t.load(f"{out}/model/aux_losses.pt").items()}
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


def test_two_rank_training_with_cosent_aux_losses_and_hard_negatives(tmp_path):
    import shutil

    import pandas as pd

    media, cache = tiny_pairs_data.media_data()
    data = tmp_path / "data"
    shutil.copytree(media, data)
    pairs = pd.read_parquet(data / "pairs" / "copair_i2i.parquet")
    pairs["score"] = (pairs.index % 4 + 1).astype("float32")  # graded, like the demo's co-rating counts
    pairs.to_parquet(data / "pairs" / "copair_i2i.parquet")
    train = pairs[pairs["split"] == "train"]
    test_items = set(pd.read_parquet(data / "item_splits.parquet").query("split != 'train'")["item_id"])
    negatives = [i for i in train["target_item"].unique() if i not in test_items]
    (data / "hard_negatives").mkdir()
    pd.DataFrame({"query_item": train["query_item"], "query_text": None,
                  "negative_item": [negatives[(k + 3) % len(negatives)] for k in range(len(train))]}).to_parquet(
        data / "hard_negatives" / "copair_i2i.parquet")
    out = tmp_path / "out"
    result = mp.Manager().dict()
    mp.spawn(_worker, args=(2, free_ports(1)[0], str(data), str(out), str(cache), result, True), nprocs=2, join=True)
    assert result[0]["steps_run"] == result[1]["steps_run"] == 2
    assert result[0]["temperatures"] == result[1]["temperatures"]
    logged = result[0]["logged"]
    for term in ("cosent_384_loss", "micl_vision_loss", "micl_text_loss", "late_fusion_loss", "gate_mean"):
        assert all(term in m for m in logged), term
    assert all(m["cosent_pairs"] > 0 for m in logged)
    assert result[0]["hard_negatives"]["copair_i2i"]["drawn_mined"] > 0
    gate = result[0]["gate"]
    assert any(abs(w) > 0 for row in gate["late_fusion.copair_i2i.gate.proj.weight"] for w in row)  # the gate learned
