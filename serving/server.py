"""Local ``tritonserver`` lifecycle: start in the background, stop, status.

The server runs in its own process session, so it outlives the CLI that
started it. It uses explicit model-control mode and binds HTTP, gRPC and
metrics to ``cfg.host`` (127.0.0.1 by default). Its pid, ports and log path are
kept in ``<state_dir>/server.json`` (``state_dir`` defaults to
``home().root / "triton"``); the log defaults to ``<state_dir>/tritonserver.log``.

On start, every model in the repository with a ``serving_state.json`` is first
reconciled with it (:func:`serving.promote.reconcile`: a promotion that died
half-way, with the server or on its own, leaves its version folder in ``failed/``
and ``config.pbtxt`` pinning the recorded current version again), then loaded
at its current version, so a restart serves what was last promoted successfully.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sail_core.config import ServeConfig
from sail_core.paths import home
from serving.runtime import ensure_runtime
from serving.state import read_state

SERVER_FILE = "server.json"
_children: dict[int, subprocess.Popen] = {}  # servers started by this process (reaped on stop)


class ServerError(RuntimeError):
    """tritonserver could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    repo_dir: str
    log_file: str
    started_at: str
    loaded: tuple = ()
    recovered: tuple = ()  # "<model>: <what reconcile did>" for each model folder it repaired on start

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


def default_state_dir() -> Path:
    return home().root / "triton"


def _state_file(state_dir: Path | None) -> Path:
    return Path(state_dir or default_state_dir()) / SERVER_FILE


def _read_info(state_dir: Path | None) -> ServerInfo | None:
    path = _state_file(state_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["loaded"] = tuple(data.get("loaded", ()))
        data["recovered"] = tuple(data.get("recovered", ()))
        return ServerInfo(**data)
    except (ValueError, TypeError):
        return None


def _is_tritonserver(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) tritonserver process."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"tritonserver" in cmdline


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(log_file: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_client(info_or_url, timeout: float = 10.0):
    import tritonclient.http as httpclient

    url = info_or_url.http_url if isinstance(info_or_url, ServerInfo) else info_or_url
    return httpclient.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout)


def _ready(url: str) -> bool:
    client = http_client(url, timeout=2.0)
    try:
        return bool(client.is_server_ready())
    except Exception:  # noqa: BLE001  (not up yet: connection refused, reset, ...)
        return False
    finally:
        client.close()  # open keep-alive connections would delay the server's shutdown


def _reconcile_models(repo_dir: Path, cfg: ServeConfig) -> list[str]:
    """Reconcile every model folder with its ``serving_state.json`` (before the server reads the configs)."""
    from serving.promote import reconcile
    from serving.state import state_path

    done = []
    for folder in sorted(repo_dir.iterdir()):
        if folder.is_dir() and state_path(folder).exists():
            what = reconcile(folder, cfg)
            if what:
                done.append(f"{folder.name}: {json.dumps(what)}")
    return done


def _restore_models(info: ServerInfo) -> list[str]:
    """Load each model that has a promoted current version (explicit mode loads nothing by itself)."""
    loaded = []
    client = http_client(info, timeout=120.0)
    try:
        for folder in sorted(Path(info.repo_dir).iterdir()):
            if folder.is_dir() and read_state(folder).get("current") is not None:
                try:
                    client.load_model(folder.name)
                    loaded.append(folder.name)
                except Exception as err:  # noqa: BLE001
                    raise ServerError(f"tritonserver started but could not load model {folder.name!r} from "
                                      f"{folder}: {err}\nlast log lines ({info.log_file}):\n"
                                      f"{log_tail(info.log_file)}") from None
    finally:
        client.close()
    return loaded


def start(repo_dir: str | Path, cfg: ServeConfig, log_file: str | Path | None = None,
          state_dir: str | Path | None = None) -> ServerInfo:
    """Start tritonserver on ``repo_dir`` in the background and wait until it is ready.

    Returns the running server's :class:`ServerInfo`. If a server from the same
    ``state_dir`` already runs on the same repository and ports, returns it.
    Raises :class:`ServerError` with the tail of the server log on failure.
    """
    state_dir = Path(state_dir or default_state_dir())
    state_dir.mkdir(parents=True, exist_ok=True)
    repo_dir = Path(repo_dir).resolve()
    repo_dir.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_file or state_dir / "tritonserver.log").resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)

    running = _read_info(state_dir)
    if running and _is_tritonserver(running.pid):
        same = (running.repo_dir == str(repo_dir) and running.host == cfg.host
                and (running.http_port, running.grpc_port) == (cfg.http_port, cfg.grpc_port))
        if same:
            return running
        raise ServerError(f"a tritonserver (pid {running.pid}) already runs on {running.http_url} with repository "
                          f"{running.repo_dir}; stop it first with `sail serve down`")
    busy = [p for p in (cfg.http_port, cfg.grpc_port, cfg.metrics_port) if not _port_free(cfg.host, p)]
    if busy:
        raise ServerError(f"port(s) {busy} on {cfg.host} are in use; stop what holds them or set "
                          "serve.http_port / serve.grpc_port / serve.metrics_port in params.yaml")

    recovered = _reconcile_models(repo_dir, cfg)
    runtime = ensure_runtime()
    cmd = [
        str(runtime.binary),
        f"--model-repository={repo_dir}",
        "--model-control-mode=explicit",
        f"--backend-directory={runtime.backend_dir}",
        f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
        f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}",
        f"--metrics-address={cfg.host}", f"--metrics-port={cfg.metrics_port}",
        "--allow-gpu-metrics=false",
        # Readiness means "the server accepts requests": a refused promotion leaves an UNAVAILABLE
        # version record behind while the previous version serves; `status` lists model states.
        "--strict-readiness=false",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
    with open(log_file, "ab") as log:
        log.write(f"\n==== sail: starting {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=state_dir, env=runtime.env(), start_new_session=True)
    _children[proc.pid] = proc
    info = ServerInfo(pid=proc.pid, host=cfg.host, http_port=cfg.http_port, grpc_port=cfg.grpc_port,
                      metrics_port=cfg.metrics_port, repo_dir=str(repo_dir), log_file=str(log_file),
                      started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), recovered=tuple(recovered))
    deadline = time.monotonic() + cfg.startup_timeout_s
    while not _ready(info.http_url):
        if proc.poll() is not None:
            _children.pop(proc.pid, None)
            raise ServerError(f"tritonserver exited with code {proc.returncode} while starting.\n"
                              f"last log lines ({log_file}):\n{log_tail(log_file)}")
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise ServerError(f"tritonserver was not ready after {cfg.startup_timeout_s:.0f} s "
                              f"(serve.startup_timeout_s); it was stopped.\nlast log lines ({log_file}):\n"
                              f"{log_tail(log_file)}")
        time.sleep(0.2)
    _state_file(state_dir).write_text(json.dumps(asdict(info), indent=2))
    try:
        loaded = _restore_models(info)
    except ServerError:
        stop(state_dir)
        raise
    info = ServerInfo(**{**asdict(info), "loaded": tuple(loaded)})
    _state_file(state_dir).write_text(json.dumps(asdict(info), indent=2))
    return info


