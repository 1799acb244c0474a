"""The evaluation gate: candidate metrics against the champion's, or the untrained baseline's."""

from __future__ import annotations

from dataclasses import dataclass, field


class GateFailed(RuntimeError):
    """The candidate missed at least one threshold; promotion must not run."""


@dataclass
class GateResult:
    passed: bool
    reference: str                      # "champion v3" or "baseline"
    checks: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"gate {'passed' if self.passed else 'FAILED'} (reference: {self.reference})"]
        for c in self.checks:
            mark = "ok " if c["passed"] else "MISS"
            lines.append(
                f"  [{mark}] {c['metric']}: candidate {c['candidate']:.4f} vs reference {c['reference']:.4f} "
                f"(delta {c['delta']:+.4f}, required >= {c['min_delta']:+.4f}"
                + ("" if c["passed"] else f", missed by {c['min_delta'] - c['delta']:.4f}")
                + ")"
            )
        return "\n".join(lines)


def baseline_key(metric: str) -> str:
    """``eval.i2i.recall_at_10`` -> ``baseline.i2i.recall_at_10``."""
    if not metric.startswith("eval."):
        raise ValueError(f"gate metric {metric!r} must start with 'eval.' (e.g. eval.i2i.recall_at_10)")
    return "baseline." + metric[len("eval.") :]


def check_gate(
    candidate: dict[str, float],
    thresholds: dict[str, float],
    champion: dict[str, float] | None = None,
    champion_label: str = "champion",
) -> GateResult:
    """Every ``metric`` must satisfy ``candidate - reference >= min_delta``.

    The reference is the champion's value of the same metric when a champion
    exists, otherwise the ``baseline.*`` value logged in the candidate's own run.
    """
    reference_name = champion_label if champion is not None else "baseline"
    checks = []
    for metric, min_delta in thresholds.items():
        if metric not in candidate:
            raise ValueError(f"gate metric {metric!r} was not computed; available: {', '.join(sorted(candidate))}")
        if champion is not None and metric in champion:
            ref = champion[metric]
        else:
            key = baseline_key(metric)
            if key not in candidate:
                raise ValueError(f"gate needs {key!r} as the reference but the run has no such metric")
            ref = candidate[key]
        delta = candidate[metric] - ref
        checks.append(
            {"metric": metric, "candidate": candidate[metric], "reference": ref, "delta": delta,
             "min_delta": float(min_delta), "passed": delta >= float(min_delta) - 1e-12}
        )
    return GateResult(all(c["passed"] for c in checks), reference_name, checks)
