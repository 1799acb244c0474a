"""The pipeline's steps. Each is one function, called alike by ``sail <step>``,
by the DVC stage of the same name and by the Airflow task of the same name.

Every step takes the typed config and the work folders and returns a small
JSON-able dict (Airflow passes it on as XCom). Steps that write data write it
into a temporary folder first, so that a failure leaves the earlier output
intact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from sail_core.config import Config
from sail_core.paths import Workdir, home

console = Console(stderr=True, soft_wrap=True)

STEPS = ["ingest", "validate", "version", "train", "evaluate", "gate", "export", "register", "promote"]
DATA_STAGES = ["ingest", "validate"]


def _final_model_dir(cfg: Config, wd: Workdir) -> Path:
    return wd.stage(cfg.train.stages[-1].name) / "model"


# --------------------------------------------------------------------- data
def ingest(cfg: Config, wd: Workdir) -> dict:
    """Build the raw tables: the MovieLens demo catalogue, or the user's own files."""
    from sail_core.pipeline.atomic import replace_dir

    with replace_dir(wd.raw) as tmp:
        if cfg.data.source == "demo":
            from sail_core.data.demo import build_demo

            summary = build_demo(tmp, cfg.data)
        else:
            from sail_core.data.importer import import_tables

            pairs = Path(cfg.data.pairs_dir) if cfg.data.pairs_dir else None
            summary = import_tables(Path(cfg.data.items_file), Path(cfg.data.interactions_file), pairs, tmp, cfg.data)
    console.print(f"[green]ingest[/]: wrote {wd.raw}: {summary}")
    return {"raw": str(wd.raw), **_jsonable(summary)}


def validate(cfg: Config, wd: Workdir, src: Path | None = None) -> dict:
    """Apply the GX data contracts; clean rows to data/validated, rejected rows to data/quarantine.

    On a contract breach the quarantine and report are still written, the
    previous validated data is left as it was, and ContractBreach is raised.
    """
    from data_contracts.validate import ContractBreach, validate_dir

    src = Path(src or wd.raw)
    if not src.exists():
        raise FileNotFoundError(f"no data to validate at {src}; run `sail ingest` (or `sail data demo --out {src}`) first")
    tmp_root = Path(tempfile.mkdtemp(prefix=".validate-", dir=wd.root / "data" if (wd.root / "data").exists() else None))
    tmp_out, tmp_q = tmp_root / "validated", tmp_root / "quarantine"
    try:
        try:
            result = validate_dir(src, tmp_out, tmp_q, cfg.contracts, quarantine_display=wd.quarantine,
                                  workers=cfg.data.media_workers)
        except ContractBreach:
            _swap(tmp_q, wd.quarantine)
            raise
        _swap(tmp_q, wd.quarantine)
        _swap(tmp_out, wd.validated)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    console.print(f"[green]validate[/]: contracts hold; clean data in {wd.validated}, quarantine in {wd.quarantine}")
    return {"validated": str(wd.validated), **_jsonable(_as_dict(result))}


def version(cfg: Config, wd: Workdir, stages: list[str] | None = None) -> dict:
    """Record the data stages in dvc.lock, cache and push them; return the data hash.

    First writes ``params.resolved.yaml`` for this run's profile, so that dvc.lock records the
    parameter values the outputs were made with.
    """
    from sail_core.pipeline.dvc_params import write_resolved
    from sail_core.pipeline.versioning import commit_and_push, out_hash

    stages = stages or DATA_STAGES
    write_resolved(cfg, wd.root)
    commit_and_push(wd.root, stages)
    data_hash = out_hash(wd.root, "data/validated") or "unversioned"
    console.print(f"[green]version[/]: {', '.join(stages)} committed and pushed; data hash {data_hash}")
    return {"data_hash": data_hash, "stages": stages}


def data_hash(wd: Workdir) -> str:
    from sail_core.pipeline.versioning import out_hash

    return out_hash(wd.root, "data/validated") or "unversioned"


