"""Atomic training checkpoints under ``<out>/checkpoints/step_<n>.pt``.

A checkpoint holds everything needed to continue exactly: model and loss
(temperature) weights, optimiser, scheduler, sampler, hard-negative and global
RNG states, the step, the metric history, and the run's seed and step budget.
It is written to a temporary file in the same folder, fsynced and renamed into place
(:func:`sail_core.data.io.atomic_file`), so a crash or a full disk never leaves a half-written
checkpoint; older ones are removed only after the new one is in place. A full disk raises
:class:`~sail_core.data.io.DiskFullError` naming the folder.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from sail_core.data.io import atomic_file

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(folder: Path, step: int, state: dict, keep: int = 1) -> Path:
    """Write ``state`` as ``step_<step>.pt`` atomically; keep the newest ``keep`` files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.pt"
    with atomic_file(path, "checkpoint") as handle:
        torch.save({**state, "step": step}, handle)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: Path, expect: dict | None = None) -> dict:
    """Load a checkpoint; warn for each ``expect`` key (seed, steps, ...) whose saved value differs."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key, value in (expect or {}).items():
        saved = state.get("meta", {}).get(key)
        if saved != value:
            warnings.warn(
                f"resuming from {path}: checkpoint has {key}={saved!r} but this run has {key}={value!r}; "
                "continuing with this run's value (delete the checkpoints folder to start afresh)",
                stacklevel=2,
            )
    return state
