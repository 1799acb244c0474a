"""The DAG on the multi-worker setup: Airflow's metadata database and MLflow's tracking server on PostgreSQL.

Starts, on 127.0.0.1 only: PostgreSQL from Debian's ``postgresql`` package in a temporary folder (as the
``postgres`` user: it refuses root; :class:`sail_core.pipeline.postgres.LocalPostgres`) with two databases,
``airflow`` and ``mlflow``; ``mlflow server`` with its backend store on ``mlflow`` and its artifacts in a
folder of their own (the shared folder of docs/multiworker.md); and Airflow (``tests/scheduler.py``: the
scheduler with the LocalExecutor and parallelism 2, the dag-processor, the api-server) on ``airflow``, chosen
the way a user chooses it, through ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` and ``MLFLOW_TRACKING_URI``.

Two runs of ``sail_pipeline`` are triggered at once (profile ``tiny_good`` of the tests' params.yaml: tiny on
users' files), so two LocalExecutor workers write to both databases side by side: one runs ingest, validate,
version and one training stage of 2 steps (as in ``tests/test_concurrent_runs.py``), the other ingest,
validate and version (two training stages side by side would take 2.5 minutes more on 2 cores). Checked:
both runs succeed and overlap; their task instances are rows of PostgreSQL (read with psycopg) and no SQLite
file was made; each MLflow run, with its task times and the stage's losses, is in the server's PostgreSQL
database and its artifacts in the artifact folder, not under SAIL_HOME; every listening socket is on loopback;
and every process stops cleanly on SIGTERM / SIGINT (nothing left to kill, no orphans).

The fast tests check the URL checks that refuse a store URL this project cannot run, before anything starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from sail_core.paths import free_ports
from tests import scheduler
from tests.scheduler import GOOD, STEPS, session_members
from tests.test_sockets import listeners, loopback

BIN = Path(sys.executable).parent
STEPS_B = ["ingest", "validate", "version"]
TASKS = {"a": ["check", "ingest", "validate", "version", "train.teacher", "train.stage1"],
         "b": ["check", "ingest", "validate", "version"]}


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: backend store ``backend`` (a database URL), artifacts served from
    folder ``artifacts``. Its job runner (huey consumers for MLflow's GenAI jobs) is off: the pipeline has no
    jobs for it, and it would add seven processes."""

    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", backend, "--artifacts-destination", str(artifacts)],
            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"mlflow server exited ({self.proc.returncode}); see {self.log}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"mlflow server not healthy after {timeout_s:g} s; see {self.log}"
                time.sleep(0.5)

    def stop(self) -> list[str]:
        """SIGTERM to its session, then SIGKILL what outlived 30 s; returns the command lines killed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        killed = []
        for pid in session_members(self.proc.pid):
            killed.append(f"pid {pid}: {scheduler.cmdline(pid)}")
            os.kill(pid, signal.SIGKILL)
        return killed


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"pid {p.pid}: {' '.join(p.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("url, why", [
    ("postgres://u:secret@db/airflow", "driver installed is psycopg 3"),
    ("postgresql+psycopg2://u:secret@db/airflow", "driver installed is psycopg 3"),
    ("postgresql+psycopg://u:secret@db:5432/", "names no database"),
    ("postgresql+psycopg:///airflow", "names no host"),
    ("sqlite:///relative.db", "absolute path"),
    ("mysql://u:secret@db/airflow", "not a database this project runs"),
])
def test_a_store_url_this_project_cannot_run_is_refused_naming_the_variable_and_the_form(url, why, monkeypatch):
    from sail_core.pipeline import airflow_env, tracking
    from sail_core.pipeline.postgres import POSTGRES_FORM, StoreURLError

    with pytest.raises(StoreURLError) as airflow_error:
        airflow_env.env({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(StoreURLError) as mlflow_error:
        tracking.tracking_uri()
    for error, variable in ((airflow_error, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"), (mlflow_error, "MLFLOW_TRACKING_URI")):
        message = str(error.value)
        assert message.startswith(variable) and why in message and POSTGRES_FORM in message, message
        assert "secret" not in message  # the password is masked


def test_a_postgresql_url_gives_airflow_the_async_url_over_psycopg_and_mlflow_keeps_a_server(monkeypatch):
    from sail_core.pipeline import airflow_env, tracking

    e = airflow_env.env({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u:pw@db:5432/airflow"})
    assert e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == "postgresql+psycopg://u:pw@db:5432/airflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    assert tracking.tracking_uri() == "http://10.0.0.5:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri().startswith("sqlite:////")  # the embedded default


@pytest.mark.slow
@pytest.mark.airflow
def test_the_dag_runs_on_postgresql_with_two_workers_and_an_mlflow_server(demo_data, tmp_path, monkeypatch):
    import psycopg
    from psycopg.rows import dict_row

    from sail_core.config import load_config
    from sail_core.pipeline import registry, runs, tracking
    from sail_core.pipeline.postgres import LocalPostgres, libpq_url

    timings = {}
    t0 = time.monotonic()
    # the server's folder in /tmp itself: pytest's tmp_path sits under a 0700 folder the postgres user cannot enter
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="sail-postgres-")))
    ml = af = None
    try:
        pg.start()
        airflow_db, mlflow_db = pg.create_database("airflow"), pg.create_database("mlflow")
        timings["postgres"] = time.monotonic() - t0

        artifacts = tmp_path / "shared" / "mlartifacts"
        artifacts.mkdir(parents=True)
        ml = MlflowServer(mlflow_db, artifacts, tmp_path / "mlflow-server.log")
        good, bad, _ = scheduler.write_data(demo_data, tmp_path)
        af = scheduler.Airflow(tmp_path / "airflow-pg", scheduler.tests_params(good, bad), database=airflow_db,
                               mlflow_uri=ml.url)
        assert af.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://")
        ml.wait_healthy()
        timings["mlflow server"] = time.monotonic() - t0
        af.start()
        timings["airflow"] = time.monotonic() - t0

        tag = secrets.token_hex(3)
        ids = [af.trigger({"profile": GOOD, "steps": steps, "promote": False}, f"pg_{n}__{tag}")
               for n, steps in (("a", STEPS), ("b", STEPS_B))]
        time.sleep(5)  # both runs under way: their first tasks hold the two workers
        found = listeners([pg.proc.pid, ml.proc.pid, *(p.pid for p in af.procs.values())])
        report = "\n".join(f"  {ip}:{port}  {who}" for (ip, port), who in sorted(found.items()))
        assert {pg.port, ml.port, af.port} <= {port for _ip, port in found}, f"expected ports missing:\n{report}"
        assert all(loopback(ip) for ip, _port in found), f"listening beyond loopback:\n{report}"
        for run_id in ids:
            assert af.wait_for(run_id, timeout_s=300) == "success", af.task_instances(run_id)
        timings["runs"] = time.monotonic() - t0

        # Airflow's state is in PostgreSQL: the runs and their task instances, read there with psycopg
        assert not af.db.exists(), "Airflow made its SQLite file: it did not use PostgreSQL"
        with psycopg.connect(libpq_url(airflow_db), row_factory=dict_row) as con:
            tis = con.execute("SELECT run_id, task_id, state FROM task_instance WHERE dag_id = %s AND "
                              "run_id = ANY(%s)", (scheduler.DAG_ID, ids)).fetchall()
            spans = {r["run_id"]: r for r in con.execute(
                "SELECT run_id, start_date, end_date FROM dag_run WHERE run_id = ANY(%s)", (ids,)).fetchall()}
        for run_id, tasks in zip(ids, TASKS.values()):
            states = {r["task_id"]: r["state"] for r in tis if r["run_id"] == run_id}
            assert all(states[t] == "success" for t in tasks), states
        a, b = (spans[r] for r in ids)
        assert a["start_date"] < b["end_date"] and b["start_date"] < a["end_date"], f"the runs did not overlap: {spans}"

        # MLflow's: each run's record through the server, and in the server's PostgreSQL database
        af.here(monkeypatch)
        assert tracking.tracking_uri() == ml.url
        cfg = load_config(af.params, GOOD)
        records = [runs.get(cfg, run_id) for run_id in ids]
        for record, tasks in zip(records, TASKS.values()):
            assert record.status == "succeeded", record.tags
            assert set(record.task_seconds) == set(tasks), record.metrics
        stage = records[0].tags["sail.stage_run.train.stage1"]
        assert [m.step for m in registry.client().get_metric_history(stage, "loss")] == [1, 2]
        with psycopg.connect(libpq_url(mlflow_db)) as con:
            for record, tasks in zip(records, TASKS.values()):
                status, = con.execute("SELECT status FROM runs WHERE run_uuid = %s", (record.mlflow_run_id,)).fetchone()
                keys = {k for k, in con.execute("SELECT DISTINCT key FROM metrics WHERE run_uuid = %s",
                                                 (record.mlflow_run_id,))}
                tagged, = con.execute("SELECT value FROM tags WHERE run_uuid = %s AND key = 'sail.run_id'",
                                      (record.mlflow_run_id,)).fetchone()
                assert status == "FINISHED" and tagged == record.run_id
                assert {f"time.{t}_s" for t in tasks} <= keys, keys
        configs = sorted(artifacts.rglob("record/config.resolved.yaml"))
        assert len(configs) == 2 and {r.mlflow_run_id for r in records} == {c.parts[-4] for c in configs}, configs
        assert not (af.sail_home / "mlflow.db").exists() and not (af.sail_home / "mlartifacts").exists()
    finally:
        # stop in dependency order: Airflow (its tasks talk to MLflow), the MLflow server, then PostgreSQL
        started = [*(q for p in (af.procs.values() if af else []) for q in _tree(p.pid)),
                   *(_tree(ml.proc.pid) if ml else []), *(_tree(pg.proc.pid) if pg.proc else [])]
        t1 = time.monotonic()
        killed = {"airflow": af.stop() if af else [], "mlflow server": ml.stop() if ml else []}
        code = pg.stop()
        timings["shutdown"] = time.monotonic() - t1
        time.sleep(1)
        orphans = _alive(started)
        if pg.log.exists():
            shutil.copy(pg.log, tmp_path / "postgres.log")
        shutil.rmtree(pg.root, ignore_errors=True)
        print("timings (s from the start):", {k: round(v, 1) for k, v in timings.items()})
    assert killed == {"airflow": [], "mlflow server": []}, f"processes that outlived SIGTERM: {killed}"
    assert code == 0, f"PostgreSQL's fast shutdown exited {code}; see {tmp_path / 'postgres.log'}"
    assert not orphans, f"processes left running after the shutdown: {orphans}"