# -------------------------------------------------------------------- model
def train(cfg: Config, wd: Workdir, resume: bool = False, airflow_run_id: str | None = None) -> dict:
    """Run every configured training stage in order, each from the previous one's model.

    A fresh run clears old stage outputs; ``resume=True`` keeps them and
    continues from the last checkpoint (for a retry after a failure).
    """
    summaries, run_id = {}, None
    for stage in cfg.train.stages:
        result = train_stage(cfg, wd, stage.name, resume=resume, airflow_run_id=airflow_run_id)
        run_id, summaries[stage.name] = result["run_id"], result["summary"]
    console.print(f"[green]train[/]: {len(summaries)} stage(s) done; MLflow run {run_id}")
    return {"run_id": run_id, "stages": summaries}


def train_stage(cfg: Config, wd: Workdir, name: str, resume: bool = False,
                airflow_run_id: str | None = None) -> dict:
    """Train the configured stage ``name``: the first from the untrained model, a later one from the
    model of the stage before it (``models/<previous>/model``), into ``models/<name>``.

    The first stage starts the pipeline's MLflow run (``resume=True`` keeps the current one); later
    stages log into the current run. A fresh stage clears its old output; ``resume=True`` keeps it
    and continues from its last checkpoint (for a retry after a failure).
    """
    import mlflow

    from sail_core.config import ConfigError
    from sail_core.pipeline import tracking
    from sail_core.train.loop import train_stage as run_stage

    names = [s.name for s in cfg.train.stages]
    if name not in names:
        raise ConfigError(f"training stage {name!r} is not in train.stages of profile {cfg.profile!r} "
                          f"(its stages: {', '.join(names)}); pick one of those or another profile")
    i = names.index(name)
    stage = cfg.train.stages[i]
    init_from = wd.stage(names[i - 1]) / "model" if i else None
    if init_from is not None and not init_from.exists():
        raise FileNotFoundError(f"training stage {name!r} starts from {init_from}, which does not exist; "
                                f"run `sail train --stage {names[i - 1]}` (or `sail train`) first")
    if tracking.run_file(wd).exists() and (i > 0 or resume):
        run_id = tracking.current_run_id(wd)
    else:
        tags = {"sail.data_hash": data_hash(wd)}
        if airflow_run_id:
            tags["sail.airflow_run_id"] = airflow_run_id
        run_id = tracking.start_pipeline_run(cfg, wd, tags)
    out = wd.stage(name)
    if not resume:
        shutil.rmtree(out, ignore_errors=True)

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({f"train.{name}.{k}": float(v) for k, v in metrics.items()}, step=step)

    with tracking.resume_run(run_id):
        summary = _jsonable(run_stage(cfg, stage, wd.validated, out, init_from=init_from, log=log))
        for png in out.glob("*.png"):
            mlflow.log_artifact(str(png), artifact_path=f"train/{name}")
    console.print(f"[green]train[/]: stage {name} done ({i + 1} of {len(names)}); MLflow run {run_id}")
    return {"run_id": run_id, "stage": name, "summary": summary}


def evaluate(cfg: Config, wd: Workdir) -> dict:
    """Recall@K of the trained model and of the untrained baseline; report + plot to MLflow."""
    import mlflow

    from sail_core.pipeline import tracking
    from sail_core.eval.evaluate import evaluate as run_eval

    out = wd.reports / "eval"
    metrics = run_eval(cfg, _final_model_dir(cfg, wd), wd.validated, out)
    with tracking.resume_run(tracking.current_run_id(wd)):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for f in sorted(out.iterdir()):
            if f.suffix in {".md", ".png", ".json"}:
                mlflow.log_artifact(str(f), artifact_path="eval")
    console.print(f"[green]evaluate[/]: {len(metrics)} metrics; report in {out}")
    return {k: float(v) for k, v in metrics.items()}


def gate(cfg: Config, wd: Workdir) -> dict:
    """Compare the candidate with the champion (or the untrained baseline); raise GateFailed on a miss."""
    import mlflow

    from sail_core.pipeline import registry, tracking
    from sail_core.pipeline.gating import GateFailed, check_gate

    run_id = tracking.current_run_id(wd)
    candidate = tracking.run_metrics(run_id)
    champ = registry.by_alias(cfg.registry.mlflow_model, registry.CHAMPION)
    champion_metrics = tracking.run_metrics(champ.run_id) if champ else None
    result = check_gate(candidate, cfg.gate.metrics, champion_metrics, f"champion v{champ.version}" if champ else "")
    out = wd.reports / "gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"passed": result.passed, "reference": result.reference, "checks": result.checks}, indent=2))
    with tracking.resume_run(run_id):
        mlflow.set_tag("sail.gate", "passed" if result.passed else "failed")
        mlflow.log_metric("gate.passed", float(result.passed))
    console.print(result.summary())
    if not result.passed:
        raise GateFailed(result.summary())
    return {"passed": True, "reference": result.reference}


