"""A run's workspace: its id, its local folders, and the stores that every worker reaches.

Two kinds of workspace run the same steps:

- **A run workspace** (Airflow runs, hence ``sail run``, ``sail demo`` and ``sail reproduce``) is keyed by
  the run's id. Its state lives in stores: the folders a step writes (``data/raw``, ``models/<stage>``,
  ...) are pushed to the object store (a DVC remote, content-addressed) and their hashes are set as tags
  on the run's MLflow run (``sail.out.<path>``); a later step, on any worker, pulls them by hash. Training
  checkpoints go to ``<store.workspaces>/<run key>/checkpoints/<stage>`` (an fsspec URL), so that a retry
  resumes wherever it runs. The local folders (``<store.local_cache>/runs/<run key>``) are only a cache.
- **The project workspace** (``sail <step>`` and ``dvc repro``) is the DVC project's own ``data/``,
  ``models/`` and ``reports/``: DVC versions it, one run at a time (``dvc repro`` holds DVC's lock); its
  current MLflow run is named in ``models/run.json``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Iterator

from rich.console import Console

from sail_core.config import Config
from sail_core.paths import Workdir, sail_home

console = Console(stderr=True, soft_wrap=True)

OUT_TAG = "sail.out."          # + output path: its DVC hash in the object store
TASK_TAG = "sail.task."        # + task name: running / done / failed
PER_TASK = "per-task"


def new_run_id(kind: str = "cli") -> str:
    """A fresh run id for runs that Airflow does not name: ``<kind>__<UTC time>_<random>``."""
    return f"{kind}__{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"


def run_key(run_id: str) -> str:
    """The run id as a folder name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


@dataclass(frozen=True)
class Stores:
    """Where run state lives (``store.*`` of the configuration, resolved against ``$SAIL_HOME``)."""

    workspaces: str            # fsspec URL
    objects: str               # DVC remote URL
    local_cache: Path | None   # None: a fresh folder per task

    @classmethod
    def of(cls, cfg: Config) -> "Stores":
        home = sail_home()
        cache = cfg.store.local_cache
        return cls(
            workspaces=(cfg.store.workspaces or str(home / "runs")).rstrip("/"),
            objects=cfg.store.objects or str(home / "dvc-remote"),
            local_cache=None if cache == PER_TASK else Path(cache or home / "cache").resolve(),
        )

    @property
    def object_cache(self) -> Path:
        """This machine's lasting object cache, for commands outside a task (``$SAIL_HOME/cache`` when the
        tasks' caches are per task)."""
        return (self.local_cache or sail_home() / "cache") / "objects"


