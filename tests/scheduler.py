"""A real Airflow for tests: the scheduler with the LocalExecutor, the dag-processor and the api-server, on
SQLite (or a PostgreSQL database given to :class:`Airflow`) and 127.0.0.1, in a temporary AIRFLOW_HOME and
SAIL_HOME. Tests trigger ``sail_pipeline`` through its
REST API (with a login, as a user would) and read run and task states from its metadata database.

``dag.test()`` runs every task inside the test's own process; here each task runs in a process the
LocalExecutor starts (worker -> supervisor -> task runner, the runner in a process group of its own), so a
test can kill it and watch Airflow retry it. Facts checked on this machine (Airflow 3.3.2):

- Airflow 3 has no rule against the LocalExecutor on SQLite (Airflow 2 refused it; 3.x dropped the check and
  `airflow standalone` runs exactly that pair). SQLite allows one writer at a time; the scheduler, the
  dag-processor and the api-server take turns, and tasks never open the database (they talk to the
  api-server's execution API). ``[core] parallelism`` is the number of worker processes the LocalExecutor
  forks at start; 2 lets two runs' tasks run side by side on 2 cores.
- The components are started by hand (not `airflow standalone`) so that nothing listens beyond loopback: the
  scheduler with ``--skip-serve-logs`` (the api-server reads task logs from the local folder), the api-server
  with ``--host 127.0.0.1``. They share a random JWT secret (the scheduler signs the tasks' tokens, the
  api-server checks them).
- Killing a task runner with SIGKILL is seen at once by its supervisor: the try fails and, with retries left,
  the retry is queued after ``retry_delay``. The heartbeat timeout (300 s by default; 20 s here) only matters
  when the supervisor dies too.

The session shares one instance (:func:`shared`): the test modules that use it are known from the collected
tests, and it stops when the last of them is done (or at the end of the session).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import yaml

from sail_core.paths import free_ports
from tests.project import REPO

DAG_ID = "sail_pipeline"
BIN = Path(sys.executable).parent
STEPS = ["ingest", "validate", "version", "train"]  # what the tests' runs do: data in, contracts, stage1

# Profiles of the tests' params.yaml, each `tiny` on files copied from the demo data, with one training stage.
# Each has its own MLflow experiment, so that no run takes another test's stage as already trained (the key).
RESUME = "tiny_resume"  # stage1 long enough to be killed between its first checkpoint and its end
RESUME_STAGE = {"name": "stage1", "steps": 5, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2}
GOOD, BAD = "tiny_good", "tiny_bad"  # the concurrent runs: the same settings, the bad one on broken data
BAD_ITEM_YEAR = 3000  # the items contract allows 1870..2100
CONCURRENT_MODEL = "concurrent-test-model"


def _profiles(tiny: dict, good: Path, bad: Path) -> dict:
    def profile(data_dir: Path, stage: dict, experiment: str) -> dict:
        p = json.loads(json.dumps(tiny))
        p["data"] = {**p.get("data", {}), "source": "files", "items_file": str(data_dir / "items.parquet"),
                     "interactions_file": str(data_dir / "interactions.parquet")}
        p["train"] = {**p.get("train", {}), "stages": [stage, {"name": "stage2", "drop": True},
                                                        {"name": "stage3", "drop": True}, {"name": "cre", "drop": True}]}
        p["registry"] = {**p.get("registry", {}), "experiment": experiment, "mlflow_model": CONCURRENT_MODEL}
        return p

    short = {"name": "stage1", "steps": 2, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2}
    return {RESUME: profile(good, RESUME_STAGE, "kill-resume-test"),
            GOOD: profile(good, short, "concurrent-test"), BAD: profile(bad, short, "concurrent-test")}


def write_data(demo_data: Path, root: Path) -> tuple[Path, Path, str]:
    """Two copies of the demo data as users' own files (the importer builds the pairs): a good one, and a bad
    one whose items table has one row with the year :data:`BAD_ITEM_YEAR`. Returns both and the bad item id."""
    good, bad = root / "data-good", root / "data-bad"
    for d in (good, bad):
        shutil.copytree(demo_data, d)
        shutil.rmtree(d / "pairs", ignore_errors=True)
    items = pd.read_parquet(bad / "items.parquet")
    row = items.index[len(items) // 2]
    items.loc[row, "year"] = BAD_ITEM_YEAR
    items.to_parquet(bad / "items.parquet")
    return good, bad, str(items.loc[row, "item_id"])


def tests_params(good: Path, bad: Path) -> dict:
    """The repository's params.yaml plus the tests' profiles (:data:`RESUME`, :data:`GOOD`, :data:`BAD`) on
    data copies ``good`` and ``bad`` (:func:`write_data`)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profiles"].update(_profiles(params["profiles"]["tiny"], good, bad))
    return params


