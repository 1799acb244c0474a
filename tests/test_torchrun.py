"""`torchrun --nproc_per_node 2 sail train` on the tiny profile trains like one process on the same global batch.

A throw-away project (tests/project.py) is ingested and validated once; its one training stage (stage1 of
``tiny``: all four datasets, 4 steps, checkpoints every 2 steps) also gets 2 mined hard negatives per query
on copair_i2i, so that the `mine` step (rank 0 only) and the negatives' rank-independent draws are exercised.
Then:

* ``sail train`` in one process with ``batch_size`` 8, and
* ``torchrun --nproc_per_node 2 sail train`` (gloo, two CPU processes) with ``batch_size`` 4 per process

must give the same loss curve. The logged loss of the 2-process run is the mean over ranks of each rank's
loss, which equals the 1-process loss on the same 8 rows because every loss is a mean over queries against
the gathered candidates. Randomness that would differ is switched off: ``model.inputs.field_dropout`` and
``model.dropout`` (the backbone's dropout); keyframe picks and hard negatives are keyed by seed, step and
sample, so they match without switching off. Tolerance: 1e-4 absolute + 5e-4 relative per step (float
reduction order differs: one padded forward per rank instead of length-sorted chunks; seen here: at most
6e-5 relative over the 4 steps, while the backbone's dropout left on moves step 1 by 14%).

Also checked: only rank 0 logs to MLflow (one train child run, four loss points), and the 2-process
checkpoint holds both ranks' RNG states.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from project import BIN, env, make_project, run
from sail_core.paths import free_ports

pytestmark = [pytest.mark.distributed, pytest.mark.train, pytest.mark.slow]

STAGE = {"name": "stage1", "steps": 4, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2,
         "hard_negatives": 2, "hard_negative_datasets": ["copair_i2i"]}
PROFILE = {
    "train.stages": [STAGE, {"name": "stage2", "drop": True}, {"name": "stage3", "drop": True},
                     {"name": "cre", "drop": True}],
    "train.threads": 1,
    "model.inputs.field_dropout": 0.0,
    "model.dropout": 0.0,
}


def _losses(root: Path) -> list[float]:
    history = json.loads((root / "models/stage1/train_metrics.json").read_text())["history"]
    return [h["loss"] for h in history]


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    root = make_project(tmp_path / "project", overrides=PROFILE)
    sail = str(BIN / "sail")
    run(root, sail, "ingest")
    run(root, sail, "validate")

    run(root, sail, "--set", "train.stages.0.batch_size=8", "train")
    one = _losses(root)
    shutil.rmtree(root / "models")

    port = free_ports(1)[0]
    proc = run(root, str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(port), sail, "--set", "train.stages.0.batch_size=4",
               "--set", "train.stages.0.checkpoint_every=3", "train")
    two = _losses(root)

    print(f"loss per step, 1 process: {one}\n2 processes: {two}")
    assert len(one) == len(two) == STAGE["steps"]
    for step, (a, b) in enumerate(zip(one, two), start=1):
        assert abs(a - b) <= 1e-4 + 5e-4 * abs(a), f"step {step}: 1 process {a:.6f} vs 2 processes {b:.6f}"
    assert proc.stdout.count('"run_id"') == 1, "only rank 0 prints the result"


def _bare_run(tmp_path: Path, name: str, sharding: bool) -> Path:
    """train_stage under torchrun without the pipeline (3 steps, checkpoints kept); returns its output folder."""
    import subprocess

    import tiny_pairs_data

    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        "import tiny_pairs_data\n"
        "from sail_core.train.distributed import init_from_env, shutdown\n"
        "from sail_core.train.loop import train_stage\n"
        "init_from_env('cpu')\n"
        "cfg = tiny_pairs_data.fast_config(**{'train.optimizer_sharding': sys.argv[4] == 'zero'})\n"
        "stage = cfg.train.stages[0].model_copy(update={'steps': 3, 'batch_size': 4, 'checkpoint_every': 2,\n"
        "                                               'warmup_steps': 0})\n"
        "train_stage(cfg, stage, sys.argv[2], sys.argv[1], keep_checkpoints=True, cache_dir=sys.argv[3])\n"
        "shutdown()\n")
    data, cache = tiny_pairs_data.media_data()
    out = tmp_path / name
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)])
    proc = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(free_ports(1)[0]), str(script), str(out), str(data), str(cache),
                           "zero" if sharding else "ddp"], env=e, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_zero_sharding_trains_like_ddp_and_its_checkpoint_holds_both_ranks_rng(tmp_path):
    """ZeRO-1 (AdamW states sharded over 2 ranks) gives DDP's losses; its checkpoint holds the whole optimizer
    state (consolidated on rank 0) and both ranks' RNG states."""
    ddp = json.loads((_bare_run(tmp_path, "ddp", False) / "train_metrics.json").read_text())["history"]
    out = _bare_run(tmp_path, "zero", True)
    zero = json.loads((out / "train_metrics.json").read_text())["history"]
    for a, b in zip(ddp, zero, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a["loss"], b["loss"])
    state = torch.load(next((out / "checkpoints").glob("step_*.pt")), weights_only=False)
    assert state["meta"]["world_size"] == 2
    assert len(state["rank_rng"]) == 2
    assert state["rng"]["torch"].equal(state["rank_rng"][0]["torch"])
    trainable = sum(1 for g in state["optimizer"]["param_groups"] for _ in g["params"])
    assert len(state["optimizer"]["state"]) > trainable // 2, "rank 0 saved every shard's AdamW state, not only its own"
