"""Training-step throughput of the ``paper``-shaped omni encoder: samples/s and model FLOPs utilisation.

One step = forward of ``batch`` sequences (the first half queries, the second
half their targets), a Matryoshka InfoNCE loss on the query/target embeddings,
backward, and AdamW (fused on CUDA). Inputs are synthetic, in the report's
shape: 145 tokens per sample = 1 audio token + 16 vision tokens + 128
instruction/text tokens. On CUDA: SDPA, bf16 autocast, and by default pure
bf16 weights/grads/AdamW states (``--precision bf16``, as in the reference; a
Qwen2-1.5B shape at batch 128 without checkpointing does not fit 80 GB with
fp32 master weights) or fp32 weights + autocast (``--precision amp``).

Modes (``--modes``, all by default):

- ``backbone``: the fusion backbone alone on ready ``inputs_embeds`` (the
  reference setup: a Qwen2-1.5B-shaped backbone, 145 tokens/sample);
- ``precomputed``: the whole model without its towers: precomputed ViT tokens
  through the Perceiver, a precomputed CLAP vector through the adapter, text
  through the word embeddings, then the backbone;
- ``full``: also the ViT (448 px cover) and CLAP (one 10 s chunk) towers,
  trained (``--full-batch``, activation checkpointing by default).

Model FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
forward+backward of a single query/target pair (no activation checkpointing, so
recomputation is not credited) and scaled to the batch; the analytic ``6 N T``
of the backbone is printed beside it. MFU = achieved model FLOP/s / the bf16
matmul peak measured in the same run (a timed 8192^3 bf16 matmul), CUDA only.

Reference (H100, plain transformers, eager SDPA bf16, fused AdamW, Qwen2-1.5B
shape, 145 tokens/sample, batch 128): about 316 samples/s, 46% of the measured
bf16 matmul peak.

    python bench/train_step.py                       # paper shape on CUDA
    python bench/train_step.py --scale small --device cpu   # smoke run, < 1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sail_core.config import load_config  # noqa: E402
from sail_core.model.omni import OmniEmbedder, build_model  # noqa: E402
from sail_core.model.pooling import matryoshka, mean_tanh_pool  # noqa: E402

AUDIO_TOKENS, VISION_TOKENS, TEXT_TOKENS = 1, 16, 128
SMALL = {
    "model.qwen2": dict(hidden_size=128, layers=2, heads=4, kv_heads=2, intermediate_size=256),
    "model.matryoshka_dims": [128, 64, 32],
    "model.vision": dict(encoder="siglip", image_size=56, patch_size=14, hidden_size=64, layers=2, heads=2, intermediate_size=128, frozen=False),
    "model.perceiver": dict(latents=16, dim=64, depth=2, heads=4, ff_mult=2, max_frames=4),
    "model.audio": dict(
        encoder="clap", adapter_hidden=128, frozen=False,
        clap=dict(hidden_size=64, patch_embeds_hidden_size=32, depths=[1, 1], heads=[2, 4], window_size=4, num_mel_bins=16, spec_size=32, projection_dim=64),
    ),
}


def infonce_mrl(z: torch.Tensor, dims: list[int], tau: float = 0.05) -> torch.Tensor:
    """Symmetric in-batch InfoNCE of queries z[:n] against targets z[n:], summed over Matryoshka dims."""
    n = z.shape[0] // 2
    labels = torch.arange(n, device=z.device)
    loss = z.new_zeros(())
    for d in dims:
        q, t = matryoshka(z[:n], d), matryoshka(z[n:], d)
        logits = q @ t.T / tau
        loss = loss + 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    return loss


def synthetic_batch(model: OmniEmbedder, mode: str, b: int, device: torch.device, gen: torch.Generator) -> dict:
    """145 tokens/sample: [CLS] + 1 audio + 16 vision + 126 text + [SEP]."""
    cfg = model.cfg
    vocab = model.backbone.word_embeddings.num_embeddings
    tok = model.tokenizer
    if mode == "backbone":
        n = AUDIO_TOKENS + VISION_TOKENS + TEXT_TOKENS
        return {"inputs_embeds": torch.randn(b, n, model.dim, generator=gen).to(device), "mask": torch.ones(b, n, dtype=torch.long, device=device)}
    batch = {
        "instr_ids": torch.full((b, 1), tok.cls_id),
        "instr_mask": torch.ones(b, 1, dtype=torch.long),
        "text_ids": torch.randint(1000, vocab, (b, TEXT_TOKENS - 2), generator=gen),
        "text_mask": torch.ones(b, TEXT_TOKENS - 2, dtype=torch.long),
        "audio_mask": torch.ones(b, dtype=torch.bool),
        "cover_mask": torch.ones(b, dtype=torch.bool),
    }
    if mode == "precomputed":
        tower = model.vision_tower
        n_patches = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
        batch["cover_feats"] = torch.randn(b, n_patches, tower.out_dim, generator=gen)
        batch["audio_feats"] = torch.randn(b, model.audio.in_dim, generator=gen)
    else:
        s, c = cfg.vision.image_size, cfg.audio.clap
        batch["cover_pixels"] = torch.rand(b, 3, s, s, generator=gen) * 2 - 1
        frames = c.spec_size * (c.spec_size // c.num_mel_bins)
        batch["audio_chunks"] = torch.randn(b, 1, min(frames, 1001), c.num_mel_bins, generator=gen)
        batch["audio_chunk_index"] = torch.arange(b)
    return {k: v.to(device) for k, v in batch.items()}


def cast_floats(batch: dict, dtype: torch.dtype) -> dict:
    """Floating inputs in the model's dtype (pure-bf16 runs)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def embed(model: OmniEmbedder, mode: str, batch: dict) -> torch.Tensor:
    if mode == "backbone":
        h = model.backbone(batch["inputs_embeds"], batch["mask"])
        return F.normalize(mean_tanh_pool(h, batch["mask"]).float(), dim=-1)
    return model(batch)


