"""The pipeline's steps. Each is one function, called alike by ``sail <step>``,
by the DVC stage of the same name and by the Airflow task of the same name.

Every step takes the typed config and a :class:`~sail_core.pipeline.workspace.Workspace` and
returns a small JSON-able dict (Airflow keeps it as XCom). A step pulls the folders it reads
(``ws.pull``) and pushes those it writes (``ws.push``): in a run workspace that moves them
through the object store, so that a task on any worker finds its inputs; in the project
workspace (``sail <step>``, ``dvc repro``) both are no-ops and DVC versions the folders.
Steps that write data write it into a temporary folder first, so that a failure leaves the
earlier output intact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from sail_core.config import Config, ConfigError
from sail_core.paths import home
from sail_core.pipeline.stages import mined_path
from sail_core.pipeline.cre_steps import SID, TEACHER
from sail_core.pipeline.cre_steps import sid, teacher  # noqa: F401 (pipeline steps)
from sail_core.pipeline.workspace import OUT_TAG, Workspace

console = Console(stderr=True, soft_wrap=True)

STEPS = ["ingest", "validate", "version", "train", "index", "evaluate", "gate", "export", "register", "promote"]
DATA_STAGES = ["ingest", "validate"]


def outputs(cfg: Config) -> dict[str, list[str]]:
    """The folders each step writes, relative to the workspace (the DVC outs of dvc.yaml)."""
    return {"ingest": ["data/raw"], "validate": ["data/validated", "data/quarantine"],
            "train": [TEACHER] + [p for s in cfg.train.stages for p in ([mined_path(s.name)] if s.hard_negatives else [])
                                  + [f"models/{s.name}"]], "index": ["models/index", SID],
            "evaluate": ["reports/eval"], "export": ["models/onnx"]}


def inputs(cfg: Config) -> dict[str, list[str]]:
    """The folders each step reads (a training stage also reads the stage before it)."""
    final = _final_model(cfg)
    return {"validate": ["data/raw"], "version": ["data/validated"], "train": ["data/validated"],
            "index": ["data/validated", final], "evaluate": ["data/validated", final, "models/index", TEACHER],
            "gate": ["data/validated", "reports/eval"], "export": [final],
            "register": ["models/onnx", "models/index", SID, final], "promote": []}


def task_names(cfg: Config, steps: list[str]) -> list[str]:
    """The Airflow tasks that run for ``steps``: ``check``, then each step; train as the teacher and one task per
    stage, each stage with hard negatives preceded by its ``mine`` task; index followed by ``sid``."""
    names = ["check"]
    for step in STEPS:
        if step in steps:
            names += stage_tasks(cfg) if step == "train" else ["index", "sid"] if step == "index" else [step]
    return names


def stage_tasks(cfg: Config) -> list[str]:
    """``train.teacher``, then ``train.<stage>`` for every stage, ``train.mine_<stage>`` before a stage with hard
    negatives."""
    out = ["train.teacher"]
    for s in cfg.train.stages:
        out += ([f"train.mine_{s.name}"] if s.hard_negatives else []) + [f"train.{s.name}"]
    return out


def _final_model(cfg: Config) -> str:
    return f"models/{cfg.train.stages[-1].name}"


def _final_model_dir(cfg: Config, ws: Workspace) -> Path:
    return ws.wd.root / _final_model(cfg) / "model"


# -------------------------------------------------------------------- check
def check(cfg: Config, ws: Workspace, steps: list[str], tags: dict[str, str] | None = None,
          base_run: str | None = None) -> dict:
    """Start the run: refuse steps the profile cannot run, create its MLflow run (its record), and take the
    outputs of the steps it skips from ``base_run`` (default: the latest run that has them).

    Idempotent: a retried check finds the MLflow run it created."""
    from sail_core.config import check_steps
    from sail_core.pipeline import runs, tracking

    check_steps(cfg, steps)
    if "gate" in steps and "evaluate" not in steps:
        raise ConfigError("steps: 'gate' compares this run's evaluation with the champion's, so it needs 'evaluate' "
                          "in the same run; add 'evaluate' to steps")
    if "train" in steps and {"evaluate", "register"} & set(steps) and "index" not in steps:
        raise ConfigError("steps: a run that trains a model must index the catalogue with it before it evaluates or "
                          "registers it (the index is versioned and served with the model); add 'index' to steps")
    produced = {p for step in steps for p in outputs(cfg).get(step, [])}
    needed = sorted({p for step in steps for p in inputs(cfg).get(step, [])} - produced)
    if "train" in steps:
        needed = [p for p in needed if not p.startswith("models/")]
    base = runs.base_run(cfg, needed, base_run, exclude=ws.run_id) if needed else None
    if not ws.has_run():
        mlflow_id = tracking.start_pipeline_run(cfg, ws.run_id, {
            "sail.steps": ",".join(steps), "sail.tasks": ",".join(task_names(cfg, steps)),
            "sail.workspace": ws.url, **(tags or {})})
        ws.remember_run(ws.run_id, mlflow_id)
    inherited = {}
    if base is not None:
        base_tags = tracking.run_tags(base)
        inherited = {p: base_tags[OUT_TAG + p] for p in needed}
        tracking.set_tags(ws.mlflow_run_id, {**{OUT_TAG + p: h for p, h in inherited.items()},
                                            "sail.base_run": base_tags.get("sail.run_id", base)})
    ws.write_note({"run_id": ws.run_id, "mlflow_run_id": ws.mlflow_run_id, "profile": cfg.profile, "steps": steps})
    console.print(f"[green]check[/]: run {ws.run_id} (MLflow {ws.mlflow_run_id}), workspace {ws.url}"
                  + (f"; reuses {', '.join(inherited)} from run {base}" if inherited else ""))
    return {"run_id": ws.run_id, "mlflow_run_id": ws.mlflow_run_id, "profile": cfg.profile, "steps": list(steps),
            "stages": [s.name for s in cfg.train.stages], "inherited": inherited}


# --------------------------------------------------------------------- data
def ingest(cfg: Config, ws: Workspace) -> dict:
    """Build the raw tables: the MovieLens demo catalogue, or the user's own files."""
    from sail_core.pipeline.atomic import replace_dir

    wd = ws.wd
    with replace_dir(wd.raw) as tmp:
        if cfg.data.source == "demo":
            from sail_core.data.demo import build_demo

            summary = build_demo(tmp, cfg.data)
        else:
            from sail_core.data.importer import import_tables

            pairs = Path(cfg.data.pairs_dir) if cfg.data.pairs_dir else None
            summary = import_tables(Path(cfg.data.items_file), Path(cfg.data.interactions_file), pairs, tmp, cfg.data)
    hashes = ws.push("data/raw")
    console.print(f"[green]ingest[/]: wrote {wd.raw}: {summary}")
    return {"raw": str(wd.raw), **hashes, **_jsonable(summary)}


