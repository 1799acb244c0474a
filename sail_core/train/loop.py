"""One training loop for every stage: stages are config data (datasets, steps, lr, hard negatives).

Four verbs, torchtune-style: build or load the omni model, resume from the
last checkpoint if there is one, train, save. Each step samples one dataset
(stochastic specialisation); its rows are shown to the model under EVERY
modality pattern the dataset lists (dataset-driven pattern matching,
:mod:`sail_core.train.patterns`), all inputs of all patterns (queries, targets,
hard negatives) are embedded in one pass of the single tower, and the loss is
the sum over patterns and Matryoshka dims of InfoNCE with a learnable
temperature per dataset (:mod:`sail_core.losses.patterns`); a dataset with
``target_gradient: false`` detaches its targets (LiT-style locked targets). Frozen-tower media
features come from the per-data-folder cache (:mod:`sail_core.features.media_cache`).
The loop knows nothing of MLflow or Airflow: per-step metrics go through the
``log`` callback.

Distributed: under ``torchrun`` (process group initialised before the call,
:mod:`sail_core.train.distributed`) the model is wrapped in DDP (optionally with
ZeRO-1 optimizer sharding), negatives are gathered across ranks by the loss, each
rank takes its slice of the same global batch, and only rank 0 logs and writes;
the logged loss is the mean over ranks. A pair step's random draws (text-field
dropout, keyframes, hard negatives) are keyed by seed, step and sample, never by
rank, so N ranks with batch B train like one process with batch N x B when
dropout is off (tests/test_torchrun.py). Checkpoints hold every rank's RNG state.

Device and precision: ``train.device`` (cpu, cuda), ``train.precision`` (fp32,
bf16 autocast, pure bf16), ``model.gradient_checkpointing``, and
``train.grad_cache_chunk`` (GradCache, :mod:`sail_core.train.grad_cache`).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import zlib
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from transformers import get_cosine_schedule_with_warmup

from sail_core.config import CRE_TASKS, Config, StageConfig, embedding_width
from sail_core.losses.gather import world
from sail_core.losses.infonce import InfoNCELoss
from sail_core.losses.keys import side_key
from sail_core.losses.patterns import any_valid, pattern_losses
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.omni import MODEL_CONFIG, OmniEmbedder, build_model, load_model
from sail_core.train.checkpoint import (
    CHECKPOINTS,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sail_core.features.embed import embed_samples
from sail_core.train.curves import plot_loss_curve, write_train_metrics
from sail_core.train.hard_negatives import HardNegativePool
from sail_core.data.pair_data import load_hard_negatives, load_pairs
from sail_core.data.splits import train_items
from sail_core.train.aux_losses import AUX_FILE, AuxLosses, extra_patterns
from sail_core.rec.sequence_encoder import CRE_FILE
from sail_core.train.cre import CreTasks
from sail_core.train.distributed import all_ranks, autocast, mean_over_ranks, train_device
from sail_core.train.grad_cache import cached_embed
from sail_core.train.patterns import PatternBatch, build_pattern_batch
from sail_core.train.sampler import StochasticSpecialisationSampler
from sail_core.train.stage_weights import BALANCE_FILE, stage_weights

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
    unknown = [d for d in stage.datasets if d not in cfg.datasets and d not in CRE_TASKS]
    if unknown:
        raise ValueError(f"{where}.datasets: unknown {unknown}; configured datasets: {sorted(cfg.datasets)}")
    if not stage.datasets:
        raise ValueError(f"{where}.datasets is empty; list at least one dataset")
    if stage.warmup_steps >= stage.steps:
        raise ValueError(f"{where}.warmup_steps={stage.warmup_steps} must be below steps={stage.steps}")


def _loss_for(cfg: Config, model: OmniEmbedder, init_from: Path | None) -> InfoNCELoss:
    """One temperature per configured dataset; carried over from the previous stage when saved there."""
    inits = cfg.temperature_inits()
    saved = Path(init_from) / TEMPERATURES_FILE if init_from else None
    if saved and saved.exists():
        inits.update({k: v for k, v in json.loads(saved.read_text()).items() if k in inits})
    return InfoNCELoss(inits, dims=model.cfg.matryoshka_dims)


def load_initial_model(cfg: Config, init_from: Path | None) -> OmniEmbedder:
    """The previous stage's saved omni model, else ``build_model(cfg.model)`` (pretrained backbone)."""
    if init_from is None:
        return build_model(cfg.model)
    if not (Path(init_from) / MODEL_CONFIG).exists():
        raise FileNotFoundError(f"init_from {init_from} holds no saved omni model ({MODEL_CONFIG}); "
                                "point it at a stage's model/ folder")
    return load_model(init_from)


