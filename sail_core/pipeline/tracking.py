"""MLflow tracking: the store (the embedded sqlite store under ``SAIL_HOME``, or the one
``MLFLOW_TRACKING_URI`` names: a tracking server shared by several workers, docs/multiworker.md) and the
pipeline run.

One pipeline run is one MLflow run, tagged ``sail.run_id`` with the run's id. An
Airflow run's ``check`` task starts it and every later task finds it by that tag
(``find_run``); in the project workspace the first training stage starts it.

The run's record: the resolved configuration (``record/config.resolved.yaml``),
the git sha and whether the tree had uncommitted changes (tags ``sail.git_sha``,
``sail.git_dirty``; a dirty tree also prints a warning), the DVC hash of every
output folder (tags ``sail.out.<path>``, and ``record/outputs.dvc``, a DVC file
that ``dvc pull`` reads), and each task's state and wall time (tags
``sail.task.<task>``, metrics ``time.<task>_s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from sail_core.config import REPO_ROOT, Config, dump_config
from sail_core.paths import home

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def tracking_uri() -> str:
    """Where MLflow tracks: ``MLFLOW_TRACKING_URI`` when set (checked: a tracking server, the multi-worker
    setup of docs/multiworker.md, or a database; ``StoreURLError`` names what is wrong), else the embedded
    SQLite store ``SAIL_HOME/mlflow.db``."""
    from sail_core.pipeline.postgres import check_tracking_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return check_tracking_uri(uri) if uri else f"sqlite:///{home().mlflow_db}"


def configure() -> str:
    """Point MLflow at the workspace store; returns the tracking URI."""
    import mlflow

    uri = tracking_uri()
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow also exports the URIs as environment variables; put the environment back as the user set it, so
    # that a later SAIL_HOME (or a child process with its own SAIL_HOME) is not pinned to this store
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


class StoreUnavailable(RuntimeError):
    """The MLflow store under ``SAIL_HOME`` cannot be written: missing, moved, read-only or replaced by a file."""


def _writable(path: Path) -> bool:
    """Whether this process may create files in folder ``path`` (or write file ``path``)."""
    return os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0))


def check_store() -> None:
    """Before a write to the workspace's MLflow store (the default ``sqlite:///SAIL_HOME/mlflow.db`` and the
    artifacts in ``SAIL_HOME/mlartifacts``): raise :class:`StoreUnavailable`, naming the path and the fix,
    when the database or the artifact folder is missing while the other shows the store was used, is not a
    file / folder, or is read-only. Nothing is written when it raises, so the step can simply be run again
    once the store is back. A store given by ``MLFLOW_TRACKING_URI`` is not checked (its server reports)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    db, artifacts = home().mlflow_db, home().mlflow_artifacts
    back = "put it back (or fix its permissions), then run the same step again"
    if db.exists() and not db.is_file():
        raise StoreUnavailable(f"the MLflow tracking database {db} is not a file; move what is there away and "
                               f"restore the database, then run the same step again")
    if artifacts.exists() and not artifacts.is_dir():
        raise StoreUnavailable(f"the MLflow artifact store {artifacts} is not a folder (a file is in its place); "
                               f"move that file away and restore the folder, then run the same step again")
    for path, what in ((db, "tracking database"), (db.parent, "folder of the tracking database"),
                       (artifacts, "artifact store")):
        if path.exists() and not _writable(path):
            raise StoreUnavailable(f"the MLflow {what} {path} is read-only; make it writable "
                                   f"(chmod u+w {path}, or remount its disk read-write), then run the same step again")
    if not db.exists() and artifacts.is_dir():  # the artifact folder is made after the database, with the experiment
        raise StoreUnavailable(f"the MLflow tracking database {db} is missing while its artifact store {artifacts} is "
                               f"there (moved away, or its disk not mounted?); {back}. To start an empty store "
                               f"instead, move {artifacts} away too.")
    if db.exists() and not artifacts.exists() and _artifacts_in_use(artifacts):
        raise StoreUnavailable(f"the MLflow artifact store {artifacts} is missing (moved away, or its disk not "
                               f"mounted?) while the tracking database {db} has experiments that keep their artifacts "
                               f"there; {back}")


