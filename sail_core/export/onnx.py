"""ONNX export of the embedder, with a PyTorch parity check per modality combination.

The export folder holds everything the Triton python backend needs; its files and
``export.json`` are described by :mod:`sail_core.preprocess.export_format`
(encoder inputs: :mod:`sail_core.preprocess.feeds`).

Exporter: the TorchScript exporter (``dynamo=False``)
on :class:`sail_core.export.graph.OmniEncoderGraph` (no data-dependent
control flow). Measured here (torch 2.13, 2 CPUs, demo profile): about 4 s for
the encoder, under 2 s for EfficientNet-Lite0, max abs diff to PyTorch ~2e-7.

Parity: for each combination in :data:`COMBINATIONS` (two rows each, the
second with fewer keyframes), and for all of them in one mixed batch, PyTorch
``model(batch)`` (one batch of every row) on its own frozen tower's features of the decoded PNG/JPEG
images (computed once, as the training feature cache does) is compared with
the serving path, ``vision_encoder.onnx`` -> ``model.onnx`` on the pixels; the
tower itself is compared on its features. Speech vectors come from WAV bytes.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sail_core.export.graph import ENCODER_INPUTS, OmniEncoderGraph, VisionFeatures
from sail_core.model.assembly import OmniSample, collate
from sail_core.preprocess.audio import SpeechEmbedder, read_wav, speech_model_paths
from sail_core.preprocess.image import load_image
from sail_core.preprocess.instructions import instruction_tables, resolve_instruction
from sail_core.preprocess import samples
from sail_core.preprocess.export_format import (
    ONNX_FILE,
    OUTPUT_NAME,
    SPEECH_FILES,
    TOKENIZER_FILE,
    VISION_FILE,
    ExportMeta,
)
from sail_core.preprocess.feeds import encoder_feeds

PARITY_TOLERANCE = 1e-4
# Keys are MLflow-safe metric-name parts (the pipeline logs export.parity.<key>).
COMBINATIONS = {
    "text": ("text",),
    "image": ("image",),
    "frames": ("frames",),
    "audio": ("audio",),
    "text_image": ("text", "image"),
    "omni": ("text", "image", "frames", "audio"),
}


class ExportParityError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch embeddings."""


