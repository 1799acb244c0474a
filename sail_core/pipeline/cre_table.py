"""``sail cre-table``: the report's Tables 4 and 5 on our data, as real pipeline runs compared in one table.

Three cumulative rows, each a pipeline run of the profile (MLflow tags ``sail.cre_table=<name>``,
``sail.cre_table.row``), trained, indexed and evaluated on the same queries:

1. content-only: stages I -> III (the profile's stages without the CRE tasks);
2. + seq2item: a CRE stage on ``seq2item`` and the auxiliary i2i dataset;
3. + seq2item + ID2item: the profile's CRE stage as configured.

Finished content stages are recognised by their key (:mod:`sail_core.pipeline.stages`), so rows 2 and 3
reuse row 1's stages I-III and train only their CRE stage. Reference rows, on the same queries
(:mod:`sail_core.eval.cre_reference`): the ridge stand-in (the table's ``vs_reference``), the training
teacher itself and plain MiniLM on the item text. All metrics come from each run's catalogue index.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

from sail_core.config import CRE_TASKS, Config, load_config

console = Console(stderr=True, soft_wrap=True)
TAG = "sail.cre_table"
NAMES = {1: "content-only (stages I-III)", 2: "+ seq2item", 3: "+ seq2item + ID2item"}
METRICS = ["i2i.recall_at_10", "i2i.recall_at_50", "seq2item.recall_at_10", "seq2item.filtered.recall_at_10",
           "seq2item_cold.filtered.recall_at_10", "gid_i2i.recall_at_50", "collab.kendall_tau",
           "collab.top10_overlap", "bijective.accuracy", "auc.with_embedding"]


def rows(cfg: Config) -> dict[int, dict]:
    """Row number -> the overrides that make that row from ``cfg`` (which must have a stage with both CRE tasks)."""
    stages = [s.model_dump(mode="json") for s in cfg.train.stages]
    cre = [s for s in stages if set(CRE_TASKS) <= set(s["datasets"])]
    if not cre:
        raise ValueError(f"profile {cfg.profile!r} has no training stage with both {list(CRE_TASKS)}; the CRE table "
                         "compares it with the same profile without them")
    content = [s for s in stages if not set(CRE_TASKS) & set(s["datasets"])]
    seq_only = [{**s, "datasets": [d for d in s["datasets"] if d != "id2item"]} if s in cre else s
                for s in stages]
    common = {"eval.baseline": False, "eval.reference": False}
    return {1: {**common, "train.stages": content}, 2: {**common, "train.stages": seq_only}, 3: common}


def _finished(cfg: Config, name: str) -> dict[int, str]:
    from sail_core.pipeline import tracking

    return {int(tags[f"{TAG}.row"]): run_id
            for run_id, tags in tracking.runs_with_tag(cfg.registry.experiment, TAG, name, limit=100)
            if tags.get(f"{TAG}.done") == "1"}


def _run_row(cfg: Config, name: str, row: int, data_run: str | None) -> str:
    from sail_core.pipeline.variant_runs import run_variant

    return run_variant(cfg, f"cre-{row}", {TAG: name, f"{TAG}.row": str(row), f"{TAG}.step": NAMES[row],
                                          "sail.trigger": "cre-table"}, f"{TAG}.done", data_run)


def _per_query(run_id: str) -> dict[str, np.ndarray]:
    from sail_core.eval.evaluate import read_per_query
    from sail_core.pipeline import registry

    with tempfile.TemporaryDirectory(prefix="sail-cre-") as tmp:
        folder = Path(registry.client().download_artifacts(run_id, "eval", tmp))
        return read_per_query(folder)[0]["eval"]


def reference_rows(cfg: Config, run_id: str) -> dict[str, dict[str, np.ndarray]]:
    """Per-query values of the ridge stand-in, the teacher and plain MiniLM on the data of ``run_id``."""
    from sail_core.eval.cre_reference import TableEncoder, ridge_standin_vectors, teacher_vectors
    from sail_core.eval.embed import EmbeddingStore, item_sides
    from sail_core.eval.queries import build_queries
    from sail_core.eval.recommendation import recommendation_metrics
    from sail_core.eval.reference import TextReference
    from sail_core.eval.scoring import score
    from sail_core.features.item_inputs import ItemInputs
    from sail_core.pipeline import runs, workspace
    from sail_core.pipeline.cre_steps import TEACHER

    record = runs.get(cfg, run_id)
    with workspace.for_run(cfg, record.run_id) as ws, tempfile.TemporaryDirectory(prefix="sail-cre-ref-") as tmp:
        ws.pull("data/validated", TEACHER)
        data, teacher_dir = ws.wd.validated, ws.wd.root / TEACHER
        inputs = ItemInputs.from_data_dir(data, cfg.model, feature_threads=cfg.train.feature_threads)
        ids = list(inputs.items)
        queries = build_queries(cfg, data, inputs, [])
        text = TextReference(inputs, cfg.eval.batch_size)(item_sides(ids, "text", ""))
        standin, _ = ridge_standin_vectors(cfg, data, ids, text)
        out = {}
        for label, vectors in (("ridge stand-in", standin), ("teacher (ID embeddings)", teacher_vectors(ids, teacher_dir, cfg.train.seed)),
                               ("plain MiniLM text", text)):
            store = EmbeddingStore(TableEncoder(ids, vectors), Path(tmp) / label.split()[0], progress=False)
            per = score(store, queries, tasks=["i2i"])
            per.update(recommendation_metrics(cfg, data, vectors, ids, teacher_dir, None)[0])
            out[label] = per
        return out


def cre_table(profile: str | None = None, name: str = "demo", out_dir: Path | None = None,
              overrides: dict | None = None) -> dict:
    """Run the rows not yet finished, then write the table (markdown, JSON, PNG) to ``out_dir`` (default
    ``reports/cre``) and log it to MLflow."""
    from sail_core.eval.ablation_table import AblationRun, ablation_table, write_ablation
    from sail_core.eval.cre_reference import append_reference_rows
    from sail_core.paths import workdir
    from sail_core.pipeline import tracking

    base = load_config(profile=profile, overrides=overrides)
    plan = rows(base)
    done = _finished(base, name)
    for r in sorted(plan):
        if r in done:
            console.print(f"[green]cre-table[/]: row {r} ({NAMES[r]}): done in MLflow run {done[r]}")
            continue
        cfg = load_config(profile=profile, overrides={**(overrides or {}), **plan[r]})
        console.print(f"[bold]cre-table[/]: row {r} ({NAMES[r]})")
        done[r] = _run_row(cfg, name, r, next(iter(done.values()), None))
    runs_ = []
    for r, run_id in sorted(done.items()):
        per = _per_query(run_id)
        runs_.append(AblationRun(r, NAMES[r], 0, run_id, {m: per[m] for m in METRICS if m in per}))
    metrics = [m for m in METRICS if all(m in r.per_query for r in runs_)]
    references = reference_rows(base, done[3])
    table = ablation_table(runs_, metrics, {m: v for m, v in references["ridge stand-in"].items() if m in metrics},
                           "ridge stand-in (SVD of train ratings + ridge from MiniLM text)")
    out = Path(out_dir or workdir().reports / "cre")
    paths = write_ablation(table, out, title=f"CRE `{name}` (profile {base.profile})")
    append_reference_rows(out, references, metrics)
    tracking.log_artifacts(done[3], out, "cre_table")
    console.print(f"[green]cre-table[/]: table in {out} (and artifact cre_table/ of MLflow run {done[3]})")
    return {"table": str(out / "ablation.md"), "files": [str(p) for p in paths],
            "runs": {str(r): i for r, i in sorted(done.items())}}