def export(cfg: Config, wd: Workdir) -> dict:
    """Export the trained model to ONNX with a parity check against PyTorch per modality combination."""
    import mlflow

    from sail_core.pipeline import tracking
    from sail_core.export.onnx import export_onnx
    from sail_core.model.omni import load_model
    from sail_core.pipeline.atomic import replace_dir

    model = load_model(_final_model_dir(cfg, wd))
    with replace_dir(wd.onnx) as tmp:
        result = export_onnx(model, tmp, datasets=cfg.datasets)
    with tracking.resume_run(tracking.current_run_id(wd)):
        mlflow.log_metric("export.onnx_max_abs_diff", float(result["max_abs_diff"]))
        mlflow.log_metrics({f"export.parity.{combo}": float(diff) for combo, diff in result.get("parity", {}).items()})
    console.print(f"[green]export[/]: {wd.onnx} (max abs diff vs PyTorch {result['max_abs_diff']:.2e})")
    return {"onnx_dir": str(wd.onnx), "max_abs_diff": float(result["max_abs_diff"])}


def register(cfg: Config, wd: Workdir, airflow_run_id: str | None = None, commit_models: bool = True) -> dict:
    """Version the model outputs with DVC, then register an MLflow model version aliased ``challenger``."""
    import mlflow

    from sail_core.pipeline import registry, tracking

    if commit_models:
        from sail_core.pipeline.dvc_params import model_stages

        version(cfg, wd, model_stages(cfg))
    run_id = tracking.current_run_id(wd)
    tags = {"git_sha": tracking.git_sha(), "data_hash": data_hash(wd), "airflow_run_id": airflow_run_id or "none",
            "profile": cfg.profile}
    v = registry.register_onnx(run_id, wd.onnx, cfg.registry.mlflow_model, tags)
    with tracking.resume_run(run_id):
        mlflow.set_tag("sail.model_version", str(v))
        if (wd.root / "dvc.lock").exists():  # the data and model hashes DVC pinned for this version
            mlflow.log_artifact(str(wd.root / "dvc.lock"), artifact_path="record")
    console.print(f"[green]register[/]: {cfg.registry.mlflow_model} v{v} (alias {registry.CHALLENGER})")
    return {"version": v, "run_id": run_id, **tags}


# ------------------------------------------------------------------ serving
def promote(cfg: Config, wd: Workdir | None = None, model_version: int | None = None) -> dict:
    """Serve a registered version on Triton (new version folder, load, parity + smoke), then alias it champion.

    On any failure the new version is unloaded and the previous one keeps serving.
    """
    from sail_core.pipeline import registry
    from serving import promote as triton_promote
    from serving import server

    name = cfg.registry.mlflow_model
    if model_version is None:
        ref = registry.by_alias(name, registry.CHALLENGER)
        if ref is None:
            raise RuntimeError(f"no model version has alias '{registry.CHALLENGER}' in {name}; run `sail register` first")
        model_version = ref.version
    server.start(home().triton_repo, cfg.serve)
    with tempfile.TemporaryDirectory(prefix="sail-promote-") as tmp:
        onnx_dir = registry.download_onnx(name, model_version, Path(tmp))
        result = triton_promote.promote(onnx_dir, model_version, cfg.serve, home().triton_repo)
    previous = registry.set_champion(name, model_version)
    console.print(f"[green]promote[/]: Triton serves v{model_version}; alias champion -> v{model_version} (was {previous})")
    return {"version": model_version, "previous": previous, **_jsonable(result)}


def rollback(cfg: Config) -> dict:
    """Return Triton and the ``champion`` alias to the previously served version."""
    from sail_core.pipeline import registry
    from serving import promote as triton_promote

    result = triton_promote.rollback(cfg.serve, home().triton_repo)
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
