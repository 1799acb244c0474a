"""The evaluate step: the trained model, the untrained baseline and the plain text reference, scored on
the same held-out queries in the same run.

* ``eval``: the candidate. Its catalogue embeddings are the ones the ``index`` step stored.
* ``baseline``: ``build_model(cfg.model)`` seeded with ``cfg.train.seed``: the pretrained backbone
  (demo: MiniLM) with freshly initialised Perceiver, audio adapter and media-type embeddings, i.e.
  exactly the model training starts from.
* ``reference``: plain all-MiniLM-L6-v2 on item text (:mod:`sail_core.eval.reference`), on the
  tasks it can do (i2i, q2i, cls).

Every metric has a 95% bootstrap interval over queries, and every comparison (``delta`` = eval -
baseline, ``vs_reference`` = eval - reference) a paired one on the same queries. Per-query values
are kept (``per_query.parquet``, with ``queries.parquet`` naming each query and the test items it
involves) so that the gate can compare a re-scored champion query by query.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sail_core.config import REFERENCE_TASKS, Config
from sail_core.eval.embed import EmbeddingStore, ModelEncoder, item_sides
from sail_core.eval.intervals import paired_differences, with_intervals
from sail_core.eval.queries import QuerySet, build_queries
from sail_core.eval.report import write_report
from sail_core.eval.scoring import held_out_per_query, query_keys, score
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.omni import build_model, load_model

LOG = logging.getLogger(__name__)
PER_QUERY, QUERIES = "per_query.parquet", "queries.parquet"


def baseline_model(cfg: Config):
    """The untrained model: pretrained backbone, fresh Perceiver/adapter (seeded with ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg.model)


def model_scores(cfg: Config, model, inputs: ItemInputs, queries: dict[str, list[QuerySet]], workdir: Path,
                 catalogue_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Per-query Recall@k of an omni model; with ``catalogue_dir`` (the index step's folder of this very
    model) its stored catalogue vectors are used instead of embedding the catalogue again."""
    return score(model_store(cfg, model, inputs, workdir, catalogue_dir), queries)


def model_store(cfg: Config, model, inputs: ItemInputs, workdir: Path, catalogue_dir: Path | None = None) -> EmbeddingStore:
    """An omni model's embedding store (with the index step's catalogue vectors registered when given)."""
    store = EmbeddingStore(ModelEncoder(model, inputs, cfg.eval.batch_size), workdir, block=cfg.eval.batch_size * 4)
    if catalogue_dir is not None:
        _use_catalogue(store, Path(catalogue_dir), list(inputs.items))
    return store


def _use_catalogue(store: EmbeddingStore, folder: Path, item_ids: list[str]) -> None:
    from sail_core.index.catalogue import IDS, META, VECTORS

    meta = json.loads((folder / META).read_text())
    stored_ids = (folder / IDS).read_text().split("\n")[:-1]
    if stored_ids != item_ids:
        raise ValueError(f"the catalogue index {folder} holds {len(stored_ids)} items that differ from the "
                         f"{len(item_ids)} of the data evaluated; rebuild it with the index step on this data")
    store.register(f"catalogue:omni:{meta['target_instruction']}", folder / VECTORS)


def _has_interactions(data_dir: Path) -> bool:
    from sail_core.data.io import find_table
    from sail_core.data.schema import INTERACTIONS

    try:
        find_table(data_dir, INTERACTIONS)
    except FileNotFoundError:
        return False
    return True


def score_all(cfg: Config, model, inputs: ItemInputs, data_dir: Path, workdir: Path,
              catalogue_dir: Path | None = None, notes: list[str] | None = None, teacher_dir: Path | None = None,
              model_dir: Path | None = None, singles: dict | None = None) -> tuple[dict, dict]:
    """``({"eval": per-query, "baseline": ..., "reference": ...}, queries)`` on ``data_dir``'s test split.

    With ``catalogue_dir`` each model also gets the recommendation metrics of its catalogue vectors
    (:mod:`sail_core.eval.recommendation`; the candidate's are the index step's, the others' are embedded
    here), and their single values (NMI, overall AUCs) go to ``singles[model]``."""
    notes = notes if notes is not None else []
    queries = build_queries(cfg, data_dir, inputs, notes)
    stores = {"eval": model_store(cfg, model, inputs, workdir / "eval", catalogue_dir)}
    per = {"eval": score(stores["eval"], queries)}
    if cfg.eval.baseline:
        stores["baseline"] = model_store(cfg, baseline_model(cfg), inputs, workdir / "baseline")
        per["baseline"] = score(stores["baseline"], queries)
    if cfg.eval.reference:
        from sail_core.eval.reference import TextReference

        stores["reference"] = EmbeddingStore(TextReference(inputs, cfg.eval.batch_size), workdir / "reference",
                                             block=cfg.eval.batch_size * 4)
        per["reference"] = score(stores["reference"], queries, tasks=REFERENCE_TASKS)
    if catalogue_dir is not None and not _has_interactions(Path(data_dir)):
        notes.append("recommendation metrics skipped: the data folder has no interactions table")
    elif catalogue_dir is not None:
        from sail_core.eval.catalogue_index import search_dataset
        from sail_core.eval.recommendation import recommendation_metrics

        ids = list(inputs.items)
        instruction = cfg.datasets[search_dataset(cfg)].target_instruction
        for name, store in stores.items():
            sides = item_sides(ids, "text" if name == "reference" else "omni", "" if name == "reference" else instruction)
            key = f"catalogue:{sides[0][2]}:{sides[0][3]}"
            vectors = np.asarray(store.get(key, sides, f"embed catalogue ({name})"))
            rec, single = recommendation_metrics(cfg, Path(data_dir), vectors, ids, teacher_dir,
                                                 model_dir if name == "eval" else None)
            per[name].update(rec)
            if singles is not None:
                singles[name] = single
    return per, queries


def summarise(per: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Means with intervals for every model, and the paired differences eval - baseline (``delta``) and
    eval - reference (``vs_reference``)."""
    out: dict[str, float] = {}
    for name, values in per.items():
        out.update(with_intervals(values, name))
    if "baseline" in per:
        out.update(paired_differences(per["eval"], per["baseline"], "delta"))
    if "reference" in per:
        out.update(paired_differences(per["eval"], per["reference"], "vs_reference"))
    return out


