"""Item retrieval: Recall@k on the TEST pairs of the i2i / q2i datasets, with the omni model.

Candidates are all catalogue items shown as ``omni`` (every modality they have)
with the dataset's target instruction; queries are the test pairs' query sides
with the query instruction: an item (``omni``) for i2i, free text for q2i.
Pairs sharing a query are grouped: the query's relevant set is all its test
targets. An item query's own item is removed from its ranking, and self-pairs
(query item == target item, e.g. ``xmodal``) are not item retrieval and are
skipped. Per-query recalls of all datasets of one task are pooled.

``omni2omni`` is the i2i test with omni on both sides, at the full dim only,
over the i2i datasets that list the ``omni->omni`` pattern (all i2i datasets
when none does).

Metric names: ``"<task>.recall_at_<k>"`` at the full dim and
``"<task>.dim<d>.recall_at_<k>"`` for each smaller Matryoshka dim (i2i, q2i).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sail_core.config import Config
from sail_core.eval.embed import SideEmbedder
from sail_core.eval.recall import per_query_recall
from sail_core.model.pooling import matryoshka
from sail_core.data.pair_data import load_pairs


def _queries(pairs, item_row: dict[str, int], dataset: str):
    """Group test pairs by query: (query item | None, query text | None, own corpus row or -1, relevant rows)."""
    grouped: dict[tuple, tuple[str | None, str | None, int, set[int]]] = {}
    for i, r in enumerate(pairs.to_dict("records")):
        if r.get("target_item") is None:  # text targets (cls) are not item retrieval
            continue
        qi, qt = r.get("query_item"), r.get("query_text")
        target = item_row.get(str(r["target_item"]))
        if target is None:
            raise KeyError(f"pairs/{dataset} test row {i}: target item {r['target_item']!r} is not in items.parquet")
        own = item_row.get(str(qi), -1) if qi is not None else -1
        if target == own:
            continue
        if qi is None and qt is None:
            raise ValueError(f"pairs/{dataset} test row {i}: neither query_item nor query_text is set")
        key = (str(qi), None) if qi is not None else (None, str(qt))
        grouped.setdefault(key, (*key, own, set()))[3].add(target)
    return list(grouped.values())


def _task_recalls(embed: SideEmbedder, data_dir: Path, cfg: Config, names: list[str], item_ids: list[str],
                  dims: list[int]) -> dict[int, dict[int, list[torch.Tensor]]]:
    """Per-query recalls pooled over ``names`` datasets, per dim and k; empty lists when no test query."""
    ks = list(cfg.eval.ks)
    item_row = {i: n for n, i in enumerate(item_ids)}
    pooled: dict[int, dict[int, list[torch.Tensor]]] = {d: {k: [] for k in ks} for d in dims}
    for name in names:
        ds = cfg.datasets[name]
        queries = _queries(load_pairs(data_dir, name, "test"), item_row, name)
        if not queries:
            continue
        corpus = embed(embed.item_sides(item_ids, "omni", ds.target_instruction), f"embed items ({name})")
        sides = [(qi, qt, "omni" if qi is not None else "text", ds.query_instruction) for qi, qt, _, _ in queries]
        q_emb = embed(sides, f"embed {name} queries")
        own = [q[2] for q in queries]
        rel = [sorted(q[3]) for q in queries]
        for d in dims:
            per = per_query_recall(matryoshka(q_emb, d), matryoshka(corpus, d), rel, ks, exclude_index=own)
            for k in ks:
                pooled[d][k].append(per[k])
    return pooled


def item_retrieval(embed: SideEmbedder, data_dir: Path, cfg: Config, task: str) -> dict[str, np.ndarray]:
    """Per-query Recall@k of ``task`` in {i2i, q2i, omni2omni} (the metric is their mean); see the module
    docstring for names."""
    data_dir = Path(data_dir)
    item_ids = list(embed.inputs.items)
    full = embed.model.dim
    kind = "i2i" if task == "omni2omni" else task
    names = [n for n, d in cfg.datasets.items() if d.task == kind]
    if not names:
        raise ValueError(f"eval.tasks lists {task!r} but no dataset in `datasets` has task {kind!r}; "
                         "add one or remove the task from eval.tasks")
    dims = [full] + [d for d in embed.model.cfg.matryoshka_dims if d < full]
    if task == "omni2omni":
        names = [n for n in names if "omni->omni" in cfg.datasets[n].patterns] or names
        dims = [full]
    pooled = _task_recalls(embed, data_dir, cfg, names, item_ids, dims)
    ks = list(cfg.eval.ks)
    if not pooled[dims[0]][ks[0]]:
        raise ValueError(f"no test pairs with item targets for task {task!r} (datasets {names}) in "
                         f"{data_dir}/pairs; the data split left nothing to evaluate")
    metrics: dict[str, np.ndarray] = {}
    for d in dims:
        prefix = task if d == full else f"{task}.dim{d}"
        for k in ks:
            metrics[f"{prefix}.recall_at_{k}"] = torch.cat(pooled[d][k]).numpy()
    return metrics
