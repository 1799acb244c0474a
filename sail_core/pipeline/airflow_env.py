"""The embedded Airflow: environment, database and the two ways to run it locally.

This module starts Airflow as a program (``airflow dags test``, ``airflow
standalone``); it never imports Airflow, so ``sail_core`` stays orchestrator-free.
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
    """Create or upgrade Airflow's SQLite database (idempotent)."""
    h = home()
    h.airflow.mkdir(parents=True, exist_ok=True)
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
    for name in ("simple_auth_manager_passwords.json.generated",):
        path = home().airflow / name
        if path.exists():
            try:
                return json.dumps(json.loads(path.read_text()))
            except ValueError:
                return path.read_text().strip()
    return f"(see {home().airflow}/simple_auth_manager_passwords.json.generated once Airflow is up)"


def start_uis(airflow_port: int = 8080, mlflow_port: int = 5000) -> None:
    """Start `airflow standalone` and `mlflow ui` on 127.0.0.1 until Ctrl-C."""
    from sail_core.pipeline.tracking import tracking_uri

    db_migrate()
    logs = home().logs
    logs.mkdir(parents=True, exist_ok=True)
    af = subprocess.Popen(
        [_bin("airflow"), "standalone"],
        env=env({"AIRFLOW__API__PORT": str(airflow_port), "AIRFLOW__CORE__PARALLELISM": "2"}),
        stdout=open(logs / "airflow-standalone.log", "ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )
    ml = subprocess.Popen(
        [_bin("mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", tracking_uri(), "--default-artifact-root", home().mlflow_artifacts.as_uri()],
        env=env(), stdout=open(logs / "mlflow-ui.log", "ab"), stderr=subprocess.STDOUT,
    )
    time.sleep(15)
    console.print(
        f"Airflow UI: http://127.0.0.1:{airflow_port}  login: admin / password {_admin_password()}\n"
        f"MLflow UI:  http://127.0.0.1:{mlflow_port}\n"
        f"Logs in {logs}. Trigger DAG '{DAG_ID}' from the Airflow UI ('Trigger' opens the parameter form). Ctrl-C stops both."
    )
    try:
        while af.poll() is None and ml.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in (af, ml):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (af, ml):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