MEDIA_MODULES = ("perceiver.", "audio.", "media_type")


def _param_groups(model: OmniEmbedder, stage: StageConfig) -> list[dict]:
    """Backbone (and trainable towers) at ``lr``; the new media modules at ``media_lr`` when set."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if stage.media_lr is None:
        return [{"params": [p for _, p in trainable], "weight_decay": stage.weight_decay}]
    media = [p for n, p in trainable if n.startswith(MEDIA_MODULES)]
    rest = [p for n, p in trainable if not n.startswith(MEDIA_MODULES)]
    return [{"params": rest, "weight_decay": stage.weight_decay},
            {"params": media, "weight_decay": stage.weight_decay, "lr": stage.media_lr}]


def _no_op() -> None:
    return None


def build_optimizer(cfg: Config, stage: StageConfig, model: OmniEmbedder, loss_params: list):
    """AdamW over the model's groups (:func:`_param_groups`) and the loss's own parameters (temperatures, gates,
    CRE heads: no weight decay, ``temperature_lr``); fused on CUDA; ZeRO-1 sharded under torchrun when
    ``train.optimizer_sharding``."""
    temp_group = {"params": loss_params, "weight_decay": 0.0}
    if stage.temperature_lr is not None:
        temp_group["lr"] = stage.temperature_lr
    groups = _param_groups(model, stage) + [temp_group]
    fused = {"fused": True} if next(model.parameters()).device.type == "cuda" else {}
    if cfg.train.optimizer_sharding and world()[1] > 1:  # ZeRO-1: each rank keeps the AdamW states of its shard
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=stage.lr, **fused)
    return torch.optim.AdamW(groups, lr=stage.lr, **fused)


def step_loss(net, model: OmniEmbedder, loss_fn: InfoNCELoss, batch: PatternBatch, modes: dict, one_forward: bool,
               detach_targets: bool = False, aux: AuxLosses | None = None, precision=nullcontext,
               grad_cache_chunk: int | None = None):
    """Pattern-matched loss terms of one batch, plus the dataset's auxiliary terms (empty when no pattern had a
    valid row), and the function that finishes the backward after ``loss.backward()`` (GradCache's re-run of
    the chunks; a no-op otherwise)."""
    if not batch.samples or not any_valid(batch.pairs):
        return {}, _no_op
    finish = _no_op
    if grad_cache_chunk is not None:
        z, finish = cached_embed(net, model, batch.samples, modes, grad_cache_chunk, precision)
    else:
        with precision():
            z = embed_samples(net, model, batch.samples, modes, chunk=None if one_forward else 64).float()
    terms = pattern_losses(loss_fn, z, batch.dataset, batch.pairs, query_keys=batch.query_keys,
                           target_keys=batch.target_keys, negative_keys=batch.negative_keys,
                           detach_targets=detach_targets)
    if aux is not None:
        terms.update(aux(z, batch, loss_fn, detach_targets=detach_targets))
    return terms, finish


def backward_and_step(terms: dict, finish, optimizer, scheduler, params: list, grad_clip: float,
                      outside_ddp: list) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The second half of a training step: sum the ``*_loss`` terms, backward (and GradCache's ``finish``),
    average the gradients of the parameters that live outside DDP (temperatures, gates) over the ranks,
    clip, step the optimiser and the schedule. Returns ``(loss, grad norm, lr used)``."""
    summed = [v.float() for k, v in terms.items() if k.endswith("_loss")]
    loss = torch.stack(summed).sum() if summed else torch.zeros(())
    if summed:
        loss.backward()
        finish()
    _, size = world()
    if size > 1:
        for p in outside_ddp:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= size
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return loss, grad_norm, lr


def _sample_rng(seed: int, step: int, key: tuple) -> np.random.Generator:
    """The random draws of one training sample at one step: the same on any rank, in any batch."""
    return np.random.default_rng([seed, 3, step, zlib.crc32(repr(key).encode())])


