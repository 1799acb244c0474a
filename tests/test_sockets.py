"""Nothing the project starts listens beyond loopback.

Starts what a user starts, in a temporary SAIL_HOME on free ports: ``sail serve up`` (tritonserver: HTTP,
gRPC, metrics) and what ``sail ui`` runs (:func:`sail_core.pipeline.airflow_env.start_uis`: the Airflow
scheduler, triggerer, dag-processor and API server, and ``mlflow ui``; called with free ports, since the
``sail ui`` command has fixed ones that another checkout's servers may hold). Then lists every listening TCP
socket of those process trees (psutil, the processes' own file descriptors) and checks that each is bound to
a loopback address (127.0.0.1, ::1, or ::ffff:127.0.0.1, as Triton's gRPC binds it), and that the expected ports are among them (so the test cannot pass by seeing nothing).

Then, while they run: a second ``sail ui`` and a second ``sail serve up`` on the same SAIL_HOME say that one
is already running (and start nothing); the generated Airflow password was printed once and its file is
0600. Last, ``sail ui``'s process gets SIGTERM (what a service manager or ``kill`` sends, not Ctrl-C), and
every process it started must be gone once it has exited.

No exceptions: ``airflow standalone`` would add the log servers on every interface (ports 8793/8794, host
hard-coded in Airflow 3.3); ``start_uis`` starts the components without them (airflow_env's docstring).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from sail_core.paths import free_ports

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AIRFLOW_LOG_SERVER_PORTS = {8793, 8794}


def listeners(root_pids: list[int]) -> dict[tuple[str, int], str]:
    """(address, port) -> the command line of the process listening there, over the trees of ``root_pids``."""
    found = {}
    for root in root_pids:
        try:
            procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                sockets = proc.net_connections(kind="tcp")
                command = " ".join(proc.cmdline())[:160]
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            for s in sockets:
                if s.status == psutil.CONN_LISTEN:
                    found[(s.laddr.ip, s.laddr.port)] = f"pid {proc.pid}: {command}"
    return found


def loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (gRPC binds ``::ffff:127.0.0.1`` for 127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _healthy(url: str, parts: tuple[str, ...] = ()) -> bool:
    """The URL answers 200, and each of ``parts`` of its JSON has status "healthy"."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read()
    except OSError:
        return False
    if not parts:
        return True
    health = json.loads(body)
    return all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.triton
def test_every_server_started_by_the_project_listens_on_loopback_only(runtime, tmp_path):
    home = tmp_path / "sail-home"
    env = {**os.environ, "SAIL_HOME": str(home)}
    env.pop("AIRFLOW_HOME", None)  # airflow_env derives it from SAIL_HOME
    http, grpc, metrics, airflow_port, mlflow_port = free_ports(5)
    sets = [f"--set=serve.{k}_port={v}" for k, v in (("http", http), ("grpc", grpc), ("metrics", metrics))]
    sail = [str(BIN / "sail"), *sets]
    up = subprocess.run([*sail, "serve", "up"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, f"`sail serve up` failed:\n{up.stdout}\n{up.stderr}"
    ui_log = tmp_path / "start_uis.log"
    ui = subprocess.Popen([sys.executable, "-c", "import sys; from sail_core.pipeline.airflow_env import start_uis; "
                           "start_uis(int(sys.argv[1]), int(sys.argv[2]), timeout_s=400)",
                           str(airflow_port), str(mlflow_port)],
                          env=env, cwd=REPO, stdout=open(ui_log, "wb"), stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        triton_pid = int(json.loads((home / "triton" / "server.json").read_text())["pid"])
        deadline = time.monotonic() + 420
        # every component up, the triggerer and dag-processor included (a log server would be open by then)
        while not (_healthy(f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health",
                            ("metadatabase", "scheduler", "triggerer", "dag_processor"))
                   and _healthy(f"http://127.0.0.1:{mlflow_port}/health")):
            assert ui.poll() is None, f"start_uis exited ({ui.returncode}):\n{ui_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"Airflow or MLflow not healthy after 420 s; logs in {home / 'logs'}"
            time.sleep(2)
        time.sleep(10)  # components that open their ports after the health check (the triggerer's, a worker's)
        started = _tree(ui.pid) + _tree(triton_pid)
        found = listeners([ui.pid, triton_pid])
        report = "\n".join(f"  {ip}:{port}  {who}" for (ip, port), who in sorted(found.items()))
        ports = {port for _ip, port in found}
        assert {http, grpc, metrics, airflow_port, mlflow_port} <= ports, f"expected ports missing:\n{report}"
        exposed = {k: v for k, v in found.items() if not loopback(k[0])}
        assert not exposed, f"listening beyond loopback:\n{report}"
        assert not ports & AIRFLOW_LOG_SERVER_PORTS, f"an Airflow log server is running:\n{report}"
        print(f"listening sockets:\n{report}")

        again = subprocess.run([*sail, "ui"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and "already running" in again.stderr and str(ui.pid) in again.stderr, (
            f"a second `sail ui` should refuse, naming the first:\n{again.stdout}\n{again.stderr}")
        up_again = subprocess.run([*sail, "serve", "up"], env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=120)
        assert up_again.returncode == 0 and "already running" in up_again.stderr, up_again.stderr
        assert json.loads(up_again.stdout)["pid"] == triton_pid
        password = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert password.stat().st_mode & 0o777 == 0o600
        assert "shown once" in ui_log.read_text()

        ui_tree = [p for p in _tree(ui.pid) if p.pid != ui.pid]
        assert len(ui_tree) >= 5, ui_tree  # scheduler, triggerer, dag-processor, API server, mlflow ui
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=180) == 0, ui_log.read_text()[-3000:]
        survivors = [p for p in ui_tree if _alive(p)]
        assert not survivors, f"outlived `sail ui` after SIGTERM: {[(p.pid, p.cmdline()[:3]) for p in survivors]}"
    finally:
        if ui.poll() is None:
            ui.send_signal(signal.SIGINT)  # Ctrl-C: start_uis stops what it started
            try:
                ui.wait(timeout=120)
            except subprocess.TimeoutExpired:
                ui.kill()
        subprocess.run([*sail, "serve", "down"], env=env, cwd=REPO, capture_output=True, timeout=120)
        for proc in started:  # anything of ours that outlived the stop (a failure above says why)
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.triton
def test_a_benchmark_killed_with_sigterm_stops_its_tritonserver(runtime, tmp_path):
    """bench/serving.py and bench/load.py hold an ephemeral tritonserver; SIGTERM to them must stop it."""
    script = ("import sys, time; from pathlib import Path; from sail_core.config import ServeConfig; "
              "from serving.ephemeral import ephemeral_server\n"
              "t = Path(sys.argv[1])\n"
              "with ephemeral_server(t / 'repo', ServeConfig(), t / 'state') as (cfg, info):\n"
              "    print(info.pid, flush=True); time.sleep(600)\n")
    bench = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        triton = psutil.Process(int(bench.stdout.readline().split()[0]))
        assert "tritonserver" in " ".join(triton.cmdline())
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) == 128 + signal.SIGTERM
        triton.wait(timeout=30)
        assert not _alive(triton), "tritonserver outlived the benchmark that started it"
    finally:
        bench.kill()
