"""Evaluation report: a markdown table (trained vs the untrained baseline and the plain text reference, with
95% intervals and paired differences) and a grouped bar chart."""

from __future__ import annotations


import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REC_TASKS = ("seq2item", "seq2item_cold", "gid_i2i", "collab", "bijective", "nmi", "nmi_k", "auc")  # eval.<task>...
_NAME = re.compile(r"^eval\.(?P<task>.+?)\.recall_at_(?P<k>\d+)$")


@dataclass
class Row:
    task: str
    k: int
    trained: tuple[float, float, float]                  # value, ci_low, ci_high
    baseline: tuple[float, float, float] | None
    delta: tuple[float, float, float] | None              # trained - baseline, paired interval
    reference: tuple[float, float, float] | None = None   # the plain text reference
    vs_reference: tuple[float, float, float] | None = None  # trained - reference, paired interval

    @property
    def beats(self) -> bool | None:
        return verdict(self.delta)


def verdict(delta: tuple[float, float, float] | None) -> bool | None:
    """True when the paired interval of a difference lies above 0, False below, None when it holds 0."""
    if delta is None:
        return None
    _, low, high = delta
    return True if low > 0 else False if high < 0 else None


def _triple(metrics: dict[str, float], name: str) -> tuple[float, float, float] | None:
    if name not in metrics:
        return None
    value = float(metrics[name])
    return value, float(metrics.get(f"{name}_ci_low", value)), float(metrics.get(f"{name}_ci_high", value))


def rows(metrics: dict[str, float]) -> list[Row]:
    """One row per ``eval.<task>.recall_at_<k>`` of ``metrics`` (as :func:`~sail_core.eval.evaluate.evaluate`
    returns them): full-dim tasks first, then their Matryoshka variants; k ascending."""
    out = []
    for name in metrics:
        m = _NAME.match(name)
        if m and not name.endswith(("_ci_low", "_ci_high")):
            rest = name[len("eval."):]
            out.append(Row(m["task"], int(m["k"]), _triple(metrics, name), _triple(metrics, f"baseline.{rest}"),
                           _triple(metrics, f"delta.{rest}"), _triple(metrics, f"reference.{rest}"),
                           _triple(metrics, f"vs_reference.{rest}")))
    return sorted(out, key=lambda r: (r.task.split(".")[0], "." in r.task, r.task, r.k))


def _cell(t: tuple[float, float, float] | None, signed: bool = False) -> str:
    if t is None:
        return "n/a"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(t[0])} [{fmt.format(t[1])}, {fmt.format(t[2])}]"