def write_per_query(per: dict[str, dict[str, np.ndarray]], queries: dict[str, list[QuerySet]], out_dir: Path) -> None:
    rows = [pd.DataFrame({"model": model, "metric": metric, "query": np.arange(len(v)), "value": v})
            for model, metrics in per.items() for metric, v in metrics.items()]
    pd.concat(rows, ignore_index=True).to_parquet(out_dir / PER_QUERY, index=False)
    held, keys = held_out_per_query(queries), query_keys(queries)
    pd.DataFrame([{"task": t, "query": i, "key": k, "held_out": "|".join(h)}
                  for t in keys for i, (k, h) in enumerate(zip(keys[t], held[t]))]).to_parquet(out_dir / QUERIES, index=False)


def read_per_query(out_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], pd.DataFrame]:
    """What :func:`write_per_query` wrote: ``{model: {metric: values}}`` and the queries table."""
    frame = pd.read_parquet(Path(out_dir) / PER_QUERY)
    per: dict[str, dict[str, np.ndarray]] = {}
    for (model, metric), g in frame.groupby(["model", "metric"], sort=False):
        per.setdefault(model, {})[metric] = g.sort_values("query")["value"].to_numpy()
    return per, pd.read_parquet(Path(out_dir) / QUERIES)


def evaluate(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path, catalogue_dir: Path | None = None,
             cache_dir: Path | None = None, teacher_dir: Path | None = None) -> dict:
    """Score ``model_dir``, the baseline and the reference on ``data_dir``'s test split.

    Returns ``{eval|baseline|reference}.<task>.recall_at_<k>`` (plus ``.dim<d>.`` for i2i/q2i), each with
    ``_ci_low``/``_ci_high``, and ``delta.*`` / ``vs_reference.*`` paired differences. Writes
    ``metrics.json``, ``per_query.parquet``, ``queries.parquet``, ``eval_report.md`` and ``recall.png`` to
    ``out_dir``. With ``catalogue_dir`` also the recommendation metrics of every model's catalogue vectors
    (``eval.seq2item.*``, ``eval.gid_i2i.*`` with ``teacher_dir``, ``eval.nmi``, ...; per-query values in
    ``per_query.parquet`` too; ``recommendation.png``). A task the data cannot support is skipped and named in
    the report and the log.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model = load_model(model_dir)
    inputs = ItemInputs.from_data_dir(data_dir, model.cfg, cache_dir, feature_threads=cfg.train.feature_threads)
    notes: list[str] = []
    singles: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sail-eval-") as work:
        per, queries = score_all(cfg, model, inputs, Path(data_dir), Path(work), catalogue_dir, notes,
                                 teacher_dir=teacher_dir, model_dir=Path(model_dir), singles=singles)
    for note in notes:
        LOG.warning("evaluate: %s", note)
    result = summarise(per)
    result.update({f"eval.{t}.queries": float(sum(len(qs.sides) for qs in sets)) for t, sets in queries.items()})
    result.update({f"eval.{t}.held_out_items": float(len({i for qs in sets for h in qs.held_out for i in h}))
                   for t, sets in queries.items()})
    result.update({f"{name}.{k}": float(v) for name, single in singles.items() for k, v in single.items()})
    write_per_query(per, queries, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    write_report(result, out_dir, notes)
    if singles:
        from sail_core.eval.report import recommendation_section

        recommendation_section(result, out_dir)
    return result