def onnx_session(path: Path):
    """A CPU onnxruntime session with warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _axes() -> dict:
    axes = {name: {0: "batch"} for name in ENCODER_INPUTS}
    for name in ("instr_ids", "instr_mask"):
        axes[name][1] = "instr_length"
    for name in ("text_ids", "text_mask"):
        axes[name][1] = "text_length"
    for name in ("frame_feats", "frame_mask"):
        axes[name][1] = "frames"
    axes[OUTPUT_NAME] = {0: "batch"}
    return axes


def _export(module, args: tuple, path: Path, inputs: list[str], output: str, axes: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about python-side shape checks
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[output], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


class _Media:
    """Decoded parity media: two covers and K keyframes (pixels, and the PyTorch tower's features of
    them, computed once), and two speech vectors from WAV bytes."""

    def __init__(self, model, speech: SpeechEmbedder):
        size, self.keyframes = model.cfg.vision.image_size, model.cfg.inputs.keyframes
        shapes = [(160, 120), (96, 144), (224, 224), (300, 200)]
        files = [samples.image_bytes(s, shapes[s % 4], "PNG" if s % 2 else "JPEG") for s in range(2 + self.keyframes)]
        self.pixels = [load_image(f, size) for f in files]
        with torch.no_grad():
            self.feats = list(model.vision_tower.features(torch.from_numpy(np.stack(self.pixels))).numpy())
        self.audio = [speech(*read_wav(samples.wav_bytes(s, seconds=1.0 + s))) for s in range(2)]

    def rows(self, combo: tuple[str, ...], table: dict, defaults: dict, kind: str) -> list[OmniSample]:
        """Two rows of ``combo``; the second has fewer keyframes, in another order. ``kind``: pixels | feats."""
        images = self.pixels if kind == "pixels" else self.feats
        k = self.keyframes
        shots = [list(range(2, 2 + k)), list(range(2 + k - 1, 2, -1))[: max(1, k - 2)]]
        media = bool({"image", "frames", "audio"} & set(combo))
        return [OmniSample(
            instruction=resolve_instruction(table, defaults, None, None, media),
            text=samples.TEXTS[r + 1 if "image" in combo else r] if "text" in combo else None,
            audio=self.audio[r] if "audio" in combo else None,
            cover=images[r] if "image" in combo else None,
            frames=np.stack([images[j] for j in shots[r]]) if "frames" in combo and k else None,
        ) for r in range(2)]


def _onnx_embed(rows: list[OmniSample], tokenizer, vision, encoder, audio_dim: int, shape: list[int]) -> np.ndarray:
    """The serving path on decoded rows: vision_encoder.onnx on every image, then model.onnx."""
    images = [r.cover for r in rows if r.cover is not None] + [f for r in rows if r.frames is not None for f in r.frames]
    feats = vision.run(None, {"pixels": np.stack(images)})[0] if images else None
    cover, frames, i = [], [], 0
    for r in rows:
        cover.append(feats[i] if r.cover is not None else None)
        i += r.cover is not None
    for r in rows:
        frames.append(feats[i : i + len(r.frames)] if r.frames is not None else None)
        i += len(r.frames) if r.frames is not None else 0
    feeds = encoder_feeds(tokenizer, [r.instruction for r in rows], [r.text for r in rows], [r.audio for r in rows],
                          cover, frames, audio_dim, shape)
    return encoder.run([OUTPUT_NAME], feeds)[0]


def parity_check(model, out_dir: Path, table: dict, defaults: dict) -> tuple[dict, float]:
    """Max abs diff PyTorch vs ONNX per combination (plus ``mixed``: all rows in one batch), and the
    vision tower's max abs diff relative to its largest feature."""
    tokenizer = model.tokenizer
    vision, encoder = onnx_session(out_dir / VISION_FILE), onnx_session(out_dir / ONNX_FILE)
    speech = SpeechEmbedder(chunk_seconds=model.cfg.audio.chunk_seconds, models=tuple(out_dir / f for f in SPEECH_FILES))
    model.eval()
    media = _Media(model, speech)
    feature_shape = _feature_shape(model)
    # PyTorch runs once on every row (a row's embedding does not depend on its batch: tests/test_model_omni.py);
    # the serving path runs each combination as its own batch, then all of them as one mixed batch.
    torch_rows = [r for c in COMBINATIONS.values() for r in media.rows(c, table, defaults, "feats")]
    with torch.no_grad():
        want_all = model(collate(torch_rows, tokenizer, vision="features")).numpy()
    parity, start = {}, 0
    for name, combo in [*COMBINATIONS.items(), ("mixed", None)]:
        combos = list(COMBINATIONS.values()) if combo is None else [combo]
        rows = [r for c in combos for r in media.rows(c, table, defaults, "pixels")]
        want = want_all if combo is None else want_all[start : start + len(rows)]
        start += 0 if combo is None else len(rows)
        got = _onnx_embed(rows, tokenizer, vision, encoder, model.audio.in_dim, feature_shape)
        if got.shape != want.shape:
            raise ExportParityError(f"ONNX output shape {got.shape} != PyTorch {want.shape} for {name!r} rows")
        parity[name] = float(np.abs(got - want).max())
    want = np.stack(media.feats)
    got = vision.run(None, {"pixels": np.stack(media.pixels)})[0]
    if got.shape[1:] != tuple(feature_shape):
        raise ExportParityError(f"{VISION_FILE} gives features {got.shape[1:]}, expected {feature_shape}")
    # features are not normalised (values up to ~10): relative to their largest magnitude
    return parity, float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


def _feature_shape(model) -> list[int]:
    s = model.cfg.vision.image_size
    with torch.no_grad():
        return list(model.vision_tower.features(torch.zeros(1, 3, s, s)).shape[1:])


def _check_exportable(model) -> None:
    from sail_core.config import exportable

    if why := exportable(model.cfg):
        raise ValueError(f"export_onnx cannot export this model: {why}")
    if getattr(model.vision_tower, "frozen", False) is not True:
        raise ValueError("export_onnx needs a frozen vision tower (model.vision.frozen: true): the vision "
                         "encoder is exported on its own and run before the encoder graph")


def _trace_feeds(model, feature_shape: list[int]) -> tuple:
    """Two rows with every modality, different text lengths and keyframe counts: every axis stays symbolic."""
    rng = np.random.default_rng(0)
    feeds = encoder_feeds(
        model.tokenizer, ["Represent this movie for retrieval.", "q"], ["a short one", None],
        [rng.normal(size=model.audio.in_dim), None], [rng.normal(size=feature_shape), None],
        [rng.normal(size=(2, *feature_shape)), rng.normal(size=(1, *feature_shape))], model.audio.in_dim, feature_shape)
    return tuple(torch.from_numpy(np.asarray(feeds[name])) for name in ENCODER_INPUTS)


