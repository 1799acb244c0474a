"""The CRE steps of the pipeline: the collaborative ``teacher`` (before the CRE stages and the evaluation)."""

from __future__ import annotations

import json

from rich.console import Console

from sail_core.config import Config
from sail_core.pipeline.workspace import Workspace

console = Console(stderr=True, soft_wrap=True)
TEACHER = "data/teacher"


def teacher(cfg: Config, ws: Workspace) -> dict:
    """Fit the teacher on the validated interactions into ``data/teacher/`` (``id_embeddings.parquet``,
    ``eval_id_embeddings.parquet`` contract-checked, ``teacher.json``); its Recall@k / NDCG@k after the cutoff,
    with intervals over users, to MLflow (nested run ``teacher``)."""
    import mlflow

    from data_contracts.id_embeddings import check_id_embeddings
    from sail_core.data.io import read_items
    from sail_core.data.splits import item_splits
    from sail_core.eval.intervals import with_intervals
    from sail_core.pipeline import tracking
    from sail_core.pipeline.atomic import replace_dir
    from sail_core.pipeline.stages import child_run
    from sail_core.rec.teacher import EVAL_ID_EMBEDDINGS, ID_EMBEDDINGS, build_teacher

    ws.pull("data/validated")
    data = ws.wd.validated
    built = build_teacher(cfg, data)
    train = [i for i, s in item_splits(data).items() if s == "train"]
    allowed = {ID_EMBEDDINGS: train, EVAL_ID_EMBEDDINGS: read_items(data)["item_id"].astype(str).tolist()}
    for name, frame in built["tables"].items():
        check_id_embeddings(frame, allowed[name], cfg.cre.teacher.factors, f"{TEACHER}/{name}.parquet")
    metrics = with_intervals(built["per_user"], "teacher")
    folder = ws.wd.root / TEACHER
    with replace_dir(folder) as tmp:
        for name, frame in built["tables"].items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "teacher.json").write_text(json.dumps({**built["summary"], "metrics": metrics}, indent=2, sort_keys=True))
    with tracking.resume_run(ws.mlflow_run_id), child_run(ws, "teacher", "teacher"):
        mlflow.log_params(cfg.cre.teacher.model_dump(mode="json"))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(folder / "teacher.json"), artifact_path="teacher")
    tracking.log_metrics(ws.mlflow_run_id, {k: float(v) for k, v in metrics.items()})
    hashes = ws.push(TEACHER)
    k = max(cfg.cre.teacher.ks)
    console.print(f"[green]teacher[/]: {cfg.cre.teacher.algorithm} on {built['summary']['items']} train items, "
                  f"{built['summary']['users']} users; Recall@{k} after the cutoff "
                  f"{metrics.get(f'teacher.recall_at_{k}', float('nan')):.3f} over {built['summary']['scored_users']} users")
    return {"teacher_dir": str(folder), **hashes, **built["summary"], "metrics": metrics}