def validate(cfg: Config, ws: Workspace, src: Path | None = None) -> dict:
    """Apply the GX data contracts; clean rows to data/validated, rejected rows to data/quarantine.

    On a contract breach the quarantine and report are still written (and pushed), the previous
    validated data is left as it was, and ContractBreach is raised.
    """
    from data_contracts.validate import ContractBreach, validate_dir

    wd = ws.wd
    if src is None:
        ws.pull("data/raw")
    src = Path(src or wd.raw)
    if not src.exists():
        raise FileNotFoundError(f"no data to validate at {src}; run `sail ingest` (or `sail data demo --out {src}`) first")
    wd.root.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".validate-", dir=wd.root))
    tmp_out, tmp_q = tmp_root / "validated", tmp_root / "quarantine"
    try:
        try:
            result = validate_dir(src, tmp_out, tmp_q, cfg.contracts, quarantine_display=wd.quarantine,
                                  workers=cfg.data.media_workers, out_display=wd.validated)
        except ContractBreach:
            _swap(tmp_q, wd.quarantine)
            ws.push("data/quarantine")
            raise
        _swap(tmp_q, wd.quarantine)
        _swap(tmp_out, wd.validated)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    hashes = ws.push("data/validated", "data/quarantine")
    console.print(f"[green]validate[/]: contracts hold; clean data in {wd.validated}, quarantine in {wd.quarantine}")
    return {"validated": str(wd.validated), **hashes, **_jsonable(_as_dict(result))}


