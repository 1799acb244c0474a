"""Training stages as pipeline steps: the ``mine`` step before a stage with hard negatives, each stage's
nested MLflow run, and recognising a stage (or a mining) that already finished.

**Finished work is recognised by a key**: the sha256 of the stage's configuration (the stage, the
datasets it trains on, the model, the seed, balancing), the hash of its data (``data/validated``), the
hash of the model it starts from and, for stage III, of its mined negatives. The key is written into
the output (``stage.json``) and tagged on the pipeline run (``sail.stage_key.<name>``). Before a stage
trains in a run workspace (Airflow, ``sail run``, ``sail ablate``), :func:`reuse` looks for an output with
the same key, in this run or in any earlier run of the experiment whose output is in the object store,
and takes it instead of training again; so re-running a pipeline that failed in stage III (a retry, or a
new run with the same settings) does not retrain stages I and II. Code changes are not part of the key;
in the DVC project (``sail train``, ``dvc repro``) DVC decides what is stale, code included, and nothing
is reused by key.

**Nested runs**: every stage logs to its own MLflow run (``train.<name>``, ``mine.<name>``) nested
under the pipeline run: per-step loss terms, temperatures, sampling weights, balancing and
hard-negative statistics, the loss curve and F1 curve PNGs. The pipeline run keeps the stage's summary
(``train.<name>.final_loss``, ``.seconds``, ``.reused``) and a tag pointing at the child run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from rich.console import Console

from sail_core.config import CRE_TASKS, Config, ConfigError, StageConfig
from sail_core.pipeline.cre_steps import TEACHER
from sail_core.pipeline.workspace import OUT_TAG, Workspace

console = Console(stderr=True, soft_wrap=True)
KEY_FILE = "stage.json"
KEY_TAG = "sail.stage_key."
CHILD_TAG = "sail.stage_run."
MINED = "data/mined"


def _cre(stage: StageConfig) -> bool:
    return any(n in CRE_TASKS for n in stage.datasets)


def stage_of(cfg: Config, name: str) -> tuple[int, StageConfig]:
    names = [s.name for s in cfg.train.stages]
    if name not in names:
        raise ConfigError(f"training stage {name!r} is not in train.stages of profile {cfg.profile!r} "
                          f"(its stages: {', '.join(names)}); pick one of those or another profile")
    i = names.index(name)
    return i, cfg.train.stages[i]


def start_model(cfg: Config, i: int) -> str | None:
    """The workspace path of the model stage ``i`` starts from (None: the untrained model)."""
    return f"models/{cfg.train.stages[i - 1].name}" if i else None


def mined_path(name: str) -> str:
    return f"{MINED}/{name}"


def _folder_hash(ws: Workspace, path: str) -> str:
    """The recorded object-store hash of ``path`` (run workspace), else a hash of its files (project)."""
    recorded = ws.output_hash(path)
    if recorded:
        return recorded
    root = ws.wd.root / path
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts):
        h.update(str(f.relative_to(root)).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def work_key(cfg: Config, ws: Workspace, kind: str, name: str) -> str:
    """The key of ``kind`` (``train`` or ``mine``) for stage ``name``: configuration, data, starting model, negatives."""
    from sail_core.pipeline.steps import data_hash

    i, stage = stage_of(cfg, name)
    parts = {
        "kind": kind,
        "stage": stage.model_dump(mode="json"),
        "datasets": {n: cfg.datasets[n].model_dump(mode="json") for n in stage.datasets if n in cfg.datasets},
        "model": cfg.model.model_dump(mode="json"),
        "seed": cfg.train.seed,
        "balance": cfg.train.balance.model_dump(mode="json") if stage.balance else None,
        "data": data_hash(ws),
        "start": _folder_hash(ws, start_model(cfg, i)) if i else "untrained",
    }
    if kind == "train" and stage.hard_negatives:
        parts["negatives"] = _folder_hash(ws, mined_path(name))
    if kind == "train" and _cre(stage):
        parts["cre"] = cfg.cre.model_dump(mode="json")
        parts["teacher"] = _folder_hash(ws, TEACHER)
    if parts["data"] == "unversioned":  # a project workspace before `sail version`
        parts["data"] = _folder_hash(ws, "data/validated")
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _tag(kind: str, name: str) -> str:
    return f"{KEY_TAG}{kind}.{name}"


def reuse(cfg: Config, ws: Workspace, kind: str, name: str, path: str, key: str) -> dict | None:
    """The record of a finished ``path`` with ``key`` (this workspace, else an earlier run), made this run's
    output; None when there is none."""
    from sail_core.pipeline import tracking

    if ws.is_project:
        return None  # `sail train` / `dvc repro` in the DVC project: DVC decides what is stale (code included)
    local = ws.wd.root / path / KEY_FILE
    if local.exists():
        record = json.loads(local.read_text())
        if record.get("key") == key and OUT_TAG + path in tracking.run_tags(ws.mlflow_run_id):
            return record  # this run's own output (a retry after a later failure)
    for run_id, tags in tracking.runs_with_tag(cfg.registry.experiment, _tag(kind, name), key):
        if run_id == ws.mlflow_run_id:
            continue
        if OUT_TAG + path not in tags:
            continue
        mine = tracking.run_tags(ws.mlflow_run_id)
        tracking.set_tags(ws.mlflow_run_id, {OUT_TAG + path: tags[OUT_TAG + path]})
        try:
            ws.pull(path)
        except Exception as err:  # e.g. removed by `sail gc`: put the tag back and train
            console.print(f"[yellow]{kind}[/]: {path} of run {tags.get('sail.run_id', run_id)} has the same key but "
                          f"cannot be fetched ({err}); computing it again")
            if OUT_TAG + path in mine:
                tracking.set_tags(ws.mlflow_run_id, {OUT_TAG + path: mine[OUT_TAG + path]})
            else:
                tracking.delete_tag(ws.mlflow_run_id, OUT_TAG + path)
            continue
        tracking.set_tags(ws.mlflow_run_id, {_tag(kind, name): key, f"sail.reused.{path}": tags.get("sail.run_id", run_id)})
        record = json.loads((ws.wd.root / path / KEY_FILE).read_text())
        return {**record, "reused_from": tags.get("sail.run_id", run_id)}
    return None


def write_key(ws: Workspace, kind: str, name: str, path: str, key: str, summary: dict) -> None:
    (ws.wd.root / path).mkdir(parents=True, exist_ok=True)
    (ws.wd.root / path / KEY_FILE).write_text(json.dumps({"key": key, "kind": kind, "stage": name,
                                                          "summary": summary}, indent=2, default=str))


def child_run(ws: Workspace, kind: str, name: str):
    """Start (or, on a retry, resume) the nested MLflow run ``<kind>.<name>`` under the pipeline run; returns
    the context manager of ``mlflow.start_run``. Call inside ``tracking.resume_run(parent)``."""
    import mlflow

    from sail_core.pipeline import tracking

    tag = f"{CHILD_TAG}{kind}.{name}"
    existing = tracking.run_tags(ws.mlflow_run_id).get(tag)
    if existing:
        return mlflow.start_run(run_id=existing, nested=True)
    parent = mlflow.active_run()
    run = mlflow.start_run(run_name=f"{kind}.{name}", nested=True, experiment_id=parent.info.experiment_id,
                           tags={"sail.stage": name, "sail.kind": kind, "sail.parent_run": ws.run_id or "none"})
    tracking.set_tags(ws.mlflow_run_id, {tag: run.info.run_id})
    return run


# ----------------------------------------------------------------------------------------- mine
def mine(cfg: Config, ws: Workspace, name: str) -> dict:
    """Mine hard negatives for stage ``name`` with the model it starts from; write ``data/mined/<name>/``
    (``hard_negatives/<dataset>.parquet``, contract-checked; ``mining.json``; ``f1_<dataset>.png``)."""
    import mlflow

    from data_contracts.hard_negatives import check_hard_negatives
    from sail_core.data.pair_data import load_pairs
    from sail_core.data.splits import train_items
    from sail_core.eval.embed import ModelEncoder
    from sail_core.features.item_inputs import ItemInputs
    from sail_core.losses.patterns import split_pattern
    from sail_core.pipeline import tracking
    from sail_core.pipeline.atomic import replace_dir
    from sail_core.train.loop import load_initial_model
    from sail_core.train.mining import f1_curve_png
    from sail_core.train.mining import mine as mine_dataset
    from sail_core.train.mining import write_hard_negatives

    i, stage = stage_of(cfg, name)
    if not stage.hard_negatives:
        raise ConfigError(f"stage {name!r} has hard_negatives: 0, so there is nothing to mine for it")
    path = mined_path(name)
    ws.pull("data/validated", *([start_model(cfg, i)] if i else []))
    key = work_key(cfg, ws, "mine", name)
    done = reuse(cfg, ws, "mine", name, path, key)
    if done is not None:
        console.print(f"[green]mine[/]: {name}: negatives with the same key already mined; reused")
        tracking.set_tags(ws.mlflow_run_id, {_tag("mine", name): key})
        return {"stage": name, "reused": True, **done.get("summary", {})}
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    init = ws.wd.root / start_model(cfg, i) / "model" if i else None
    model = load_initial_model(cfg, init)
    data = ws.wd.validated
    inputs = ItemInputs.from_data_dir(data, model.cfg, feature_threads=cfg.train.feature_threads)
    encoder = ModelEncoder(model, inputs, cfg.eval.batch_size)
    allowed = train_items(data, inputs.items)
    stats = {}
    with replace_dir(ws.wd.root / path) as tmp, tracking.resume_run(ws.mlflow_run_id), child_run(ws, "mine", name):
        for ds_name in stage.hard_negative_datasets:
            ds = cfg.datasets[ds_name]
            qm, tm = split_pattern(ds.patterns[0])
            result = mine_dataset(load_pairs(data, ds_name, "train"), encoder, allowed, tmp / "work",
                                  query_instruction=ds.query_instruction, target_instruction=ds.target_instruction,
                                  query_modality=qm, target_modality=tm, per_query=max(8, 2 * stage.hard_negatives),
                                  seed=cfg.train.seed, dataset=ds_name)
            where = f"{path}/hard_negatives/{ds_name}.parquet"
            check_hard_negatives(result.frame, allowed, where)
            write_hard_negatives(tmp, ds_name, result.frame)
            png = f1_curve_png(result.curve, tmp / f"f1_{ds_name}.png", f"{ds_name}: λ* = {result.stats['lambda_star']:.3f}")
            stats[ds_name] = result.stats
            mlflow.log_metrics({f"{ds_name}.{k}": float(v) for k, v in result.stats.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)})
            mlflow.log_artifact(str(png), artifact_path="mining")
            console.print(f"[green]mine[/]: {name}/{ds_name}: λ* {result.stats['lambda_star']:.3f} (F1 "
                          f"{result.stats['f1_star']:.3f}); kept {result.stats['kept']}, dropped "
                          f"{result.stats['dropped']} as probable false negatives; mean cosine kept "
                          f"{result.stats['mean_cos_kept']:.3f} vs random {result.stats['mean_cos_random']:.3f}")
        shutil.rmtree(tmp / "work", ignore_errors=True)
        (tmp / "mining.json").write_text(json.dumps(stats, indent=2, default=str))
        mlflow.log_artifact(str(tmp / "mining.json"), artifact_path="mining")
        summary = {"datasets": {d: {k: s[k] for k in ("lambda_star", "f1_star", "kept", "dropped")} for d, s in stats.items()}}
        (tmp / KEY_FILE).write_text(json.dumps({"key": key, "kind": "mine", "stage": name, "summary": summary},
                                               indent=2, default=str))
    ws.push(path)
    tracking.set_tags(ws.mlflow_run_id, {_tag("mine", name): key})
    return {"stage": name, "reused": False, **summary}


# ---------------------------------------------------------------------------------------- train
def _prepare_train(cfg: Config, ws: Workspace, name: str, resume: bool) -> dict:
    """Rank 0's part before training stage ``name``: pull its inputs, decide whether an output with the same key
    can be taken, clear or restore its checkpoints. Returns the plan every rank follows (plain data)."""
    from sail_core.pipeline import tracking
    from sail_core.train.checkpoint import CHECKPOINTS

    i, stage = stage_of(cfg, name)
    start = start_model(cfg, i)
    ws.pull("data/validated", *([start] if start else []), *([mined_path(name)] if stage.hard_negatives else []),
            *([TEACHER] if _cre(stage) else []))
    init_from = ws.wd.root / start / "model" if start else None
    if init_from is not None and not init_from.exists():
        raise FileNotFoundError(f"training stage {name!r} starts from {init_from}, which does not exist; "
                                f"run `sail train --stage {cfg.train.stages[i - 1].name}` (or `sail train`) first")
    path = f"models/{name}"
    key = work_key(cfg, ws, "train", name)
    done = reuse(cfg, ws, "train", name, path, key)
    if done is not None:
        where = f"run {done['reused_from']}" if done.get("reused_from") else str(ws.wd.root / path)
        console.print(f"[green]train[/]: stage {name} already trained with the same configuration, data and "
                      f"starting model (key {key[:12]}, {where}); not retrained")
        tracking.set_tags(ws.mlflow_run_id, {_tag("train", name): key})
        tracking.log_metrics(ws.mlflow_run_id, {f"train.{name}.reused": 1.0})
        return {"reused": {**done.get("summary", {}), "reused": True}}
    out = ws.wd.root / path
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    elif ws.restore_checkpoints(name, out / CHECKPOINTS):
        console.print(f"train: stage {name} resumes from the checkpoints in {ws.url}")
    return {"reused": None, "key": key, "path": path, "out": str(out), "data": str(ws.wd.validated),
            "init_from": str(init_from) if init_from else None,
            "negatives_dir": str(ws.wd.root / mined_path(name)) if stage.hard_negatives else None,
            "teacher_dir": str(ws.wd.root / TEACHER) if _cre(stage) else None}


def train(cfg: Config, ws: Workspace, name: str, resume: bool = False) -> dict:
    """Train stage ``name`` (see :func:`sail_core.pipeline.steps.train_stage`), unless an output with the same
    key exists; logs to the nested run ``train.<name>``.

    Under ``torchrun`` every rank calls this: rank 0 prepares (pulls, decides reuse), logs and pushes; the
    other ranks train their slice of each batch from the plan rank 0 hands them and write nothing."""
    import mlflow

    from sail_core.losses.gather import world
    from sail_core.pipeline import tracking
    from sail_core.train.distributed import lead_then_share
    from sail_core.train.loop import train_stage as run_stage

    _, stage = stage_of(cfg, name)
    plan = lead_then_share(lambda: _prepare_train(cfg, ws, name, resume))
    if plan["reused"] is not None:
        return plan["reused"]
    where = {k: Path(plan[k]) if plan[k] else None for k in ("init_from", "negatives_dir", "teacher_dir")}
    out, path, key = Path(plan["out"]), plan["path"], plan["key"]
    if world()[0] != 0:
        return run_stage(cfg, stage, Path(plan["data"]), out, log=None, **where)

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    with tracking.resume_run(ws.mlflow_run_id), child_run(ws, "train", name):
        mlflow.log_params({k: v for k, v in stage.model_dump(mode="json").items()})
        summary = run_stage(cfg, stage, Path(plan["data"]), out, log=log,
                            on_checkpoint=lambda folder: ws.save_checkpoints(name, folder), **where)
        summary = json.loads(json.dumps(summary, default=str))
        for f in sorted(out.glob("*.png")) + [out / "train_metrics.json", out / "sequences.parquet"]:
            if f.exists():
                mlflow.log_artifact(str(f), artifact_path="train")
        if summary.get("balance"):
            mlflow.log_dict(summary["balance"], "train/balance.json")
            mlflow.log_metrics({f"balance.cost.{k}": float(v) for k, v in
                                summary["balance"]["balance"]["costs"].items()})
        for ds_name, s in (summary.get("hard_negatives") or {}).items():
            mlflow.log_metrics({f"hard_negatives.{ds_name}.{k}": float(v) for k, v in s.items()})
    write_key(ws, "train", name, path, key, {k: summary[k] for k in ("final_loss", "final_loss_mean10", "seconds",
                                                                      "sampling_weights") if k in summary})
    ws.push(path)
    ws.drop_checkpoints(name)
    tracking.set_tags(ws.mlflow_run_id, {_tag("train", name): key})
    tracking.log_metrics(ws.mlflow_run_id, {f"train.{name}.final_loss": float(summary["final_loss"]),
                                           f"train.{name}.seconds": float(summary["seconds"]),
                                           f"train.{name}.reused": 0.0})
    return {**summary, "reused": False}
