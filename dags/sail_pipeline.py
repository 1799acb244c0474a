"""SAIL-Embedding pipeline: check -> ingest -> validate -> version -> train (stages, mining) -> index -> evaluate -> gate -> export -> register -> promote.

Every run has its own workspace, keyed by the Airflow run id, and its state lives in
stores that every worker reaches: the folders a task writes go to the object store (a
DVC remote) and their hashes onto the run's MLflow run; the next task, on any worker,
pulls them by hash. ``check`` starts the run's MLflow run (its record) first. Every
task is a thin call into ``sail_core.pipeline`` (the same function that ``sail <step>``
and the DVC stage run), and records its state and wall time in MLflow.

The DAG's shape is fixed when Airflow parses it, the profile is chosen per run:
``train`` holds one task per training stage named in any profile of the
configuration (``$SAIL_PARAMS``, else ``params.yaml``), chained in order, and a
run skips the stages its profile does not list. ``check`` loads the run's
configuration first and refuses a profile that cannot run the selected steps,
before anything is built or trained. A run that leaves steps out reuses their
outputs from ``base_run`` (default: the latest run that has them). Trigger it from
the UI: the form offers the profile, the steps to run, the gate thresholds, whether
to promote to Triton, the base run, and a recorded run to reproduce.

The ``train`` group's tasks are retried (``TRAIN_RETRIES`` times, ``TRAIN_RETRY_DELAY`` apart) when they fail
or their process is killed; a stage's retry resumes from the last checkpoint its earlier try stored.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, TaskGroup, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from sail_core.config import load_config, mining_stage_names, params_path, runnable_profiles, stage_names
from sail_core.pipeline import STEPS

PROFILES = runnable_profiles(STEPS)
if not PROFILES:
    raise RuntimeError(f"no profile in {params_path()} can run every step ({', '.join(STEPS)}), so the DAG has "
                       "none to offer; add one that can be exported (see `sail config show --profile P`)")
DEFAULT_PROFILE = load_config().profile  # params.yaml's `profile` (or $SAIL_PROFILE) when it can run every step
DEFAULT_PROFILE = DEFAULT_PROFILE if DEFAULT_PROFILE in PROFILES else PROFILES[0]
STAGES = stage_names()
MINING = mining_stage_names()  # stages with hard negatives in some profile: a mine task runs before them
# The train group's tasks (teacher, mining, stages) are retried by Airflow when they fail or their process dies
# (a worker lost, an out-of-memory kill): a stage's retry resumes from the last checkpoint its earlier try stored
# in the run's workspace (``try_number > 1``), so it repeats at most ``checkpoint_every`` steps. The other tasks
# are not retried: their failures (a contract breach, a missed gate) repeat on a retry.
TRAIN_RETRIES = 2
TRAIN_RETRY_DELAY = timedelta(seconds=5)
TRAIN_RETRY = {"retries": TRAIN_RETRIES, "retry_delay": TRAIN_RETRY_DELAY}


def _config():
    """This run's typed configuration: the recorded one of the run it reproduces, else its profile with the
    form's gate thresholds (if any) as overrides."""
    from sail_core.pipeline.gating import gate_overrides

    params = get_current_context()["params"]
    if params.get("reproduce"):
        from sail_core.pipeline import tracking

        original = tracking.find_run(params["reproduce"])
        if original is None:
            raise ValueError(f"reproduce: no pipeline run {params['reproduce']!r} in MLflow; `sail runs list` shows them")
        return tracking.recorded_config(original)
    return load_config(profile=params["profile"], overrides=gate_overrides(params.get("gate_thresholds")))


def _run_id(ctx) -> str:
    """The run's id: the one `sail run` generated (conf key ``sail_run_id``), else the Airflow run id."""
    return (ctx["dag_run"].conf or {}).get("sail_run_id") or ctx["run_id"]


def _steps(params) -> list[str]:
    """The steps this run runs: those selected, less promote when promotion is off."""
    return [s for s in params["steps"] if s != "promote" or params["promote"]]


