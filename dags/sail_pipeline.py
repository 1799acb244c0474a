"""SAIL-Embedding pipeline: ingest -> validate -> version -> train -> evaluate -> gate -> export -> register -> promote.

Data moves between tasks as files in the work folders (data/, models/,
reports/), as it does between DVC stages; each task's return value is kept
as XCom for the UI. Every task is a thin call into ``sail_core.pipeline`` (the same function that
``sail <step>`` and the DVC stage run). Trigger it from the UI: the form
offers the profile, the steps to run, the gate thresholds and whether to
promote to Triton.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import yaml
from airflow.sdk import Param, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

REPO = Path(__file__).resolve().parent.parent
STEPS = ["ingest", "validate", "version", "train", "evaluate", "gate", "export", "register", "promote"]
_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
PROFILES = sorted(_PARAMS["profiles"])
DEFAULT_GATE = _PARAMS["base"]["gate"]["metrics"]


def _setup(step: str):
    """The typed config and work folders for this run; skip the step if the user left it out."""
    from sail_core.config import load_config
    from sail_core.paths import workdir

    ctx = get_current_context()
    params = ctx["params"]
    if step not in params["steps"]:
        raise AirflowSkipException(f"step {step!r} not selected in this run's 'steps' parameter")
    overrides = {}
    if params.get("gate_thresholds"):
        overrides["gate.metrics"] = dict(params["gate_thresholds"])
    return load_config(profile=params["profile"], overrides=overrides), workdir(), ctx


@dag(
    dag_id="sail_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # a run triggered from the UI starts without a manual unpause
    tags=["sail", "embedding"],
    doc_md=__doc__,
    default_args={"trigger_rule": "none_failed"},
    params={
        "profile": Param("demo", enum=PROFILES, description="profile in params.yaml"),
        "steps": Param(STEPS, type="array", items={"type": "string", "enum": STEPS},
                       description="steps to run; the others are skipped (their earlier outputs are reused)"),
        "gate_thresholds": Param({}, type="object",
                                 description="metric -> minimum improvement over the champion (or the untrained "
                                             "baseline); replaces the profile's gate.metrics. Empty: the profile's own "
                                             f"(demo: {json.dumps(DEFAULT_GATE)})"),
        "promote": Param(True, type="boolean", description="promote to Triton and alias 'champion' when the gate passes"),
    },
)
def sail_pipeline():
    @task
    def ingest() -> dict:
        """Build the raw tables (demo catalogue or your own files)."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("ingest")
        return pipeline.ingest(cfg, wd)

    @task
    def validate() -> dict:
        """Great Expectations contracts; rejected rows go to quarantine; a breach stops the run."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("validate")
        return pipeline.validate(cfg, wd)

    @task
    def version() -> dict:
        """DVC: commit the data stages and push them to the remote."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("version")
        return pipeline.version(cfg, wd)

    @task
    def train() -> dict:
        """Content-aware training stages; retries resume from the last checkpoint."""
        from sail_core import pipeline

        cfg, wd, ctx = _setup("train")
        return pipeline.train(cfg, wd, resume=ctx["ti"].try_number > 1, airflow_run_id=ctx["run_id"])

    @task
    def evaluate() -> dict:
        """Recall@K for the candidate and the untrained baseline; report and plot in MLflow."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("evaluate")
        return pipeline.evaluate(cfg, wd)

    @task
    def gate() -> dict:
        """Fail (and stop promotion) when the candidate misses a threshold."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("gate")
        return pipeline.gate(cfg, wd)

    @task
    def export() -> dict:
        """ONNX export with a parity check against PyTorch."""
        from sail_core import pipeline

        cfg, wd, _ = _setup("export")
        return pipeline.export(cfg, wd)

    @task
    def register() -> dict:
        """DVC-commit the model outputs; register an MLflow model version aliased 'challenger'."""
        from sail_core import pipeline

        cfg, wd, ctx = _setup("register")
        return pipeline.register(cfg, wd, airflow_run_id=ctx["run_id"])

    @task
    def promote() -> dict:
        """Serve the challenger on Triton (parity + smoke checked), then alias it 'champion'."""
        from sail_core import pipeline

        cfg, wd, ctx = _setup("promote")
        if not ctx["params"]["promote"]:
            raise AirflowSkipException("promotion turned off for this run")
        return pipeline.promote(cfg, wd)

    chain(ingest(), validate(), version(), train(), evaluate(), gate(), export(), register(), promote())


sail_pipeline()
