"""MLflow tracking: the embedded sqlite store under ``SAIL_HOME`` and the pipeline run.

One pipeline run is one MLflow run. The train step starts it; later steps find
it through ``models/mlflow_run.json`` and log into it.

The run's record: the resolved configuration (``record/config.resolved.yaml``),
the git sha and whether the tree had uncommitted changes (tags ``sail.git_sha``,
``sail.git_dirty``; a dirty tree also prints a warning), and, from the register
step, the ``dvc.lock`` that pins its data and model hashes (``record/dvc.lock``).
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sail_core.config import REPO_ROOT, Config, dump_config
from sail_core.paths import Workdir, home

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home().mlflow_db}"


def configure() -> str:
    """Point MLflow at the workspace store; returns the tracking URI."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    import mlflow

    configure()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = home().mlflow_artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=artifacts.as_uri())


def git_sha(root: Path = REPO_ROOT) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_dirty(root: Path = REPO_ROOT) -> bool | None:
    """True when tracked files have uncommitted changes; None when ``root`` is not a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.stdout.strip())


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested config into dotted keys for ``log_params``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list) and tree and isinstance(tree[0], dict):
        out = {}
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): tree}


def run_file(wd: Workdir) -> Path:
    return wd.models / "mlflow_run.json"


def start_pipeline_run(cfg: Config, wd: Workdir, tags: dict[str, str]) -> str:
    """Create the MLflow run for this pipeline run, log the config, remember its id."""
    import mlflow

    exp_id = ensure_experiment(cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.profile}-{tags.get('sail.airflow_run_id', 'cli')}") as run:
        dirty = git_dirty()
        mlflow.set_tags({"sail.profile": cfg.profile, "sail.git_sha": git_sha(),
                         "sail.git_dirty": "unknown" if dirty is None else str(dirty).lower(), **tags})
        params = flatten(cfg.model_dump(mode="json"))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_text(dump_config(cfg, resolved=True), "record/config.resolved.yaml")
        run_id = run.info.run_id
    if dirty:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]warning[/]: the code in {REPO_ROOT} has uncommitted changes; MLflow run "
                                   f"{run_id} is tagged sail.git_dirty=true and git sha {git_sha()} does not "
                                   "describe it. Commit first for a run that can be reproduced from its record.")
    path = run_file(wd)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "tags": tags}, indent=2))
    return run_id


def current_run_id(wd: Workdir) -> str:
    path = run_file(wd)
    if not path.exists():
        raise FileNotFoundError(f"no pipeline run recorded at {path}; run `sail train` first")
    return json.loads(path.read_text())["run_id"]


@contextmanager
def resume_run(run_id: str) -> Iterator[Any]:
    import mlflow

    configure()
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def run_metrics(run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    configure()
    return dict(MlflowClient().get_run(run_id).data.metrics)