def version(cfg: Config, ws: Workspace, stages: list[str] | None = None) -> dict:
    """Version the data. Project workspace: record the data stages in dvc.lock (after writing
    ``params.resolved.yaml`` for this profile), cache and push them. Run workspace: the data is already in
    the object store (the DVC remote); record its hashes in the run (``record/data.dvc``)."""
    if ws.is_project:
        from sail_core.pipeline.dvc_params import write_resolved
        from sail_core.pipeline.versioning import commit_and_push

        stages = stages or DATA_STAGES
        write_resolved(cfg, ws.wd.root)
        commit_and_push(ws.wd.root, stages)
        where = ", ".join(stages) + " committed and pushed"
    else:
        from sail_core.pipeline import tracking

        stages = stages or DATA_STAGES
        paths = [p for s in stages for p in outputs(cfg).get(s, [])]
        tracking.log_text(ws.mlflow_run_id, outputs_dvc(ws, paths), "record/data.dvc")
        where = f"in {ws.stores.objects}, recorded as record/data.dvc"
    h = data_hash(ws)
    if not ws.is_project:
        from sail_core.pipeline import tracking

        tracking.set_tags(ws.mlflow_run_id, {"sail.data_hash": h})
    console.print(f"[green]version[/]: {where}; data hash {h}")
    return {"data_hash": h, "stages": stages}


def data_hash(ws: Workspace) -> str:
    """The DVC hash of data/validated: from dvc.lock (project workspace) or the run's record."""
    if ws.is_project:
        from sail_core.pipeline.versioning import out_hash

        return out_hash(ws.wd.root, "data/validated") or "unversioned"
    return ws.output_hash("data/validated") or "unversioned"


def outputs_dvc(ws: Workspace, paths: list[str] | None = None) -> str:
    """A DVC file naming the run's output folders by hash: ``dvc pull <file>`` in a DVC project whose
    default remote is the object store fetches them."""
    from sail_core.pipeline import tracking

    tags = tracking.run_tags(ws.mlflow_run_id)
    recorded = {k[len(OUT_TAG):]: v for k, v in sorted(tags.items()) if k.startswith(OUT_TAG)}
    outs = [{"md5": recorded[p], "hash": "md5", "path": p} for p in (paths or recorded) if p in recorded]
    header = (f"# Outputs of run {ws.run_id}, by DVC hash. `dvc pull <this file>` in a DVC project whose\n"
              f"# default remote is {ws.stores.objects} fetches them.\n")
    import yaml

    return header + yaml.safe_dump({"outs": outs}, sort_keys=False)


# -------------------------------------------------------------------- model
def train(cfg: Config, ws: Workspace, resume: bool = False) -> dict:
    """Run every configured training stage in order, each from the previous one's model.

    A fresh run clears old stage outputs; ``resume=True`` keeps them and
    continues from the last checkpoint (for a retry after a failure).
    """
    from sail_core.train.distributed import lead_then_share

    lead_then_share(lambda: _start_cli_run(cfg, ws, 0, resume))  # before a first stage's mining logs to it
    summaries = {}
    for stage in cfg.train.stages:
        if stage.hard_negatives:  # under torchrun, rank 0 mines while the others wait
            lead_then_share(lambda: mine(cfg, ws, stage.name))
        summaries[stage.name] = train_stage(cfg, ws, stage.name, resume=resume, start_run=False)["summary"]
    console.print(f"[green]train[/]: {len(summaries)} stage(s) done; MLflow run {ws.mlflow_run_id}")
    return {"run_id": ws.mlflow_run_id, "stages": summaries}


def _start_cli_run(cfg: Config, ws: Workspace, i: int, resume: bool) -> None:
    """In the project workspace, a first stage (``i == 0``) starts the pipeline's MLflow run unless resuming."""
    from sail_core.pipeline import tracking

    if ws.is_project and not (ws.has_run() and (i > 0 or resume)):
        from sail_core.pipeline.workspace import new_run_id

        run_id = new_run_id("cli")
        ws.remember_run(run_id, tracking.start_pipeline_run(cfg, run_id, {"sail.data_hash": data_hash(ws),
                                                                          "sail.workspace": ws.url}))


def train_stage(cfg: Config, ws: Workspace, name: str, resume: bool = False, start_run: bool = True) -> dict:
    """Train the configured stage ``name``: the first from the untrained model, a later one from the
    model of the stage before it (``models/<previous>/model``), into ``models/<name>``, logged to its own
    nested MLflow run (:mod:`sail_core.pipeline.stages`). A stage already trained with the same configuration,
    data and starting model (here or in an earlier run) is taken, not retrained.

    In the project workspace the first stage starts the pipeline's MLflow run (``resume=True`` keeps the
    current one). A fresh stage clears its old output; ``resume=True`` keeps it and continues from its
    last checkpoint (in a run workspace, the checkpoint the workspace store holds), for a retry after a
    failure. Each checkpoint is copied to the workspace store as it is written.
    """
    from sail_core.losses.gather import world
    from sail_core.pipeline import stages
    from sail_core.train.distributed import lead_then_share

    i, _ = stages.stage_of(cfg, name)
    if start_run:  # `sail train` (all stages) has started it already
        lead_then_share(lambda: _start_cli_run(cfg, ws, i, resume))  # under torchrun: rank 0 only
    summary = _jsonable(stages.train(cfg, ws, name, resume=resume))
    if world()[0] != 0:
        return {"run_id": None, "stage": name, "summary": summary}
    console.print(f"[green]train[/]: stage {name} {'reused' if summary.get('reused') else 'done'} "
                  f"({i + 1} of {len(cfg.train.stages)}); MLflow run {ws.mlflow_run_id}")
    return {"run_id": ws.mlflow_run_id, "stage": name, "summary": summary}


