"""Waiting for local web services to come up: poll their health endpoints until they answer.

``wait_until_ready`` polls every endpoint (HTTP GET) until each one answers 200
(and, if given, its ``check`` accepts the body), showing which ones are still
awaited. It stops early when a service's process exits, and on timeout raises
``NotReady`` naming each service that did not come up and where its log is.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from rich.console import Console


class NotReady(RuntimeError):
    """A service did not answer its health endpoint in time, or its process exited."""


@dataclass(frozen=True)
class Endpoint:
    """A service to wait for: its name, its health URL, its log file, and optionally its process."""

    name: str
    url: str
    log: Path | None = None
    process: Popen | None = None
    # reads the 200 response's body; returns why the service is not ready yet, or None when it is
    check: Callable[[bytes], str | None] | None = None


def probe(endpoint: Endpoint, timeout_s: float = 2.0) -> str | None:
    """One GET of the health URL: None when healthy, else a short reason (status, refused, check failed)."""
    try:
        with urllib.request.urlopen(endpoint.url, timeout=timeout_s) as response:  # noqa: S310 (loopback URLs)
            body = response.read()
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"no answer ({reason})"
    return endpoint.check(body) if endpoint.check is not None else None


def _where(endpoint: Endpoint) -> str:
    return f"; its log: {endpoint.log}" if endpoint.log is not None else ""


def wait_until_ready(endpoints: Sequence[Endpoint], timeout_s: float, interval_s: float = 0.5,
                     console: Console | None = None) -> dict[str, float]:
    """Poll until every endpoint is healthy; returns the seconds each one took.

    Raises ``NotReady`` when ``timeout_s`` passes (naming each service still down, the last
    reason and its log), or as soon as a service's process exits.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    started = time.monotonic()
    ready: dict[str, float] = {}
    reasons: dict[str, str] = {}
    with console.status("") as status:
        while True:
            for endpoint in endpoints:
                if endpoint.name in ready:
                    continue
                reason = probe(endpoint)
                if reason is None:
                    ready[endpoint.name] = round(time.monotonic() - started, 1)
                    console.print(f"  {endpoint.name} is up ({endpoint.url}, {ready[endpoint.name]} s)")
                    continue
                reasons[endpoint.name] = reason
                code = endpoint.process.poll() if endpoint.process is not None else None
                if code is not None:
                    raise NotReady(f"{endpoint.name} exited (code {code}) before answering {endpoint.url}"
                                   f"{_where(endpoint)}")
            if len(ready) == len(endpoints):
                return ready
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                down = [e for e in endpoints if e.name not in ready]
                raise NotReady(f"not up after {timeout_s:g} s: " + "; ".join(
                    f"{e.name} ({e.url}: {reasons[e.name]}){_where(e)}" for e in down))
            waiting = ", ".join(e.name for e in endpoints if e.name not in ready)
            status.update(f"waiting for {waiting} ({elapsed:.0f} s of {timeout_s:g} s)")
            time.sleep(interval_s)