def export_onnx(model, out_dir: str | Path, datasets: dict | None = None, opset: int = 18,
                tolerance: float = PARITY_TOLERANCE) -> dict:
    """Export ``model`` (an :class:`OmniEmbedder`) to ``out_dir`` and check parity per modality combination.

    ``datasets`` (``cfg.datasets``) gives the instructions written to export.json;
    default: those of the current ``params.yaml``. Returns ``{"onnx_path",
    "vision_path", "max_abs_diff", "parity", "vision_max_rel_diff", "parity_ok",
    "export_seconds", "out_dir"}``. Raises :class:`ExportParityError` when any
    difference exceeds ``tolerance`` (files stay on disk; export.json records it).
    """
    _check_exportable(model)
    if datasets is None:
        from sail_core.config import load_config

        datasets = load_config().datasets
    table, defaults = instruction_tables(datasets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    size = model.cfg.vision.image_size
    feature_shape = _feature_shape(model)
    started = time.perf_counter()
    _export(OmniEncoderGraph(model).eval(), _trace_feeds(model, feature_shape), out_dir / ONNX_FILE, ENCODER_INPUTS,
            OUTPUT_NAME, _axes(), opset)
    encoder_seconds = time.perf_counter() - started
    _export(VisionFeatures(model.vision_tower).eval(), (torch.zeros(2, 3, size, size),), out_dir / VISION_FILE,
            ["pixels"], "features", {"pixels": {0: "images"}, "features": {0: "images"}}, opset)
    export_seconds = time.perf_counter() - started
    shutil.copy(model.tokenizer_file, out_dir / TOKENIZER_FILE)
    for src, name in zip(speech_model_paths(), SPEECH_FILES):
        shutil.copy(src, out_dir / name)
    started = time.perf_counter()
    parity, vision_diff = parity_check(model, out_dir, table, defaults)
    parity_seconds = time.perf_counter() - started
    model.train(was_training)
    worst = max(parity.values())
    cfg = model.cfg
    meta = ExportMeta(
        inputs=list(ENCODER_INPUTS),
        backbone=cfg.backbone,
        vision_encoder=cfg.vision.encoder,
        audio_encoder=cfg.audio.encoder,
        hidden_size=model.dim,
        max_length=cfg.max_length,
        max_instruction_length=cfg.inputs.max_instruction_length,
        matryoshka_dims=list(cfg.matryoshka_dims),
        image_size=size,
        vision_feature_shape=feature_shape,
        keyframes=cfg.inputs.keyframes,
        max_frames=cfg.perceiver.max_frames,
        audio_dim=int(model.audio.in_dim),
        audio_chunk_seconds=cfg.audio.chunk_seconds,
        instructions=table,
        instruction_defaults=defaults,
        opset=opset,
        exporter="torch.onnx (TorchScript, dynamo=False)",
        torch_version=torch.__version__,
        parity=parity,
        vision_max_rel_diff=vision_diff,
        max_abs_diff=worst,
        parity_tolerance=tolerance,
        parity_ok=worst <= tolerance and vision_diff <= tolerance,
        export_seconds=round(export_seconds, 3),
        encoder_export_seconds=round(encoder_seconds, 3),
        parity_seconds=round(parity_seconds, 3),
    )
    meta.write(out_dir)
    if not meta.parity_ok:
        bad = {k: f"{v:.3g}" for k, v in {**parity, "vision": vision_diff}.items() if v > tolerance}
        raise ExportParityError(
            f"ONNX export in {out_dir} differs from PyTorch by up to {worst:.3g} (tolerance {tolerance:g}) for {bad}; "
            "the graph is not safe to serve. Check sail_core/export/graph.py against OmniEmbedder.forward, "
            "or try another opset (export_onnx(..., opset=17))."
        )
    return {"onnx_path": str(out_dir / ONNX_FILE), "vision_path": str(out_dir / VISION_FILE), "max_abs_diff": worst,
            "parity": parity, "vision_max_rel_diff": vision_diff, "parity_ok": True,
            "export_seconds": round(export_seconds, 3), "out_dir": str(out_dir)}