def _artifacts_in_use(artifacts: Path) -> bool:
    from mlflow import MlflowClient

    configure()
    uri = artifacts.as_uri()
    return any(e.artifact_location.rstrip("/") == uri for e in MlflowClient().search_experiments())


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created when missing. Its artifacts go to ``SAIL_HOME/mlartifacts``,
    except on a tracking server, which keeps them where it was told (``--artifacts-destination``) and
    serves them to every worker."""
    import mlflow

    from sail_core.pipeline.postgres import is_server

    uri = configure()
    check_store()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    location = None
    if not is_server(uri):
        artifacts = home().mlflow_artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:  # another run created it a moment ago
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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


def start_pipeline_run(cfg: Config, run_id: str, tags: dict[str, str]) -> str:
    """Create the MLflow run of pipeline run ``run_id``: tags, the flattened config as params, and the
    resolved configuration as ``record/config.resolved.yaml``. Returns the MLflow run id."""
    import mlflow

    exp_id = ensure_experiment(cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.profile}-{run_id}") as run:
        dirty = git_dirty()
        mlflow.set_tags({"sail.run_id": run_id, "sail.profile": cfg.profile, "sail.git_sha": git_sha(),
                         "sail.git_dirty": "unknown" if dirty is None else str(dirty).lower(), **tags})
        params = flatten(cfg.model_dump(mode="json"))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_text(dump_config(cfg, resolved=True), "record/config.resolved.yaml")
        mlflow_run_id = run.info.run_id
    if dirty:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]warning[/]: the code in {REPO_ROOT} has uncommitted changes; MLflow run "
                                   f"{mlflow_run_id} is tagged sail.git_dirty=true and git sha {git_sha()} does not "
                                   "describe it. Commit first for a run that can be reproduced from its record.")
    return mlflow_run_id


def _client(write: bool = False):
    from mlflow import MlflowClient

    configure()
    if write:
        check_store()
    return MlflowClient()


def find_run(run_id: str) -> str | None:
    """The MLflow run id of pipeline run ``run_id`` (its ``sail.run_id`` tag), or, when ``run_id`` is
    itself an MLflow run id of a pipeline run, that one; None when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client()
    escaped = run_id.replace("'", "\\'")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`sail.run_id` = '{escaped}'", max_results=1)
    if runs:
        return runs[0].info.run_id
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run.info.run_id if "sail.run_id" in run.data.tags else None


def runs_with_tag(experiment: str, tag: str, value: str, limit: int = 20) -> list[tuple[str, dict[str, str]]]:
    """``(MLflow run id, tags)`` of the runs of ``experiment`` whose tag ``tag`` equals ``value``, newest first."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    escaped = value.replace("'", "\\'")
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tag}` = '{escaped}'",
                               order_by=["attributes.start_time DESC"], max_results=limit)
    return [(r.info.run_id, dict(r.data.tags)) for r in found]


def set_tags(mlflow_run_id: str, tags: dict[str, Any]) -> None:
    client = _client(write=True)
    for key, value in tags.items():
        client.set_tag(mlflow_run_id, key, str(value))


def delete_tag(mlflow_run_id: str, key: str) -> None:
    _client(write=True).delete_tag(mlflow_run_id, key)


def run_tags(mlflow_run_id: str) -> dict[str, str]:
    return dict(_client().get_run(mlflow_run_id).data.tags)


def log_metrics(mlflow_run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _client(write=True).log_batch(mlflow_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_text(mlflow_run_id: str, text: str, artifact_file: str) -> None:
    _client(write=True).log_text(mlflow_run_id, text, artifact_file)


def log_artifacts(mlflow_run_id: str, folder, artifact_path: str) -> None:
    _client(write=True).log_artifacts(mlflow_run_id, str(folder), artifact_path)


def load_text(mlflow_run_id: str, artifact_file: str) -> str | None:
    """A text artifact of a run, or None when the run has no such artifact."""
    import mlflow

    configure()
    try:
        return mlflow.artifacts.load_text(f"runs:/{mlflow_run_id}/{artifact_file}")
    except Exception:  # noqa: BLE001  (MlflowException or OSError: the artifact is missing)
        return None


def recorded_config(mlflow_run_id: str) -> Config:
    """The configuration a run recorded (``record/config.resolved.yaml``), as a typed Config."""
    import mlflow

    configure()
    try:
        text = mlflow.artifacts.load_text(f"runs:/{mlflow_run_id}/record/config.resolved.yaml")
    except Exception as e:  # MlflowException or OSError: the artifact is missing
        raise FileNotFoundError(f"MLflow run {mlflow_run_id} has no record/config.resolved.yaml ({e}); only runs "
                                "started by this version of the pipeline can be reproduced") from e
    return Config.model_validate(yaml.safe_load(text))


@contextmanager
def task(mlflow_run_id: str, name: str) -> Iterator[None]:
    """Record one task of the run: tag ``sail.task.<name>`` running -> done (or failed, which also tags
    ``sail.failed_task``), and log its wall time as ``time.<name>_s``."""
    set_tags(mlflow_run_id, {f"sail.task.{name}": "running"})
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        set_tags(mlflow_run_id, {f"sail.task.{name}": "failed", "sail.failed_task": name})
        log_metrics(mlflow_run_id, {f"time.{name}_s": time.perf_counter() - t0})
        raise
    set_tags(mlflow_run_id, {f"sail.task.{name}": "done"})
    log_metrics(mlflow_run_id, {f"time.{name}_s": time.perf_counter() - t0})


@contextmanager
def resume_run(run_id: str) -> Iterator[Any]:
    import mlflow

    configure()
    check_store()
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(_client().get_run(run_id).data.metrics)
