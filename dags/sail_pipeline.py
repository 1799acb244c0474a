"""SAIL-Embedding pipeline: check -> ingest -> validate -> version -> train -> evaluate -> gate -> export -> register -> promote.

Data moves between tasks as files in the work folders (data/, models/,
reports/), as it does between DVC stages; each task's return value is kept
as XCom for the UI. Every task is a thin call into ``sail_core.pipeline`` (the
same function that ``sail <step>`` and the DVC stage run).

The DAG's shape is fixed when Airflow parses it, the profile is chosen per run:
``train`` holds one task per training stage named in any profile of the
configuration (``$SAIL_PARAMS``, else ``params.yaml``), chained in order, and a
run skips the stages its profile does not list. ``check`` loads the run's
configuration first and refuses a profile that cannot run the selected steps,
before anything is built or trained. Trigger it from the UI: the form offers
the profile, the steps to run, the gate thresholds and whether to promote to
Triton.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, TaskGroup, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from sail_core.config import load_config, params_path, runnable_profiles, stage_names
from sail_core.pipeline import STEPS

PROFILES = runnable_profiles(STEPS)
if not PROFILES:
    raise RuntimeError(f"no profile in {params_path()} can run every step ({', '.join(STEPS)}), so the DAG has "
                       "none to offer; add one that can be exported (see `sail config show --profile P`)")
DEFAULT_PROFILE = load_config().profile  # params.yaml's `profile` (or $SAIL_PROFILE) when it can run every step
DEFAULT_PROFILE = DEFAULT_PROFILE if DEFAULT_PROFILE in PROFILES else PROFILES[0]
STAGES = stage_names()


def _config():
    """This run's typed configuration: its profile, with the form's gate thresholds (if any) as overrides."""
    from sail_core.pipeline.gating import gate_overrides

    params = get_current_context()["params"]
    return load_config(profile=params["profile"], overrides=gate_overrides(params.get("gate_thresholds")))


def _setup(step: str):
    """The typed config and work folders for this run; skip the step if the user left it out."""
    from sail_core.paths import workdir

    ctx = get_current_context()
    if step not in ctx["params"]["steps"]:
        raise AirflowSkipException(f"step {step!r} not selected in this run's 'steps' parameter")
    return _config(), workdir(), ctx


@dag(
    dag_id="sail_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # a run triggered from the UI starts without a manual unpause
    tags=["sail", "embedding"],
    doc_md=__doc__,
    default_args={"trigger_rule": "none_failed"},  # a skipped step or stage does not stop the ones after it
    params={
        "profile": Param(DEFAULT_PROFILE, enum=PROFILES,
                         description="profile of the configuration (only those that can run every step are offered)"),
        "steps": Param(STEPS, type="array", items={"type": "string", "enum": STEPS},
                       description="steps to run; the others are skipped (their earlier outputs are reused). "
                                   "'train' runs every training stage of the profile"),
        "gate_thresholds": Param({}, type="object",
                                 description="metric -> minimum improvement over the champion (or the untrained "
                                             "baseline), e.g. {\"eval.i2i.recall_at_10\": 0.02}; replaces the "
                                             "profile's gate.metrics. Empty: the profile's own "
                                             "(`sail config show --profile P` prints them)"),
        "promote": Param(True, type="boolean", description="promote to Triton and alias 'champion' when the gate passes"),
    },
)
def sail_pipeline():
    @task
    def check() -> dict:
        """Load this run's configuration and refuse a profile that cannot run the selected steps."""
        from sail_core.config import check_steps

        cfg = _config()
        steps = get_current_context()["params"]["steps"]
        check_steps(cfg, steps)
        return {"profile": cfg.profile, "steps": list(steps), "stages": [s.name for s in cfg.train.stages]}

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

    def train_task(name: str):
        @task(task_id=name)
        def train_stage() -> dict:
            """One training stage, from the previous stage's model; retries resume from the last checkpoint."""
            from sail_core import pipeline

            cfg, wd, ctx = _setup("train")
            if name not in [s.name for s in cfg.train.stages]:
                raise AirflowSkipException(f"profile {cfg.profile!r} does not list training stage {name!r}")
            return pipeline.train_stage(cfg, wd, name, resume=ctx["ti"].try_number > 1,
                                        airflow_run_id=ctx["run_id"])

        return train_stage()

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

    with TaskGroup("train", tooltip="one task per training stage named in any profile, in order") as train:
        chain(*[train_task(name) for name in STAGES])

    chain(check(), ingest(), validate(), version(), train, evaluate(), gate(), export(), register(), promote())


sail_pipeline()
