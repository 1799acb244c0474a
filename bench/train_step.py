"""Training-step throughput on a GPU: the training loop's own step against plain transformers, same batch.

    python bench/train_step.py                                  # paper shape on CUDA -> bench/results/train_step.json
    python bench/train_step.py --precision bf16-autocast --grad-ckpt
    python bench/train_step.py --scale small --device cpu       # smoke run, < 1 min on 2 cores

Both sides see the same synthetic batch in the report's shape: ``--queries`` query/target
pairs (128 on CUDA), one pattern (``omni->omni``), 145 tokens per sequence = 1 audio token
+ 16 vision tokens + 128 instruction/text tokens ([CLS], the instruction, the text, [SEP]).
A *sample* here is one 145-token sequence, so a step embeds 2 x queries samples and
tokens/s = samples/s x 145 (``pairs_per_s`` = queries/s, the unit of ``train_stage``'s own
summary, is reported beside it).

- **ours**: exactly what one step of ``sail_core.train.loop.train_stage`` runs for a pair
  dataset in one process: ``optimizer.zero_grad``, then ``step_loss`` (collate the
  ``OmniSample`` list, embed it through the omni model under ``train.precision``'s autocast,
  in chunks of 64 as the loop does without DDP, or with GradCache when
  ``--grad-cache-chunk`` sets ``train.grad_cache_chunk``; pattern-matched Matryoshka
  InfoNCE with the dataset's learnable temperature; ``AuxLosses``) and
  ``backward_and_step`` (backward, clip at the stage's ``grad_clip``, the loop's AdamW
  with its parameter groups, the cosine schedule). The model is the ``paper`` profile's
  (Qwen2-1.5B-shaped bidirectional backbone, Perceiver, CLAP adapter, 3 Matryoshka dims)
  built as ``train_stage`` builds it, on the device, with ``model.inputs.field_dropout``
  0 (modality dropout would change the token count). The batch is a ``PatternBatch`` of
  ``OmniSample``s with *precomputed* media: the cover as SigLIP patch features (1024 x
  1024 at 448 px; the towers are frozen, as feature caching implies) and the audio as a
  CLAP clip vector (512); the dataset is ``copair_i2i`` reduced to its ``omni->omni``
  pattern with CoSENT, mICL and late fusion off (they would add views and patterns),
  no hard negatives. Host-side input assembly (``collate`` of a whole step, to the
  device) is also timed alone, outside the step, as ``collate_ms``.
- **reference**: transformers' ``Qwen2Model`` in the same shape (``qwen2_config`` of the
  same model config), made bidirectional the plain way (every attention module's
  ``is_causal`` = False, no attention mask, so SDPA may pick its flash kernel; checked
  before timing), on random ``inputs_embeds`` of 145 tokens, mean pooling, in-batch
  InfoNCE of the queries against the targets (tau 0.05), backward, clip at 1.0, AdamW
  (``fused=True`` on CUDA).

Precision (``--precision``, ``train.precision``'s values) applies to both sides: ``fp32``
(TF32 matmuls on CUDA), ``bf16-autocast`` (fp32 weights, bf16 autocast), ``bf16`` (pure
bf16 weights, gradients and AdamW states, plus autocast; the default on CUDA, as in the
reference setup). ``--grad-ckpt`` turns on activation checkpointing on both sides. On the
CPU, ``bf16`` stops in our model (the audio adapter's LayerNorm, bf16 weights, meets the
fp32 clip vectors, which CPU autocast does not cast; CUDA autocast runs LayerNorm in fp32),
so the CPU smoke runs ``fp32`` or ``bf16-autocast``.

Model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
forward + backward of one query/target pair of each side (no checkpointing, no GradCache,
so recomputation is not credited), halved and scaled to the samples per second; the
analytic ``6 N T`` of the backbone is printed beside it. MFU = achieved model FLOP/s /
the bf16 matmul peak measured in the same run (a timed 8192^3 bf16 matmul), CUDA only.
The ratio ours / reference is of samples/s; issue 13's target is >= 1.3x (reported,
never asserted). Each side runs its warm-up steps, then ``--steps`` timed steps, each
ending with a device synchronisation; the sides run one after the other, and ours is
freed before the reference is built.

Output: a CUDA run writes ``bench/results/train_step.json`` (with the GPU's name); a CPU
run writes ``--out``, by default ``bench/results/train_step_cpu_smoke.json``, and may not
write the GPU file. The H100 figures of the earlier, hand-written loop stay in
``bench/results/train_step.h100.json``.

Not run on a GPU since this rewrite: no GPU was lent in the session that wrote it, so the
CUDA path is checked by reading only (the CPU smoke runs the same code).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import get_cosine_schedule_with_warmup  # noqa: E402

from sail_core.config import Config, StageConfig, embedding_width, load_config  # noqa: E402
from sail_core.features.embed import forward as embed_forward, sample_lengths  # noqa: E402
from sail_core.losses.infonce import InfoNCELoss  # noqa: E402
from sail_core.losses.keys import key_tensor, side_key  # noqa: E402
from sail_core.losses.patterns import PatternPairs  # noqa: E402
from sail_core.model.assembly import OmniSample, collate  # noqa: E402
from sail_core.model.fusion import minilm_path, qwen2_config  # noqa: E402
from sail_core.model.omni import OmniEmbedder, build_model  # noqa: E402
from sail_core.preprocess.segments import SegmentTokenizer  # noqa: E402
from sail_core.train.aux_losses import AuxLosses  # noqa: E402
from sail_core.train.distributed import autocast  # noqa: E402
from sail_core.train.loop import backward_and_step, build_optimizer, step_loss  # noqa: E402
from sail_core.train.patterns import PatternBatch  # noqa: E402

AUDIO_TOKENS, VISION_TOKENS, TEXT_TOKENS = 1, 16, 128   # TEXT_TOKENS: [CLS] + instruction + text + [SEP]
TOKENS = AUDIO_TOKENS + VISION_TOKENS + TEXT_TOKENS
DATASET, PATTERN = "copair_i2i", "omni->omni"
REFERENCE_TAU = 0.05
TARGET_RATIO = 1.3
MODES = {"vision": "features", "audio": "feats"}       # collate: precomputed tower features
GPU_OUT = REPO / "bench" / "results" / "train_step.json"
CPU_OUT = REPO / "bench" / "results" / "train_step_cpu_smoke.json"
SMALL = {
    "model.qwen2": dict(hidden_size=128, layers=2, heads=4, kv_heads=2, intermediate_size=256),
    "model.matryoshka_dims": [128, 64, 32],
    "model.vision": dict(encoder="siglip", image_size=56, patch_size=14, hidden_size=64, layers=2, heads=2,
                         intermediate_size=128),
    "model.perceiver": dict(latents=VISION_TOKENS, dim=64, depth=2, heads=4, ff_mult=2, max_frames=4),
    "model.audio": dict(
        encoder="clap", adapter_hidden=128,
        clap=dict(hidden_size=64, patch_embeds_hidden_size=32, depths=[1, 1], heads=[2, 4], window_size=4,
                  num_mel_bins=16, spec_size=32, projection_dim=64),
    ),
}


# -- set-up -------------------------------------------------------------------------------------
def bench_config(scale: str, device: str, precision: str, grad_ckpt: bool,
                 grad_cache_chunk: int | None, steps: int) -> tuple[Config, StageConfig]:
    """The ``paper`` profile (or its small smoke shape) with one dataset, one pattern, frozen towers."""
    overrides = {
        "model.inputs.field_dropout": 0.0,
        "model.gradient_checkpointing": grad_ckpt,
        f"datasets.{DATASET}.patterns": [PATTERN],
        f"datasets.{DATASET}.cosent_weight": 0.0,
        f"datasets.{DATASET}.micl_weight": 0.0,
        f"datasets.{DATASET}.late_fusion_weight": 0.0,
        "train.device": device,
        "train.precision": precision,
        "train.grad_cache_chunk": grad_cache_chunk,
    }
    if scale == "small":
        overrides.update(SMALL)
    # precomputed features come from frozen towers (set after SMALL, which replaces the sections)
    overrides.update({"model.vision.frozen": True, "model.audio.frozen": True})
    cfg = load_config(profile="paper", overrides=overrides)
    if cfg.model.perceiver.latents != VISION_TOKENS:
        raise ValueError(f"model.perceiver.latents is {cfg.model.perceiver.latents}; the bench's shape needs "
                         f"{VISION_TOKENS} vision tokens")
    stage = cfg.train.stages[0].model_copy(update={
        "name": "bench", "datasets": [DATASET], "steps": steps + 1, "warmup_steps": 1, "hard_negatives": 0,
        "hard_negative_datasets": []})
    return cfg, stage


def filler_words(model: OmniEmbedder) -> list[str]:
    """Vocabulary words that the tokenizer keeps as exactly one token each (so a text's length is exact)."""
    vocab = model.tokenizer.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3)
    ids = model.tokenizer.tokenizer.encode_batch(words, add_special_tokens=False)
    return [w for w, e in zip(words, ids) if len(e.ids) == 1]


