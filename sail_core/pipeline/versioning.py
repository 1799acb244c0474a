"""DVC versioning: commit pipeline stage outputs to the DVC cache and push them to the remote.

The repository is a DVC project (``dvc.yaml``). Stage outputs produced by an
Airflow task or a ``sail`` command are recorded with ``dvc commit`` (the same
``dvc.lock`` entries ``dvc repro`` would write) and pushed to the remote under
``SAIL_HOME`` (``.sail/dvc-remote`` by default; configured in
``.dvc/config.local`` so that no machine path is committed).

The remote is created the first time it is configured. After that, a remote folder
that is missing (moved away, disk not mounted), not a folder, or read-only stops the
step with :class:`VersioningError` naming it, before DVC writes anything; once it
is back, running the same step again commits and pushes as if nothing happened
(``dvc commit`` and ``dvc push`` are idempotent: content-addressed files).
"""

from __future__ import annotations

import configparser
import os
import subprocess
import tempfile
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


def configured_remote(root: Path) -> Path | None:
    """The folder of remote ``sail`` in ``root/.dvc/config.local``, or None when it is not configured there."""
    config = configparser.ConfigParser()
    try:
        config.read(root / ".dvc" / "config.local")
    except configparser.Error:
        return None
    url = config.get(f"'remote \"{REMOTE}\"'", "url", fallback=None)
    return Path(url) if url else None


def check_remote(remote: Path, configured: bool) -> None:
    """Raise :class:`VersioningError` naming ``remote`` and the fix unless it is a writable folder. A remote
    that was ``configured`` before must exist; a new one is created."""
    fix = (f"then run the same step again (or point the remote elsewhere: `dvc remote add --local --force "
           f"--default {REMOTE} DIR`)")
    if remote.exists() and not remote.is_dir():
        raise VersioningError(f"the DVC remote {remote} is not a folder (a file is in its place); move it away and "
                              f"put the remote folder back, {fix}")
    if not remote.exists():
        if configured:
            raise VersioningError(f"the DVC remote {remote} is missing (moved away, or its disk not mounted?); "
                                  f"put it back, {fix}")
        try:
            remote.mkdir(parents=True)
        except OSError as err:
            raise VersioningError(f"cannot create the DVC remote {remote}: {err}; {fix}") from None
    try:  # os.access is not enough: root passes it, a read-only mount does not
        tempfile.TemporaryFile(dir=remote).close()
    except OSError as err:
        raise VersioningError(f"the DVC remote {remote} is not writable ({err.strerror}); make it writable "
                              f"(chmod u+w {remote}, or remount its disk read-write), {fix}") from None


def ensure_remote(root: Path, remote_dir: Path | None = None) -> Path:
    """Configure the default DVC remote (local config) at ``remote_dir`` (default under SAIL_HOME), after
    :func:`check_remote`."""
    if not (root / ".dvc").is_dir():
        raise VersioningError(f"{root} is not a DVC project (no .dvc/); run `dvc init` there")
    remote = Path(remote_dir or home().dvc_remote)
    configured = configured_remote(root)
    check_remote(remote, configured is not None and os.path.abspath(configured) == os.path.abspath(remote))
    _dvc(root, "remote", "add", "--local", "--force", "--default", REMOTE, str(remote))
    return remote


def commit_and_push(root: Path, stages: list[str]) -> None:
    """Record ``stages``' current deps/outs in dvc.lock, cache the outputs, push them."""
    remote = ensure_remote(root)
    _dvc(root, "commit", "--force", *stages)
    try:
        _dvc(root, "push", "--remote", REMOTE, *stages)
    except VersioningError as err:
        raise VersioningError(f"pushing to the DVC remote {remote} failed; the outputs are committed in {root} "
                              f"(dvc.lock, .dvc/cache), so once the remote is reachable and writable, running the "
                              f"same step again pushes them.\n{err}") from None


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
