"""bench/load.py with a few dozen requests: a real tritonserver on loopback, two real untrained omni exports,
a promotion in the middle of each protocol's phase; the JSON has its fields and there are no errors.

It runs as a subprocess, as a user runs it. No timing is asserted: the figures are the bench's to report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.triton


def test_load_smoke_promotes_halfway_without_errors(runtime, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--requests", "48", "--concurrency", "4",
                           "--max-seconds", "600", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"bench/load.py failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["benchmark"] == "load"
    assert report["errors"] == 0 and report["not_sent"] == 0
    settings = report["settings"]
    assert settings["protocols"] == ["http", "grpc"] and settings["requests_per_protocol"] == 24
    assert settings["client_retries"] == 0 and set(settings["pool"]) == {"text", "image", "audio"}
    assert report["exports_differ_on_rows"] > 0, "the two exports must be told apart by parity on some rows"
    for phase, (old, new) in zip(report["results"], [(1, 2), (2, 3)]):
        assert phase["answered"] == 24 and phase["errors"] == 0 and phase["errors_by_kind"] == {}
        assert phase["p50_ms"] > 0 and phase["p99_ms"] >= phase["p50_ms"] and phase["requests_per_s"] > 0
        promotion = phase["promotion"]
        assert promotion["to_version"] == new and "error" not in promotion
        # the last quarter (6) is held until the promotion returns, so answers after it always exist
        assert promotion["answers_sent_after_it"] >= 6 and promotion["of_those_from_an_older_version"] == 0
        assert set(phase["served_by_version"]) <= {str(old), str(new)}
        assert phase["served_by_version"].get(str(new), 0) >= 6
        assert sum(phase["served_by_version"].values()) == 24
