"""The Triton runtime environment: its own venv plus a prepared ``tritonserver`` folder.

The ``nvidia-pytriton`` wheel bundles ``tritonserver`` (2.51.0, python backend
only). Its python-backend stub breaks under numpy 2, so Triton gets its own
venv (numpy<2, onnxruntime, tokenizers, pillow, no torch), created on first
need at ``home().triton_venv`` or at ``$SAIL_TRITON_VENV`` (tests and CI share
one). In production the same role is played by NVIDIA's Triton container.

The packages and their exact versions are in ``serving/triton-requirements.txt``
(shipped with the package). ``ensure_runtime()`` is idempotent: a marker file
records the file's requirement lines, and a changed requirement rebuilds the venv
(comment edits do not).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from sail_core.paths import file_lock, home

REQUIREMENTS = Path(__file__).resolve().parent / "triton-requirements.txt"
MARKER = "sail-triton-runtime.json"
_console = Console(stderr=True, soft_wrap=True)


class RuntimeSetupError(RuntimeError):
    """The Triton runtime environment could not be created."""


def pinned_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of the Triton runtime's requirements file (comments and blank lines dropped)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RuntimeSetupError(f"cannot read the Triton runtime requirements {path}: {err}; "
                                "reinstall the package (the file ships in serving/)") from err
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    pinned = [line for line in lines if line]
    if not pinned:
        raise RuntimeSetupError(f"{path} lists no packages; it must pin the Triton runtime's packages, "
                                "one `name==version` a line")
    return pinned


@dataclass(frozen=True)
class TritonRuntime:
    """Everything needed to launch ``tritonserver``."""

    venv: Path
    server_dir: Path          # copy of site-packages/pytriton/tritonserver with the stub in backends/python
    site_packages: Path
    libdir: Path              # the base interpreter's LIBDIR (else a wrong libpython loads)

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.server_dir / "backends"

    def env(self) -> dict[str, str]:
        """Process environment for tritonserver: the venv first on PATH, the right libraries."""
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        libs = [str(self.libdir), str(self.site_packages / "nvidia_pytriton.libs")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        for key in ("PYTHONPATH", "PYTHONHOME"):  # the main venv's paths must not leak into the stub
            env.pop(key, None)
        env["PYTHONNOUSERSITE"] = "1"
        return env


def venv_path() -> Path:
    """Where the Triton venv lives: ``$SAIL_TRITON_VENV`` or ``home().triton_venv``."""
    override = os.environ.get("SAIL_TRITON_VENV")
    return Path(override).resolve() if override else home().triton_venv


def runtime_dir() -> Path:
    """Where the prepared ``tritonserver`` folder lives: ``home().triton_runtime``, or beside
    ``$SAIL_TRITON_VENV`` when that is set (so a shared venv shares its server folder too)."""
    if os.environ.get("SAIL_TRITON_VENV"):
        return venv_path().parent / f"{venv_path().name}-server"
    return home().triton_runtime


def _read_marker(venv: Path) -> dict | None:
    marker = venv / MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeSetupError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _create_venv(venv: Path, pinned: list[str]) -> dict:
    started = time.perf_counter()
    if venv.exists():
        shutil.rmtree(venv)
    _console.print(f"[bold]Creating the Triton runtime environment[/] at {venv}\n"
                   f"  installing {' '.join(pinned)} from {REQUIREMENTS.name} (about a minute, once)")
    with _console.status("creating venv and installing the Triton runtime packages ..."):
        _run([sys.executable, "-m", "venv", str(venv)], "creating the Triton venv")
        py = str(venv / "bin" / "python")
        _run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
             "installing the Triton runtime packages (needs PyPI)")
        info = json.loads(_run([py, "-c", (
            "import json, site, sys, sysconfig; print(json.dumps({'site_packages': site.getsitepackages()[0], "
            "'libdir': sysconfig.get_config_var('LIBDIR'), 'python': '%d.%d' % sys.version_info[:2]}))")],
            "inspecting the Triton venv"))
    marker = {"pinned": pinned, **info, "created_seconds": round(time.perf_counter() - started, 1),
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (venv / MARKER).write_text(json.dumps(marker, indent=2))
    _console.print(f"  Triton runtime environment ready in {marker['created_seconds']} s")
    return marker


def _prepare_server_dir(marker: dict, target: Path) -> None:
    source = Path(marker["site_packages"]) / "pytriton" / "tritonserver"
    stub = source / "python_backend_stubs" / marker["python"] / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeSetupError(f"no python-backend stub for Python {marker['python']} in {source}; "
                                "the Triton venv must use Python 3.8-3.13")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy2(stub, target / "backends" / "python" / "triton_python_backend_stub")
    (target / MARKER).write_text(json.dumps({"pinned": marker["pinned"], "source": str(source)}))


def ensure_runtime() -> TritonRuntime:
    """Create (once) and return the Triton runtime: venv with the pinned packages and the server folder."""
    pinned = pinned_requirements()
    venv = venv_path()
    server_dir = runtime_dir()
    with file_lock(venv.parent / f".{venv.name}.lock"):
        marker = _read_marker(venv)
        if marker is None or marker.get("pinned") != pinned or not (venv / "bin" / "python").exists():
            marker = _create_venv(venv, pinned)
        server_marker = server_dir / MARKER
        try:
            ready = json.loads(server_marker.read_text()).get("pinned") == pinned
        except (OSError, ValueError):
            ready = False
        if not ready or not (server_dir / "bin" / "tritonserver").exists():
            _prepare_server_dir(marker, server_dir)
    return TritonRuntime(venv=venv, server_dir=server_dir, site_packages=Path(marker["site_packages"]),
                         libdir=Path(marker["libdir"]))
