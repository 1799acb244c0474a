"""The champion, re-scored: its registered ONNX export run over this run's test queries.

The gate does not trust the champion's logged numbers, which may come from other data. It
downloads the champion's registered export (``onnx/`` of its MLflow run, the files Triton
serves), embeds this run's queries and corpora of the gated tasks with it in-process
(onnxruntime, the serving code: :class:`serving.backend.embedder.OnnxEmbedder`; the frozen
towers' features come from the data's feature cache when they match the export's own towers),
and scores it with the same code as the candidate (:mod:`sail_core.eval.scoring`), so the two
are compared query by query.

The champion's training items come from its run's ``record/train_items.txt`` (written by the
evaluate step); test queries involving any of them are left out of the comparison, and the
overlap is reported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from sail_core.config import REC_METRICS, Config
from sail_core.eval.embed import EmbeddingStore, Side
from sail_core.eval.queries import QuerySet, build_queries
from sail_core.eval.scoring import query_keys, score
from sail_core.features.item_inputs import ItemInputs, item_text

TRAIN_ITEMS = "record/train_items.txt"


class ExportEncoder:
    """Sides -> embeddings through an ONNX export folder, in-process (the code Triton runs).

    The export's frozen towers (vision features, speech vector) are a function of the media file. When
    ``inputs`` carries the data folder's cached features of the same towers (the ones training and
    evaluation use), they are checked against the export's own towers on the first few files and, when
    they agree (:data:`FEATURE_TOLERANCE`), used instead of decoding and running the towers again; else
    every file goes through the export.
    """

    FEATURE_TOLERANCE = 2e-2  # the cache holds float16 features

    def __init__(self, export_dir: Path, inputs: ItemInputs):
        from serving.backend.embedder import OnnxEmbedder

        self.embedder = OnnxEmbedder(export_dir, intra_op_threads=0)
        self.inputs = inputs
        self.dim = self.embedder.hidden_size
        self.dims = [self.dim] + sorted((d for d in self.embedder.dims if d < self.dim), reverse=True)
        self.cached = inputs.features is not None and self._cache_agrees()

    def _cache_agrees(self) -> bool:
        items = list(self.inputs.items.values())
        images = [p for it in items[:20] for p in ([it.cover] if it.cover else []) + it.frames][:4]
        audios = [it.audio for it in items[:20] if it.audio][:2]
        folder = self.inputs.data_dir
        for rel in images:
            own = self.embedder._features([self.embedder._image(folder / rel, rel)])[0]
            if np.abs(own - self.inputs.features.image(rel)).max() > self.FEATURE_TOLERANCE:
                return False
        for rel in audios:
            if np.abs(self.embedder._audio(folder / rel, rel) - self.inputs.features.audio(rel)).max() > self.FEATURE_TOLERANCE:
                return False
        return bool(images or audios)

    def _parts(self, side: Side):
        """(instruction, text, cover features, frame features, audio vector) of one side."""
        from sail_core.preprocess.image import keyframe_indices

        item_id, text, modality, instruction = side
        if item_id is None:
            return instruction, str(text), None, None, None
        it, e, folder = self.inputs.item(item_id), self.embedder, self.inputs.data_dir
        image = (lambda rel: self.inputs.features.image(rel)) if self.cached else \
            (lambda rel: e._features([e._image(folder / rel, f"item {item_id}: {rel}")])[0])
        audio = (lambda rel: self.inputs.features.audio(rel)) if self.cached else \
            (lambda rel: e._audio(folder / rel, f"item {item_id}: {rel}"))
        text = (item_text(it) or None) if modality in ("text", "omni") else None
        cover = image(it.cover) if modality in ("image", "omni") and it.cover else None
        frames = None
        if modality in ("frames", "omni") and it.frames and e.keyframes > 0:
            frames = np.stack([image(it.frames[i]) for i in keyframe_indices(len(it.frames), e.keyframes)])
        sound = audio(it.audio) if modality in ("audio", "omni") and it.audio else None
        return instruction, text, cover, frames, sound

    def __call__(self, sides: list[Side]) -> np.ndarray:
        from sail_core.preprocess.feeds import encoder_feeds

        e = self.embedder
        instructions, texts, covers, frames, audios = zip(*(self._parts(s) for s in sides))
        feeds = encoder_feeds(e.tokenizer, instructions, texts, audios, covers, frames, e.audio_dim, e.feature_shape)
        return e.encoder.run([e.meta.output], feeds)[0].astype(np.float32)


def rescore(cfg: Config, export_dir: Path, inputs: ItemInputs, data_dir: Path,
            tasks: set[str] | None = None) -> tuple[dict, dict[str, list[str]]]:
    """Per-query Recall@k of the export on ``data_dir``'s test queries of ``tasks`` (default: all), and the
    queries' keys (to check they are the candidate's)."""
    notes: list[str] = []
    queries: dict[str, list[QuerySet]] = build_queries(cfg, data_dir, inputs, notes)
    queries = {t: q for t, q in queries.items() if tasks is None or t in tasks}
    with tempfile.TemporaryDirectory(prefix="sail-champion-") as work:
        store = EmbeddingStore(ExportEncoder(export_dir, inputs), Path(work), block=cfg.eval.batch_size)
        return score(store, queries), query_keys(queries)


def _champion_rec(cfg: Config, champ, data_dir: Path, teacher_dir: Path | None, dest: Path) -> dict:
    import numpy as np

    from sail_core.eval.recommendation import recommendation_metrics
    from sail_core.index.catalogue import IDS, VECTORS
    from sail_core.pipeline import registry

    folder = registry.download_index(cfg.registry.mlflow_model, champ.version, dest)
    if folder is None:
        raise RuntimeError(f"the gate checks a recommendation metric, and champion v{champ.version} has no catalogue "
                           "index to score it with (registered before the index step); gate on retrieval metrics "
                           "until a champion with an index is promoted")
    ids = (folder / IDS).read_text().split("\n")[:-1]
    return recommendation_metrics(cfg, data_dir, np.load(folder / VECTORS), ids, teacher_dir, None)[0]


def compare_with_champion(cfg: Config, champ, data_dir: Path, queries, run_id: str,
                          teacher_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """Re-score the champion (a :class:`~sail_core.pipeline.registry.ModelRef`) on this run's test queries of the
    tasks the gate compares.

    ``queries`` is the candidate's queries table (``queries.parquet``). Returns the champion's per-query values,
    per task the mask of queries to compare (those involving none of the champion's training items), and an
    overlap summary; logs ``champion.*`` metrics (with intervals) and the overlap to ``run_id``."""
    from sail_core.eval.intervals import with_intervals
    from sail_core.pipeline import registry, tracking

    gated = {m.metric.split(".")[1] for m in cfg.gate.metrics}  # only what the gate compares is re-scored
    inputs = ItemInputs.from_data_dir(data_dir, cfg.model, feature_threads=cfg.train.feature_threads)
    with tempfile.TemporaryDirectory(prefix="sail-champion-export-") as tmp:
        export_dir = registry.download_onnx(cfg.registry.mlflow_model, champ.version, Path(tmp))
        per, keys = rescore(cfg, export_dir, inputs, data_dir, gated)
        rec = {t for t in gated if any(m.startswith(f"{t}.") for m in REC_METRICS)}
        if rec:  # the champion's recommendation metrics: its registered catalogue vectors, on this run's data
            per.update(_champion_rec(cfg, champ, data_dir, teacher_dir, Path(tmp) / "catalogue"))
    for task, group in queries[queries["task"].isin(gated)].groupby("task", sort=False):
        if keys.get(task) != group.sort_values("query")["key"].tolist():
            raise RuntimeError(f"the champion was re-scored on other {task} queries than the candidate's; "
                               "evaluate and gate must read the same data (re-run evaluate, then gate)")
    text = tracking.load_text(champ.run_id, TRAIN_ITEMS)
    trained_on = None if text is None else set(text.split())
    keep, excluded, overlap_items = {}, {}, set()
    for task, group in queries[queries["task"].isin(gated)].groupby("task", sort=False):
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
