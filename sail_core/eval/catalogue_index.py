"""The catalogue index of a model: every item embedded (as ``omni``, with the search dataset's target
instruction) in batches streamed to ``vectors.npy``, and a FAISS index over it
(:mod:`sail_core.index.catalogue` holds the folder's layout).

The instructions come from the first ``q2i`` dataset (else the first ``i2i`` one): a text search is
encoded with its query instruction, so that the served encoder and the stored item vectors speak the
same "language". Evaluation reads these vectors for the candidate's catalogue instead of embedding
the catalogue again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from sail_core.config import Config, ConfigError
from sail_core.eval.embed import ModelEncoder, embed_to_file, item_sides
from sail_core.features.item_inputs import ItemInputs
from sail_core.index.catalogue import META, VECTORS, write_catalogue


def search_dataset(cfg: Config) -> str:
    """The dataset whose instructions the catalogue and text search use."""
    for task in ("q2i", "i2i"):
        for name, ds in cfg.datasets.items():
            if ds.task == task:
                return name
    raise ConfigError("the index step needs a q2i or i2i dataset in `datasets` (its instructions embed the "
                      "catalogue and the search queries); add one")


def model_fingerprint(model_dir: Path) -> str:
    """md5 over a model folder's files (names and bytes): which model a catalogue index was built with."""
    digest = hashlib.md5()
    for f in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(model_dir)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_catalogue(folder: Path, model_dir: Path) -> dict:
    """The catalogue index's meta; raises when it was built with another model than ``model_dir``."""
    meta_path = Path(folder) / META
    if not meta_path.exists():
        raise FileNotFoundError(f"no catalogue index at {folder}; run the index step (`sail index`) first")
    meta = json.loads(meta_path.read_text())
    if meta.get("model_hash") != model_fingerprint(model_dir):
        raise ValueError(f"the catalogue index {folder} was built with another model than {model_dir} "
                         f"(model hash {meta.get('model_hash')}); re-run the index step with this model")
    return meta


def build_catalogue(cfg: Config, model, inputs: ItemInputs, out_dir: Path, progress: bool = True,
                    model_hash: str = "") -> dict:
    """Embed every item of ``inputs`` with ``model`` into ``out_dir/vectors.npy`` and index it; returns the meta
    (``index.json``) plus ``embed_seconds`` and ``build_seconds``."""
    name = search_dataset(cfg)
    ds = cfg.datasets[name]
    item_ids = list(inputs.items)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    sides = item_sides(item_ids, "omni", ds.target_instruction)
    embed_to_file(ModelEncoder(model, inputs, cfg.index.batch_size), sides, out_dir / VECTORS, cfg.index.batch_size,
                  progress, "embed catalogue")
    embed_s = time.perf_counter() - started
    # index.json holds no timings: the same model on the same data gives the same folder (and DVC hash)
    meta = write_catalogue(
        out_dir, item_ids,
        {"dataset": name, "query_instruction": ds.query_instruction, "target_instruction": ds.target_instruction,
         "modality": "omni", "model_hash": model_hash},
        kind=cfg.index.kind, titles=[inputs.item(i).fields.get("title") or "" for i in item_ids],
        nlist=cfg.index.nlist, nprobe=cfg.index.nprobe, hnsw_m=cfg.index.hnsw_m, ef_search=cfg.index.ef_search)
    return {**meta, "embed_seconds": round(embed_s, 3),
            "build_seconds": round(time.perf_counter() - started - embed_s, 3)}
