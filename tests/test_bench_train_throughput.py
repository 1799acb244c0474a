"""bench/train_throughput.py runs both trainers end to end on a tiny setting and writes a coherent JSON.

One repeat, batch 4, one warm-up step and two timed steps per side, in a subprocess (as a user runs it).
Checked: both sides trained (samples/s > 0, a finite loss, the timed window covers exactly the timed
steps), the ratio is the quotient of the medians, the settings say what was run, and the token check
passed (the script refuses to time anything otherwise). No timing is asserted: the figures are the
bench's to report, not the test's to judge.
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

pytestmark = pytest.mark.slow


def test_small_run_writes_both_sides_and_their_ratio(tmp_path):
    out = tmp_path / "train_throughput.json"
    cmd = [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--batch-size", "4", "--steps", "2",
           "--warmup", "1", "--repeats", "1", "--threads", "2", "--out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())

    settings = result["settings"]
    assert (settings["batch_size"], settings["steps"], settings["warmup_steps"], settings["repeats"]) == (4, 2, 1, 1)
    assert settings["threads"] == 2 and settings["precision"] == "fp32" and settings["pattern"] == "text->text"
    assert settings["st_max_seq_length"] == settings["tokens_per_sequence_max"] > 2
    for side in ("ours", "st"):
        [run] = result[side]["repeats"]
        assert run["samples_per_s"] > 0 and math.isfinite(run["final_loss"]) and run["final_loss"] > 0
        assert run["steps"] == 2 and run["samples"] == 8
        assert run["samples_per_s"] == pytest.approx(run["samples"] / run["seconds"])
        assert result[side]["median_samples_per_s"] == run["samples_per_s"]
    assert result["ratio_ours_over_st"] == pytest.approx(
        result["ours"]["median_samples_per_s"] / result["st"]["median_samples_per_s"], rel=1e-12)
    assert result["target_met"] == (result["ratio_ours_over_st"] >= result["target_ratio"])
    assert result["versions"]["sentence_transformers"] and result["machine"]["cpu_count"] >= 1
    assert "ours / ST" in done.stdout
