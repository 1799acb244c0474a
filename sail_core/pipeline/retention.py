"""``sail gc``: free what no kept run and no registered model version needs.

A run is **kept** when it is one of the last ``store.keep_runs`` runs, when a registered
model version came from it, or when it is still running (started in the last day). For
every other run ``sail gc`` removes its workspace (pointer file and training checkpoints)
and its local cache folder. It then removes the objects (in the object store and the local
object cache) that no kept run's outputs and no ``dvc.lock`` of the project consist of, and
the Triton model versions that neither the champion, the previous champion, the version
serving now nor the one a rollback returns to need. The plan is printed first; nothing is
removed without ``apply=True``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from sail_core.config import Config
from sail_core.paths import home
from sail_core.pipeline import registry, runs
from sail_core.pipeline.workspace import Stores, run_key

RUNNING_GRACE = timedelta(days=1)


@dataclass
class Plan:
    kept: list[runs.Run] = field(default_factory=list)
    dropped: list[runs.Run] = field(default_factory=list)
    workspaces: list[str] = field(default_factory=list)        # URLs
    local_runs: list[Path] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)       # object store: id -> bytes
    cache_objects: dict[str, int] = field(default_factory=dict)  # local object cache: id -> bytes
    triton_versions: list[int] = field(default_factory=list)
    protected_versions: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "runs_kept": [r.run_id for r in self.kept],
            "runs_dropped": [r.run_id for r in self.dropped],
            "workspaces": self.workspaces,
            "local_run_folders": [str(p) for p in self.local_runs],
            "objects": {"count": len(self.objects), "bytes": sum(self.objects.values())},
            "local_cache_objects": {"count": len(self.cache_objects), "bytes": sum(self.cache_objects.values())},
            "triton_versions": self.triton_versions,
            "triton_versions_kept": self.protected_versions,
        }


def _registered_runs(cfg: Config) -> set[str]:
    from mlflow.exceptions import MlflowException

    try:
        versions = registry.client().search_model_versions(f"name='{cfg.registry.mlflow_model}'")
    except MlflowException:
        return set()
    return {mv.run_id for mv in versions}


def _dvc_lock_hashes(root: Path) -> set[str]:
    lock = root / "dvc.lock"
    if not lock.exists():
        return set()
    tree = yaml.safe_load(lock.read_text()) or {}
    return {out.get("md5") for stage in (tree.get("stages") or {}).values() for out in stage.get("outs") or []
            if out.get("md5")}


def _triton_protected(cfg: Config) -> tuple[Path, set[int], dict]:
    from serving import repository
    from serving.state import read_state

    folder = repository.model_dir(home().triton_repo, cfg.serve)
    state = read_state(folder)
    keep = {v for v in (state.get("current"), *state.get("stack", [])[-2:]) if v is not None}
    for alias in (registry.CHAMPION, registry.PREVIOUS):
        ref = registry.by_alias(cfg.registry.mlflow_model, alias)
        if ref is not None:
            keep.add(ref.version)
    return folder, keep, state


def plan(cfg: Config, project_root: Path, keep_runs: int | None = None) -> Plan:
    """What ``sail gc`` would remove (nothing is removed here)."""
    import fsspec

    from sail_core.pipeline.objects import ObjectStore

    keep_n = cfg.store.keep_runs if keep_runs is None else keep_runs
    all_runs = runs.list_runs(cfg)
    registered = _registered_runs(cfg)
    now = datetime.now(timezone.utc)
    p = Plan()
    for i, run in enumerate(all_runs):
        live = run.status == "running" and now - run.started < RUNNING_GRACE
        (p.kept if i < keep_n or run.mlflow_run_id in registered or live else p.dropped).append(run)
    kept_keys = {run_key(r.run_id) for r in p.kept}

    stores = Stores.of(cfg)
    fs, root = fsspec.core.url_to_fs(stores.workspaces)
    if fs.exists(root):
        for entry in fs.ls(root, detail=False):
            if Path(entry).name not in kept_keys:
                p.workspaces.append(entry if "://" not in stores.workspaces
                                    else f"{stores.workspaces}/{Path(entry).name}")
    if stores.local_cache is not None and (stores.local_cache / "runs").exists():
        p.local_runs = sorted(d for d in (stores.local_cache / "runs").iterdir() if d.name not in kept_keys)

    cache_dir = stores.object_cache
    store = ObjectStore(stores.objects, cache_dir)
    keep = store.closure({h for r in p.kept for h in r.outputs.values()} | _dvc_lock_hashes(project_root))
    p.objects = store.unreferenced(keep, "remote")
    if cache_dir.exists():
        p.cache_objects = store.unreferenced(keep, "cache")

    folder, protected, _ = _triton_protected(cfg)
    if folder.exists():
        present = sorted(int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit())
        p.triton_versions = [v for v in present if v not in protected]
        p.protected_versions = [v for v in present if v in protected]
    return p


def apply(cfg: Config, p: Plan) -> dict:
    """Remove what ``p`` lists; returns counts and bytes freed."""
    import fsspec

    from sail_core.pipeline.objects import ObjectStore
    from serving.state import now, write_state

    stores = Stores.of(cfg)
    for url in p.workspaces:
        fs, path = fsspec.core.url_to_fs(url)
        fs.rm(path, recursive=True)
    for folder in p.local_runs:
        shutil.rmtree(folder, ignore_errors=True)
    store = ObjectStore(stores.objects, stores.object_cache)
    store.remove(p.objects, "remote")
    store.remove(p.cache_objects, "cache")
    if p.triton_versions:
        folder, _, state = _triton_protected(cfg)
        for v in p.triton_versions:
            shutil.rmtree(folder / str(v), ignore_errors=True)
        state["stack"] = [v for v in state.get("stack", []) if v not in p.triton_versions]
        state.setdefault("history", []).append({"event": "gc", "at": now(), "removed": p.triton_versions})
        write_state(folder, state)
    return {"workspaces": len(p.workspaces), "local_run_folders": len(p.local_runs),
            "objects": len(p.objects), "bytes": sum(p.objects.values()) + sum(p.cache_objects.values()),
            "triton_versions": p.triton_versions}