def _terminate(pid: int, timeout: float = 30.0) -> str:
    """SIGTERM (tritonserver ignores SIGINT in the background), then SIGKILL after ``timeout``."""
    child = _children.pop(pid, None)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None:
            if child.poll() is not None:
                return "stopped"
        elif not _is_tritonserver(pid):
            return "stopped"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    if child is not None:
        child.wait(10)
    return "killed"


def stop(state_dir: str | Path | None = None, timeout: float = 30.0) -> dict:
    """Stop the server recorded in ``state_dir``; returns ``{"pid", "result"}``."""
    info = _read_info(state_dir)
    if info is None:
        return {"pid": None, "result": "not running"}
    result = _terminate(info.pid, timeout) if _is_tritonserver(info.pid) else "not running"
    _state_file(state_dir).unlink(missing_ok=True)
    return {"pid": info.pid, "result": result}


def status(state_dir: str | Path | None = None) -> dict:
    """pid, liveness/readiness and the loaded models with their versions and states."""
    info = _read_info(state_dir)
    if info is None:
        return {"running": False, "message": "no tritonserver recorded; start one with `sail serve up`"}
    out = {"running": _is_tritonserver(info.pid), "pid": info.pid, "http": info.http_url, "grpc": info.grpc_url,
           "metrics": info.metrics_url, "repo_dir": info.repo_dir, "log_file": info.log_file,
           "started_at": info.started_at, "live": False, "ready": False, "models": []}
    if not out["running"]:
        out["message"] = f"tritonserver pid {info.pid} is not running; see {info.log_file}, then `sail serve up`"
        return out
    client = http_client(info, timeout=5.0)
    try:
        out["live"] = bool(client.is_server_live())
        out["ready"] = bool(client.is_server_ready())
        out["models"] = [{"name": m.get("name"), "version": m.get("version"), "state": m.get("state"),
                          "reason": m.get("reason", "")} for m in client.get_model_repository_index()]
        for folder in {m["name"] for m in out["models"]}:
            out.setdefault("current", {})[folder] = read_state(Path(info.repo_dir) / folder).get("current")
    except Exception as err:  # noqa: BLE001
        out["message"] = f"tritonserver pid {info.pid} does not answer on {info.http_url}: {err}"
    finally:
        client.close()
    return out
