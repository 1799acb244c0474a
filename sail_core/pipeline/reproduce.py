"""``sail reproduce``: re-run a recorded run from its record, and compare the two.

The record is the MLflow run: ``record/config.resolved.yaml`` (every configuration key), the
steps it ran (``sail.steps``), the outputs it reused from another run (their hashes), and the
git sha it ran at. The reproduction is a new DAG run (its own workspace) whose ``reproduce``
parameter makes every task load that recorded configuration; it never promotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sail_core.pipeline import tracking
from sail_core.pipeline.runs import Run


def conf_for(original: Run) -> dict:
    """The DAG run conf that re-runs ``original``: its steps (less promote), its reused outputs."""
    steps = [s for s in original.tags.get("sail.steps", "").split(",") if s and s != "promote"]
    if not steps:
        raise ValueError(f"run {original.run_id} records no steps (tag sail.steps); it was not started by the "
                         "pipeline's check task and cannot be reproduced")
    return {"reproduce": original.mlflow_run_id, "steps": steps, "promote": False}


def _compared(name: str) -> bool:
    return name.startswith(("eval.", "baseline.", "export.onnx_max_abs_diff"))


@dataclass
class Comparison:
    metrics: dict[str, tuple[float, float]]
    tolerance: float
    data_hash_old: str
    data_hash_new: str
    git_old: str
    git_new: str

    @property
    def differing(self) -> dict[str, float]:
        out = {}
        for name, (a, b) in self.metrics.items():
            if name.startswith("export."):
                continue  # a parity residue, not a result: compared for the record only
            if math.isnan(a) and math.isnan(b):
                continue
            if not abs(a - b) <= self.tolerance:
                out[name] = abs(a - b)
        return out

    @property
    def same(self) -> bool:
        return bool(self.metrics) and not self.differing and self.data_hash_old == self.data_hash_new

    def why(self) -> str:
        reasons = []
        if not self.metrics:
            reasons.append("the runs share no evaluation metric")
        if self.data_hash_old != self.data_hash_new:
            reasons.append(f"data hash {self.data_hash_new} differs from the recorded {self.data_hash_old}")
        if self.differing:
            worst = sorted(self.differing.items(), key=lambda kv: -kv[1])[:5]
            reasons.append("metrics differ: " + ", ".join(f"{k} by {v:.3g}" for k, v in worst))
        if self.git_old != self.git_new:
            reasons.append(f"(the code differs too: recorded git {self.git_old}, now {self.git_new})")
        return "; ".join(reasons)

    def table(self) -> str:
        lines = [f"{'metric':<42} {'original':>10} {'reproduced':>10} {'|diff|':>9}"]
        for name, (a, b) in sorted(self.metrics.items()):
            lines.append(f"{name:<42} {a:>10.4f} {b:>10.4f} {abs(a - b):>9.2e}")
        lines.append(f"data hash: {self.data_hash_old} -> {self.data_hash_new}; git: {self.git_old} -> {self.git_new}")
        return "\n".join(lines)


def compare(original: Run, reproduced: Run, tolerance: float) -> Comparison:
    a, b = tracking.run_metrics(original.mlflow_run_id), tracking.run_metrics(reproduced.mlflow_run_id)
    shared = sorted(k for k in a.keys() & b.keys() if _compared(k))
    return Comparison({k: (a[k], b[k]) for k in shared}, tolerance,
                      original.tags.get("sail.data_hash", "none"), reproduced.tags.get("sail.data_hash", "none"),
                      original.tags.get("sail.git_sha", "unknown"), reproduced.tags.get("sail.git_sha", "unknown"))
