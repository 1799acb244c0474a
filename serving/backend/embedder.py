"""onnxruntime embedder (no torch): raw text, image bytes, keyframe bytes and WAV bytes -> embeddings.

Runs inside Triton's python backend (copied next to ``model.py``) and
in-process as the parity reference (``serving.backend.embedder``), so
both sides run one code. Preprocessing is the training code,
``sail_core/preprocess/`` (copied into each version folder):

- text: the raw string; the row is wrapped in its task instruction
  (:mod:`sail_core.preprocess.instructions`: TASK/SIDE, defaults: query side
  for text-only rows, target side for rows with media) and tokenised by
  :class:`SegmentTokenizer`;
- IMAGE (the cover) and FRAMES (keyframes, in time order): JPEG/PNG bytes,
  decoded, short side resized, centre-cropped and scaled to [-1, 1]
  (:func:`load_image`), then ``vision_encoder.onnx`` -> (1280, 7, 7) features;
  more keyframes than ``export.json``'s ``keyframes`` are subsampled uniformly
  (:func:`keyframe_indices`, the centre of each segment, as in evaluation);
- AUDIO: PCM WAV bytes (any rate, mono or stereo) -> :class:`SpeechEmbedder`
  (the export's copies of the speech ONNX models) -> one 96-d vector;
- then ``model.onnx`` (feeds from :func:`encoder_feeds`), L2-normalised, and
  Matryoshka truncation + re-normalisation in numpy.

An absent modality of a row is ``None`` or empty (``""`` / ``b""``); a row
with nothing at all is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sail_core.preprocess.audio import SpeechEmbedder, read_wav
from sail_core.preprocess.export_format import read_export_meta
from sail_core.preprocess.image import keyframe_indices, load_image
from sail_core.preprocess.instructions import resolve_instruction
from sail_core.preprocess.feeds import encoder_feeds
from sail_core.preprocess.segments import SegmentTokenizer

NORM_EPS = 1e-12  # the same clamp as torch.nn.functional.normalize
VISION_BATCH = 32
MODALITY_INPUTS = ("TEXT", "IMAGE", "FRAMES", "AUDIO")


def truncate_normalise(z: np.ndarray, dim: int) -> np.ndarray:
    """Keep the first ``dim`` components of each row and re-normalise (Matryoshka)."""
    head = np.asarray(z[:, :dim], dtype=np.float32)
    return (head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), NORM_EPS)).astype(np.float32)


@dataclass
class Row:
    """One decoded input: instruction string, text, cover pixels (3,S,S), keyframe pixels (k,3,S,S), audio (96,)."""

    instruction: str
    text: str | None = None
    cover: np.ndarray | None = None
    frames: np.ndarray | None = None
    audio: np.ndarray | None = None


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        return len(value) > 0
    if isinstance(value, str):
        return bool(value.strip())
    return True


def _column(values: Sequence | None, n: int, name: str) -> list:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} rows but the request has {n}; send one entry per row "
                         "(empty for an absent modality)")
    return values


def _session(path: Path, providers: list[str], threads: int, device_id: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    options = [{"device_id": device_id} if p == "CUDAExecutionProvider" else {} for p in providers]
    return ort.InferenceSession(str(path), opts, providers=providers, provider_options=options)


def _tidy(err: Exception) -> str:
    """A decoder's message without object reprs and empty parentheses."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", " the bytes", str(err))
    return text.replace(" ()", " (truncated or not a RIFF/WAVE file)")


def _read_path_or_bytes(value):
    """Paths (str/Path) of existing files are read; bytes pass through."""
    if isinstance(value, Path):
        return value.read_bytes()
    return value