def _in_workspace(step: str, task_id: str, call, stage: str | None = None):
    """Run ``call(cfg, ws, ctx)`` in this run's workspace, recorded in MLflow as task ``task_id``;
    skip the step if the user left it out (or the training ``stage`` if the run's profile does not list it)."""
    from sail_core.pipeline import tracking, workspace

    ctx = get_current_context()
    if step not in _steps(ctx["params"]):
        raise AirflowSkipException(f"step {step!r} not selected in this run's 'steps' parameter (or promote is off)")
    cfg = _config()
    if stage is not None and stage not in [s.name for s in cfg.train.stages]:
        raise AirflowSkipException(f"profile {cfg.profile!r} does not list training stage {stage!r}")
    with workspace.for_run(cfg, _run_id(ctx)) as ws, tracking.task(ws.mlflow_run_id, task_id):
        return call(cfg, ws, ctx)


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
        "base_run": Param("", type="string",
                          description="run id whose outputs the steps left out are taken from; empty: the latest "
                                      "run that has them (`sail runs list` shows run ids)"),
        "reproduce": Param("", type="string",
                           description="run id of a recorded run to re-run from its record (its resolved "
                                       "configuration replaces profile and gate thresholds); empty: none"),
    },
)
def sail_pipeline():
    @task
    def check() -> dict:
        """Start the run: check its configuration and steps, create its MLflow run, pick the base run."""
        import time

        from sail_core import pipeline
        from sail_core.pipeline import tracking, workspace

        t0 = time.perf_counter()
        ctx = get_current_context()
        params = ctx["params"]
        cfg = _config()
        tags = {"sail.trigger": "airflow", "sail.airflow_run_id": ctx["run_id"]}
        if params.get("reproduce"):
            tags["sail.reproduces"] = params["reproduce"]
        with workspace.for_run(cfg, _run_id(ctx)) as ws:
            result = pipeline.check(cfg, ws, _steps(params), tags,
                                    base_run=params.get("base_run") or params.get("reproduce") or None)
            tracking.set_tags(ws.mlflow_run_id, {"sail.task.check": "done"})
            tracking.log_metrics(ws.mlflow_run_id, {"time.check_s": time.perf_counter() - t0})
        return result

    @task
    def ingest() -> dict:
        """Build the raw tables (demo catalogue or your own files)."""
        from sail_core import pipeline

        return _in_workspace("ingest", "ingest", lambda cfg, ws, ctx: pipeline.ingest(cfg, ws))

    @task
    def validate() -> dict:
        """Great Expectations contracts; rejected rows go to quarantine; a breach stops the run."""
        from sail_core import pipeline

        return _in_workspace("validate", "validate", lambda cfg, ws, ctx: pipeline.validate(cfg, ws))

    @task
    def version() -> dict:
        """Record the data's DVC hashes in the run (the files are in the DVC remote already)."""
        from sail_core import pipeline

        return _in_workspace("version", "version", lambda cfg, ws, ctx: pipeline.version(cfg, ws))

    def train_task(name: str):
        @task(task_id=name, **TRAIN_RETRY)
        def train_stage() -> dict:
            """One training stage, from the previous stage's model; retries resume from the last checkpoint."""
            from sail_core import pipeline

            return _in_workspace("train", f"train.{name}", stage=name, call=lambda cfg, ws, ctx: pipeline.train_stage(
                cfg, ws, name, resume=ctx["ti"].try_number > 1))

        return train_stage()

    def mine_task(name: str):
        @task(task_id=f"mine_{name}", **TRAIN_RETRY)
        def mine_stage() -> dict:
            """Mine hard negatives for the stage with the model it starts from (F1-optimal threshold per dataset)."""
            from sail_core import pipeline

            def call(cfg, ws, ctx):
                if not next(s for s in cfg.train.stages if s.name == name).hard_negatives:
                    raise AirflowSkipException(f"stage {name!r} of profile {cfg.profile!r} has no hard negatives")
                return pipeline.mine(cfg, ws, name)

            return _in_workspace("train", f"train.mine_{name}", stage=name, call=call)

        return mine_stage()

    @task(task_id="teacher", **TRAIN_RETRY)
    def teacher() -> dict:
        """The collaborative teacher (implicit ALS/BPR on train items' events before the cutoff): ID embeddings
        for the CRE stages, and the evaluation's collaborative neighbours."""
        from sail_core import pipeline

        return _in_workspace("train", "train.teacher", lambda cfg, ws, ctx: pipeline.teacher(cfg, ws))

    @task
    def sid() -> dict:
        """Semantic IDs (residual k-means) of the catalogue index; registered and served with the model."""
        from sail_core import pipeline

        return _in_workspace("index", "sid", lambda cfg, ws, ctx: pipeline.sid(cfg, ws))

    @task
    def index() -> dict:
        """Embed the whole catalogue with the candidate and build its FAISS index (served with the model)."""
        from sail_core import pipeline

        return _in_workspace("index", "index", lambda cfg, ws, ctx: pipeline.index(cfg, ws))

    @task
    def evaluate() -> dict:
        """Recall@K of the candidate, the untrained model and the plain text reference, with intervals."""
        from sail_core import pipeline

        return _in_workspace("evaluate", "evaluate", lambda cfg, ws, ctx: pipeline.evaluate(cfg, ws))

    @task
    def gate() -> dict:
        """Re-score the champion on the same queries; fail (and stop promotion) when a threshold is missed."""
        from sail_core import pipeline

        return _in_workspace("gate", "gate", lambda cfg, ws, ctx: pipeline.gate(cfg, ws))

    @task
    def export() -> dict:
        """ONNX export with a parity check against PyTorch."""
        from sail_core import pipeline

        return _in_workspace("export", "export", lambda cfg, ws, ctx: pipeline.export(cfg, ws))

    @task
    def register() -> dict:
        """Register an MLflow model version aliased 'challenger', with the run's outputs as its record."""
        from sail_core import pipeline

        return _in_workspace("register", "register",
                             lambda cfg, ws, ctx: pipeline.register(cfg, ws, airflow_run_id=ctx["run_id"]))

    @task
    def promote() -> dict:
        """Serve the challenger on Triton (parity + smoke checked), then alias it 'champion'."""
        from sail_core import pipeline

        return _in_workspace("promote", "promote", lambda cfg, ws, ctx: pipeline.promote(cfg, ws=ws))

    with TaskGroup("train", tooltip="the collaborative teacher, then one task per training stage named in any "
                                    "profile, in order; a stage with hard negatives is preceded by its mining task") as train:
        chain(teacher(), *[t for name in STAGES for t in ([mine_task(name)] if name in MINING else []) + [train_task(name)]])

    chain(check(), ingest(), validate(), version(), train, index(), sid(), evaluate(), gate(), export(), register(), promote())


sail_pipeline()
