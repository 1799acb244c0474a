"""Retrieval evaluation: Recall@k on the TEST pairs of every i2i / q2i dataset, at every Matryoshka dim.

Candidates are all catalogue items, embedded with the dataset's target
instruction; queries are the test pairs' query sides (items or text) with the
query instruction. Pairs sharing a query are grouped: the query's relevant set
is all its test targets. For item queries the query item itself is removed from
its ranking. Per-query recalls of all datasets of one task are pooled.

Metric names: ``"<task>.recall_at_<k>"`` at the full dim and
``"<task>.dim<d>.recall_at_<k>"`` for each smaller Matryoshka dim.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sail_core.config import Config
from sail_core.eval.recall import per_query_recall
from sail_core.model.embedder import SailEmbedder
from sail_core.model.pooling import matryoshka
from sail_core.preprocess.text import with_instruction
from sail_core.train.batches import side_text
from sail_core.train.pair_data import load_item_texts, load_pairs


def embed_all(model: SailEmbedder, texts: list[str], batch_size: int, desc: str) -> torch.Tensor:
    """Embed formatted strings in eval mode with a progress bar; (N, D) normalised."""
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", mininterval=1.0, leave=False):
        out.append(model.embed_texts(texts[s : s + batch_size], batch_size=batch_size))
    return torch.cat(out) if out else torch.empty(0, model.dim)


def _queries(pairs, item_texts: dict[str, str], item_row: dict[str, int], dataset: str):
    """Group test pairs by query: (query raw text, own corpus row or -1, relevant corpus rows)."""
    grouped: dict[tuple, tuple[str, int, set[int]]] = {}
    for i, r in enumerate(pairs.to_dict("records")):
        if r.get("target_item") is None:  # text targets (cls) are not item retrieval
            continue
        qi, qt = r.get("query_item"), r.get("query_text")
        key = ("item", str(qi)) if qi is not None else ("text", str(qt))
        target = item_row.get(str(r["target_item"]))
        if target is None:
            raise KeyError(f"pairs/{dataset} test row {i}: target item {r['target_item']!r} is not in items.parquet")
        own = item_row.get(str(qi), -1) if qi is not None else -1
        if target == own:
            continue
        text = side_text(qi, qt, item_texts, f"pairs/{dataset} test row {i}")
        grouped.setdefault(key, (text, own, set()))[2].add(target)
    return list(grouped.values())


def evaluate_model(model: SailEmbedder, data_dir: Path, cfg: Config) -> dict[str, float]:
    """Recall@k (``cfg.eval.ks``) for each task in ``cfg.eval.tasks``; see the module docstring for names."""
    data_dir = Path(data_dir)
    item_texts = load_item_texts(data_dir)
    item_ids = list(item_texts)
    item_row = {i: n for n, i in enumerate(item_ids)}
    ks, bs = list(cfg.eval.ks), cfg.eval.batch_size
    full = model.dim
    dims = [full] + [d for d in model.cfg.matryoshka_dims if d < full]
    corpora: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {}
    for task in cfg.eval.tasks:
        names = [n for n, d in cfg.datasets.items() if d.task == task]
        if not names:
            raise ValueError(f"eval.tasks lists {task!r} but no dataset in `datasets` has task {task!r}; "
                             "add one or remove the task from eval.tasks")
        pooled: dict[int, dict[int, list[torch.Tensor]]] = {d: {k: [] for k in ks} for d in dims}
        for name in names:
            ds = cfg.datasets[name]
            queries = _queries(load_pairs(data_dir, name, "test"), item_texts, item_row, name)
            if not queries:
                continue
            if ds.target_instruction not in corpora:
                texts = [with_instruction(ds.target_instruction, item_texts[i]) for i in item_ids]
                corpora[ds.target_instruction] = embed_all(model, texts, bs, f"embed items ({name})")
            corpus = corpora[ds.target_instruction]
            q_emb = embed_all(model, [with_instruction(ds.query_instruction, q[0]) for q in queries], bs,
                              f"embed {name} queries")
            own = [q[1] for q in queries]
            rel = [sorted(q[2]) for q in queries]
            for d in dims:
                per = per_query_recall(matryoshka(q_emb, d), matryoshka(corpus, d), rel, ks, exclude_index=own)
                for k in ks:
                    pooled[d][k].append(per[k])
        if not pooled[dims[0]][ks[0]]:
            raise ValueError(f"no test pairs with item targets for task {task!r} (datasets {names}) in "
                             f"{data_dir}/pairs; the data split left nothing to evaluate")
        for d in dims:
            prefix = task if d == full else f"{task}.dim{d}"
            for k in ks:
                metrics[f"{prefix}.recall_at_{k}"] = float(torch.cat(pooled[d][k]).mean())
    return metrics
