"""The evaluation's query sets, built once from the data and shared by every model scored on it.

A :class:`QuerySet` is a list of query sides, the corpus they rank, each query's relevant
corpus rows, the corpus row to leave out of its ranking (its own item), and the held-out
items it involves (so that a comparison can leave out items a champion trained on). Any
two models scored on the same data see the same queries in the same order, which is what
makes their comparison paired.

Held-out means the ``test`` split (:func:`sail_core.data.splits.item_splits`); validation
items never reach a reported figure.

* ``i2i`` / ``q2i``: the test pairs of the datasets with that task, grouped by query (one
  query per distinct query item or text; its relevant set is all its test targets), over
  the whole catalogue shown as ``omni`` with the dataset's target instruction. An item
  query's own item is left out of its ranking; self-pairs are skipped. ``omni2omni`` is
  i2i over the datasets listing the ``omni->omni`` pattern.
* ``<m>2text``: every test item that has modality ``m``, shown as ``m`` only, ranks the
  texts of all catalogue items; its own text is relevant (one query per item, so keyframes
  of one item are one query, never several).
* ``cls``: every test item with labels, as ``omni``, ranks the distinct label texts of the
  cls datasets; its labels are relevant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sail_core.config import CROSS_MODAL_TASKS, ITEM_TASKS, Config
from sail_core.data.pair_data import load_pairs
from sail_core.data.splits import item_splits
from sail_core.eval.embed import Side, item_sides
from sail_core.features.item_inputs import ItemInputs


@dataclass
class QuerySet:
    task: str
    name: str                     # the task, or task:dataset when a task pools several datasets
    sides: list[Side]
    corpus_key: str               # corpora with the same key are embedded once per model
    corpus: list[Side]
    relevant: list[set[int]]
    held_out: list[tuple[str, ...]]   # the test items each query involves
    exclude: np.ndarray | None = None
    ks: list[int] = field(default_factory=list)
    matryoshka: bool = False      # also scored at the smaller Matryoshka dims

    def keys(self) -> list[str]:
        """One printable key per query (what a paired comparison checks is the same on both sides)."""
        return [f"{i or ''}|{t or ''}|{m}" for i, t, m, _ in self.sides]


def _catalogue_key(instruction: str) -> str:
    return f"catalogue:omni:{instruction}"


def item_queries(cfg: Config, data_dir: Path, task: str, item_ids: list[str], test: set[str]) -> list[QuerySet]:
    """One :class:`QuerySet` per dataset of ``task`` in {i2i, q2i, omni2omni}."""
    kind = ITEM_TASKS[task]
    names = [n for n, d in cfg.datasets.items() if d.task == kind]
    if task == "omni2omni":
        names = [n for n in names if "omni->omni" in cfg.datasets[n].patterns] or names
    if not names:
        raise ValueError(f"eval.tasks lists {task!r} but no dataset in `datasets` has task {kind!r}; "
                         "add one or remove the task from eval.tasks")
    row = {i: n for n, i in enumerate(item_ids)}
    out = []
    for name in names:
        ds = cfg.datasets[name]
        grouped: dict[tuple, list] = {}
        for i, r in enumerate(load_pairs(data_dir, name, "test").to_dict("records")):
            if r.get("target_item") is None:
                continue
            qi, qt = r.get("query_item"), r.get("query_text")
            target = row.get(str(r["target_item"]))
            if target is None:
                raise KeyError(f"pairs/{name} test row {i}: target item {r['target_item']!r} is not in items.parquet")
            own = row.get(str(qi), -1) if qi is not None else -1
            if target == own:
                continue
            if qi is None and qt is None:
                raise ValueError(f"pairs/{name} test row {i}: neither query_item nor query_text is set; "
                                 "fill one of them")
            key = (str(qi), None) if qi is not None else (None, str(qt))
            g = grouped.setdefault(key, [own, set(), set()])
            g[1].add(target)
            g[2].update(x for x in (qi, r["target_item"]) if x is not None and str(x) in test)
        if not grouped:
            continue
        keys = list(grouped)
        out.append(QuerySet(
            task=task, name=f"{task}:{name}",
            sides=[(qi, qt, "omni" if qi is not None else "text", ds.query_instruction) for qi, qt in keys],
            corpus_key=_catalogue_key(ds.target_instruction),
            corpus=item_sides(item_ids, "omni", ds.target_instruction),
            relevant=[grouped[k][1] for k in keys],
            held_out=[tuple(sorted(grouped[k][2])) for k in keys],
            exclude=np.array([grouped[k][0] for k in keys], dtype=np.int64),
            ks=list(cfg.eval.ks), matryoshka=task != "omni2omni"))
    if not out:
        raise ValueError(f"no test pairs with item targets for task {task!r} (datasets {names}) in "
                         f"{data_dir}/pairs; the data split left nothing to evaluate")
    return out


def _instructions(cfg: Config, pattern: str) -> tuple[str, str] | None:
    listing = [d for d in cfg.datasets.values() if pattern in d.patterns]
    best = [d for d in listing if d.task == "i2i"] or listing
    return (best[0].query_instruction, best[0].target_instruction) if best else None


def cross_modal_queries(cfg: Config, task: str, inputs: ItemInputs, item_ids: list[str], test: set[str],
                        notes: list[str]) -> list[QuerySet]:
    modality = CROSS_MODAL_TASKS[task]
    instr = _instructions(cfg, f"{modality}->text")
    if instr is None:
        notes.append(f"{task} skipped: no dataset lists the pattern {modality}->text (its instructions are needed)")
        return []
    row = {i: n for n, i in enumerate(item_ids)}
    held = [i for i in item_ids if i in test]
    queries = [i for i in held if inputs.has(i, modality)]
    if not queries:
        notes.append(f"{task} skipped: none of the {len(held)} test items has {modality}")
        return []
    return [QuerySet(task=task, name=task, sides=item_sides(queries, modality, instr[0]),
                     corpus_key=f"catalogue:text:{instr[1]}", corpus=item_sides(item_ids, "text", instr[1]),
                     relevant=[{row[i]} for i in queries], held_out=[(i,) for i in queries],
                     ks=list(cfg.eval.ks))]


def cls_queries(cfg: Config, data_dir: Path, test: set[str], notes: list[str]) -> list[QuerySet]:
    out = []
    for name, ds in cfg.datasets.items():
        if ds.task != "cls":
            continue
        path = Path(data_dir) / "pairs" / f"{name}.parquet"
        labels = sorted(pd.read_parquet(path, columns=["target_text"])["target_text"].dropna().astype(str).unique())
        row = {label: n for n, label in enumerate(labels)}
        by_item: dict[str, set[int]] = {}
        for r in load_pairs(data_dir, name, "test").to_dict("records"):
            if r.get("query_item") is not None and str(r["query_item"]) in test and r.get("target_text") is not None:
                by_item.setdefault(str(r["query_item"]), set()).add(row[str(r["target_text"])])
        if not by_item:
            continue
        items = sorted(by_item)
        out.append(QuerySet(task="cls", name=f"cls:{name}", sides=item_sides(items, "omni", ds.query_instruction),
                            corpus_key=f"labels:{name}:{ds.target_instruction}",
                            corpus=[(None, label, "text", ds.target_instruction) for label in labels],
                            relevant=[by_item[i] for i in items], held_out=[(i,) for i in items],
                            ks=list(cfg.eval.label_ks)))
    if not out:
        notes.append("cls skipped: no cls dataset has test items with labels")
    return out


def build_queries(cfg: Config, data_dir: Path, inputs: ItemInputs, notes: list[str]) -> dict[str, list[QuerySet]]:
    """Every task of ``cfg.eval.tasks``: its query sets (a task that cannot be evaluated gets a note)."""
    item_ids = list(inputs.items)
    splits = item_splits(data_dir)
    test = {i for i, s in splits.items() if s == "test"}
    out: dict[str, list[QuerySet]] = {}
    for task in cfg.eval.tasks:
        if task in CROSS_MODAL_TASKS:
            sets = cross_modal_queries(cfg, task, inputs, item_ids, test, notes)
        elif task == "cls":
            sets = cls_queries(cfg, Path(data_dir), test, notes)
        else:
            sets = item_queries(cfg, Path(data_dir), task, item_ids, test)
        if sets:
            out[task] = sets
    return out
