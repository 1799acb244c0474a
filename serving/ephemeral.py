"""A throwaway tritonserver on free loopback ports, for tests and benchmarks.

    with ephemeral_server(tmp / "repo", cfg.serve, tmp / "state") as (serve_cfg, info):
        promote(onnx_dir, 1, serve_cfg, tmp / "repo")

It keeps its pid file and log in ``state_dir``, so it never touches the user's
server recorded under ``SAIL_HOME``. SIGTERM to the process that holds it (a
benchmark stopped by ``kill``) stops the server too: Python's default SIGTERM
exits without running ``finally``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sail_core.config import ServeConfig
from sail_core.paths import free_ports
from serving import server


@contextmanager
def ephemeral_server(repo_dir: str | Path, cfg: ServeConfig, state_dir: str | Path
                     ) -> Iterator[tuple[ServeConfig, server.ServerInfo]]:
    """Start tritonserver on free ports of ``cfg.host``; yields the adjusted config and the server info."""
    http, grpc, metrics = free_ports(3, cfg.host)
    serve_cfg = cfg.model_copy(update={"http_port": http, "grpc_port": grpc, "metrics_port": metrics})
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that `finally` below runs
    try:
        info = server.start(repo_dir, serve_cfg, state_dir=state_dir)
        try:
            yield serve_cfg, info
        finally:
            server.stop(state_dir)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)
