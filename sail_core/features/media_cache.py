"""Frozen-encoder features of a data folder's media: computed once, cached on disk and in memory.

The demo's vision tower (EfficientNet-Lite0) and speech encoder
(speech_embedding) are frozen, so their output is a function of the media file
alone. Training and evaluation (trained model *and* baseline) therefore read
features from this cache instead of running the towers every step.

A cache folder holds::

    image.npy    (N, C, h, w) float16   one row per cover/keyframe file
    audio.npy    (M, 96) float16        one row per WAV file
    index.json   {"signature": {...}, "image": {relpath: [row, size, md5]}, "audio": {...}}
    efficientnet_lite0_<size>.onnx      the tower exported once for onnxruntime

Rows are keyed by the path relative to the data folder plus the file's size and
content hash: a changed file is recomputed, an unchanged one reused, also when
the data folder is a fresh copy (a run workspace pulls its data into a new
folder; the cache folder is named by the content of ``items.parquet``). The
``signature`` (tower, image size, audio chunking) invalidates everything when
the encoders change. The vision tower runs in onnxruntime (about 4x faster than
eager PyTorch on CPU for this depthwise-conv network); its first batch is
checked against :func:`sail_core.model.vision.encode_images` and the PyTorch
path is used instead if they disagree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)
INDEX = "index.json"
_MEMORY: dict[tuple[str, str], "MediaFeatures"] = {}


def default_cache_dir(data_dir: str | os.PathLike) -> Path:
    """``$SAIL_HOME/features/<hash of the data folder's items.parquet>`` (of its absolute path when it has none):
    copies of the same data share one cache, wherever they are."""
    from sail_core.paths import sail_home

    items = Path(data_dir) / "items.parquet"
    key = items.read_bytes() if items.is_file() else str(Path(data_dir).resolve()).encode()
    return sail_home() / "features" / hashlib.sha1(key).hexdigest()[:16]


@dataclass
class MediaFeatures:
    """Read-only lookup: relative media path -> float32 feature array."""

    image_rows: dict[str, int] = field(default_factory=dict)
    image_array: np.ndarray | None = None
    audio_rows: dict[str, int] = field(default_factory=dict)
    audio_array: np.ndarray | None = None

    def _get(self, rows: dict[str, int], array: np.ndarray | None, rel: str, kind: str) -> np.ndarray:
        if rel not in rows or array is None:
            raise KeyError(f"no cached {kind} features for {rel!r}; build the cache with load_media_features "
                           "listing every media file of the data folder")
        return np.asarray(array[rows[rel]], dtype=np.float32)

    def image(self, rel: str) -> np.ndarray:
        return self._get(self.image_rows, self.image_array, rel, "image")

    def images(self, rels: list[str]) -> np.ndarray:
        return np.stack([self.image(r) for r in rels])

    def audio(self, rel: str) -> np.ndarray:
        return self._get(self.audio_rows, self.audio_array, rel, "audio")


def _stat(data_dir: Path, rel: str) -> list:
    """The file's size and content hash: what a cached row is valid for."""
    path = data_dir / rel
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"media file {path} (listed in items.parquet) does not exist; rebuild or "
                                "re-validate the data folder") from None
    return [len(content), hashlib.md5(content).hexdigest()]


def _onnx_tower(cache_dir: Path, image_size: int, threads: int):
    """An onnxruntime session of the frozen EfficientNet-Lite0 feature extractor (exported once)."""
    import onnxruntime as ort
    import torch

    from sail_core.model.vision import EfficientNetLite0Tower

    path = cache_dir / f"efficientnet_lite0_{image_size}.onnx"
    tower = EfficientNetLite0Tower(frozen=True)
    if not path.exists():
        class _Features(torch.nn.Module):
            def __init__(self, t):
                super().__init__()
                self.t = t

            def forward(self, x):
                return self.t.net.extract_features(x)

        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Features(tower).eval(), (torch.zeros(2, 3, image_size, image_size),), str(tmp),
                              input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
        os.replace(tmp, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), tower


