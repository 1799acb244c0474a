"""The ablation path as an Airflow DAG: ``sail ablate`` with its parameters from the trigger form.

One task runs the eight cumulative rows (each a pipeline run of its own in MLflow, tagged
``sail.ablation``) and writes the comparison table; a rerun with the same name resumes,
skipping the rows already finished. See :mod:`sail_core.pipeline.ablation`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from sail_core.config import load_config, profile_names

DEFAULT_PROFILE = load_config().profile


@dag(
    dag_id="sail_ablation",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["sail", "embedding", "ablation"],
    doc_md=__doc__,
    params={
        "profile": Param(DEFAULT_PROFILE, enum=profile_names(), description="profile whose recipe is ablated"),
        "name": Param("demo", type="string", description="the ablation's name; a rerun with it resumes"),
        "seeds": Param([0, 1], type="array", items={"type": "integer"}, description="seeds of rows 1 and 8"),
        "rows": Param([], type="array", items={"type": "integer", "minimum": 1, "maximum": 8},
                      description="rows to run (empty: all eight)"),
    },
)
def sail_ablation():
    @task
    def ablate() -> dict:
        """Train, index and evaluate every row not yet finished; write the table (markdown, JSON, PNG)."""
        from sail_core.pipeline.ablation import ablate as run_ablation

        p = get_current_context()["params"]
        return run_ablation(p["profile"], p["name"], tuple(p["seeds"]), list(p["rows"]) or None)

    ablate()


sail_ablation()
