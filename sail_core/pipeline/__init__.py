"""Pipeline steps: one function per step, called alike by the CLI, DVC stages and Airflow tasks."""

from sail_core.pipeline.steps import (  # noqa: F401
    STEPS,
    check,
    evaluate,
    export,
    gate,
    index,
    ingest,
    mine,
    promote,
    register,
    rollback,
    sid,
    teacher,
    train,
    train_stage,
    validate,
    version,
)