def _image_features(data_dir: Path, rels: list[str], cache_dir: Path, image_size: int, progress: bool,
                    threads: int, batch_size: int = 32) -> np.ndarray:
    from sail_core.model.vision import encode_images
    from sail_core.preprocess.image import load_image

    session, tower = _onnx_tower(cache_dir, image_size, threads)
    out: list[np.ndarray] = []
    starts = range(0, len(rels), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"image features ({len(rels)} files)", unit="batch", mininterval=2.0)
    for s in starts:
        paths = [data_dir / r for r in rels[s : s + batch_size]]
        pix = np.stack([load_image(p, image_size) for p in paths])
        feats = session.run(None, {"pixels": pix})[0] if session is not None else None
        if s == 0:  # parity with the PyTorch tower, once
            ref = encode_images(paths[:2], tower, image_size)
            if feats is None or not np.allclose(feats[:2], ref, atol=1e-3, rtol=1e-3):
                LOG.warning("onnxruntime EfficientNet features differ from PyTorch's; using PyTorch (slower)")
                session = None
        if session is None:
            feats = encode_images(paths, tower, image_size)
        out.append(feats.astype(np.float16))
    return np.concatenate(out)


def _audio_features(data_dir: Path, rels: list[str], chunk_seconds: float, progress: bool, threads: int) -> np.ndarray:
    from sail_core.preprocess.audio import SpeechEmbedder

    embedder = SpeechEmbedder(threads=threads, chunk_seconds=chunk_seconds)
    out = np.zeros((len(rels), 96), dtype=np.float16)
    it = range(0, len(rels), 16)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"audio features ({len(rels)} files)", unit="batch", mininterval=2.0)
    for s in it:
        out[s : s + 16] = embedder.embed_files([data_dir / r for r in rels[s : s + 16]])
    return out


def _write_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _update(kind: str, data_dir: Path, cache_dir: Path, rels: list[str], old_index: dict, compute) -> tuple[dict, np.ndarray | None]:
    """Reuse unchanged rows of ``<kind>.npy``, compute the rest, write the new array + index entries."""
    rels = list(dict.fromkeys(rels))
    stats = {r: _stat(data_dir, r) for r in rels}
    old = old_index.get(kind, {})
    old_path = cache_dir / f"{kind}.npy"
    old_array = np.load(old_path, mmap_mode="r") if old and old_path.exists() else None
    reuse = [r for r in rels if old_array is not None and r in old and old[r][1:] == stats[r]]
    fresh = [r for r in rels if r not in set(reuse)]
    if not rels:
        return {}, None
    if not fresh and len(reuse) == len(old):
        return {r: [old[r][0], *stats[r]] for r in rels}, old_array
    new = compute(fresh) if fresh else None
    parts = ([np.asarray(old_array[[old[r][0] for r in reuse]])] if reuse else []) + ([new] if new is not None else [])
    array = np.concatenate(parts)
    _write_array(old_path, array)
    index = {r: [i, *stats[r]] for i, r in enumerate(reuse + fresh)}
    return index, np.load(old_path, mmap_mode="r")


def load_media_features(
    data_dir: str | os.PathLike,
    images: list[str],
    audios: list[str],
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 224,
    chunk_seconds: float = 10.0,
    progress: bool = True,
    threads: int | None = None,
) -> MediaFeatures:
    """Features of every listed media file (paths relative to ``data_dir``), computing only what is new.

    The result is also kept in memory for the process, so evaluating the trained
    model and the baseline (or several stages) computes and reads features once.
    ``threads``: onnxruntime threads of the frozen towers (``train.feature_threads``);
    None = torch's thread count.
    """
    data_dir = Path(data_dir)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(data_dir)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    signature = {"vision": "efficientnet_lite0", "image_size": int(image_size),
                 "audio": "speech_embedding", "chunk_seconds": float(chunk_seconds)}
    mem_key = (str(cache_dir.resolve()), json.dumps(signature, sort_keys=True))
    cached = _MEMORY.get(mem_key)
    if cached is not None and all(r in cached.image_rows for r in images) and all(r in cached.audio_rows for r in audios):
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if index.get("signature") != signature:
        index = {}
    image_index, image_array = _update(
        "image", data_dir, cache_dir, images, index,
        lambda rels: _image_features(data_dir, rels, cache_dir, image_size, progress, threads))
    audio_index, audio_array = _update(
        "audio", data_dir, cache_dir, audios, index,
        lambda rels: _audio_features(data_dir, rels, chunk_seconds, progress, threads))
    tmp = index_path.with_name(f".{INDEX}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"signature": signature, "image": image_index, "audio": audio_index}))
    os.replace(tmp, index_path)
    feats = MediaFeatures({r: v[0] for r, v in image_index.items()}, image_array,
                          {r: v[0] for r, v in audio_index.items()}, audio_array)
    _MEMORY[mem_key] = feats
    return feats
