"""A throwaway tritonserver on free loopback ports, for tests and benchmarks.

    with ephemeral_server(tmp / "repo", cfg.serve, tmp / "state") as (serve_cfg, info):
        promote(onnx_dir, 1, serve_cfg, tmp / "repo")

It keeps its pid file and log in ``state_dir``, so it never touches the user's
server recorded under ``SAIL_HOME``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sail_core.config import ServeConfig
from serving import server


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free on ``host`` right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


@contextmanager
def ephemeral_server(repo_dir: str | Path, cfg: ServeConfig, state_dir: str | Path
                     ) -> Iterator[tuple[ServeConfig, server.ServerInfo]]:
    """Start tritonserver on free ports of ``cfg.host``; yields the adjusted config and the server info."""
    http, grpc, metrics = free_ports(3, cfg.host)
    serve_cfg = cfg.model_copy(update={"http_port": http, "grpc_port": grpc, "metrics_port": metrics})
    info = server.start(repo_dir, serve_cfg, state_dir=state_dir)
    try:
        yield serve_cfg, info
    finally:
        server.stop(state_dir)