def trainable(model: OmniEmbedder, mode: str) -> list[torch.nn.Parameter]:
    if mode == "backbone":
        return [p for p in model.backbone.parameters() if p.requires_grad]
    skip = () if mode == "full" else ("vision_tower.", "audio.tower.")
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)]


def measured_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    """bf16 matmul FLOP/s measured now on this GPU (TFLOP/s)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def count_step_flops(model: OmniEmbedder, mode: str, device, autocast, gen) -> float:
    """Model FLOPs of forward+backward for ONE sample (counted on a query/target pair, halved)."""
    from torch.utils.flop_counter import FlopCounterMode

    ckpt = model.gradient_checkpointing
    model.set_gradient_checkpointing(False)
    batch = cast_floats(synthetic_batch(model, mode, 2, device, gen), model.dtype_)
    counter = FlopCounterMode(display=False)
    with counter:  # one context for both passes: re-entering a FlopCounterMode resets its counts
        with autocast():
            loss = infonce_mrl(embed(model, mode, batch), model.cfg.matryoshka_dims)
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.set_gradient_checkpointing(ckpt)
    return counter.get_total_flops() / 2


def run_mode(model, mode, batch_size, steps, warmup, device, grad_ckpt, peak, gen) -> dict:
    cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    model.set_gradient_checkpointing(grad_ckpt)
    model.train()
    params = trainable(model, mode)
    flops_per_sample = count_step_flops(model, mode, device, autocast, gen)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4, fused=cuda)
    batch = cast_floats(synthetic_batch(model, mode, batch_size, device, gen), model.dtype_)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        with autocast():
            loss = infonce_mrl(embed(model, mode, batch), model.cfg.matryoshka_dims)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    elapsed = sum(times)
    sps = batch_size * steps / elapsed
    tokens = AUDIO_TOKENS + VISION_TOKENS + TEXT_TOKENS
    backbone_params = sum(p.numel() for n, p in model.backbone.named_parameters() if "embed" not in n)
    achieved = flops_per_sample * sps / 1e12
    del opt
    return {
        "mode": mode,
        "batch": batch_size,
        "steps": steps,
        "gradient_checkpointing": grad_ckpt,
        "precision": "pure bf16 weights + bf16 autocast" if model.dtype_ == torch.bfloat16 else ("fp32 weights + bf16 autocast" if cuda else "fp32"),
        "step_ms": 1000 * elapsed / steps,
        "samples_per_s": sps,
        "tokens_per_s": sps * tokens,
        "loss": float(loss.detach()),
        "trainable_params": sum(p.numel() for p in params),
        "model_tflop_per_sample": flops_per_sample / 1e12,
        "analytic_6NT_tflop_per_sample": 6 * backbone_params * tokens / 1e12,
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["paper", "small"], default="paper", help="paper = the params.yaml paper profile; small = CPU smoke size")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, default=None, help="samples per step for backbone/precomputed (default 128 on CUDA, 8 on CPU)")
    ap.add_argument("--full-batch", type=int, default=None, help="samples per step in full mode (default 32 on CUDA, 4 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on CUDA, 2 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 on CUDA, 1 on CPU)")
    ap.add_argument("--modes", default="backbone,precomputed,full")
    ap.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing in backbone/precomputed modes")
    ap.add_argument("--no-full-grad-ckpt", action="store_true", help="no activation checkpointing in full mode")
    ap.add_argument("--precision", choices=["bf16", "amp"], default="bf16",
                    help="CUDA: bf16 = weights, grads and AdamW states in bf16 (the reference setup); amp = fp32 weights + bf16 autocast")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the packaged MiniLM's)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_step.json"))
    args = ap.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    batch = args.batch or (128 if cuda else 8)
    full_batch = args.full_batch or (32 if cuda else 4)
    steps = args.steps or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = set(modes) - {"backbone", "precomputed", "full"}
    if bad:
        ap.error(f"unknown --modes {sorted(bad)}; allowed: backbone, precomputed, full")
    if batch < 2 or batch % 2 or full_batch < 2 or full_batch % 2:
        ap.error("--batch and --full-batch must be even (half queries, half targets)")

    overrides = {"model.inputs.field_dropout": 0.0, "model.gradient_checkpointing": False}
    if args.scale == "small":
        overrides.update(SMALL)
    cfg = load_config(profile="paper", overrides=overrides).model
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the random weights on the device itself
        model = build_model(cfg, tokenizer_file=args.tokenizer)
    model.dtype_ = torch.bfloat16 if cuda and args.precision == "bf16" else torch.float32
    model.to(model.dtype_)
    build_s = time.perf_counter() - t0
    peak = measured_peak_tflops(device) if cuda else None
    print(f"device {device} ({torch.cuda.get_device_name(device) if cuda else platform.processor() or 'cpu'}), "
          f"scale {args.scale}, built in {build_s:.1f}s" + (f", measured bf16 matmul peak {peak:.0f} TFLOP/s" if peak else ""))

    rows = []
    for mode in modes:
        b = full_batch if mode == "full" else batch
        ckpt = (not args.no_full_grad_ckpt) if mode == "full" else args.grad_ckpt
        try:
            rows.append(run_mode(model, mode, b, steps, warmup, device, ckpt, peak, gen))
        except torch.OutOfMemoryError as err:
            rows.append({"mode": mode, "batch": b, "error": f"out of memory: {str(err).splitlines()[0]}"})
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        r = rows[-1]
        if "error" in r:
            print(f"  {mode:<12} batch {b:>4}: {r['error']}")
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no GPU)"
            print(f"  {mode:<12} batch {b:>4}  ckpt {str(ckpt):<5}  {r['step_ms']:8.1f} ms/step  {r['samples_per_s']:8.1f} samples/s  "
                  f"{r['model_tflop_per_sample'] * 1e3:8.3f} GFLOP/sample (6NT {r['analytic_6NT_tflop_per_sample'] * 1e3:.3f})  "
                  f"{r['achieved_tflops']:7.2f} TFLOP/s  MFU {mfu}")

    result = {
        "bench": "train_step",
        "scale": args.scale,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": args.precision if cuda else "fp32",
        "attn_implementation": cfg.attn_implementation,
        "tokens_per_sample": {"audio": AUDIO_TOKENS, "vision": VISION_TOKENS, "text": TEXT_TOKENS},
        "measured_bf16_peak_tflops": peak,
        "model": cfg.model_dump(include={"backbone", "qwen2", "vision", "perceiver", "audio", "matryoshka_dims"}),
        "reference": {"device": "H100", "mode": "backbone", "batch": 128, "samples_per_s": 316, "mfu": 0.46},
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