def write_report(metrics: dict, out_dir: Path, notes: list[str] | None = None) -> list[Path]:
    """Write ``eval_report.md`` and ``recall.png`` to ``out_dir``; returns their paths.

    ``metrics`` holds ``eval.*``, ``baseline.*`` and ``delta.*`` values with their ``_ci_low`` /
    ``_ci_high`` (a value without them is shown with a zero-width interval); ``notes`` (skipped tasks and
    why) are listed under the table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(metrics)
    lines = ["# Retrieval evaluation", "",
             "Recall@k on the test items, with 95% bootstrap intervals over queries. *untrained* = the model "
             "training starts from (pretrained backbone, fresh Perceiver/audio adapter); *text reference* = "
             "plain all-MiniLM-L6-v2 (sentence-transformers, mean pooling) on the item text, no instruction, "
             "on the tasks it can do. All are scored on the same queries; each difference (trained - other) has "
             "its paired bootstrap interval: *yes* = it lies above 0, *worse* = below 0, *-* = it holds 0. "
             "`dimN` = Matryoshka prefix; `<m>2text` = a test item's <m> -> its own text among all items' "
             "texts; `cls` = a test item -> its genres among all genre labels.", "",
             "| task | k | trained | untrained | trained - untrained | beats | text reference "
             "| trained - reference | beats |", "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    mark = {True: "yes", False: "worse", None: "-"}
    for r in table:
        beats = mark[r.beats] if r.delta is not None else "n/a"
        beats_ref = mark[verdict(r.vs_reference)] if r.vs_reference is not None else "n/a"
        lines.append(f"| {r.task} | {r.k} | {_cell(r.trained)} | {_cell(r.baseline)} | {_cell(r.delta, True)} "
                     f"| {beats} | {_cell(r.reference)} | {_cell(r.vs_reference, True)} | {beats_ref} |")
    counts = sorted(n[len("eval."):-len(".queries")] for n in metrics if n.startswith("eval.") and n.endswith(".queries"))
    if counts:
        lines += ["", "Queries per task (distinct test items behind them):", ""]
        lines += [f"- {t}: {int(metrics[f'eval.{t}.queries'])} queries "
                  f"({int(metrics.get(f'eval.{t}.held_out_items', 0))} test items)" for t in counts]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    report = out_dir / "eval_report.md"
    report.write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(get):
        values = [get(r)[0] if get(r) else 0.0 for r in table]
        errs = [[v - get(r)[1] if get(r) else 0.0 for v, r in zip(values, table)],
                [get(r)[2] - v if get(r) else 0.0 for v, r in zip(values, table)]]
        return values, errs

    labels = [f"{r.task}\nR@{r.k}" for r in table]
    x = list(range(len(table)))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(table) + 2), 4), dpi=110)
    w = 0.28
    series = (("trained", lambda r: r.trained), ("untrained", lambda r: r.baseline),
              ("text reference", lambda r: r.reference))
    for j, (label, get) in enumerate(series):
        values, errs = bars(get)
        ax.bar([i + (j - 1) * w for i in x], values, w, yerr=errs, capsize=2, label=label)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="recall (95% interval)", ylim=(0, 1), title="Recall@k: trained vs untrained model vs plain text reference")
    ax.legend()
    fig.tight_layout()
    plot = out_dir / "recall.png"
    fig.savefig(plot)
    plt.close(fig)
    return [report, plot]


def recommendation_section(metrics: dict, out_dir: Path) -> Path:
    """Append the recommendation metrics (``eval.<task>.<metric>`` other than the retrieval table's) to
    ``eval_report.md`` and plot them to ``recommendation.png``; returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    names = sorted(n for n in metrics if n.startswith("eval.") and not n.endswith(("_ci_low", "_ci_high"))
                   and n.split(".")[1] in REC_TASKS)
    lines = ["", "## Recommendation metrics", "",
             "From each model's catalogue vectors (the candidate's: its index, what is served); definitions in "
             "`sail_core/eval/recommendation.py` and `sail_core/eval/rec_metrics.py`. The Recall@k ones "
             "(seq2item, seq2item_cold, gid_i2i) are in the table above; 95% bootstrap intervals over queries "
             "(NMI: over items).", "",
             "| metric | trained | untrained | trained - untrained | text reference | trained - reference |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        if _NAME.match(n) or n.endswith("nmi_k"):
            continue
        rest = n[len("eval."):]
        lines.append(f"| {rest} | {_cell(_triple(metrics, n))} | {_cell(_triple(metrics, f'baseline.{rest}'))} "
                     f"| {_cell(_triple(metrics, f'delta.{rest}'), True)} | {_cell(_triple(metrics, f'reference.{rest}'))} "
                     f"| {_cell(_triple(metrics, f'vs_reference.{rest}'), True)} |")
    with open(out_dir / "eval_report.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    shown = [n for n in names if f"{n}_ci_low" in metrics]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    values = [metrics[n] for n in shown]
    err = np.nan_to_num(np.maximum(0.0, [[metrics[n] - metrics[f"{n}_ci_low"] for n in shown],
                                         [metrics[f"{n}_ci_high"] - metrics[n] for n in shown]]))
    ax.barh(range(len(shown)), values, xerr=err, color="#4c72b0")
    ax.set_yticks(range(len(shown)), [n[len("eval."):] for n in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("value (95% interval)")
    ax.set_title("Recommendation metrics of the catalogue index")
    fig.tight_layout()
    png = out_dir / "recommendation.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
