"""The ablation table: the cumulative rows of the ablation path side by side, from their per-query values.

Each row is one recipe, trained and evaluated for real (an MLflow run per seed), and adds one step to the
row before it (text backbone only, + fusion of media, + task instructions, + CoSENT, + mICL and late
fusion, + balancing, + hard negatives, + progressive stages). All runs are scored on the same queries.

How to read it:

- *values*: each row's mean per metric with its 95% bootstrap interval over queries
  (:func:`~sail_core.eval.intervals.interval`), per seed when a row ran with several seeds.
- *gain*: what the step added, row r - row r-1 on the same queries, with the paired bootstrap interval of
  the difference (:func:`~sail_core.eval.intervals.paired_interval`): ✓ = it lies above 0 (the step
  helps), ✗ = below 0 (it hurts), ~ = it holds 0 (no difference these queries can show). Row r seed s is
  compared with row r-1 seed s when that run exists, else with row r-1's lowest seed (``vs_row``,
  ``vs_seed`` say which).
- *full_vs_first*: the last row (the full recipe) - the first row, seed-matched the same way.
- *vs_reference*: every row - a plain text reference model, on the metrics the reference has values for
  (it cannot do every task); the reference's own values are under ``"reference"``.

Seed keys are strings so that the table survives a JSON round trip unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sail_core.eval.intervals import interval, paired_interval


@dataclass
class AblationRun:
    row: int                           # 1..8 (any positive ints; rows are ordered by this)
    name: str                          # e.g. "+ CoSENT"
    seed: int
    run_id: str                        # MLflow run id, shown in the table
    per_query: dict[str, np.ndarray]   # metric -> per-query values; the same queries in the same order in every run


def _check(runs: list[AblationRun], metrics: list[str], reference: dict | None) -> None:
    if not runs:
        raise ValueError("no ablation runs given: pass at least one AblationRun (one per row and seed)")
    if not metrics:
        raise ValueError("no metrics given: name at least one per-query metric, e.g. 'i2i.recall_at_10'")
    seen, lengths = {}, {}
    for run in runs:
        key = (run.row, run.seed)
        if key in seen:
            raise ValueError(f"row {run.row} seed {run.seed} appears twice (runs {seen[key]} and {run.run_id}): "
                             "keep one run per (row, seed) or give the rerun another seed")
        seen[key] = run.run_id
        for m in metrics:
            if m not in run.per_query:
                raise ValueError(f"metric {m!r} is missing from run {run.run_id} (row {run.row} {run.name!r}, "
                                 f"seed {run.seed}); it has {sorted(run.per_query)}: evaluate that run on {m!r} "
                                 "or leave the metric out")
            n, first = lengths.setdefault(m, (len(run.per_query[m]), run))
            if len(run.per_query[m]) != n:
                raise ValueError(f"metric {m!r}: run {run.run_id} (row {run.row}, seed {run.seed}) has "
                                 f"{len(run.per_query[m])} per-query values but run {first.run_id} (row {first.row}, "
                                 f"seed {first.seed}) has {n}: paired comparisons need the same queries in the same "
                                 "order in every run; evaluate all runs on the same test queries")
            if n == 0:
                raise ValueError(f"metric {m!r} has no per-query values in run {run.run_id}: nothing to compare")
    for m in metrics:
        if reference is not None and m in reference and len(reference[m]) != lengths[m][0]:
            raise ValueError(f"metric {m!r}: the reference has {len(reference[m])} per-query values, the runs "
                             f"have {lengths[m][0]}: score the reference on the same queries as the runs")


def _stats(values) -> dict[str, float]:
    low, high = interval(values)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}


def _diff(a, b) -> dict[str, float]:
    low, high = paired_interval(a, b)
    return {"delta": float(np.mean(a) - np.mean(b)), "ci_low": low, "ci_high": high}


def _match(seed: int, other: dict[int, AblationRun]) -> int:
    """The seed of ``other`` to compare with: the same seed when it ran, else its lowest."""
    return seed if seed in other else min(other)


def ablation_table(runs: list[AblationRun], metrics: list[str],
                   reference: dict[str, np.ndarray] | None = None,
                   reference_name: str = "text reference") -> dict:
    """The JSON-able table of the ablation path (module docstring): ``{"metrics", "rows", "full_vs_first",
    "reference", "reference_name"}``; ``full_vs_first`` is None with a single row, ``reference`` None without one.

    Raises ValueError when runs is empty, a (row, seed) repeats, a run lacks a metric, or two runs (or the
    reference) have different numbers of per-query values for a metric.
    """
    _check(runs, metrics, reference)
    by_row: dict[int, dict[int, AblationRun]] = {}
    for run in runs:
        by_row.setdefault(run.row, {})[run.seed] = run
    ref = {m: np.asarray(reference[m], dtype=np.float64) for m in metrics if m in reference} if reference else None
    rows, previous = [], None
    for r in sorted(by_row):
        seeds = dict(sorted(by_row[r].items()))
        entry = {"row": r, "name": seeds[min(seeds)].name, "seeds": list(seeds),
                 "run_ids": [run.run_id for run in seeds.values()],
                 "values": {m: {str(s): _stats(run.per_query[m]) for s, run in seeds.items()} for m in metrics}}
        if previous is not None:
            entry["gain"] = {m: {str(s): {**_diff(run.per_query[m], previous[_match(s, previous)].per_query[m]),
                                          "vs_row": previous[min(previous)].row, "vs_seed": _match(s, previous)}
                                 for s, run in seeds.items()} for m in metrics}
        if ref is not None:
            entry["vs_reference"] = {m: {str(s): _diff(run.per_query[m], ref[m]) for s, run in seeds.items()}
                                     for m in ref}
        rows.append(entry)
        previous = seeds
    first, last = by_row[min(by_row)], by_row[max(by_row)]
    full = None if len(by_row) < 2 else {
        m: {str(s): {**_diff(run.per_query[m], first[_match(s, first)].per_query[m]), "vs_seed": _match(s, first)}
            for s, run in sorted(last.items())} for m in metrics}
    return {"metrics": list(metrics), "rows": rows, "full_vs_first": full,
            "reference": {m: _stats(v) for m, v in ref.items()} if ref is not None else None,
            "reference_name": reference_name}


def _value(v: dict) -> str:
    return f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def _delta(d: dict) -> str:
    mark = "✓" if d["ci_low"] > 0 else "✗" if d["ci_high"] < 0 else "~"
    return f"{d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {mark}"


def _cell(per_seed: dict, fmt, labelled: bool) -> str:
    """One table cell: a value per seed, "s0: ...; s1: ..." when labelled (several seeds, or a seed that is
    compared with another seed)."""
    parts = []
    for s, v in per_seed.items():
        other = v.get("vs_seed")
        label = f"s{s}" + (f" vs s{other}" if other is not None and str(other) != s else "")
        parts.append(f"{label}: {fmt(v)}" if labelled or label != f"s{s}" else fmt(v))
    return "; ".join(parts)


def _header(metrics: list[str], first: list[str]) -> list[str]:
    align = ["---:", "---"] + ["---"] * (len(first) - 2) + ["---:"] * len(metrics)
    return ["| " + " | ".join(first + metrics) + " |", "|" + "|".join(align) + "|"]


def _markdown(table: dict, title: str) -> str:
    metrics, rows, ref_name = table["metrics"], table["rows"], table.get("reference_name", "text reference")
    lines = [f"# {title}", "",
             "Each row adds one step to the row above it; all runs are scored on the same queries. Values: mean "
             "[95% bootstrap interval over queries]. Gains: row - previous row, with the paired bootstrap interval "
             "of the difference on the same queries: ✓ = above 0 (the step helps), ✗ = below 0 (it hurts), "
             "~ = it holds 0. `sN` = seed N; `s1 vs s0` = compared with the other row's seed 0 (it has no seed 1).",
             "", *_header(metrics, ["row", "step", "seeds"])]
    for r in rows:
        cells = [_cell(r["values"][m], _value, len(r["seeds"]) > 1) for m in metrics]
        lines.append(f"| {r['row']} | {r['name']} | {', '.join(map(str, r['seeds']))} | " + " | ".join(cells) + " |")
    if table.get("reference"):
        cells = [_value(table["reference"][m]) if m in table["reference"] else "n/a" for m in metrics]
        lines.append(f"| - | {ref_name} | - | " + " | ".join(cells) + " |")
    lines += ["", "## Δ vs previous row", "", *_header(metrics, ["row", "step", "vs row"])]
    for r in rows[1:]:
        cells = [_cell(r["gain"][m], _delta, len(r["seeds"]) > 1) for m in metrics]
        vs_row = next(iter(r["gain"][metrics[0]].values()))["vs_row"]
        lines.append(f"| {r['row']} | {r['name']} | {vs_row} | " + " | ".join(cells) + " |")
    if table.get("full_vs_first"):
        lines += ["", f"## Full recipe (row {rows[-1]['row']}) vs row {rows[0]['row']}", ""]
        lines += [f"- {m}: {_cell(table['full_vs_first'][m], _delta, True)}" for m in metrics]
    if table.get("reference"):
        lines += ["", f"## Δ vs {ref_name}", "", *_header(metrics, ["row", "step", "seeds"])]
        for r in rows:
            cells = [_cell(r["vs_reference"][m], _delta, len(r["seeds"]) > 1) if m in r["vs_reference"] else "n/a"
                     for m in metrics]
            lines.append(f"| {r['row']} | {r['name']} | {', '.join(map(str, r['seeds']))} | "
                         + " | ".join(cells) + " |")
    lines += ["", "## MLflow runs", ""]
    lines += [f"- row {r['row']} ({r['name']}) seed {s}: `{run_id}`"
              for r in rows for s, run_id in zip(r["seeds"], r["run_ids"])]
    return "\n".join(lines) + "\n"


def _plot(table: dict, path: Path, title: str) -> None:
    """Grouped bars: one group per row, one bar per metric. A bar is the mean over the row's seeds of their
    means; its error bar spans from the lowest ci_low to the highest ci_high over the seeds (the envelope of
    the seeds' intervals, so one seed's interval when there is one). The reference is a dashed line per metric."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, rows = table["metrics"], table["rows"]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.0), dpi=110)
    for j, m in enumerate(metrics):
        stats = [list(r["values"][m].values()) for r in rows]
        heights = [float(np.mean([v["mean"] for v in s])) for s in stats]
        lows = [h - min(v["ci_low"] for v in s) for h, s in zip(heights, stats)]
        highs = [max(v["ci_high"] for v in s) - h for h, s in zip(heights, stats)]
        x = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(x, heights, width, yerr=[lows, highs], capsize=2, label=m)
        if table.get("reference") and m in table["reference"]:
            ax.axhline(table["reference"][m]["mean"], color=bars.patches[0].get_facecolor(), linestyle="--",
                       linewidth=1, label=f"{m} ({table.get('reference_name', 'reference')})")
    ax.set_xticks(range(len(rows)), [f"{r['row']}\n" + textwrap.fill(r["name"], 14) for r in rows], fontsize=7)
    ax.set(ylabel="mean over seeds (95% intervals)", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_ablation(table: dict, out_dir: Path, title: str = "Ablation") -> list[Path]:
    """Write ``ablation.md``, ``ablation.json`` and ``ablation.png`` (see :func:`_plot` for the error bars)
    to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = out_dir / "ablation.md", out_dir / "ablation.json", out_dir / "ablation.png"
    md.write_text(_markdown(table, title))
    js.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    _plot(table, png, title)
    return [md, js, png]