def mine(cfg: Config, ws: Workspace, name: str) -> dict:
    """Mine the hard negatives of stage ``name`` with the model it starts from, into ``data/mined/<name>``."""
    from sail_core.pipeline import stages

    return _jsonable(stages.mine(cfg, ws, name))


def index(cfg: Config, ws: Workspace) -> dict:
    """Embed the whole catalogue with the candidate model (batches streamed to disk) and build its FAISS index
    into ``models/index``; logged to MLflow (artifact ``index/``) and versioned with the model."""
    from sail_core.eval.catalogue_index import build_catalogue, model_fingerprint
    from sail_core.features.item_inputs import ItemInputs
    from sail_core.model.omni import load_model
    from sail_core.pipeline import tracking
    from sail_core.pipeline.atomic import replace_dir

    ws.pull("data/validated", _final_model(cfg))
    model_dir = _final_model_dir(cfg, ws)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    model = load_model(model_dir)
    inputs = ItemInputs.from_data_dir(ws.wd.validated, model.cfg, feature_threads=cfg.train.feature_threads)
    folder = ws.wd.root / "models" / "index"
    with replace_dir(folder) as tmp:
        meta = build_catalogue(cfg, model, inputs, tmp, model_hash=model_fingerprint(model_dir))
    tracking.log_metrics(ws.mlflow_run_id, {"index.items": float(meta["count"]),
                                           "index.embed_seconds": float(meta["embed_seconds"]),
                                           "index.build_seconds": float(meta["build_seconds"])})
    tracking.log_artifacts(ws.mlflow_run_id, folder, "index")
    hashes = ws.push("models/index")
    console.print(f"[green]index[/]: {meta['count']} items, {meta['kind']} index of dim {meta['dim']} in {folder} "
                  f"(embedding {meta['embed_seconds']:.1f} s, index {meta['build_seconds']:.1f} s)")
    return {"index_dir": str(folder), **hashes, **_jsonable(meta)}


def evaluate(cfg: Config, ws: Workspace) -> dict:
    """Recall@K of the trained model (its catalogue from the index step), the untrained baseline and the plain text
    reference on the same test queries; report, plot and per-query values to MLflow."""
    import mlflow

    from sail_core.data.splits import item_splits
    from sail_core.eval.catalogue_index import check_catalogue
    from sail_core.eval.evaluate import evaluate as run_eval
    from sail_core.pipeline import tracking
    from sail_core.pipeline.champion import TRAIN_ITEMS

    ws.pull("data/validated", _final_model(cfg), "models/index", *([TEACHER] if ws.has_output(TEACHER) else []))
    out = ws.wd.reports / "eval"
    catalogue = ws.wd.root / "models" / "index"
    check_catalogue(catalogue, _final_model_dir(cfg, ws))
    teacher_dir = ws.wd.root / TEACHER
    metrics = run_eval(cfg, _final_model_dir(cfg, ws), ws.wd.validated, out, catalogue_dir=catalogue,
                       teacher_dir=teacher_dir if teacher_dir.exists() else None)
    train_items = sorted(i for i, s in item_splits(ws.wd.validated).items() if s == "train")
    with tracking.resume_run(ws.mlflow_run_id):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for f in sorted(out.iterdir()):
            if f.suffix in {".md", ".png", ".json", ".parquet"}:
                mlflow.log_artifact(str(f), artifact_path="eval")
        mlflow.log_text("".join(f"{i}\n" for i in train_items), TRAIN_ITEMS)
    ws.push("reports/eval")
    console.print(f"[green]evaluate[/]: {len(metrics)} metrics; report in {out}")
    return {k: float(v) for k, v in metrics.items()}