class Workspace:
    """One run's folders (``wd``) and how they reach the stores. ``stores`` is None for the project workspace."""

    def __init__(self, run_id: str | None, wd: Workdir, stores: Stores | None = None,
                 objects_cache: Path | None = None):
        self.run_id = run_id
        self.wd = wd
        self.stores = stores
        self._objects_cache = objects_cache
        self._mlflow_run_id: str | None = None

    @property
    def is_project(self) -> bool:
        return self.stores is None

    @property
    def key(self) -> str:
        return run_key(self.run_id or "project")

    @property
    def url(self) -> str:
        """Where the workspace lives: its folder in the workspace store, or the project's root."""
        return f"{self.stores.workspaces}/{self.key}" if self.stores else str(self.wd.root)

    @cached_property
    def objects(self):
        from sail_core.pipeline.objects import ObjectStore

        assert self.stores is not None
        return ObjectStore(self.stores.objects, self._objects_cache)

    # ------------------------------------------------------------ MLflow run
    def pointer(self) -> Path:
        """The project workspace's note of its current run (run workspaces find theirs by tag)."""
        return self.wd.models / "run.json"

    @property
    def mlflow_run_id(self) -> str:
        """The MLflow run of this pipeline run (found by its ``sail.run_id`` tag, or the project's pointer)."""
        if self._mlflow_run_id is None:
            from sail_core.pipeline import tracking

            if self.is_project:
                if not self.pointer().exists():
                    raise FileNotFoundError(f"no pipeline run recorded at {self.pointer()}; run `sail train` first")
                note = json.loads(self.pointer().read_text())
                self.run_id, self._mlflow_run_id = note.get("run_id"), note["mlflow_run_id"]
            else:
                found = tracking.find_run(self.run_id)
                if found is None:
                    raise FileNotFoundError(f"no MLflow run is tagged sail.run_id={self.run_id!r} in "
                                            f"{tracking.tracking_uri()}; the run's `check` task creates it")
                self._mlflow_run_id = found
        return self._mlflow_run_id

    def has_run(self) -> bool:
        try:
            self.mlflow_run_id
        except FileNotFoundError:
            return False
        return True

    def remember_run(self, run_id: str, mlflow_run_id: str) -> None:
        self.run_id, self._mlflow_run_id = run_id, mlflow_run_id
        if self.is_project:
            self.pointer().parent.mkdir(parents=True, exist_ok=True)
            self.pointer().write_text(json.dumps({"run_id": run_id, "mlflow_run_id": mlflow_run_id}, indent=2))

    # ------------------------------------------------------------ files
    def _index(self) -> Path:
        return self.wd.root / ".sail-pulled.json"

    def _local_hashes(self) -> dict[str, str]:
        return json.loads(self._index().read_text()) if self._index().exists() else {}

    def _note_local(self, path: str, md5: str) -> None:
        hashes = self._local_hashes()
        hashes[path] = md5
        self._index().parent.mkdir(parents=True, exist_ok=True)
        self._index().write_text(json.dumps(hashes, indent=2))

    def output_hash(self, path: str) -> str | None:
        """The object-store hash this run records for the output ``path`` (None in the project workspace)."""
        if self.is_project:
            return None
        from sail_core.pipeline import tracking

        return tracking.run_tags(self.mlflow_run_id).get(OUT_TAG + path)

    def has_output(self, path: str) -> bool:
        """True when this run has ``path``: recorded on its MLflow run (run workspace), or on disk (project)."""
        return (self.wd.root / path).exists() if self.is_project else self.output_hash(path) is not None

    def pull(self, *paths: str) -> None:
        """Make the local folders ``paths`` (relative to the workspace) hold what this run recorded for them."""
        if self.is_project:
            return
        from sail_core.pipeline import tracking

        tags = tracking.run_tags(self.mlflow_run_id)
        for path in paths:
            md5 = tags.get(OUT_TAG + path)
            if md5 is None:
                raise FileNotFoundError(f"run {self.run_id!r} has no output {path!r} (no tag {OUT_TAG}{path} on MLflow "
                                        f"run {self.mlflow_run_id}); run the step that writes it first")
            if self._local_hashes().get(path) == md5 and (self.wd.root / path).exists():
                continue
            t0 = time.perf_counter()
            self.objects.pull(md5, self.wd.root / path)
            self._note_local(path, md5)
            console.print(f"pulled {path} ({md5}) from {self.stores.objects} in {time.perf_counter() - t0:.1f} s")

    def push(self, *paths: str) -> dict[str, str]:
        """Store the local folders ``paths`` in the object store and record their hashes on the MLflow run."""
        if self.is_project:
            return {}
        from sail_core.pipeline import tracking

        hashes = {}
        for path in paths:
            t0 = time.perf_counter()
            stored = self.objects.push(self.wd.root / path)
            hashes[path] = stored.md5
            self._note_local(path, stored.md5)
            console.print(f"pushed {path} ({stored.md5}, {stored.nfiles} files, {stored.size / 1e6:.1f} MB) to "
                          f"{self.stores.objects} in {time.perf_counter() - t0:.1f} s")
        tracking.set_tags(self.mlflow_run_id, {OUT_TAG + p: h for p, h in hashes.items()})
        return hashes

    # ------------------------------------------------------------ checkpoints
    def _checkpoint_url(self, stage: str) -> str:
        return f"{self.url}/checkpoints/{stage}"

    def save_checkpoints(self, stage: str, folder: Path) -> None:
        """Copy a stage's local ``checkpoints/`` folder to the workspace store (replacing the older copy).

        The new copy is uploaded beside the old one (``.partial``), the old one moved aside (``.old``), the new
        one moved in, and only then the old one deleted: a process killed at any point leaves a complete copy
        that :meth:`restore_checkpoints` finds."""
        if self.is_project:
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(self._checkpoint_url(stage))
        tmp, old = f"{root}.partial", f"{root}.old"
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        fs.put(str(folder), tmp, recursive=True)
        if fs.exists(root):
            if fs.exists(old):
                fs.rm(old, recursive=True)
            fs.mv(root, old, recursive=True)
        fs.mv(tmp, root, recursive=True)
        if fs.exists(old):
            fs.rm(old, recursive=True)

    def restore_checkpoints(self, stage: str, folder: Path) -> bool:
        """Fetch a stage's checkpoints from the workspace store into ``folder``; False when there are none."""
        if self.is_project:
            return folder.exists()
        import fsspec

        fs, root = fsspec.core.url_to_fs(self._checkpoint_url(stage))
        if not fs.exists(root):
            root = f"{root}.old"  # killed between moving the old copy aside and the new one in
            if not fs.exists(root):
                return False
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        fs.get(root, str(folder), recursive=True)
        return True

    def drop_checkpoints(self, stage: str) -> None:
        if self.is_project:
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(self._checkpoint_url(stage))
        for path in (root, f"{root}.old", f"{root}.partial"):
            if fs.exists(path):
                fs.rm(path, recursive=True)

    def write_note(self, note: dict) -> None:
        """``<workspace>/run.json``: which run this folder belongs to (read by `sail runs list` and `sail gc`)."""
        if self.is_project:
            return
        import fsspec

        with fsspec.open(f"{self.url}/run.json", "w", auto_mkdir=True) as f:
            f.write(json.dumps(note, indent=2, default=str))


def project(wd: Workdir) -> Workspace:
    """The DVC project's workspace (``sail <step>``, ``dvc repro``)."""
    return Workspace(None, wd)


@contextmanager
def for_run(cfg: Config, run_id: str) -> Iterator[Workspace]:
    """The workspace of run ``run_id`` on this machine: under ``store.local_cache``, or, with
    ``local_cache: per-task``, in a fresh, empty temporary folder that is also the working directory
    while the task runs, and is removed when it ends (what a Celery or Kubernetes worker sees)."""
    stores = Stores.of(cfg)
    if stores.local_cache is None:
        scratch = Path(tempfile.mkdtemp(prefix="sail-task-"))
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            yield Workspace(run_id, Workdir(scratch / "runs" / run_key(run_id)), stores, scratch / "objects")
        finally:
            os.chdir(cwd)
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        yield Workspace(run_id, Workdir(stores.local_cache / "runs" / run_key(run_id)), stores,
                        stores.local_cache / "objects")