class Airflow:
    """One Airflow installation under ``root``: ``root/airflow`` (AIRFLOW_HOME), ``root/home`` (SAIL_HOME),
    ``root/params.yaml`` (SAIL_PARAMS) and ``root/logs`` (each component's output).

    Its metadata database is SQLite in AIRFLOW_HOME, or ``database`` (a SQLAlchemy URL, e.g. PostgreSQL);
    its tasks track to SAIL_HOME's embedded MLflow store, or to ``mlflow_uri`` (e.g. a tracking server)."""

    def __init__(self, root: Path, params: dict, database: str | None = None, mlflow_uri: str | None = None):
        self.root = root
        self.airflow_home = root / "airflow"
        self.sail_home = root / "home"
        self.params = root / "params.yaml"
        self.logs = root / "logs"
        for d in (self.airflow_home, self.sail_home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.params.write_text(yaml.safe_dump(params, sort_keys=False))
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        passwords.chmod(0o600)
        self.db = self.airflow_home / "airflow.db"
        self.database = database or f"sqlite:///{self.db}"
        self.mlflow_uri = mlflow_uri
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        from sail_core.pipeline import airflow_env

        self.env = airflow_env.env({
            "SAIL_HOME": str(self.sail_home),
            "SAIL_PARAMS": str(self.params),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # parse the DAG once: a re-parse every 30 s (the default) costs CPU the runs need
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        })
        if mlflow_uri:
            self.env["MLFLOW_TRACKING_URI"] = mlflow_uri
        else:
            self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.pop("SAIL_WORKDIR", None)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 240.0) -> None:
        """``airflow db migrate``, then the three components; returns when the DAG is parsed and the
        scheduler is healthy."""
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env, check=True, capture_output=True,
                       cwd=self.root)
        commands = {
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
        }
        for name, args in commands.items():
            self.procs[name] = subprocess.Popen([str(BIN / "airflow"), *args], env=self.env, cwd=self.root,
                                                stdout=open(self.logs / f"{name}.log", "ab"),
                                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}) while starting; see "
                                       f"{self.logs / (name + '.log')}")
            if self._ready():
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow was not ready within {timeout_s:g} s (scheduler healthy and DAG {DAG_ID} "
                           f"parsed); see the logs in {self.logs}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                health = json.loads(r.read())
            if (health.get("scheduler") or {}).get("status") != "healthy":
                return False
            self._request("GET", f"/api/v2/dags/{DAG_ID}")
            return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self) -> list[str]:
        """Stop in order: the scheduler first (it waits for running tasks), then the others; then SIGKILL
        whatever is left of each component's session (a task runner has its own process group, not session).
        Returns the command lines of the processes that outlived the SIGTERMs and had to be killed."""
        for name in ("scheduler", "dag-processor", "api-server"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        killed = []
        for proc in self.procs.values():
            for pid in session_members(proc.pid):
                command = cmdline(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(f"pid {pid}: {command}")
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        return killed

    # ------------------------------------------------------------------ REST
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        if self._token is None and not path.startswith("/auth/"):
            self._token = self._request("POST", "/auth/token", {"username": "admin",
                                                                "password": self.password})["access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token and not path.startswith("/auth/"):
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')}") from None

    def trigger(self, conf: dict, run_id: str) -> str:
        """Start a run of the DAG with ``conf`` (its Params), as the UI's Trigger button does."""
        self._request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                      {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        return run_id

    # ------------------------------------------------------------------ metadata database
    def query(self, sql: str, args: tuple) -> list:
        """Rows of ``sql`` (``?`` placeholders) on the metadata database, each indexable by column name."""
        if not self.database.startswith("sqlite"):
            import psycopg
            from psycopg.rows import dict_row

            from sail_core.pipeline.postgres import libpq_url

            with psycopg.connect(libpq_url(self.database), row_factory=dict_row) as con:
                return con.execute(sql.replace("?", "%s"), args).fetchall()
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def run_state(self, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id))
        return rows[0]["state"] if rows else None

    def task_instances(self, run_id: str) -> dict[str, dict]:
        """task id -> {state, try_number, pid, id} of the run's task instances (their latest try)."""
        rows = self.query("SELECT task_id, state, try_number, pid, id FROM task_instance WHERE dag_id = ? AND "
                           "run_id = ?", (DAG_ID, run_id))
        return {r["task_id"]: dict(r) for r in rows}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        """The earlier tries of a task instance (``task_instance_history``), oldest first."""
        rows = self.query("SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND run_id = ? "
                           "AND task_id = ? ORDER BY try_number", (DAG_ID, run_id, task_id))
        return [dict(r) for r in rows]

    def wait_for(self, run_id: str, timeout_s: float) -> str:
        """Wait until the run succeeded or failed; returns the state (raises on timeout, with the tasks' states)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        states = {t: r["state"] for t, r in self.task_instances(run_id).items()}
        raise TimeoutError(f"run {run_id} not finished after {timeout_s:g} s: {states}; logs in {self.logs} and "
                           f"{self.airflow_home / 'logs'}")

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        """The task's log file of one try (as the api-server shows it)."""
        folder = self.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = sorted(folder.glob(f"attempt={try_number}*"))
        return "\n".join(f.read_text(errors="replace") for f in files)

    def here(self, monkeypatch) -> None:
        """Point this (the test's) process at the same stores: SAIL_HOME, SAIL_PARAMS, and MLflow's (SAIL_HOME's
        embedded one, or ``mlflow_uri``)."""
        monkeypatch.setenv("SAIL_HOME", str(self.sail_home))
        monkeypatch.setenv("SAIL_PARAMS", str(self.params))
        if self.mlflow_uri:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", self.mlflow_uri)
        else:
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the command: state, ppid, pgrp, session
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------- the session's shared instance
_SHARED: dict = {}


def shared(request, tmp_path_factory, demo_data: Path) -> Airflow:
    """The session's Airflow, started on first use; each test module that uses it calls this from a
    module-scoped fixture, and it stops after the last such module (or at the end of the session)."""
    if "airflow" not in _SHARED:
        root = tmp_path_factory.mktemp("airflow-scheduler")
        good, bad, bad_item = write_data(demo_data, root)
        af = Airflow(root, tests_params(good, bad))
        af.good_data, af.bad_data, af.bad_item = good, bad, bad_item
        _SHARED.update(airflow=af, users={item.module.__name__ for item in request.session.items
                                          if "airflow_scheduler" in item.fixturenames})
        request.config.add_cleanup(af.stop)
        af.start()
    module = request.module.__name__

    def release():
        users = _SHARED.get("users", set())
        users.discard(module)
        if not users and "airflow" in _SHARED:
            _SHARED.pop("airflow").stop()

    request.addfinalizer(release)
    return _SHARED["airflow"]