def gate(cfg: Config, ws: Workspace) -> dict:
    """The candidate against the champion re-scored on the same test queries (else ``gate.first_reference``),
    by paired bootstrap intervals; raise GateFailed on a miss."""
    from sail_core.eval.evaluate import read_per_query
    from sail_core.pipeline import registry, tracking
    from sail_core.pipeline.champion import compare_with_champion
    from sail_core.pipeline.gating import GateFailed, check_gate

    run_id = ws.mlflow_run_id  # first: without a run there is nothing to gate
    ws.pull("data/validated", "reports/eval", *([TEACHER] if ws.has_output(TEACHER) else []))
    per, queries = read_per_query(ws.wd.reports / "eval")
    if "baseline" not in per:
        raise ConfigError("gate: this run's evaluation did not score the untrained model (eval.baseline: false), "
                          "which the gate compares with; set eval.baseline: true")
    champ = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    overlap = {}
    if champ is not None:
        teacher_dir = ws.wd.root / TEACHER
        reference, keep, overlap = compare_with_champion(cfg, champ, ws.wd.validated, queries, run_id,
                                                         teacher_dir if teacher_dir.exists() else None)
        label = f"champion v{champ.version} (re-scored)"
        result = check_gate(per["eval"], reference, cfg.gate.metrics, label, keep, rule=cfg.gate.champion_rule)
    elif cfg.gate.first_reference == "text_reference" and "reference" in per:
        result = check_gate(per["eval"], per["reference"], cfg.gate.metrics, "text reference",
                            fallback=per["baseline"], rule=cfg.gate.first_rule)
    else:
        result = check_gate(per["eval"], per["baseline"], cfg.gate.metrics, "untrained model",
                            rule=cfg.gate.first_rule)
    report = json.dumps({"passed": result.passed, "reference": result.reference, "checks": result.checks,
                         "overlap": overlap}, indent=2)
    out = ws.wd.reports / "gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    tracking.log_text(run_id, report, "gate/gate.json")
    tracking.set_tags(run_id, {"sail.gate": "passed" if result.passed else "failed"})
    tracking.log_metrics(run_id, {"gate.passed": float(result.passed),
                                  **{f"gate.{c['metric'][len('eval.'):]}.delta_ci_low": c["delta_ci"][0]
                                     for c in result.checks}})
    console.print(result.summary(), markup=False)
    if not result.passed:
        raise GateFailed(result.summary())
    return {"passed": True, "reference": result.reference, "overlap": overlap}


def export(cfg: Config, ws: Workspace) -> dict:
    """Export the trained model to ONNX with a parity check against PyTorch per modality combination."""
    from sail_core.export.onnx import export_onnx
    from sail_core.model.omni import load_model
    from sail_core.pipeline import tracking
    from sail_core.pipeline.atomic import replace_dir

    ws.pull(_final_model(cfg))
    model = load_model(_final_model_dir(cfg, ws))
    onnx_dir = ws.wd.onnx
    with replace_dir(onnx_dir) as tmp:
        result = export_onnx(model, tmp, datasets=cfg.datasets)
    tracking.log_metrics(ws.mlflow_run_id, {
        "export.onnx_max_abs_diff": float(result["max_abs_diff"]),
        **{f"export.parity.{combo}": float(diff) for combo, diff in result.get("parity", {}).items()}})
    ws.push("models/onnx")
    console.print(f"[green]export[/]: {onnx_dir} (max abs diff vs PyTorch {result['max_abs_diff']:.2e})")
    return {"onnx_dir": str(onnx_dir), "max_abs_diff": float(result["max_abs_diff"])}


