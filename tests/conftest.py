"""Test session setup: every service's state goes to a temporary SAIL_HOME (one per xdist worker).

The Airflow variables must be set before anything imports airflow, so they
are set here, at conftest import time. The Triton runtime venv is shared with
the developer's workspace (``.sail/triton/venv``) so that it is built once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="sail-test-home-"))
os.environ["SAIL_HOME"] = str(_HOME)
os.environ.setdefault("SAIL_TRITON_VENV", str(REPO / ".sail" / "triton" / "venv"))
os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs 2 workers on 2 cores: one compute thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("SAIL_PROFILE", None)
os.environ.pop("SAIL_PARAMS", None)

from sail_core.pipeline import airflow_env  # noqa: E402  (reads SAIL_HOME)

for _k, _v in airflow_env.env().items():
    if _k.startswith("AIRFLOW") or _k in {"PATH"}:
        os.environ[_k] = _v


# --- data fixtures (tests/test_data_*.py, tests/test_contracts.py) ---------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_cfg():
    """The ``tiny`` profile's data settings: 120 most-rated items, 200 most active users."""
    from sail_core.config import load_config

    return load_config(profile="tiny").data


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory, tiny_data_cfg):
    """A tiny demo data folder built once per session (treat as read-only; copy it to mutate)."""
    from sail_core.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo-data")
    build_demo(out, tiny_data_cfg)
    return out


# --- the Triton runtime (tests/test_serving_*.py) -------------------------------
@pytest.fixture(scope="module")
def runtime():
    """The Triton runtime environment, built once per machine (its venv is shared with the workspace)."""
    from sail_core.paths import home
    from serving.runtime import ensure_runtime

    # Pin the venv location before anything can move SAIL_HOME, so all test modules share one.
    mp = pytest.MonkeyPatch()
    mp.setenv("SAIL_TRITON_VENV", os.environ.get("SAIL_TRITON_VENV") or str(home().triton_venv))
    yield ensure_runtime()
    mp.undo()


# --- test order and seeds ------------------------------------------------------
# pytest-randomly shuffles the order and reseeds `random` and numpy before every test; it leaves torch
# alone, and under `pytest -q` it prints no seed. These two hooks add both.


def _randomly_seed(config) -> int | None:
    """The seed pytest-randomly resolved for this session, or None when it is disabled (-p no:randomly)."""
    try:
        seed = config.getoption("randomly_seed")
    except ValueError:  # the plugin is not loaded
        return None
    return seed if isinstance(seed, int) else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Seed torch for each test from the session seed and the test's id, before any of its fixtures.

    A hook rather than an autouse fixture: fixtures of module or session scope are set up before a
    function-scoped autouse fixture, and they build models too. The same test under the same seed gets
    the same torch stream whatever ran before it; without pytest-randomly the session seed is 0.
    """
    import importlib.util
    import zlib

    if importlib.util.find_spec("torch") is None:
        return
    import torch

    seed = _randomly_seed(item.config) or 0
    torch.manual_seed((seed + zlib.crc32(item.nodeid.encode())) % 2**32)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the order's seed at the end, also under -q, with the command that replays the order."""
    seed = _randomly_seed(config)
    if seed is not None:
        terminalreporter.write_line(f"randomly seed: {seed}; rerun this order with -p randomly --randomly-seed={seed}")