def synthetic_batch(model: OmniEmbedder, cfg: Config, queries: int, rng: np.random.Generator) -> PatternBatch:
    """``queries`` omni->omni pairs: 2 x ``queries`` distinct samples of exactly ``TOKENS`` tokens each."""
    ds = cfg.datasets[DATASET]
    tok = model.tokenizer
    words = filler_words(model)
    n_patches = (cfg.model.vision.image_size // cfg.model.vision.patch_size) ** 2
    samples = []
    for instruction in [ds.query_instruction] * queries + [ds.target_instruction] * queries:
        _, instr_mask = tok.instructions([instruction])
        n_text = TEXT_TOKENS - int(instr_mask.sum()) - 1   # minus [CLS]+instruction, minus [SEP]
        samples.append(OmniSample(
            instruction=instruction,
            text=" ".join(rng.choice(words, n_text)),
            audio=rng.standard_normal(model.audio.in_dim, dtype=np.float32),
            cover=rng.standard_normal((n_patches, model.vision_tower.out_dim), dtype=np.float32),
        ))
    lengths = sample_lengths(model, samples)
    if set(lengths) != {TOKENS}:
        raise RuntimeError(f"synthetic samples have {sorted(set(lengths))} tokens, expected {TOKENS} each; "
                           "the tokenizer split a filler word or truncated the text (check model.max_length)")
    pairs = PatternPairs(PATTERN, torch.arange(queries), torch.arange(queries, 2 * queries))
    return PatternBatch(DATASET, samples, [pairs],
                        query_keys=key_tensor([side_key(f"bench-query-{i}", None) for i in range(queries)]),
                        target_keys=key_tensor([side_key(f"bench-target-{i}", None) for i in range(queries)]))


def measured_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    """bf16 matmul FLOP/s measured now on this GPU (TFLOP/s)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def counted_flops(fn) -> float:
    """Model FLOPs of ``fn()`` (forward and backward inside it), counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # one context for both passes: re-entering a FlopCounterMode resets its counts
        fn()
    return float(counter.get_total_flops())


def backbone_6nt(backbone: torch.nn.Module) -> float:
    """Analytic training FLOPs of one sample: 6 x non-embedding backbone parameters x tokens."""
    return 6.0 * sum(p.numel() for n, p in backbone.named_parameters() if "embed" not in n) * TOKENS


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, warmup: int, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``steps`` steps after ``warmup`` untimed ones; each step ends synchronised."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


# -- the two sides ------------------------------------------------------------------------------
def run_ours(cfg: Config, stage: StageConfig, device: torch.device, queries: int, warmup: int, steps: int,
             one_forward: bool) -> dict:
    """The loop's step (``step_loss`` + ``backward_and_step``) on the synthetic pattern batch."""
    with torch.device(device):  # random weights initialised on the device itself (not timed)
        model = build_model(cfg.model)
    model.to(device)
    if cfg.train.precision == "bf16":
        model.to(torch.bfloat16)
    precision = partial(autocast, device, cfg.train.precision)
    model.train()
    loss_fn = InfoNCELoss(cfg.temperature_inits(), dims=model.cfg.matryoshka_dims).to(device)
    aux = AuxLosses(cfg, embedding_width(model.cfg)).to(device)
    aux_params = list(aux.parameters())
    optimizer = build_optimizer(cfg, stage, model, list(loss_fn.parameters()) + aux_params)
    scheduler = get_cosine_schedule_with_warmup(optimizer, stage.warmup_steps, stage.steps)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    detach = not cfg.datasets[DATASET].target_gradient
    rng = np.random.default_rng(0)

    def loss_terms(batch: PatternBatch, chunk: int | None):
        return step_loss(model, model, loss_fn, batch, MODES, one_forward, detach_targets=detach, aux=aux,
                         precision=precision, grad_cache_chunk=chunk)

    def one_pair_pass() -> None:  # model FLOPs: no checkpointing, no GradCache
        terms, _ = loss_terms(synthetic_batch(model, cfg, 1, rng), None)
        torch.stack([v.float() for k, v in terms.items() if k.endswith("_loss")]).sum().backward()

    model.set_gradient_checkpointing(False)
    flops = counted_flops(one_pair_pass) / 2
    model.set_gradient_checkpointing(cfg.model.gradient_checkpointing)
    model.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)

    batch = synthetic_batch(model, cfg, queries, rng)
    sync(device)
    t0 = time.perf_counter()
    collated = collate(batch.samples, model.tokenizer, **MODES)
    if device.type != "cpu":
        collated = {k: v.to(device, non_blocking=True) for k, v in collated.items()}
    sync(device)
    collate_ms = 1000 * (time.perf_counter() - t0)
    del collated
    last = {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        terms, finish = loss_terms(batch, cfg.train.grad_cache_chunk)
        last["loss"], _, _ = backward_and_step(terms, finish, optimizer, scheduler, params, stage.grad_clip,
                                               list(loss_fn.parameters()) + aux_params)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = timed(step, warmup, steps, device)
    row = {
        "side": "ours",
        "what": "sail_core.train.loop.step_loss + backward_and_step (omni model on precomputed media features)",
        "optimizer": "torch.optim.AdamW as train_stage builds it (its parameter groups; torch's default kernel)",
        "embed": f"GradCache, chunks of {cfg.train.grad_cache_chunk}" if cfg.train.grad_cache_chunk
        else ("one forward" if one_forward else "chunks of 64 (the loop without DDP)"),
        "collate_ms": collate_ms,
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "analytic_6NT_flop_per_sample": backbone_6nt(model.backbone),
    }
    row.update(figures(times, 2 * queries, flops, float(last["loss"].detach()), device))
    del model, optimizer, scheduler, loss_fn, aux, params, batch, last
    free(device)
    return row


def check_bidirectional(model: torch.nn.Module, hidden: int, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a causal reference: changing the LAST token must change the FIRST token's output."""
    with torch.no_grad():
        x = torch.randn(1, 8, hidden, device=device, dtype=dtype)
        y = x.clone()
        y[:, -1] += 1.0
        first = [model(inputs_embeds=v, use_cache=False).last_hidden_state[0, 0].float() for v in (x, y)]
    if torch.allclose(first[0], first[1]):
        raise RuntimeError(f"the reference Qwen2Model is causal under transformers {transformers.__version__}: "
                           "is_causal=False on its attention modules did not make SDPA bidirectional")


def run_reference(cfg: Config, device: torch.device, queries: int, warmup: int, steps: int, vocab: int) -> dict:
    """Plain transformers: bidirectional Qwen2Model on inputs_embeds, mean pooling, in-batch InfoNCE, fused AdamW."""
    from transformers import Qwen2Model

    cuda = device.type == "cuda"
    precision = cfg.train.precision
    with torch.device(device):
        model = Qwen2Model(qwen2_config(cfg.model, vocab))
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model.to(dtype)
    model.train()
    hidden = model.config.hidden_size
    check_bidirectional(model, hidden, device, dtype)
    ctx = partial(autocast, device, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    labels = torch.arange(queries, device=device)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        with ctx():
            h = model(inputs_embeds=x, use_cache=False).last_hidden_state
        z = F.normalize(h.float().mean(dim=1), dim=-1)
        n = x.shape[0] // 2
        return F.cross_entropy(z[:n] @ z[n:].T / REFERENCE_TAU, labels[:n])

    gen = torch.Generator().manual_seed(0)
    flops = counted_flops(lambda: loss_of(torch.randn(2, TOKENS, hidden, generator=gen).to(device, dtype)).backward()) / 2
    model.zero_grad(set_to_none=True)
    if cfg.model.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(params, lr=cfg.train.stages[0].lr, weight_decay=cfg.train.stages[0].weight_decay,
                                  fused=cuda)
    x = torch.randn(2 * queries, TOKENS, hidden, generator=gen).to(device, dtype)
    last = {}

    def step() -> None:
        last["loss"] = loss_of(x)
        last["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = timed(step, warmup, steps, device)
    row = {
        "side": "reference",
        "what": "transformers Qwen2Model (is_causal False, no mask) on inputs_embeds, mean pooling, in-batch InfoNCE",
        "optimizer": f"torch.optim.AdamW(fused={cuda})",
        "trainable_params": sum(p.numel() for p in params),
        "analytic_6NT_flop_per_sample": backbone_6nt(model),
    }
    row.update(figures(times, 2 * queries, flops, float(last["loss"].detach()), device))
    del model, optimizer, x, last
    free(device)
    return row


def figures(times: list[float], samples_per_step: int, flops_per_sample: float, loss: float,
            device: torch.device) -> dict:
    elapsed = sum(times)
    sps = samples_per_step * len(times) / elapsed
    return {
        "samples_per_step": samples_per_step,
        "steps": len(times),
        "step_ms": 1000 * elapsed / len(times),
        "samples_per_s": sps,
        "pairs_per_s": sps / 2,
        "tokens_per_s": sps * TOKENS,
        "loss": loss,
        "model_flop_per_sample": flops_per_sample,
        "achieved_tflops": flops_per_sample * sps / 1e12,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def guarded(side: str, fn, device: torch.device) -> dict:
    """``fn()``'s row, or a row that names the out-of-memory error (the other side still runs)."""
    try:
        return fn()
    except torch.OutOfMemoryError as err:
        message = f"out of memory: {str(err).splitlines()[0]}; try --grad-ckpt, --grad-cache-chunk or fewer --queries"
    free(device)  # outside the handler: the traceback (and the side's tensors in its frames) is gone by now
    return {"side": side, "error": message}


# -- main ---------------------------------------------------------------------------------------
def print_row(r: dict, peak: float | None) -> None:
    if "error" in r:
        print(f"  {r['side']:<10} {r['error']}")
        return
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a (no GPU)"
    mem = f"  {r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else ""
    print(f"  {r['side']:<10} {r['step_ms']:9.1f} ms/step  {r['samples_per_s']:9.1f} samples/s  "
          f"{r['tokens_per_s']:11.0f} tokens/s  {r['model_flop_per_sample'] / 1e9:9.2f} GFLOP/sample "
          f"(6NT {r['analytic_6NT_flop_per_sample'] / 1e9:.2f})  {r['achieved_tflops']:8.3f} TFLOP/s  MFU {mfu}{mem}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["paper", "small"], default="paper", help="paper = the paper profile; small = CPU smoke size")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--queries", type=int, default=None, help="query/target pairs per step (default 128 on CUDA, 4 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side (default 10 on CUDA, 5 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 on CUDA, 2 on CPU)")
    ap.add_argument("--precision", choices=["fp32", "bf16-autocast", "bf16"], default=None,
                    help="train.precision for both sides (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing on both sides")
    ap.add_argument("--grad-cache-chunk", type=int, default=None, help="ours: train.grad_cache_chunk (GradCache)")
    ap.add_argument("--one-forward", action="store_true",
                    help="ours: one forward of the whole batch (the loop does so under DDP) instead of chunks of 64")
    ap.add_argument("--out", default=None, help=f"JSON path (CUDA: {GPU_OUT.relative_to(REPO)}; CPU default: "
                                                f"{CPU_OUT.relative_to(REPO)})")
    args = ap.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    if cuda and device.index is None:  # torch.cuda.set_device refuses a CUDA device without an index
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(args.out) if args.out else (GPU_OUT if cuda else CPU_OUT)
    if not cuda and out.resolve() == GPU_OUT.resolve():
        ap.error(f"{GPU_OUT.relative_to(REPO)} holds GPU figures only; give a CPU run another --out")
    queries = args.queries or (128 if cuda else 4)
    steps = args.steps or (10 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 2)
    precision = args.precision or ("bf16" if cuda else "fp32")
    if queries < 2:
        ap.error("--queries must be at least 2 (in-batch negatives)")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    cfg, stage = bench_config(args.scale, "cuda" if cuda else "cpu", precision, args.grad_ckpt,
                              args.grad_cache_chunk, warmup + steps)
    torch.manual_seed(0)
    peak = measured_peak_tflops(device) if cuda else None
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine() or "cpu"
    print(f"device {device} ({name}), scale {args.scale}, precision {precision}, {queries} queries + {queries} "
          f"targets x {TOKENS} tokens, pattern {PATTERN}" + (f", measured bf16 matmul peak {peak:.0f} TFLOP/s" if peak else ""))

    t0 = time.perf_counter()
    ours = guarded("ours", lambda: run_ours(cfg, stage, device, queries, warmup, steps, args.one_forward), device)
    vocab = omni_vocab_size(cfg)
    reference = guarded("reference", lambda: run_reference(cfg, device, queries, warmup, steps, vocab), device)
    for r in (ours, reference):
        if "error" not in r:
            r["mfu"] = r["achieved_tflops"] / peak if peak else None
        print_row(r, peak)
    ratio = None
    if "error" not in ours and "error" not in reference:
        ratio = ours["samples_per_s"] / reference["samples_per_s"]
        print(f"  ours / reference: {ratio:.2f}x samples/s (issue 13 target >= {TARGET_RATIO}x; not asserted)")

    result = {
        "bench": "train_step",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scale": args.scale,
        "device": str(device),
        "device_name": name,
        "gpu_run": cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "precision": precision,
        "gradient_checkpointing": args.grad_ckpt,
        "grad_cache_chunk": args.grad_cache_chunk,
        "dataset": DATASET,
        "pattern": PATTERN,
        "queries": queries,
        "warmup_steps": warmup,
        "tokens_per_sample": {"audio": AUDIO_TOKENS, "vision": VISION_TOKENS, "instruction_and_text": TEXT_TOKENS,
                              "total": TOKENS},
        "measured_bf16_peak_tflops": peak,
        "model": cfg.model.model_dump(include={"backbone", "attn_implementation", "qwen2", "vision", "perceiver",
                                               "audio", "matryoshka_dims"}),
        "ours": ours,
        "reference": reference,
        "ratio_ours_over_reference": ratio,
        "ratio_of": "samples_per_s",
        "target_ratio": TARGET_RATIO,
        "target_met": None if ratio is None else ratio >= TARGET_RATIO,
        "seconds": time.perf_counter() - t0,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def omni_vocab_size(cfg: Config) -> int:
    """The Qwen2 shape's ``vocab_size`` as ``build_model`` sets it: the packaged tokenizer's."""
    return SegmentTokenizer(minilm_path() / "tokenizer.json", cfg.model.max_length).vocab_size


if __name__ == "__main__":
    main()
