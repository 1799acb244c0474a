"""bench/train_step.py's CPU smoke runs both sides (the loop's step, plain transformers) and writes a coherent JSON.

The smoke shape (``--scale small --device cpu``, 4 queries, one warm-up and two timed steps per side)
in a subprocess, as a user runs it. Checked: both rows trained (samples/s > 0, a finite loss), tokens/s
is samples/s x 145 (1 audio + 16 vision + 128 instruction/text tokens per sample), the ratio is the
quotient of the two samples/s, FLOPs were counted (the reference's agree with the backbone's 6NT within
10%), no MFU without a GPU, and the GPU results file cannot be written from a CPU run. No timing is
asserted: the figures are the bench's to report, not the test's to judge.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "train_step.py"

pytestmark = pytest.mark.slow


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), "--scale", "small", "--device", "cpu", *args], cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)


def test_cpu_smoke_writes_both_rows_and_their_ratio(tmp_path):
    out = tmp_path / "train_step.json"
    done = run_bench(tmp_path, "--queries", "4", "--warmup", "1", "--steps", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["gpu_run"] is False and result["measured_bf16_peak_tflops"] is None
    assert result["pattern"] == "omni->omni" and result["precision"] == "fp32" and result["queries"] == 4
    assert result["tokens_per_sample"]["total"] == 145
    for side in ("ours", "reference"):
        row = result[side]
        assert row["side"] == side and "error" not in row
        assert row["samples_per_s"] > 0 and math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["samples_per_step"] == 8 and row["steps"] == 2
        assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * 145, rel=1e-12)
        assert row["model_flop_per_sample"] > 0 and row["mfu"] is None and row["peak_mem_gib"] is None
    ref = result["reference"]
    assert abs(ref["model_flop_per_sample"] / ref["analytic_6NT_flop_per_sample"] - 1) < 0.10
    # ours also runs the Perceiver and the audio adapter: more counted FLOPs than the bare backbone
    assert result["ours"]["model_flop_per_sample"] > ref["model_flop_per_sample"]
    assert result["ratio_ours_over_reference"] == pytest.approx(
        result["ours"]["samples_per_s"] / ref["samples_per_s"], rel=1e-12)
    assert result["target_met"] == (result["ratio_ours_over_reference"] >= result["target_ratio"])
    assert "ours / reference" in done.stdout


def test_cpu_run_refuses_the_gpu_results_file(tmp_path):
    done = run_bench(tmp_path, "--out", str(REPO / "bench" / "results" / "train_step.json"))
    assert done.returncode == 2 and "GPU figures only" in done.stderr
