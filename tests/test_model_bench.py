"""bench/train_step.py runs on CPU at --scale small and counts model FLOPs like 6·N·T."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_train_step_bench_small_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("train_step", REPO / "bench" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ts.json"
    result = bench.main(["--scale", "small", "--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "4", "--full-batch", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"]))
    rows = {r["mode"]: r for r in saved["results"]}
    assert set(rows) == {"backbone", "precomputed", "full"} and not any("error" in r for r in rows.values())
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["mfu"] is None  # no GPU here: no MFU
    # counted FLOPs of the backbone-only step agree with the analytic 6·N·T within 10%
    b = rows["backbone"]
    assert abs(b["model_tflop_per_sample"] / b["analytic_6NT_tflop_per_sample"] - 1) < 0.10
    # the full step also trains the towers: more trainable parameters and FLOPs
    assert rows["full"]["trainable_params"] > rows["precomputed"]["trainable_params"] > rows["backbone"]["trainable_params"]
    assert rows["full"]["model_tflop_per_sample"] > rows["precomputed"]["model_tflop_per_sample"]