def _pair_step(cfg: Config, name: str, frame, global_frame, pools: dict, inputs: ItemInputs, step: int,
               extras: dict, net, model, loss_fn: InfoNCELoss, modes: dict, size: int, aux: AuxLosses,
               precision) -> tuple[dict, int, object]:
    """A pair dataset's step: pattern batch (with mined negatives when the dataset has a pool) -> loss terms.

    Negatives are drawn for the whole step's rows (``global_frame``, identical on every rank) and this rank
    keeps its slice, so the draws do not depend on the number of ranks."""
    negatives = None
    if name in pools:
        drawn = pools[name].draw([side_key(r.get("query_item"), r.get("query_text"))
                                  for r in global_frame.to_dict("records")])
        start = (len(global_frame) // size) * world()[0]
        negatives = drawn[start : start + len(frame)]
    batch = build_pattern_batch(frame, name, cfg.datasets[name], inputs, train=True,
                                sample_rng=partial(_sample_rng, cfg.train.seed, step),
                                negatives=negatives, extra_patterns=extras[name])
    terms, finish = step_loss(net, model, loss_fn, batch, modes, one_forward=size > 1,
                               detach_targets=not cfg.datasets[batch.dataset].target_gradient, aux=aux,
                               precision=precision, grad_cache_chunk=cfg.train.grad_cache_chunk)
    return terms, len(batch), finish


def train_stage(
    cfg: Config,
    stage: StageConfig,
    data_dir: Path,
    out_dir: Path,
    init_from: Path | None = None,
    log: Logger | None = None,
    keep_checkpoints: bool = False,
    cache_dir: Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    negatives_dir: Path | None = None,
    teacher_dir: Path | None = None,
) -> dict:
    """Train one stage and save ``out_dir/model``; returns a summary dict.

    Args:
        cfg: the whole configuration (datasets, model, train.seed/threads).
        stage: the stage to run (``cfg.train.stages[i]``).
        data_dir: folder with ``items.parquet`` (+ the media its paths name) and ``pairs/<dataset>.parquet``.
        out_dir: receives ``checkpoints/``, ``model/``, ``train_metrics.json``, ``loss_curve.png``.
        init_from: a saved omni model folder (previous stage) to start from; else ``build_model(cfg.model)``.
        log: ``log(metrics, step)`` called every step on rank 0 (the tracking code passes MLflow's);
            names are unprefixed: ``loss``, ``nce_<pattern>_<dim>_loss`` (pattern name-safe, e.g.
            ``nce_image2text_384_loss``; only the step's dataset's patterns), ``lr``, ``grad_norm``,
            ``temperature.<dataset>``, ``count.<dataset>`` (cumulative steps drawn from it); with the first step
            after a resume, ``resumed_from_step`` (the checkpoint's step).
        keep_checkpoints: keep ``checkpoints/`` after a successful run (default: removed, the model is saved).
        cache_dir: frozen-tower feature cache (default ``$SAIL_HOME/features/<data folder hash>``).
        on_checkpoint: called on rank 0 with the ``checkpoints/`` folder after each checkpoint is saved
            (the pipeline copies it to the run's workspace, so that a retry on another worker resumes).
        negatives_dir: the folder holding ``hard_negatives/<dataset>.parquet`` (the ``mine`` step's output)
            for a stage with ``hard_negatives``; default ``data_dir``.
        teacher_dir: the teacher step's folder (``id_embeddings.parquet``) for a stage that lists the CRE
            tasks ``seq2item`` / ``id2item`` (:mod:`sail_core.train.cre`).

    Also logged per step: the auxiliary terms of the step's dataset (``cosent_<dim>_loss``, ``cosent_pairs``,
    ``micl_vision_loss``, ``micl_text_loss``, ``late_fusion_loss``, ``gate_mean``), ``weight.<dataset>`` (the
    sampling weights, balanced or configured) and ``hard_negatives.mined_share`` (mined, not random, share of
    the negatives drawn so far). The summary adds ``sampling_weights``, ``balance`` and ``hard_negatives``.
    """
    _check_stage(cfg, stage)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    rank, size = world()
    lead = rank == 0
    out_dir.mkdir(parents=True, exist_ok=True)

    if size > 1 and not lead:
        dist.barrier()  # rank 0 fills the media feature cache first; the others then read it
    inputs = ItemInputs.from_data_dir(data_dir, cfg.model, cache_dir, progress=lead,
                                      feature_threads=cfg.train.feature_threads)
    if size > 1 and lead:
        dist.barrier()
    modes = inputs.collate_modes
    seed_everything(cfg.train.seed)  # again: computing media features may have drawn from torch's RNG
    pairs = {name: load_pairs(data_dir, name, "train") for name in stage.datasets if name not in CRE_TASKS}
    empty = [n for n, p in pairs.items() if len(p) == 0]
    if empty:
        raise ValueError(f"stage {stage.name!r}: datasets {empty} have no train pairs in {data_dir}/pairs; "
                         "rebuild the data or drop them from the stage")
    pools: dict[str, HardNegativePool] = {}
    if stage.hard_negatives:
        negatives_from = train_items(data_dir, inputs.items)  # never a val/test item
        for n in stage.hard_negative_datasets:
            pools[n] = HardNegativePool(load_hard_negatives(Path(negatives_dir or data_dir), n), negatives_from,
                                        stage.hard_negatives, cfg.train.seed)

    device = train_device(cfg.train.device)
    model = load_initial_model(cfg, init_from).to(device)
    if cfg.train.precision == "bf16":
        model.to(torch.bfloat16)
    precision = partial(autocast, device, cfg.train.precision)
    cre = CreTasks(cfg, embedding_width(model.cfg), [n for n in stage.datasets if n in CRE_TASKS])
    cre_saved = Path(init_from) / CRE_FILE if init_from else None
    if cre_saved is not None and cre_saved.exists():  # an earlier CRE stage's sequence encoder and projection
        cre.load_state_dict(torch.load(cre_saved, weights_only=True))
    if cre.names:
        pairs.update(cre.prepare(model, inputs, data_dir, teacher_dir, out_dir))
        seed_everything(cfg.train.seed)
    weights, balance_record = stage_weights(cfg, stage, model, inputs, data_dir, init_from)
    seed_everything(cfg.train.seed)  # balancing may have drawn from torch's RNG
    sampler = StochasticSpecialisationSampler(
        {n: len(p) for n, p in pairs.items()}, weights, stage.batch_size, cfg.train.seed, rank, size,
    )
    model.train()
    loss_fn = _loss_for(cfg, model, init_from).to(device)
    aux = AuxLosses(cfg, embedding_width(model.cfg)).to(device)
    cre.to(device)
    aux_saved = Path(init_from) / AUX_FILE if init_from else None
    if aux_saved is not None and aux_saved.exists():  # the previous stage's late-fusion gates
        aux.load_state_dict(torch.load(aux_saved, weights_only=True), strict=False)
    aux_params = list(aux.parameters()) + (list(cre.parameters()) if cre.names else [])
    extras = {n: extra_patterns(cfg.datasets[n]) for n in stage.datasets if n not in CRE_TASKS}
    optimizer = build_optimizer(cfg, stage, model, list(loss_fn.parameters()) + aux_params)
    data_rng = np.random.default_rng([cfg.train.seed, 3, rank])  # CRE steps' field dropout and keyframes
    # linear warm-up from 0 to the peak over warmup_steps, then cosine to 0 at steps; its state is checkpointed
    scheduler = get_cosine_schedule_with_warmup(optimizer, stage.warmup_steps, stage.steps)
    # the backbone's pooler (and a modality absent from a step) is unused, hence find_unused_parameters
    net = model
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=True)

    ckpt_dir = out_dir / CHECKPOINTS
    meta = {"seed": cfg.train.seed, "steps": stage.steps, "stage": stage.name, "batch_size": stage.batch_size,
            "world_size": size}
    start, history = 0, []
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        state = load_checkpoint(last, expect=meta if size == 1 else {**meta, "world_size": size})
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        if "aux" in state:
            aux.load_state_dict(state["aux"])
        if "cre" in state:
            cre.load_state_dict(state["cre"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        if "data_rng" in state:
            data_rng.bit_generator.state = state["data_rng"]
        for n, s in state.get("pools", {}).items():
            pools[n].load_state_dict(s)
        ranks_rng = state.get("rank_rng") or [state["rng"]]
        set_rng_state(ranks_rng[rank] if len(ranks_rng) == size else state["rng"])
        start, history = int(state["step"]), list(state.get("history", []))
        LOG.info("resumed stage %s from %s (step %d)", stage.name, last, start)
    resumed = {"resumed_from_step": float(start)} if start else {}  # logged with the first step this try runs

    params = [p for g in optimizer.param_groups for p in g["params"]]
    t0, samples = time.perf_counter(), 0
    progress = None
    if lead:
        from tqdm.auto import tqdm

        progress = tqdm(total=stage.steps, initial=start, desc=f"train {stage.name}", unit="step", mininterval=1.0)
    for step in range(start + 1, stage.steps + 1):
        name, rows = sampler.next()
        frame = pairs[name].iloc[rows]
        optimizer.zero_grad(set_to_none=True)
        finish = _no_op
        if name in CRE_TASKS:
            with precision():
                terms = cre.terms(name, frame, net, model, inputs, loss_fn, data_rng, one_forward=size > 1)
            batch_len = len(frame)
        else:
            terms, batch_len, finish = _pair_step(cfg, name, frame, pairs[name].iloc[sampler.global_rows], pools,
                                                  inputs, step, extras, net, model, loss_fn, modes, size, aux,
                                                  precision)
        if not any(k.endswith("_loss") for k in terms):  # no row has any pattern's modalities: nothing to learn
            LOG.warning("step %d: no pattern of dataset %r applies to any row of the batch; update skipped", step, name)
        loss, grad_norm, lr = backward_and_step(terms, finish, optimizer, scheduler, params, stage.grad_clip,
                                                list(loss_fn.parameters()) + aux_params)
        samples += batch_len * size

        record = {"step": step, "dataset": name, "loss": mean_over_ranks(float(loss.detach())), "lr": lr,
                  "grad_norm": float(grad_norm)}
        record.update({k: float(v.detach()) for k, v in terms.items()})
        record.update({f"temperature.{k}": v for k, v in loss_fn.temperatures.values().items() if k in pairs})
        record.update({f"count.{k}": float(v) for k, v in sampler.counts.items()})
        record.update({f"weight.{k}": float(v) for k, v in weights.items()})
        if pools:
            mined = sum(p.drawn_mined for p in pools.values())
            record["hard_negatives.mined_share"] = mined / max(1, mined + sum(p.drawn_random for p in pools.values()))
        history.append(record)
        if lead:
            if log is not None:
                log({**{k: float(v) for k, v in record.items() if k not in ("step", "dataset")}, **resumed}, step)
                resumed = {}
            progress.set_postfix(loss=f"{record['loss']:.3f}", ds=name, refresh=False)
            progress.update(1)
        if step % stage.checkpoint_every == 0 and step < stage.steps:
            ranks_rng = all_ranks(rng_state())  # every rank's: a resumed N-process run continues exactly
            if hasattr(optimizer, "consolidate_state_dict"):  # ZeRO: gather the shards on rank 0 (all ranks call)
                optimizer.consolidate_state_dict(to=0)
        if step % stage.checkpoint_every == 0 and step < stage.steps and lead:
            save_checkpoint(ckpt_dir, step, {
                "model": model.state_dict(), "loss": loss_fn.state_dict(), "aux": aux.state_dict(),
                "cre": cre.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                "pools": {n: p.state_dict() for n, p in pools.items()}, "rng": ranks_rng[0], "rank_rng": ranks_rng,
                "data_rng": data_rng.bit_generator.state,
                "history": history, "meta": meta,
            })
            if on_checkpoint is not None:
                on_checkpoint(ckpt_dir)
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
        "sampling_weights": weights,
        "balance": balance_record,
        "hard_negatives": {n: p.stats() for n, p in pools.items()},
    }
    if lead:
        model_dir = model.save(out_dir / "model")
        (model_dir / TEMPERATURES_FILE).write_text(json.dumps(loss_fn.temperatures.values(), indent=2))
        if list(aux.parameters()):
            torch.save(aux.state_dict(), model_dir / AUX_FILE)
        if cre.names or (cre_saved is not None and cre_saved.exists()):  # carried to later stages and to evaluation
            torch.save(cre.state_dict(), model_dir / CRE_FILE)
        if balance_record is not None:
            (model_dir / BALANCE_FILE).write_text(json.dumps(balance_record, indent=2))
        write_train_metrics(out_dir, summary, history)
        if history:
            plot_loss_curve(out_dir, history, f"stage {stage.name}")
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if size > 1:
        dist.barrier()
    return summary
