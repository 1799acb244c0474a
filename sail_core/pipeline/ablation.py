"""``sail ablate``: the report's ablation path on the demo data, as real pipeline runs, compared in one table.

Eight cumulative rows (METHOD.md, "Evaluation"), each a configuration of the profile (overrides, listed in
:func:`rows`), each trained, indexed and evaluated as a pipeline run of its own (MLflow run tagged
``sail.ablation=<name>``, ``sail.ablation.row``, ``sail.ablation.seed``):

1. text backbone only: data without media (``data.media: false``), text patterns only, one shared instruction;
2. + fusion of media: the media data and every modality pattern (the cross-modal ``xmodal`` dataset too);
3. + task instructions: each dataset's own instructions instead of one shared one;
4. + CoSENT on ``copair_i2i``'s co-rating counts;
5. + mICL and late fusion;
6. + balancing (one stage: matched with the starting model);
7. + hard negatives (one stage: mined with the starting model);
8. + progressive stages: the profile's stages I -> II -> III as configured (the full recipe), against rows 1-7's
   single stage of the same total steps.

Rows 1-7 train one stage of ``sum(steps of the profile's stages)`` steps with stage I's settings. Every run
evaluates the same test queries (``eval.baseline`` off: the untrained model is not what a row is compared
with); the last row also scores the plain text reference. The table
(:mod:`sail_core.eval.ablation_table`) shows each row with its 95% interval and each step's gain as the
paired interval of the difference. A finished row is found again by its tags and not re-run, so an
interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

from sail_core.config import CRE_TASKS, Config, load_config

console = Console(stderr=True, soft_wrap=True)
METRICS = ["i2i.recall_at_10", "q2i.recall_at_10"]
SHARED_INSTRUCTION = "Represent this for retrieval."
TAG = "sail.ablation"
NAMES = {1: "text backbone only", 2: "+ fusion of media", 3: "+ task instructions", 4: "+ CoSENT",
         5: "+ mICL and late fusion", 6: "+ balancing", 7: "+ hard negatives (stage III)",
         8: "+ progressive stages (I -> II -> III)"}


def _datasets(cfg: Config, *, text_only: bool, shared: bool, cosent: bool, micl: bool) -> dict:
    out = {}
    for name, ds in cfg.datasets.items():
        d = ds.model_dump(mode="json")
        if text_only:
            d["patterns"] = ["text->text"]
        if shared:
            d["query_instruction"] = d["target_instruction"] = SHARED_INSTRUCTION
        if not cosent:
            d["cosent_weight"] = 0.0
        if not micl:
            d["micl_weight"] = d["late_fusion_weight"] = 0.0
        out[name] = d
    return out


def rows(cfg: Config) -> dict[int, dict]:
    """Row number -> the overrides (dotted keys) that make that row from ``cfg``."""
    # the content-aware recipe only: the CRE stages (seq2item / id2item) have their own table (`sail cre-table`)
    content = [s for s in cfg.train.stages if not any(n in CRE_TASKS for n in s.datasets)]
    first = content[0].model_dump(mode="json")
    total = sum(s.steps for s in content)
    mined = next((s for s in content if s.hard_negatives), None)
    # row 1 keeps the datasets that have a text (or omni) query side; the media-only ones (xmodal) go
    text_sets = [n for n in first["datasets"]
                 if any(p.split("->")[0] in ("text", "omni") for p in cfg.datasets[n].patterns)]

    def one_stage(**extra) -> list[dict]:
        return [{**first, "steps": total, "checkpoint_every": total, **extra}]

    # every row scores the same test queries of the tasks row 1 can do too (no media there)
    common = {"eval.baseline": False, "eval.reference": False, "eval.tasks": [
        t for t in cfg.eval.tasks if t in ("i2i", "q2i", "cls")], "gate.metrics": [
        {"metric": "eval.i2i.recall_at_10", "min_delta": -1.0}]}
    out = {
        1: {"data.media": False, "train.stages": one_stage(datasets=text_sets),
            "datasets": _datasets(cfg, text_only=True, shared=True, cosent=False, micl=False)},
        2: {"train.stages": one_stage(), "datasets": _datasets(cfg, text_only=False, shared=True, cosent=False, micl=False)},
        3: {"train.stages": one_stage(), "datasets": _datasets(cfg, text_only=False, shared=False, cosent=False, micl=False)},
        4: {"train.stages": one_stage(), "datasets": _datasets(cfg, text_only=False, shared=False, cosent=True, micl=False)},
        5: {"train.stages": one_stage()},
        6: {"train.stages": one_stage(balance=True)},
        7: {"train.stages": one_stage(balance=True, hard_negatives=mined.hard_negatives if mined else 2,
                                      hard_negative_datasets=list(mined.hard_negative_datasets) if mined else
                                      [n for n in first["datasets"] if cfg.datasets[n].task != "cls"][:2])},
        8: {"eval.reference": True, "train.stages": [s.model_dump(mode="json") for s in content]},
    }
    return {r: {**common, **o} for r, o in out.items()}


def _finished(cfg: Config, name: str) -> dict[tuple[int, int], str]:
    from sail_core.pipeline import tracking

    done = {}
    for run_id, tags in tracking.runs_with_tag(cfg.registry.experiment, TAG, name, limit=200):
        if tags.get(f"{TAG}.done") == "1":
            done.setdefault((int(tags[f"{TAG}.row"]), int(tags[f"{TAG}.seed"])), run_id)
    return done


def _run_row(cfg: Config, name: str, row: int, seed: int, data_run: str | None) -> str:
    """One row as a pipeline run: on the data of ``data_run`` (an earlier row with the same data), else
    ingested, validated and versioned in this run."""
    from sail_core.pipeline.variant_runs import run_variant

    return run_variant(cfg, f"ablate-{row}-s{seed}", {TAG: name, f"{TAG}.row": str(row), f"{TAG}.seed": str(seed),
                                                       f"{TAG}.step": NAMES[row], "sail.trigger": "ablate"},
                       f"{TAG}.done", data_run)


def _per_query(run_id: str) -> dict[str, dict[str, np.ndarray]]:
    from sail_core.eval.evaluate import read_per_query
    from sail_core.pipeline import registry

    with tempfile.TemporaryDirectory(prefix="sail-ablate-") as tmp:
        folder = Path(registry.client().download_artifacts(run_id, "eval", tmp))
        return read_per_query(folder)[0]


def ablate(profile: str | None = None, name: str = "demo", seeds: tuple[int, ...] = (0, 1),
           only: list[int] | None = None, out_dir: Path | None = None, overrides: dict | None = None) -> dict:
    """Run the rows not yet finished (rows 1 and 8 with every seed in ``seeds``, the others with the first),
    then write the table to ``out_dir`` (default ``reports/ablation``) and log it to MLflow."""
    from sail_core.eval.ablation_table import AblationRun, ablation_table, write_ablation
    from sail_core.paths import workdir
    from sail_core.pipeline import tracking

    base = load_config(profile=profile, overrides=overrides)
    plan = rows(base)
    wanted = sorted(((r, s) for r in sorted(plan) if not only or r in only
                     for s in (seeds if r in (1, 8) else seeds[:1])), key=lambda rs: (seeds.index(rs[1]), rs[0]))
    done = _finished(base, name)
    for r, s in wanted:
        if (r, s) in done:
            console.print(f"[green]ablate[/]: row {r} ({NAMES[r]}), seed {s}: done in MLflow run {done[(r, s)]}")
            continue
        cfg = load_config(profile=profile, overrides={**(overrides or {}), **plan[r], "train.seed": s})
        console.print(f"[bold]ablate[/]: row {r} ({NAMES[r]}), seed {s}")
        same_data = [i for (r2, _), i in done.items() if (r2 == 1) == (r == 1)]  # row 1 has its own (media-free) data
        done[(r, s)] = _run_row(cfg, name, r, s, same_data[0] if same_data else None)
    runs, reference = [], None
    for (r, s), run_id in sorted(done.items()):
        if (r, s) not in wanted:
            continue
        per = _per_query(run_id)
        runs.append(AblationRun(r, NAMES[r], s, run_id, {m: per["eval"][m] for m in METRICS}))
        if "reference" in per and reference is None:
            reference = {m: per["reference"][m] for m in METRICS if m in per["reference"]}
    table = ablation_table(runs, METRICS, reference, "plain MiniLM text reference")
    out = Path(out_dir or workdir().reports / "ablation")
    paths = write_ablation(table, out, title=f"Ablation `{name}` (profile {base.profile})")
    last = runs[-1].run_id
    tracking.log_artifacts(last, out, "ablation")
    console.print(f"[green]ablate[/]: table in {out} (and artifact ablation/ of MLflow run {last})")
    return {"table": str(out / "ablation.md"), "runs": {f"{r}.s{s}": i for (r, s), i in sorted(done.items())}}