class OnnxEmbedder:
    """Decode, run ``vision_encoder.onnx`` and ``model.onnx``, truncate to a Matryoshka dim.

    ``model_dir`` is an export folder (:mod:`sail_core.preprocess.export_format`).
    """

    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 device_id: int = 0):
        model_dir = Path(model_dir)
        self.meta = m = read_export_meta(model_dir)
        self.hidden_size = int(m.hidden_size)
        self.dims = [int(d) for d in m.matryoshka_dims]
        self.image_size = int(m.image_size)
        self.keyframes = int(m.keyframes)
        self.feature_shape = [int(s) for s in m.vision_feature_shape]
        self.audio_dim = int(m.audio_dim)
        self.tokenizer = SegmentTokenizer(model_dir / m.tokenizer_file, int(m.max_length), int(m.max_instruction_length))
        providers = providers or ["CPUExecutionProvider"]
        self.encoder = _session(model_dir / m.onnx_file, providers, intra_op_threads, device_id)
        self.vision = _session(model_dir / m.vision_file, providers, intra_op_threads, device_id)
        mel, emb = (model_dir / f for f in m.speech_files)
        self.speech = SpeechEmbedder(threads=1, chunk_seconds=float(m.audio_chunk_seconds), models=(mel, emb))

    # -- checks -----------------------------------------------------------------------------
    def check_dim(self, dim: int | None) -> int:
        """The output dim for a request: ``None`` means full size; anything else must be a Matryoshka dim."""
        if dim is None:
            return self.hidden_size
        dim = int(dim)
        if dim not in self.dims:
            raise ValueError(f"DIM={dim} is not a Matryoshka dim of this model; allowed dims: {self.dims}")
        return dim

    # -- decoding ---------------------------------------------------------------------------
    def _image(self, data, where: str) -> np.ndarray:
        try:
            return load_image(_read_path_or_bytes(data), self.image_size)
        except ValueError as err:
            raise ValueError(f"{where}: {_tidy(err)}") from None

    def _audio(self, data, where: str) -> np.ndarray:
        try:
            return self.speech(*read_wav(_read_path_or_bytes(data)))
        except ValueError as err:
            raise ValueError(f"{where}: {_tidy(err)}") from None

    def decode(self, texts: Sequence | None = None, images: Sequence | None = None,
               frames: Sequence[Sequence] | None = None, audios: Sequence | None = None,
               tasks: Sequence | None = None, sides: Sequence | None = None) -> list[Row]:
        """Rows from column-wise inputs (one entry per row, ``None``/empty = absent); ValueError names the bad entry."""
        given = {n: v for n, v in zip(MODALITY_INPUTS, (texts, images, frames, audios)) if v is not None}
        if not given:
            raise ValueError("the request has no TEXT, IMAGE, FRAMES or AUDIO: send at least one modality")
        n = len(next(iter(given.values())))
        if n == 0:
            raise ValueError("the request has no rows: send at least one input")
        texts, images = _column(texts, n, "TEXT"), _column(images, n, "IMAGE")
        frames, audios = _column(frames, n, "FRAMES"), _column(audios, n, "AUDIO")
        tasks, sides = _column(tasks, n, "TASK"), _column(sides, n, "SIDE")
        rows = []
        for i in range(n):
            text = str(texts[i]) if _present(texts[i]) else None
            shots = [f for f in (frames[i] or []) if _present(f)]
            if len(shots) > self.keyframes:
                shots = [shots[j] for j in keyframe_indices(len(shots), self.keyframes)]
            if text is None and not _present(images[i]) and not shots and not _present(audios[i]):
                raise ValueError(f"row {i} is empty: its TEXT, IMAGE, FRAMES and AUDIO are all missing or empty; "
                                 "send at least one modality per row")
            has_media = _present(images[i]) or bool(shots) or _present(audios[i])
            rows.append(Row(
                instruction=resolve_instruction(self.meta.instructions, self.meta.instruction_defaults,
                                                tasks[i], sides[i], has_media),
                text=text,
                cover=self._image(images[i], f"IMAGE[{i}]") if _present(images[i]) else None,
                frames=np.stack([self._image(f, f"FRAMES[{i}][{j}]") for j, f in enumerate(shots)]) if shots else None,
                audio=self._audio(audios[i], f"AUDIO[{i}]") if _present(audios[i]) else None,
            ))
        return rows

    # -- inference --------------------------------------------------------------------------
    def _features(self, pixels: list[np.ndarray]) -> np.ndarray:
        out = [self.vision.run(None, {"pixels": np.stack(pixels[s : s + VISION_BATCH]).astype(np.float32)})[0]
               for s in range(0, len(pixels), VISION_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, *self.feature_shape), dtype=np.float32)

    def embed_rows(self, rows: list[Row]) -> np.ndarray:
        """(N, hidden_size) float32, L2-normalised: one vision call for every image, one encoder call."""
        covers = [r.cover for r in rows if r.cover is not None]
        shots = [f for r in rows if r.frames is not None for f in r.frames]
        feats = self._features(covers + shots)
        cover, frames, i = [], [], 0
        for r in rows:
            cover.append(feats[i] if r.cover is not None else None)
            i += r.cover is not None
        for r in rows:
            k = 0 if r.frames is None else len(r.frames)
            frames.append(feats[i : i + k] if k else None)
            i += k
        feeds = encoder_feeds(self.tokenizer, [r.instruction for r in rows], [r.text for r in rows],
                              [r.audio for r in rows], cover, frames, self.audio_dim, self.feature_shape)
        return self.encoder.run([self.meta.output], feeds)[0].astype(np.float32)

    def embed(self, texts: Sequence | None = None, images: Sequence | None = None,
              frames: Sequence[Sequence] | None = None, audios: Sequence | None = None, dim: int | None = None,
              tasks: Sequence | None = None, sides: Sequence | None = None) -> np.ndarray:
        """(N, dim) float32, L2-normalised after truncation. Media are bytes or ``Path``s."""
        dim = self.check_dim(dim)
        z = self.embed_rows(self.decode(texts, images, frames, audios, tasks, sides))
        return z if dim == self.hidden_size else truncate_normalise(z, dim)
