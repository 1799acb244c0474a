"""The evaluation gate: the candidate against the champion re-scored on the same queries (else the untrained
model or the plain text reference), by paired bootstrap intervals of the difference.

The module is ``gating``, not ``gate``: ``sail_core.pipeline.gate`` is the gate step, and a submodule of that
name would replace it on the package once imported.

Thresholds are ``gate.metrics``: a list of ``{metric, min_delta}``; the rule that compares the paired
interval with ``min_delta`` is ``gate.first_rule`` against the first reference and ``gate.champion_rule``
against the champion. :func:`gate_metrics` also
reads the ``{metric: min_delta}`` mapping that a form (the DAG's ``gate_thresholds``) gives, and
:func:`gate_overrides` turns either into the override that :func:`sail_core.config.load_config` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from sail_core.config import ConfigError, GateMetric
from sail_core.eval.intervals import paired_interval


class GateFailed(RuntimeError):
    """The candidate missed at least one threshold; promotion must not run."""


@dataclass
class GateResult:
    passed: bool
    reference: str                      # "champion v3 (re-scored)", "untrained model", "text reference"
    checks: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"gate {'passed' if self.passed else 'FAILED'} (reference: {self.reference})"]
        for c in self.checks:
            mark = "ok " if c["passed"] else "MISS"
            low, high = c["delta_ci"]
            need = (f"interval low > {c['min_delta']:+.4f}" if c["rule"] == "beats"
                    else f"interval high >= {c['min_delta']:+.4f}")
            lines.append(
                f"  [{mark}] {c['metric']}: candidate {c['candidate']:.4f} vs {c['reference_name']} {c['reference']:.4f} "
                f"on {c['queries']} queries: delta {c['delta']:+.4f}, paired 95% interval [{low:+.4f}, {high:+.4f}]; "
                f"rule {c['rule']}: {need}"
                + (f"; {c['excluded']} queries left out (items the reference trained on)" if c.get("excluded") else ""))
        return "\n".join(lines)


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
    candidate: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    thresholds: Sequence[GateMetric | Mapping[str, Any]] | Mapping[str, float],
    reference_label: str = "reference",
    keep: Mapping[str, np.ndarray] | None = None,
    fallback: dict[str, np.ndarray] | None = None,
    fallback_label: str = "untrained model",
    rule: str = "beats",
) -> GateResult:
    """Check every threshold on the paired bootstrap interval of candidate - reference, query by query.

    ``candidate`` / ``reference``: per-query values by unprefixed metric name (``i2i.recall_at_10``),
    the same queries in the same order. ``keep`` (per task, a boolean mask over its queries) leaves
    out queries the reference must not be judged on. A metric the reference lacks is compared with
    ``fallback`` (the untrained model, for a task the text reference cannot do). ``rule`` ``beats`` passes
    when the interval's low end is above ``min_delta``; ``not_worse`` when its high end is at least
    ``min_delta`` (so a model passes against itself).
    """
    if rule not in ("beats", "not_worse"):
        raise ValueError(f"gate rule {rule!r} is not one of beats, not_worse")
    checks = []
    for gate in gate_metrics(thresholds):
        if not gate.metric.startswith("eval."):
            raise ValueError(f"gate metric {gate.metric!r} must start with 'eval.' (e.g. eval.i2i.recall_at_10)")
        name = gate.metric[len("eval."):]
        if name not in candidate:
            raise ValueError(f"gate metric {gate.metric!r} was not computed; available: "
                             f"{', '.join('eval.' + n for n in sorted(candidate))}")
        ref, label = (reference, reference_label) if name in reference else (fallback or {}, fallback_label)
        if name not in ref:
            raise ValueError(f"gate needs {name!r} of the {reference_label} as the reference, and it was not scored")
        a, b = np.asarray(candidate[name], dtype=float), np.asarray(ref[name], dtype=float)
        if a.shape != b.shape:
            raise ValueError(f"gate metric {gate.metric!r}: the candidate has {a.size} queries and the {label} "
                             f"{b.size}; they must be scored on the same queries")
        mask = np.ones(a.size, dtype=bool) if keep is None or name.split(".")[0] not in keep else keep[name.split(".")[0]]
        if not mask.any():
            raise ValueError(f"gate metric {gate.metric!r}: every query involves items the {label} trained on, "
                             "so nothing is left to compare; gate on another metric or retrain the champion")
        low, high = paired_interval(a[mask], b[mask])
        delta = float(a[mask].mean() - b[mask].mean())
        passed = low > float(gate.min_delta) if rule == "beats" else high >= float(gate.min_delta) - 1e-12
        checks.append({"metric": gate.metric, "rule": rule, "min_delta": float(gate.min_delta),
                       "reference_name": label, "candidate": float(a[mask].mean()), "reference": float(b[mask].mean()),
                       "delta": delta, "delta_ci": [low, high], "queries": int(mask.sum()),
                       "excluded": int((~mask).sum()), "passed": bool(passed)})
    return GateResult(all(c["passed"] for c in checks), reference_label, checks)