def register(cfg: Config, ws: Workspace, airflow_run_id: str | None = None, commit_models: bool = True) -> dict:
    """Version the model outputs, then register an MLflow model version aliased ``challenger``.

    Project workspace: DVC-commit the model stages and log ``dvc.lock`` as ``record/dvc.lock``. Run
    workspace: the outputs are already in the object store; log ``record/outputs.dvc`` (every output's hash).
    """
    from sail_core.pipeline import registry, tracking

    if ws.is_project and commit_models:
        from sail_core.pipeline.dvc_params import model_stages

        version(cfg, ws, model_stages(cfg))
    from sail_core.eval.catalogue_index import check_catalogue

    ws.pull("models/onnx", "models/index", _final_model(cfg))
    run_id = ws.mlflow_run_id
    # the version's run holds its catalogue index (artifact index/), built with the very model registered
    check_catalogue(ws.wd.root / "models" / "index", _final_model_dir(cfg, ws))
    if not registry.has_artifact(run_id, "index"):  # an index this run reused from its base run
        tracking.log_artifacts(run_id, ws.wd.root / "models" / "index", "index")
    if ws.has_output(SID):
        ws.pull(SID)
        if not registry.has_artifact(run_id, "sid"):
            tracking.log_artifacts(run_id, ws.wd.root / SID, "sid")
    tags = {"git_sha": tracking.git_sha(), "data_hash": data_hash(ws), "airflow_run_id": airflow_run_id or "none",
            "sail_run_id": ws.run_id or "none", "profile": cfg.profile}
    v = registry.register_onnx(run_id, ws.wd.onnx, cfg.registry.mlflow_model, tags)
    tracking.set_tags(run_id, {"sail.model_version": str(v)})
    if ws.is_project:
        if (ws.wd.root / "dvc.lock").exists():  # the data and model hashes DVC pinned for this version
            from mlflow import MlflowClient

            tracking.configure()
            MlflowClient().log_artifact(run_id, str(ws.wd.root / "dvc.lock"), artifact_path="record")
    else:
        tracking.log_text(run_id, outputs_dvc(ws), "record/outputs.dvc")
    console.print(f"[green]register[/]: {cfg.registry.mlflow_model} v{v} (alias {registry.CHALLENGER})")
    return {"version": v, "run_id": run_id, **tags}


# ------------------------------------------------------------------ serving
def promote(cfg: Config, model_version: int | None = None, ws: Workspace | None = None) -> dict:
    """Serve a registered version on Triton (new version folder, load, parity + smoke), then alias it champion.

    The version: ``model_version``, else the one the run in ``ws`` registered, else the ``challenger``.
    On any failure the new version is unloaded and the previous one keeps serving. Promotions are
    serialised by a lock on the Triton model repository, so that overlapping runs take turns.
    """
    from sail_core.pipeline import registry
    from sail_core.paths import file_lock
    from serving import promote as triton_promote
    from serving import server

    name = cfg.registry.mlflow_model
    if model_version is None and ws is not None and ws.has_run():
        from sail_core.pipeline import tracking

        registered = tracking.run_tags(ws.mlflow_run_id).get("sail.model_version")
        model_version = int(registered) if registered else None
    if model_version is None:
        ref = registry.by_alias(name, registry.CHALLENGER)
        if ref is None:
            raise RuntimeError(f"no model version has alias '{registry.CHALLENGER}' in {name}; run `sail register` first")
        model_version = ref.version
    registry.require_version(name, model_version)  # before Triton starts: a clear error for a wrong --version
    repo = home().triton_repo
    with file_lock(repo.parent / ".promote.lock"):
        server.start(repo, cfg.serve)
        with tempfile.TemporaryDirectory(prefix="sail-promote-") as tmp:
            onnx_dir = registry.download_onnx(name, model_version, Path(tmp) / "export")
            index_dir = registry.download_index(name, model_version, Path(tmp) / "catalogue")
            if index_dir is None:
                console.print(f"[yellow]promote[/]: v{model_version} has no catalogue index (registered before the index "
                              "step existed); `sail similar` and `sail search` will refuse while it serves")
            sid_dir = registry.download_artifact_dir(name, model_version, "sid", Path(tmp) / "sid")
            result = triton_promote.promote(onnx_dir, model_version, cfg.serve, repo, index_dir=index_dir,
                                            sid_dir=sid_dir)
        previous = registry.set_champion(name, model_version)
    console.print(f"[green]promote[/]: Triton serves v{model_version}; alias champion -> v{model_version} (was {previous})")
    return {"version": model_version, "previous": previous, **_jsonable(result)}


def rollback(cfg: Config) -> dict:
    """Return Triton and the ``champion`` alias to the previously served version."""
    from sail_core.pipeline import registry
    from sail_core.paths import file_lock
    from serving import promote as triton_promote

    repo = home().triton_repo
    with file_lock(repo.parent / ".promote.lock"):
        result = triton_promote.rollback(cfg.serve, repo)
        now = int(result["version"])
        registry.set_champion(cfg.registry.mlflow_model, now)
    console.print(f"[green]rollback[/]: Triton serves v{now}; alias champion -> v{now}")
    return _jsonable(result)


# ------------------------------------------------------------------ helpers
def _swap(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    if src.exists():
        shutil.move(str(src), str(dst))
    else:
        dst.mkdir(parents=True)
    shutil.rmtree(old, ignore_errors=True)


def _as_dict(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return {"result": str(obj)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
