"""The CRE steps of the pipeline: the collaborative ``teacher`` (before the training stages: the CRE stages
and the evaluation read it) and the semantic IDs (``sid``, after the index step)."""

from __future__ import annotations

import json

from rich.console import Console

from sail_core.config import Config
from sail_core.pipeline.workspace import Workspace

console = Console(stderr=True, soft_wrap=True)
TEACHER = "data/teacher"
SID = "models/sid"
SID_NEIGHBOURS = 50


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


def sid(cfg: Config, ws: Workspace) -> dict:
    """Fit the semantic IDs (residual k-means, ``index.sid_sizes``) on the catalogue index's vectors into
    ``models/sid/`` (registered and promoted with the model); evaluate them: per level, the collision rate and
    the candidate recall of a SID prefix, i.e. the share of a test item's 50 nearest dense neighbours that share
    its prefix, with the mean number of candidates the prefix returns."""
    import numpy as np

    from sail_core.data.splits import item_splits
    from sail_core.eval.intervals import with_intervals
    from sail_core.eval.rec_metrics import prefix_candidate_recall
    from sail_core.index.catalogue import IDS, VECTORS
    from sail_core.index.semantic_ids import save_semantic_ids
    from sail_core.pipeline import tracking
    from sail_core.pipeline.atomic import replace_dir

    ws.pull("data/validated", "models/index")
    catalogue = ws.wd.root / "models" / "index"
    ids = (catalogue / IDS).read_text().split("\n")[:-1]
    vectors = np.load(catalogue / VECTORS).astype(np.float32)
    folder = ws.wd.root / SID
    with replace_dir(folder) as tmp:
        meta = save_semantic_ids(tmp, ids, vectors, cfg.index.sid_sizes, seed=cfg.train.seed)
        import pandas as pd

        codes = pd.read_parquet(tmp / "codes.parquet")[[f"sid_{i}" for i in range(meta["levels"])]].to_numpy()
        where = {i: n for n, i in enumerate(ids)}
        queries = np.asarray([where[i] for i, s in item_splits(ws.wd.validated).items() if s == "test" and i in where])
        x = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
        scores = x[queries] @ x.T
        scores[np.arange(len(queries)), queries] = -np.inf
        relevant = list(np.argsort(-scores, axis=1, kind="stable")[:, :SID_NEIGHBOURS])
        per, counts = {}, {}
        for level in range(1, meta["levels"] + 1):
            recall, count = prefix_candidate_recall(codes, queries, relevant, level)
            per[f"level{level}.candidate_recall"] = recall
            counts[f"sid.level{level}.candidates"] = float(np.mean(count))
        metrics = {**with_intervals(per, "sid"), **counts,
                   **{f"sid.level{i + 1}.collision_rate": float(r) for i, r in enumerate(meta["collision_rate"])}}
        meta["evaluation"] = metrics
        (tmp / "sid.json").write_text(json.dumps(meta, indent=2))
    tracking.log_metrics(ws.mlflow_run_id, metrics)
    tracking.log_artifacts(ws.mlflow_run_id, folder, "sid")
    hashes = ws.push(SID)
    console.print(f"[green]sid[/]: codebooks {meta['effective_sizes']} on {meta['items']} items; collision rate per "
                  f"level {[round(r, 3) for r in meta['collision_rate']]}; candidate recall of the dense top-"
                  f"{SID_NEIGHBOURS} per level {[round(metrics[f'sid.level{i}.candidate_recall'], 3) for i in range(1, meta['levels'] + 1)]}")
    return {"sid_dir": str(folder), **hashes, **meta}
