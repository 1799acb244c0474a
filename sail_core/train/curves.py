"""Write a training run's metric history: ``train_metrics.json`` and ``loss_curve.png``."""

from __future__ import annotations

import json
from pathlib import Path


def write_train_metrics(out_dir: Path, summary: dict, history: list[dict]) -> Path:
    path = Path(out_dir) / "train_metrics.json"
    path.write_text(json.dumps({"summary": summary, "history": history}, indent=2))
    return path


def plot_loss_curve(out_dir: Path, history: list[dict], title: str) -> Path:
    """Total loss per step, one colour per dataset, with a running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(out_dir) / "loss_curve.png"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name in sorted({h["dataset"] for h in history}):
        pts = [(h["step"], h["loss"]) for h in history if h["dataset"] == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, label=name, alpha=0.7)
    window = max(1, len(history) // 20)
    losses = [h["loss"] for h in history]
    running = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    ax.plot([h["step"] for h in history], running, color="black", lw=1.5, label=f"running mean ({window})")
    ax.set(xlabel="step", ylabel="loss (sum of *_loss terms)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
