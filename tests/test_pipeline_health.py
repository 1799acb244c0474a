"""Waiting for services by polling their health endpoints, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sail_core.paths import free_ports
from sail_core.pipeline.airflow_env import _airflow_healthy
from sail_core.pipeline.health import Endpoint, NotReady, probe, wait_until_ready


def _server(healthy_after_s: float | None, body: bytes = b"OK"):
    """A real HTTP server: 503 until ``healthy_after_s`` seconds have passed (never when None), then 200."""
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            up = healthy_after_s is not None and time.monotonic() - started >= healthy_after_s
            self.send_response(200 if up else 503)
            self.end_headers()
            self.wfile.write(body if up else b"starting")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/health"


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs):
        server, url = _server(*args, **kwargs)
        started.append(server)
        return url

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_waits_until_a_slow_service_answers(servers, tmp_path):
    slow, fast = servers(1.0), servers(0.0)
    t0 = time.monotonic()
    took = wait_until_ready([Endpoint("slow", slow, tmp_path / "slow.log"), Endpoint("fast", fast)],
                            timeout_s=20, interval_s=0.1)
    assert set(took) == {"slow", "fast"}
    assert took["fast"] < 1.0 <= took["slow"] < 5.0
    assert time.monotonic() - t0 < 5.0  # no fixed sleep: done soon after the slow one is up


def test_timeout_names_each_service_still_down_and_its_log(servers, tmp_path):
    never = servers(None)
    [closed] = free_ports(1)  # nothing listens here
    up = servers(0.0)
    t0 = time.monotonic()
    with pytest.raises(NotReady) as err:
        wait_until_ready([Endpoint("Airflow", never, tmp_path / "airflow.log"),
                          Endpoint("MLflow", f"http://127.0.0.1:{closed}/health", tmp_path / "mlflow.log"),
                          Endpoint("up", up)], timeout_s=1.0, interval_s=0.1)
    message = str(err.value)
    assert time.monotonic() - t0 < 6.0
    assert "not up after 1 s" in message
    assert f"Airflow ({never}: HTTP 503); its log: {tmp_path / 'airflow.log'}" in message
    assert f"MLflow (http://127.0.0.1:{closed}/health: no answer" in message and "mlflow.log" in message
    assert "up (" not in message


def test_a_service_whose_process_exits_fails_at_once(tmp_path):
    [closed] = free_ports(1)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(NotReady, match=r"MLflow exited \(code 3\) before answering .*; its log: .*mlflow.log"):
        wait_until_ready([Endpoint("MLflow", f"http://127.0.0.1:{closed}/health", tmp_path / "mlflow.log", proc)],
                         timeout_s=30, interval_s=0.1)


def test_a_body_check_keeps_waiting_until_it_passes(servers):
    unhealthy = json.dumps({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}).encode()
    url = servers(0.0, body=unhealthy)
    endpoint = Endpoint("Airflow", url, check=_airflow_healthy)
    assert probe(endpoint) == "scheduler not healthy yet"
    with pytest.raises(NotReady, match="scheduler not healthy yet"):
        wait_until_ready([endpoint], timeout_s=0.5, interval_s=0.1)


def test_airflow_health_body():
    healthy = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy",
                                                                    "latest_scheduler_heartbeat": "2025-01-01"}}
    assert _airflow_healthy(json.dumps(healthy).encode()) is None
    assert _airflow_healthy(b'{"metadatabase": {"status": "unhealthy"}}') == \
        "metadatabase and scheduler not healthy yet"
    assert "other than JSON" in _airflow_healthy(b"<html>")


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = open(f"/proc/{entry}/environ", "rb").read()
                state = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[-1].split()[0]
            except OSError:
                continue
            if marker.encode() in environ and state != "Z":
                found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.airflow
def test_sail_ui_that_does_not_come_up_in_time_says_which_and_leaves_nothing_running(tmp_path, monkeypatch):
    from sail_core.pipeline import airflow_env

    home = tmp_path / "sail-home"
    monkeypatch.setenv("SAIL_HOME", str(home))
    airflow_port, mlflow_port = free_ports(2)
    with pytest.raises(NotReady) as err:
        airflow_env.start_uis(airflow_port, mlflow_port, timeout_s=1)
    message = str(err.value)
    assert "not up after 1 s" in message
    assert f"Airflow (http://127.0.0.1:{airflow_port}/api/v2/monitor/health" in message
    assert str(home / "logs" / "airflow-*.log") in message
    deadline = time.monotonic() + 30
    while _processes_with(str(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with(str(home)) == []  # the whole process groups were stopped, not only their leaders
