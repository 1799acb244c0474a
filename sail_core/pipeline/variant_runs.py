"""One configuration variant as a whole pipeline run (``sail ablate``, ``sail cre-table``): data (or the data of an
earlier run), the teacher, every training stage, the index and the evaluation, tagged so that a finished
variant is found again."""

from __future__ import annotations

from sail_core.config import Config


def run_variant(cfg: Config, prefix: str, tags: dict[str, str], done_tag: str, data_run: str | None) -> str:
    """Run ``cfg`` as a pipeline run named ``<prefix>__<time>`` on the data of ``data_run`` (an earlier run with
    the same data), else ingested, validated and versioned here; tag it ``done_tag=1`` at the end. Returns its
    MLflow run id."""
    from sail_core import pipeline
    from sail_core.pipeline import tracking, workspace

    run_id = workspace.new_run_id(prefix)
    steps = ["train", "index", "evaluate"]
    if data_run is None:
        steps = ["ingest", "validate", "version", *steps]
    with workspace.for_run(cfg, run_id) as ws:
        pipeline.check(cfg, ws, steps, tags, base_run=data_run)
        if "ingest" in steps:
            pipeline.ingest(cfg, ws)
            pipeline.validate(cfg, ws)
            pipeline.version(cfg, ws)
        pipeline.teacher(cfg, ws)
        pipeline.train(cfg, ws)
        pipeline.index(cfg, ws)
        pipeline.evaluate(cfg, ws)
        tracking.set_tags(ws.mlflow_run_id, {done_tag: "1"})
        return ws.mlflow_run_id
