"""Where things live: the ``SAIL_HOME`` workspace, the pipeline's work folders, free loopback ports, and
a file lock for processes that share a folder.

``SAIL_HOME`` (default ``.sail/`` in the repository, git-ignored) holds the
services' state: Airflow home, MLflow store, DVC remote, Triton model
repository and the Triton runtime environment. The pipeline's data and model
outputs live in the repository (``data/``, ``models/``, ``reports/``) so that
DVC tracks them.
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sail_core.config import REPO_ROOT


def sail_home() -> Path:
    home = Path(os.environ.get("SAIL_HOME", REPO_ROOT / ".sail")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def airflow(self) -> Path:
        return self.root / "airflow"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def triton_repo(self) -> Path:
        return self.root / "triton" / "models"

    @property
    def triton_runtime(self) -> Path:
        return self.root / "triton" / "runtime"

    @property
    def triton_venv(self) -> Path:
        return self.root / "triton" / "venv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def home() -> Home:
    return Home(sail_home())


@dataclass(frozen=True)
class Workdir:
    """The pipeline's outputs, relative to a project root (DVC tracks these)."""

    root: Path

    @property
    def raw(self) -> Path:          # ingest output: tables + media
        return self.root / "data" / "raw"

    @property
    def validated(self) -> Path:    # validate output: clean tables
        return self.root / "data" / "validated"

    @property
    def quarantine(self) -> Path:   # rejected rows with their reason
        return self.root / "data" / "quarantine"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def stage(self, name: str) -> Path:
        return self.models / name

    @property
    def onnx(self) -> Path:
        return self.models / "onnx"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def workdir(root: str | os.PathLike | None = None) -> Workdir:
    """The project root: explicit, else $SAIL_WORKDIR, else the cwd when it is a DVC project, else the repository."""
    if root is None:
        root = os.environ.get("SAIL_WORKDIR")
    if root is None:
        cwd = Path.cwd()
        root = cwd if (cwd / "dvc.yaml").exists() else REPO_ROOT
    return Workdir(Path(root).resolve())


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now (the OS picks them: bind to port 0).

    All sockets stay open until every port is chosen, so the ports differ; another
    process may still take one before the caller binds it.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: processes that share the
    file take turns. Advisory (``fcntl.flock``), on this machine's file system."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
