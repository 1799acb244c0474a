"""Test session setup: every service's state goes to a temporary SAIL_HOME.

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
