"""Pipeline runs as MLflow records them: listing, status, and the run a new one builds on.

Every pipeline run is an MLflow run tagged ``sail.run_id``; its tags say which tasks it runs
(``sail.tasks``), how each one went (``sail.task.<task>``), where its workspace is
(``sail.workspace``) and which output folders it has (``sail.out.<path>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sail_core.config import Config, ConfigError
from sail_core.pipeline import tracking
from sail_core.pipeline.workspace import OUT_TAG, TASK_TAG


@dataclass
class Run:
    run_id: str
    mlflow_run_id: str
    started: datetime
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return [t for t in self.tags.get("sail.tasks", "").split(",") if t]

    def task_state(self, task: str) -> str:
        return self.tags.get(TASK_TAG + task, "pending")

    @property
    def status(self) -> str:
        """failed (a task failed), succeeded (every task of the run is done), or running."""
        states = [self.task_state(t) for t in self.tasks]
        if "failed" in states:
            return "failed"
        if states and all(s == "done" for s in states):
            return "succeeded"
        return "running"

    @property
    def outputs(self) -> dict[str, str]:
        return {k[len(OUT_TAG):]: v for k, v in self.tags.items() if k.startswith(OUT_TAG)}

    @property
    def workspace(self) -> str:
        return self.tags.get("sail.workspace", "")

    @property
    def task_seconds(self) -> dict[str, float]:
        return {t: self.metrics[f"time.{t}_s"] for t in self.tasks if f"time.{t}_s" in self.metrics}


def list_runs(cfg: Config, limit: int = 1000) -> list[Run]:
    """The pipeline runs of the configured experiment, newest first."""
    from mlflow import MlflowClient

    tracking.configure()
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], filter_string="tags.`sail.run_id` != ''",
                               order_by=["attributes.start_time DESC"], max_results=limit)
    return [Run(r.data.tags["sail.run_id"], r.info.run_id,
                datetime.fromtimestamp(r.info.start_time / 1000, tz=timezone.utc), dict(r.data.tags),
                dict(r.data.metrics)) for r in found]


def get(cfg: Config, run_id: str) -> Run:
    """A run by its pipeline run id or its MLflow run id (``last``: the newest); a clear error when there is none."""
    found = list_runs(cfg)
    if run_id == "last" and found:
        return found[0]
    for run in found:
        if run_id in (run.run_id, run.mlflow_run_id):
            return run
    raise ConfigError(f"no pipeline run {run_id!r} in MLflow experiment {cfg.registry.experiment!r} "
                      f"({tracking.tracking_uri()}); `sail runs list` shows the runs there")


def checkout(cfg: Config, run: Run, dest: Path) -> dict[str, str]:
    """Fetch every output folder of ``run`` from the object store into ``dest`` (``dest/data/validated``, ...)."""
    from sail_core.pipeline.objects import ObjectStore
    from sail_core.pipeline.workspace import Stores

    stores = Stores.of(cfg)
    store = ObjectStore(stores.objects, stores.object_cache)
    for path, md5 in sorted(run.outputs.items()):
        store.pull(md5, Path(dest) / path)
    return {path: str(Path(dest) / path) for path in sorted(run.outputs)}


def base_run(cfg: Config, needed: list[str], wanted: str | None, exclude: str | None = None) -> str:
    """The MLflow run id whose outputs a run that skips steps reuses: ``wanted`` (a run id) when given,
    else the newest run that has every folder in ``needed``. A clear error when there is none."""
    candidates = [r for r in list_runs(cfg) if r.run_id != exclude]
    if wanted:
        candidates = [r for r in candidates if wanted in (r.run_id, r.mlflow_run_id)]
        if not candidates:
            raise ConfigError(f"base_run: no pipeline run {wanted!r} in experiment {cfg.registry.experiment!r}; "
                              "`sail runs list` shows the runs there")
    for run in candidates:
        if all(p in run.outputs for p in needed):
            return run.mlflow_run_id
    which = f"run {wanted!r}" if wanted else "no earlier run"
    raise ConfigError(f"the selected steps need {', '.join(needed)}, which they do not make themselves, and {which} "
                      "has them; add the steps that make them (e.g. ingest, validate, train) to steps")
