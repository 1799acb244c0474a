"""The embedded Airflow: environment, database and the two ways to run it locally.

This module starts Airflow as a program (``airflow dags test``, ``airflow
standalone``); it never imports Airflow, so ``sail_core`` stays orchestrator-free.
``sail ui`` waits on the services' health endpoints, not on a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from sail_core.config import REPO_ROOT
from sail_core.paths import home
from sail_core.pipeline.health import Endpoint, wait_until_ready

DAG_ID = "sail_pipeline"
console = Console(stderr=True, soft_wrap=True)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Airflow process: SQLite under SAIL_HOME, our dags/, loopback only."""
    h = home()
    e = dict(os.environ)
    e.update(
        {
            "SAIL_HOME": str(h.root),
            "AIRFLOW_HOME": str(h.airflow),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": e.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__API__HOST": e.get("AIRFLOW__API__HOST", "127.0.0.1"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": e.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}",
        }
    )
    e.update(extra or {})
    return e


def db_migrate() -> None:
    """Create or upgrade Airflow's SQLite database (idempotent; overlapping callers take turns)."""
    from sail_core.paths import file_lock

    h = home()
    h.airflow.mkdir(parents=True, exist_ok=True)
    with file_lock(h.airflow / ".migrate.lock"):
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env(), check=True, capture_output=True, text=True)


def dags_test(conf: dict) -> int:
    """Run the pipeline DAG once, in this machine's processes, through Airflow. Returns an exit code."""
    console.print(f"[bold]airflow dags test {DAG_ID}[/] (AIRFLOW_HOME={home().airflow})")
    db_migrate()
    proc = subprocess.run(
        [_bin("airflow"), "dags", "test", DAG_ID, "--conf", json.dumps(conf)], env=env(), cwd=REPO_ROOT
    )
    return proc.returncode


def _admin_password() -> str:
    path = home().airflow / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        return f"(see {path} once Airflow is up)"
    try:
        return json.dumps(json.loads(path.read_text()))
    except ValueError:
        return path.read_text().strip()


def _airflow_healthy(body: bytes) -> str | None:
    """Airflow's /api/v2/monitor/health: ready when the metadata database and the scheduler are healthy."""
    try:
        health = json.loads(body)
    except ValueError:
        return "health endpoint answered something other than JSON"
    down = [part for part in ("metadatabase", "scheduler")
            if (health.get(part) or {}).get("status") != "healthy"]
    return f"{' and '.join(down)} not healthy yet" if down else None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the process was started in its own session: its group id is its pid
    except ProcessLookupError:
        pass


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each process's whole group (`airflow standalone` leaves its components running when only
    it is signalled), then SIGKILL the groups of those still running after 20 s."""
    for p in processes:
        _signal_group(p, signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(p, signal.SIGKILL)  # whatever of the group outlived the SIGTERM


def start_uis(airflow_port: int = 8080, mlflow_port: int = 5000, timeout_s: float = 300.0) -> None:
    """Start `airflow standalone` and `mlflow ui` on 127.0.0.1, wait until both answer their
    health endpoints, print where they are, and keep them up until Ctrl-C.

    Raises ``NotReady`` (after stopping both) when one is not up within ``timeout_s``, naming it and its log.
    """
    from sail_core.pipeline.tracking import tracking_uri

    db_migrate()
    logs = home().logs
    logs.mkdir(parents=True, exist_ok=True)
    af_log, ml_log = logs / "airflow-standalone.log", logs / "mlflow-ui.log"
    af = subprocess.Popen(
        [_bin("airflow"), "standalone"],
        env=env({"AIRFLOW__API__PORT": str(airflow_port), "AIRFLOW__CORE__PARALLELISM": "2"}),
        stdout=open(af_log, "ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
    )
    ml = subprocess.Popen(
        [_bin("mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", tracking_uri(), "--default-artifact-root", home().mlflow_artifacts.as_uri()],
        env=env(), stdout=open(ml_log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        console.print(f"Starting the Airflow and MLflow UIs (up to {timeout_s:g} s; logs in {logs})")
        wait_until_ready([
            Endpoint("Airflow", f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health", af_log, af,
                     check=_airflow_healthy),
            Endpoint("MLflow", f"http://127.0.0.1:{mlflow_port}/health", ml_log, ml),
        ], timeout_s, console=console)
        console.print(
            f"Airflow UI: http://127.0.0.1:{airflow_port}  login: admin / password {_admin_password()}\n"
            f"MLflow UI:  http://127.0.0.1:{mlflow_port}\n"
            f"Logs in {logs}. Trigger DAG '{DAG_ID}' from the Airflow UI ('Trigger' opens the parameter form). "
            "Ctrl-C stops both."
        )
        while af.poll() is None and ml.poll() is None:
            time.sleep(1)
        for name, proc, log in (("Airflow", af, af_log), ("MLflow", ml, ml_log)):
            if proc.poll() is not None:
                console.print(f"[red]{name} exited (code {proc.returncode})[/]; see {log}. Stopping the other one.")
    except KeyboardInterrupt:
        pass
    finally:
        _stop([af, ml])
