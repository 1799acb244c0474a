"""The evaluation gate: candidate metrics against the champion's, or the untrained baseline's.

The module is ``gating``, not ``gate``: ``sail_core.pipeline.gate`` is the gate step, and a submodule of that
name would replace it on the package once imported.

Thresholds are ``gate.metrics``: a list of ``{metric, min_delta}``. :func:`gate_metrics` also
reads the ``{metric: min_delta}`` mapping that a form (the DAG's ``gate_thresholds``) gives, and
:func:`gate_overrides` turns either into the override that :func:`sail_core.config.load_config` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sail_core.config import ConfigError, GateMetric


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
            interval = c.get("delta_ci")
            lines.append(
                f"  [{mark}] {c['metric']}: candidate {c['candidate']:.4f} vs reference {c['reference']:.4f} "
                f"(delta {c['delta']:+.4f}"
                + (f", paired 95% interval [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "")
                + f", required >= {c['min_delta']:+.4f}"
                + ("" if c["passed"] else f", missed by {c['min_delta'] - c['delta']:.4f}")
                + ")"
            )
        return "\n".join(lines)


def baseline_key(metric: str) -> str:
    """``eval.i2i.recall_at_10`` -> ``baseline.i2i.recall_at_10``."""
    if not metric.startswith("eval."):
        raise ValueError(f"gate metric {metric!r} must start with 'eval.' (e.g. eval.i2i.recall_at_10)")
    return "baseline." + metric[len("eval.") :]


def gate_metrics(value: Sequence[GateMetric | Mapping[str, Any]] | Mapping[str, float] | None) -> list[GateMetric]:
    """Gate thresholds as :class:`GateMetric` objects, from the list form (``[{metric, min_delta}, ...]``,
    as in ``params.yaml``) or a ``{metric: min_delta}`` mapping; None or empty gives ``[]``."""
    if not value:
        return []
    if isinstance(value, Mapping):
        if set(value) <= {"metric", "min_delta"}:
            value = [value]  # one entry of the list form, not a mapping of metric names
        else:
            value = [{"metric": str(k), "min_delta": v} for k, v in value.items()]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"gate thresholds must be a list of {{metric, min_delta}} or a {{metric: min_delta}} "
                          f"mapping, got {value!r}")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(item if isinstance(item, GateMetric) else GateMetric.model_validate(item))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"gate thresholds entry {i} ({item!r}): {problems}; "
                              "write it as {metric: eval.i2i.recall_at_10, min_delta: 0.02}") from None
    return out


def gate_overrides(value: Sequence[GateMetric | Mapping[str, Any]] | Mapping[str, float] | None) -> dict[str, Any]:
    """The ``overrides`` for :func:`sail_core.config.load_config` that replace ``gate.metrics`` with
    ``value`` (list form or ``{metric: min_delta}``); ``{}`` when ``value`` is empty, so the profile's
    own ``gate.metrics`` apply. Metric names are checked when the configuration loads."""
    metrics = gate_metrics(value)
    return {"gate.metrics": [m.model_dump() for m in metrics]} if metrics else {}


def check_gate(
    candidate: dict[str, float],
    thresholds: Sequence[GateMetric | Mapping[str, Any]] | Mapping[str, float],
    champion: dict[str, float] | None = None,
    champion_label: str = "champion",
) -> GateResult:
    """Every threshold's ``metric`` must satisfy ``candidate - reference >= min_delta``.

    ``thresholds`` is ``cfg.gate.metrics`` (or anything :func:`gate_metrics` reads). The
    reference is the champion's value of the same metric when a champion exists,
    otherwise the ``baseline.*`` value logged in the candidate's own run.
    """
    reference_name = champion_label if champion is not None else "baseline"
    checks = []
    for gate in gate_metrics(thresholds):
        metric, min_delta = gate.metric, gate.min_delta
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
        check = {"metric": metric, "candidate": candidate[metric], "reference": ref, "delta": delta,
                 "min_delta": float(min_delta), "passed": delta >= float(min_delta) - 1e-12}
        paired = "delta." + metric[len("eval."):]
        if champion is None and f"{paired}_ci_low" in candidate:  # the baseline was scored on the same queries
            check["delta_ci"] = [candidate[f"{paired}_ci_low"], candidate[f"{paired}_ci_high"]]
        checks.append(check)
    return GateResult(all(c["passed"] for c in checks), reference_name, checks)
