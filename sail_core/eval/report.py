"""Evaluation report: a markdown table (trained vs baseline) and a grouped bar chart."""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^(?P<task>.+?)\.recall_at_(?P<k>\d+)$")


def _rows(metrics: dict[str, float], baseline: dict[str, float]) -> list[tuple[str, int, float, float | None]]:
    rows = []
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m:
            rows.append((m["task"], int(m["k"]), float(value), baseline.get(name)))
    # full-dim tasks first, then their Matryoshka variants; k ascending
    return sorted(rows, key=lambda r: (r[0].split(".")[0], "." in r[0], r[0], r[1]))


def write_report(metrics: dict, baseline: dict, out_dir: Path, notes: list[str] | None = None) -> list[Path]:
    """Write ``eval_report.md`` and ``recall.png`` to ``out_dir``; returns their paths.

    ``metrics`` and ``baseline`` use unprefixed names (``"i2i.recall_at_10"``,
    ``"i2i.dim128.recall_at_10"``) as returned by :func:`evaluate_model`; ``notes`` (skipped
    tasks and why) are listed under the table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _rows(metrics, baseline)
    lines = ["# Retrieval evaluation", "",
             "Recall@k on held-out data; baseline = the untrained model (pretrained backbone, fresh "
             "Perceiver/audio adapter). `dimN` = Matryoshka prefix; `<m>2text` = a held-out item's "
             "<m> -> its own text among all items' texts.", "",
             "| task | k | trained | baseline | delta |", "|---|---:|---:|---:|---:|"]
    for task, k, value, base in rows:
        b = "n/a" if base is None else f"{base:.4f}"
        d = "n/a" if base is None else f"{value - base:+.4f}"
        lines.append(f"| {task} | {k} | {value:.4f} | {b} | {d} |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    report = out_dir / "eval_report.md"
    report.write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{t}\nR@{k}" for t, k, _, _ in rows]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4), dpi=110)
    w = 0.4
    ax.bar([i - w / 2 for i in x], [r[2] for r in rows], w, label="trained")
    ax.bar([i + w / 2 for i in x], [r[3] if r[3] is not None else 0.0 for r in rows], w, label="baseline")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="recall", ylim=(0, 1), title="Recall@k: trained vs untrained model")
    ax.legend()
    fig.tight_layout()
    plot = out_dir / "recall.png"
    fig.savefig(plot)
    plt.close(fig)
    return [report, plot]
