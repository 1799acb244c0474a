"""Cross-modal held-out retrieval: a held-out item's cover / keyframes / audio -> its own text.

``<m>2text`` (m in image, frames, audio): each held-out item that has modality
``m`` is a query, shown as ``m`` only; the corpus is the text of ALL catalogue
items; the relevant row is the item's own text. Held-out items are those in
some test pair and in no train pair (the data split holds items out).

Instructions come from the first dataset whose ``patterns`` list ``m->text``
with item targets (task i2i, e.g. ``xmodal``), else the first listing it at all;
with none, the task is skipped with a note. It is skipped too when no held-out
item has the modality.

Metric names: ``"<m>2text.recall_at_<k>"`` (full dim).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sail_core.config import Config
from sail_core.data import schema
from sail_core.eval.embed import SideEmbedder
from sail_core.eval.recall import per_query_recall

CROSS_MODAL = {"image2text": "image", "frames2text": "frames", "audio2text": "audio"}


def held_out_items(data_dir: Path, dataset_names: list[str]) -> list[str]:
    """Items in a test pair and in no train pair of any of the datasets, in catalogue order."""
    test, train = set(), set()
    for name in dataset_names:
        path = Path(data_dir) / schema.PAIRS_DIR / f"{name}.parquet"
        if not path.exists():
            continue
        pairs = pd.read_parquet(path, columns=["query_item", "target_item", "split"])
        for col in ("query_item", "target_item"):
            ids = pairs[col].notna()
            test.update(pairs.loc[ids & (pairs["split"] == "test"), col].astype(str))
            train.update(pairs.loc[ids & (pairs["split"] == "train"), col].astype(str))
    return sorted(test - train)


def _instructions(cfg: Config, pattern: str) -> tuple[str, str] | None:
    listing = [d for d in cfg.datasets.values() if pattern in d.patterns]
    best = [d for d in listing if d.task == "i2i"] or listing
    return (best[0].query_instruction, best[0].target_instruction) if best else None


def cross_modal(embed: SideEmbedder, data_dir: Path, cfg: Config, task: str, notes: list[str]) -> dict[str, np.ndarray]:
    """Per-query Recall@k of ``task`` in :data:`CROSS_MODAL` (the metric is their mean); {} (and a note)
    when it cannot be evaluated."""
    modality = CROSS_MODAL[task]
    instr = _instructions(cfg, f"{modality}->text")
    if instr is None:
        notes.append(f"{task} skipped: no dataset lists the pattern {modality}->text (its instructions are needed)")
        return {}
    item_ids = list(embed.inputs.items)
    row = {i: n for n, i in enumerate(item_ids)}
    held = [i for i in held_out_items(data_dir, list(cfg.datasets)) if i in row]
    queries = [i for i in held if embed.inputs.has(i, modality)]
    if not queries:
        notes.append(f"{task} skipped: none of the {len(held)} held-out items has {modality}")
        return {}
    corpus = embed(embed.item_sides(item_ids, "text", instr[1]), "embed item texts")
    q = embed(embed.item_sides(queries, modality, instr[0]), f"embed held-out {modality}")
    rec = per_query_recall(q, corpus, [row[i] for i in queries], list(cfg.eval.ks))
    return {f"{task}.recall_at_{k}": v.numpy() for k, v in rec.items()}
