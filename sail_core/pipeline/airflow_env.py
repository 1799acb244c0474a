"""The embedded Airflow: environment, database and the two ways to run it locally.

This module starts Airflow as a program (``airflow dags test``, and for ``sail
ui`` its components one by one); it never imports Airflow, so ``sail_core`` stays
orchestrator-free. ``sail ui`` waits on the services' health endpoints, not on a
fixed sleep.

``sail ui`` does not run ``airflow standalone``: that starts the scheduler's and
the triggerer's log servers (``airflow serve-logs``, ports 8793/8794), and Airflow
3.3 binds them to every interface with no setting to change it
(``airflow/utils/serve_logs/core.py`` passes ``host=""`` to uvicorn). It starts
what standalone starts, on loopback and without them: the scheduler and the
triggerer with ``--skip-serve-logs`` (their log servers only exist for an API
server on another machine; this one reads the task logs from the local log
folder), the dag-processor, and the API server with ``--host 127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
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
    """Environment for every Airflow process: our dags/, loopback only, and the metadata database.

    The database is SQLite under ``SAIL_HOME/airflow`` unless ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (in
    the environment or ``extra``) names another, e.g. PostgreSQL shared by several workers
    (docs/multiworker.md); that URL is checked (``StoreURLError`` names what is wrong) and the async URL
    Airflow also needs is derived from it (:func:`sail_core.pipeline.postgres.airflow_database`).
    """
    from sail_core.pipeline.postgres import AIRFLOW_VARIABLE, airflow_database

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
    if e.get(AIRFLOW_VARIABLE):
        e.update(airflow_database(e[AIRFLOW_VARIABLE]))
    return e


def db_migrate() -> None:
    """Create or upgrade Airflow's metadata database (idempotent; overlapping callers on this machine take
    turns; Airflow itself locks a PostgreSQL database while it migrates)."""
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


def _password_file() -> Path:
    return home().airflow / "simple_auth_manager_passwords.json.generated"


def _admin_password(first_time: bool) -> str:
    """The Airflow login to print: the generated password itself the first time (the file did not exist
    before this ``sail ui``), afterwards only where it is. The file is made 0600 either way."""
    path = _password_file()
    if not path.exists():
        return f"admin / (see {path} once Airflow is up)"
    path.chmod(0o600)  # Airflow writes it with the umask's permissions; only its owner may read it
    if not first_time:
        return f"admin / the password in {path} (mode 0600)"
    try:
        password = json.loads(path.read_text()).get("admin", "")
    except (ValueError, AttributeError):
        password = path.read_text().strip()
    return f"admin / {password}  (shown once; kept in {path}, mode 0600)"


class AlreadyRunning(RuntimeError):
    """Another ``sail ui`` already runs from this ``SAIL_HOME``."""


@contextlib.contextmanager
def _single_instance(lock_path: Path, airflow_port: int, mlflow_port: int):
    """Hold an exclusive lock on ``lock_path`` while the UIs run (released by the kernel when the process
    dies, so a killed ``sail ui`` never blocks the next). A second one raises :class:`AlreadyRunning`, naming
    the running one's pid and addresses, instead of failing later on a busy port."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            held = json.loads(handle.read() or "{}")
        except ValueError:
            held = {}
        handle.close()
        raise AlreadyRunning(
            f"`sail ui` is already running from this SAIL_HOME (pid {held.get('pid', '?')}): Airflow on "
            f"http://127.0.0.1:{held.get('airflow_port', '?')}, MLflow on http://127.0.0.1:{held.get('mlflow_port', '?')}. "
            f"Use it, or stop it (Ctrl-C in its terminal, or kill -TERM {held.get('pid', '<pid>')}) and start again; "
            f"the lock is {lock_path}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "airflow_port": airflow_port, "mlflow_port": mlflow_port}))
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        handle.close()  # releases the lock


class _Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP reached ``sail ui``: stop what it started."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_stop():
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`_Stopped` while the UIs run (Python's default for SIGTERM
    exits without running ``finally``, which left every component, each in its own session, running). After
    the first, further ones are ignored so that a second Ctrl-C cannot cut the stopping short."""
    def stop(signum, _frame):
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise _Stopped(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    """Stop each process's whole group, in the order given (the scheduler first: it waits for its running
    tasks, whose results need the API server still up): SIGTERM and up to 20 s each, then SIGKILL the
    groups of whatever outlived it."""
    for p in processes:
        _signal_group(p, signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    for p in processes:
        _signal_group(p, signal.SIGKILL)  # whatever of the group outlived the SIGTERM


# What `airflow standalone` starts, less the log servers; stopped in this order.
AIRFLOW_COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
}


def start_airflow(airflow_port: int, logs: Path) -> list[subprocess.Popen]:
    """Start the Airflow components of :data:`AIRFLOW_COMPONENTS` (LocalExecutor, the metadata database of
    :func:`env`, 127.0.0.1), each in a session of its own with its log ``logs/airflow-<component>.log``;
    returns them in stopping order."""
    url = f"http://127.0.0.1:{airflow_port}"
    component_env = env({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(airflow_port), "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    })
    procs = []
    try:
        for name, args in AIRFLOW_COMPONENTS.items():
            procs.append(subprocess.Popen(
                [_bin("airflow"), *(a.format(port=airflow_port) for a in args)], env=component_env,
                stdout=open(logs / f"airflow-{name}.log", "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT, start_new_session=True))
    except BaseException:
        _stop(procs)
        raise
    return procs


def start_uis(airflow_port: int = 8080, mlflow_port: int = 5000, timeout_s: float = 300.0) -> None:
    """Start Airflow (scheduler, triggerer, dag-processor, API server) and `mlflow ui` on 127.0.0.1, wait
    until both answer their health endpoints, print where they are, and keep them up until Ctrl-C. When
    ``MLFLOW_TRACKING_URI`` is a tracking server, its own UI is shown instead of starting `mlflow ui`.

    Raises ``NotReady`` (after stopping everything) when one is not up within ``timeout_s``, naming it and
    its logs, and :class:`AlreadyRunning` when another ``sail ui`` holds this ``SAIL_HOME``. SIGINT, SIGTERM
    and SIGHUP, and any failure, stop every component it started.
    """
    with _single_instance(home().root / "ui.lock", airflow_port, mlflow_port), _signals_stop():
        _run_uis(airflow_port, mlflow_port, timeout_s)


def _run_uis(airflow_port: int, mlflow_port: int, timeout_s: float) -> None:
    """:func:`start_uis` under its lock: start, wait, serve until a signal or a component exits, stop all."""
    from sail_core.pipeline.postgres import is_server
    from sail_core.pipeline.tracking import tracking_uri

    db_migrate()
    logs = home().logs
    logs.mkdir(parents=True, exist_ok=True)
    af_log, ml_log = logs / "airflow-*.log", logs / "mlflow-ui.log"
    uri = tracking_uri()
    first_time = not _password_file().exists()
    everything: list[subprocess.Popen] = []
    try:
        airflow = start_airflow(airflow_port, logs)
        everything.extend(airflow)
        api_server = airflow[-1]
        endpoints = [Endpoint("Airflow", f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health", af_log,
                              api_server, check=_airflow_healthy)]
        if is_server(uri):  # a tracking server (the multi-worker setup) has its own UI
            ml, mlflow_ui = None, uri.rstrip("/")
            endpoints.append(Endpoint("MLflow tracking server", f"{mlflow_ui}/health"))
        else:
            mlflow_ui = f"http://127.0.0.1:{mlflow_port}"
            ml = subprocess.Popen(
                [_bin("mlflow"), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port),
                 "--backend-store-uri", uri, "--default-artifact-root", home().mlflow_artifacts.as_uri()],
                env=env(), stdout=open(ml_log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
            )
            everything.append(ml)
            endpoints.append(Endpoint("MLflow", f"{mlflow_ui}/health", ml_log, ml))
        console.print(f"Starting the Airflow and MLflow UIs (up to {timeout_s:g} s; logs in {logs})")
        wait_until_ready(endpoints, timeout_s, console=console)
        console.print(
            f"Airflow UI: http://127.0.0.1:{airflow_port}  login: {_admin_password(first_time)}\n"
            f"MLflow UI:  {mlflow_ui}\n"
            f"Logs in {logs}. Trigger DAG '{DAG_ID}' from the Airflow UI ('Trigger' opens the parameter form). "
            "Ctrl-C (or SIGTERM) stops both."
        )
        while all(p.poll() is None for p in everything):
            time.sleep(1)
        for name, proc in [*zip(AIRFLOW_COMPONENTS, airflow), *([("MLflow UI", ml)] if ml else [])]:
            if proc.poll() is not None:
                log = ml_log if proc is ml else logs / f"airflow-{name}.log"
                console.print(f"[red]{name} exited (code {proc.returncode})[/]; see {log}. Stopping the others.")
    except _Stopped as stop:
        console.print(f"{stop}: stopping the UIs")
    finally:
        _stop(everything)
