"""One training loop for every stage: stages are config data (datasets, steps, lr, hard negatives).

Four verbs, torchtune-style: build or load the model, resume from the last
checkpoint if there is one, train, save. Each step samples one dataset
(stochastic specialisation), embeds queries, targets and hard negatives in one
forward pass of the single tower, and minimises the Matryoshka InfoNCE loss
with a learnable temperature per dataset. The loop knows nothing of MLflow or
Airflow: per-step metrics go through the ``log`` callback.

Distributed: under ``torchrun`` (process group initialised before the call) the
model is wrapped in DDP, negatives are gathered across ranks by the loss, each
rank takes its slice of the same global batch, and only rank 0 logs and writes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from sail_core.config import Config, StageConfig
from sail_core.losses.gather import world
from sail_core.losses.infonce import InfoNCELoss
from sail_core.model.embedder import SailEmbedder, build_model, load_model
from sail_core.train.batches import PairBatch, make_batch, with_negatives
from sail_core.train.checkpoint import (
    CHECKPOINTS,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sail_core.train.embed import embed_with_grad
from sail_core.train.curves import plot_loss_curve, write_train_metrics
from sail_core.train.hard_negatives import HardNegativePool
from sail_core.train.pair_data import load_hard_negatives, load_item_texts, load_pairs
from sail_core.train.sampler import StochasticSpecialisationSampler
from sail_core.train.schedule import warmup_cosine

LOG = logging.getLogger(__name__)
TEMPERATURES_FILE = "temperatures.json"
Logger = Callable[[dict[str, float], int], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_stage(cfg: Config, stage: StageConfig) -> None:
    """Reject incompatible settings before any work (clear message, names the key)."""
    where = f"train.stages[{stage.name}]"
    unknown = [d for d in stage.datasets if d not in cfg.datasets]
    if unknown:
        raise ValueError(f"{where}.datasets: unknown {unknown}; configured datasets: {sorted(cfg.datasets)}")
    if not stage.datasets:
        raise ValueError(f"{where}.datasets is empty; list at least one dataset")
    if stage.warmup_steps >= stage.steps:
        raise ValueError(f"{where}.warmup_steps={stage.warmup_steps} must be below steps={stage.steps}")


def _loss_for(cfg: Config, model: SailEmbedder, init_from: Path | None) -> InfoNCELoss:
    """One temperature per configured dataset; carried over from the previous stage when saved there."""
    inits = {name: ds.temperature_init for name, ds in cfg.datasets.items()}
    saved = Path(init_from) / TEMPERATURES_FILE if init_from else None
    if saved and saved.exists():
        inits.update({k: v for k, v in json.loads(saved.read_text()).items() if k in inits})
    return InfoNCELoss(inits, dims=model.cfg.matryoshka_dims)


def _embed_batch(net: torch.nn.Module, model: SailEmbedder, batch: PairBatch, one_forward: bool):
    b, h = len(batch), batch.hard_negatives_per_query
    texts = batch.queries + batch.targets + (batch.negatives or [])
    z = embed_with_grad(net, model, texts, chunk=None if one_forward else 32)
    q, t = z[:b], z[b : 2 * b]
    hn = z[2 * b :].reshape(b, h, -1) if h else None
    return q, t, hn


def train_stage(
    cfg: Config,
    stage: StageConfig,
    data_dir: Path,
    out_dir: Path,
    init_from: Path | None = None,
    log: Logger | None = None,
    keep_checkpoints: bool = False,
) -> dict:
    """Train one stage and save ``out_dir/model``; returns a summary dict.

    Args:
        cfg: the whole configuration (datasets, model, train.seed/threads).
        stage: the stage to run (``cfg.train.stages[i]``).
        data_dir: folder with ``items.parquet`` and ``pairs/<dataset>.parquet``.
        out_dir: receives ``checkpoints/``, ``model/``, ``train_metrics.json``, ``loss_curve.png``.
        init_from: a saved model folder (previous stage) to start from; else the pretrained backbone.
        log: ``log(metrics, step)`` called every step on rank 0 (the tracking code passes MLflow's);
            names are unprefixed: ``loss``, ``nce_<dim>_loss``, ``lr``, ``grad_norm``,
            ``temperature.<dataset>``, ``count.<dataset>`` (cumulative steps drawn from it).
        keep_checkpoints: keep ``checkpoints/`` after a successful run (default: removed, the model is saved).
    """
    _check_stage(cfg, stage)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    rank, size = world()
    lead = rank == 0
    out_dir.mkdir(parents=True, exist_ok=True)

    item_texts = load_item_texts(data_dir)
    pairs = {name: load_pairs(data_dir, name, "train") for name in stage.datasets}
    empty = [n for n, p in pairs.items() if len(p) == 0]
    if empty:
        raise ValueError(f"stage {stage.name!r}: datasets {empty} have no train pairs in {data_dir}/pairs; "
                         "rebuild the data or drop them from the stage")
    sampler = StochasticSpecialisationSampler(
        {n: len(p) for n, p in pairs.items()},
        {n: cfg.datasets[n].weight for n in pairs},
        stage.batch_size, cfg.train.seed, rank, size,
    )
    pools: dict[str, HardNegativePool] = {}
    if stage.hard_negatives:
        for n in stage.datasets:
            pools[n] = HardNegativePool(load_hard_negatives(data_dir, n), list(item_texts), stage.hard_negatives,
                                        cfg.train.seed + rank)

    model = load_model(init_from) if init_from else build_model(cfg.model)
    model.train()
    loss_fn = _loss_for(cfg, model, init_from)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": stage.weight_decay},
            {"params": list(loss_fn.parameters()), "weight_decay": 0.0},
        ],
        lr=stage.lr,
    )
    scheduler = warmup_cosine(optimizer, stage.warmup_steps, stage.steps)
    # the backbone's pooler is unused by mean-of-tanh pooling, hence find_unused_parameters
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if size > 1 else model

    ckpt_dir = out_dir / CHECKPOINTS
    meta = {"seed": cfg.train.seed, "steps": stage.steps, "stage": stage.name, "batch_size": stage.batch_size}
    start, history = 0, []
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        state = load_checkpoint(last, expect=meta)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        for n, s in state.get("pools", {}).items():
            pools[n].load_state_dict(s)
        set_rng_state(state["rng"])
        start, history = int(state["step"]), list(state.get("history", []))
        LOG.info("resumed stage %s from %s (step %d)", stage.name, last, start)

    params = [p for g in optimizer.param_groups for p in g["params"]]
    t0, samples = time.perf_counter(), 0
    progress = None
    if lead:
        from tqdm.auto import tqdm

        progress = tqdm(total=stage.steps, initial=start, desc=f"train {stage.name}", unit="step", mininterval=1.0)
    for step in range(start + 1, stage.steps + 1):
        name, rows = sampler.next()
        batch = make_batch(pairs[name].iloc[rows], name, cfg.datasets[name], item_texts)
        if name in pools:
            batch = with_negatives(batch, pools[name].draw(batch.query_keys.tolist()), cfg.datasets[name], item_texts)
        q, t, hn = _embed_batch(net, model, batch, one_forward=size > 1)
        terms = loss_fn(q, t, name, hard_negatives=hn, query_keys=batch.query_keys,
                        target_keys=batch.target_keys, hard_negative_keys=batch.negative_keys)
        summed = [v for k, v in terms.items() if k.endswith("_loss")]
        if not summed:
            raise RuntimeError(f"the loss returned no term ending in '_loss' (got {sorted(terms)})")
        loss = torch.stack(summed).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if size > 1:  # temperatures live outside DDP: average their gradients by hand
            for p in loss_fn.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= size
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        samples += len(batch) * size

        record = {"step": step, "dataset": name, "loss": float(loss.detach()), "lr": lr,
                  "grad_norm": float(grad_norm)}
        record.update({k: float(v.detach()) for k, v in terms.items()})
        record.update({f"temperature.{k}": v for k, v in loss_fn.temperatures.values().items() if k in pairs})
        record.update({f"count.{k}": float(v) for k, v in sampler.counts.items()})
        history.append(record)
        if lead:
            if log is not None:
                log({k: float(v) for k, v in record.items() if k not in ("step", "dataset")}, step)
            progress.set_postfix(loss=f"{record['loss']:.3f}", ds=name, refresh=False)
            progress.update(1)
        if step % stage.checkpoint_every == 0 and step < stage.steps and lead:
            save_checkpoint(ckpt_dir, step, {
                "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                "pools": {n: p.state_dict() for n, p in pools.items()}, "rng": rng_state(),
                "history": history, "meta": meta,
            })
        if size > 1 and step % stage.checkpoint_every == 0:
            dist.barrier()
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t0
    ran = stage.steps - start

    tail = [h["loss"] for h in history[-10:]]
    summary = {
        "stage": stage.name,
        "steps": stage.steps,
        "steps_run": ran,
        "resumed_from_step": start or None,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "final_loss_mean10": sum(tail) / len(tail) if tail else float("nan"),
        "seconds": seconds,
        "seconds_per_step": seconds / ran if ran else 0.0,
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "dataset_counts": dict(sampler.counts),
        "temperatures": loss_fn.temperatures.values(),
    }
    if lead:
        model_dir = model.save(out_dir / "model")
        (model_dir / TEMPERATURES_FILE).write_text(json.dumps(loss_fn.temperatures.values(), indent=2))
        write_train_metrics(out_dir, summary, history)
        if history:
            plot_loss_curve(out_dir, history, f"stage {stage.name}")
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if size > 1:
        dist.barrier()
    return summary
