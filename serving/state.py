"""``serving_state.json``: which model version serves now, and how it got there.

One file per model, ``<repo>/<name>/serving_state.json``::

    {"model": "sail_embedding", "current": 2, "stack": [1, 2],
     "history": [{"event": "promote", "version": 1, "at": "...", ...}, ...]}

``stack`` holds the successfully promoted versions, oldest first, minus the ones
rolled back; ``rollback`` returns to ``stack[-2]``. ``history`` is append-only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

STATE_FILE = "serving_state.json"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_path(model_dir: Path) -> Path:
    return Path(model_dir) / STATE_FILE


def read_state(model_dir: Path) -> dict:
    """The state of ``model_dir`` (an empty one if nothing was promoted yet)."""
    path = state_path(model_dir)
    if not path.exists():
        return {"model": Path(model_dir).name, "current": None, "stack": [], "history": []}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RuntimeError(f"{path} is not valid JSON ({err}); fix or delete it, then promote again") from None


def write_state(model_dir: Path, state: dict) -> None:
    path = state_path(model_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def record(model_dir: Path, event: str, **fields) -> dict:
    """Append one event to the history (without changing ``current``); returns the new state."""
    state = read_state(model_dir)
    state["history"].append({"event": event, "at": now(), **fields})
    write_state(model_dir, state)
    return state
