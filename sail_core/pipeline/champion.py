"""The champion, re-scored: its registered ONNX export run over this run's test queries.

The gate does not trust the champion's logged numbers, which may come from other data. It
downloads the champion's registered export (``onnx/`` of its MLflow run, the files Triton
serves), embeds this run's queries and corpora with it in-process (onnxruntime, the serving
code: :class:`serving.backend.embedder.OnnxEmbedder`, raw media files decoded as a request's
would be), and scores it with the same code as the candidate
(:mod:`sail_core.eval.scoring`), so the two are compared query by query.

The champion's training items come from its run's ``record/train_items.txt`` (written by the
evaluate step); test queries involving any of them are left out of the comparison, and the
overlap is reported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from sail_core.config import Config
from sail_core.eval.embed import EmbeddingStore, Side
from sail_core.eval.queries import QuerySet, build_queries
from sail_core.eval.scoring import query_keys, score
from sail_core.features.item_inputs import ItemInputs, item_text

TRAIN_ITEMS = "record/train_items.txt"


class ExportEncoder:
    """Sides -> embeddings through an ONNX export folder, in-process (the code Triton runs)."""

    def __init__(self, export_dir: Path, inputs: ItemInputs):
        from serving.backend.embedder import OnnxEmbedder

        self.embedder = OnnxEmbedder(export_dir, intra_op_threads=0)
        self.inputs = inputs
        self.dim = self.embedder.hidden_size
        self.dims = [self.dim] + sorted((d for d in self.embedder.dims if d < self.dim), reverse=True)

    def _row(self, side: Side):
        from serving.backend.embedder import Row
        from sail_core.preprocess.image import keyframe_indices

        item_id, text, modality, instruction = side
        if item_id is None:
            return Row(instruction=instruction, text=str(text))
        it = self.inputs.item(item_id)
        folder = self.inputs.data_dir
        row = Row(instruction=instruction)
        if modality in ("text", "omni"):
            row.text = item_text(it) or None
        if modality in ("image", "omni") and it.cover:
            row.cover = self.embedder._image(folder / it.cover, f"item {item_id} cover")
        if modality in ("frames", "omni") and it.frames and self.embedder.keyframes > 0:
            picks = keyframe_indices(len(it.frames), self.embedder.keyframes)
            row.frames = np.stack([self.embedder._image(folder / it.frames[i], f"item {item_id} frame") for i in picks])
        if modality in ("audio", "omni") and it.audio:
            row.audio = self.embedder._audio(folder / it.audio, f"item {item_id} audio")
        return row

    def __call__(self, sides: list[Side]) -> np.ndarray:
        return self.embedder.embed_rows([self._row(s) for s in sides])


def rescore(cfg: Config, export_dir: Path, inputs: ItemInputs, data_dir: Path) -> tuple[dict, dict[str, list[str]]]:
    """Per-query Recall@k of the export on ``data_dir``'s test queries, and the queries' keys (to check they
    are the candidate's)."""
    notes: list[str] = []
    queries: dict[str, list[QuerySet]] = build_queries(cfg, data_dir, inputs, notes)
    with tempfile.TemporaryDirectory(prefix="sail-champion-") as work:
        store = EmbeddingStore(ExportEncoder(export_dir, inputs), Path(work), block=cfg.eval.batch_size)
        return score(store, queries), query_keys(queries)


def compare_with_champion(cfg: Config, champ, data_dir: Path, queries, run_id: str) -> tuple[dict, dict, dict]:
    """Re-score the champion (a :class:`~sail_core.pipeline.registry.ModelRef`) on this run's test queries.

    ``queries`` is the candidate's queries table (``queries.parquet``). Returns the champion's per-query values,
    per task the mask of queries to compare (those involving none of the champion's training items), and an
    overlap summary; logs ``champion.*`` metrics (with intervals) and the overlap to ``run_id``."""
    from sail_core.eval.intervals import with_intervals
    from sail_core.pipeline import registry, tracking

    inputs = ItemInputs.from_data_dir(data_dir, cfg.model, media_features=False)
    with tempfile.TemporaryDirectory(prefix="sail-champion-export-") as tmp:
        export_dir = registry.download_onnx(cfg.registry.mlflow_model, champ.version, Path(tmp))
        per, keys = rescore(cfg, export_dir, inputs, data_dir)
    for task, group in queries.groupby("task", sort=False):
        if keys.get(task) != group.sort_values("query")["key"].tolist():
            raise RuntimeError(f"the champion was re-scored on other {task} queries than the candidate's; "
                               "evaluate and gate must read the same data (re-run evaluate, then gate)")
    text = tracking.load_text(champ.run_id, TRAIN_ITEMS)
    trained_on = None if text is None else set(text.split())
    keep, excluded, overlap_items = {}, {}, set()
    for task, group in queries.groupby("task", sort=False):
        held = [set(h.split("|")) - {""} for h in group.sort_values("query")["held_out"]]
        hit = [bool(trained_on and h & trained_on) for h in held]
        overlap_items.update(i for h in held for i in (h & trained_on if trained_on else set()))
        keep[task] = ~np.array(hit, dtype=bool)
        excluded[task] = int(sum(hit))
    overlap = {"champion": f"v{champ.version}", "train_items_known": trained_on is not None,
               "overlap_items": len(overlap_items), "excluded_queries": excluded}
    tracking.log_metrics(run_id, {**with_intervals(per, "champion"), "gate.overlap_items": float(len(overlap_items)),
                                  **{f"gate.{t}.excluded_queries": float(n) for t, n in excluded.items()}})
    tracking.log_text(run_id, json.dumps(overlap, indent=2), "gate/overlap.json")
    return per, keep, overlap
