"""DVC versioning: commit pipeline stage outputs to the DVC cache and push them to the remote.

The repository is a DVC project (``dvc.yaml``). Stage outputs produced by an
Airflow task or a ``sail`` command are recorded with ``dvc commit`` (the same
``dvc.lock`` entries ``dvc repro`` would write) and pushed to the remote under
``SAIL_HOME`` (``.sail/dvc-remote`` by default; configured in
``.dvc/config.local`` so that no machine path is committed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sail_core.paths import home

REMOTE = "sail"


class VersioningError(RuntimeError):
    pass


def _dvc(root: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VersioningError(
            f"`dvc {' '.join(args)}` failed in {root} (exit {proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def ensure_remote(root: Path, remote_dir: Path | None = None) -> Path:
    """Configure the default DVC remote (local config) at ``remote_dir`` (default under SAIL_HOME)."""
    if not (root / ".dvc").is_dir():
        raise VersioningError(f"{root} is not a DVC project (no .dvc/); run `dvc init` there")
    remote = Path(remote_dir or home().dvc_remote)
    remote.mkdir(parents=True, exist_ok=True)
    _dvc(root, "remote", "add", "--local", "--force", "--default", REMOTE, str(remote))
    return remote


def commit_and_push(root: Path, stages: list[str]) -> None:
    """Record ``stages``' current deps/outs in dvc.lock, cache the outputs, push them."""
    ensure_remote(root)
    _dvc(root, "commit", "--force", *stages)
    _dvc(root, "push", "--remote", REMOTE, *stages)


def status_clean(root: Path) -> bool:
    """True when every stage's deps and outs match dvc.lock (``dvc status`` exits 0)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--quiet"], cwd=root, capture_output=True, text=True)
    return proc.returncode == 0


def out_hash(root: Path, out_path: str) -> str | None:
    """The DVC hash recorded in dvc.lock for an output path (e.g. ``data/validated``)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    tree = yaml.safe_load(lock.read_text()) or {}
    for stage in (tree.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == out_path:
                return out.get("md5") or out.get("hash")
    return None
