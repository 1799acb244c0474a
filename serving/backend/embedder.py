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

:class:`Limits` (``serve.limits`` in ``params.yaml``; Triton passes them as the
model config's parameters) bound what one request may hold; each is checked
before anything is decoded: text length, image bytes and declared pixels (from
the PNG/JPEG header), WAV seconds (from its header), FRAMES entries per row and
rows per request. A refusal names the entry, the value, the limit and its key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sail_core.preprocess.audio import AudioTooLong, SpeechEmbedder, read_wav
from sail_core.preprocess.export_format import read_export_meta
from sail_core.preprocess.image import ImageTooLarge, keyframe_indices, load_image
from sail_core.preprocess.instructions import resolve_instruction
from sail_core.preprocess.feeds import encoder_feeds
from sail_core.preprocess.segments import SegmentTokenizer

NORM_EPS = 1e-12  # the same clamp as torch.nn.functional.normalize
VISION_BATCH = 4  # images per vision call: on CPUs, batches above 4 ran slower per image (bench/README.md)
MODALITY_INPUTS = ("TEXT", "IMAGE", "FRAMES", "AUDIO")


def truncate_normalise(z: np.ndarray, dim: int) -> np.ndarray:
    """Keep the first ``dim`` components of each row and re-normalise (Matryoshka)."""
    head = np.asarray(z[:, :dim], dtype=np.float32)
    return (head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), NORM_EPS)).astype(np.float32)


@dataclass(frozen=True)
class Limits:
    """What one request may hold (``serve.limits``; the same fields and defaults as
    ``sail_core.config.schema.ServeLimits``, which Triton's python runtime cannot import).
    ``max_rows`` None: no row limit (in process; Triton gets ``serve.max_batch_size``)."""

    max_text_chars: int = 20_000
    max_image_bytes: int = 10_000_000
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 120.0
    max_frames: int = 32
    max_rows: int | None = None

    @classmethod
    def from_mapping(cls, values: Mapping) -> "Limits":
        """From ``serve.limits`` values or the model config's string parameters; absent keys keep their default,
        a value that is not a positive number is refused naming its key."""
        out = {}
        for f in fields(cls):
            raw = values.get(f.name)
            if raw is None or raw == "":
                continue
            kind = float if f.name == "max_audio_seconds" else int
            try:
                value = kind(raw)
            except (TypeError, ValueError):
                raise ValueError(f"serve.limits.{f.name} = {raw!r} is not a number; set a positive "
                                 f"{kind.__name__} in params.yaml and promote again") from None
            if value <= 0:
                raise ValueError(f"serve.limits.{f.name} = {raw!r} must be positive; fix it in params.yaml "
                                 "and promote again")
            out[f.name] = value
        return cls(**out)

    def refuse(self, where: str, what: str, key: str, fix: str) -> ValueError:
        """The error for a limit exceeded: the entry, its value, the limit, the key that raises it, the fix."""
        return ValueError(f"{where} {what}, above the limit serve.limits.{key} = {getattr(self, key):,}; {fix}, "
                          f"or raise serve.limits.{key} in params.yaml (then promote again)")


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


def _session(path: Path, providers: list[str], threads: int, device_id: int, inter_op_threads: int = 0,
             allow_spinning: bool = True):
    """An onnxruntime session with the configured threads (``serve.intra_op_threads`` etc.; 0 = onnxruntime's
    default). Spinning off: idle pool threads sleep instead of busy-waiting, which matters on shared cores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    if inter_op_threads:
        opts.inter_op_num_threads = int(inter_op_threads)
    if not allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
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
                 device_id: int = 0, limits: Limits | Mapping | None = None, inter_op_threads: int = 0,
                 allow_spinning: bool = True, encoder_batch: int = 0, vision_batch: int = VISION_BATCH):
        """``limits``: a :class:`Limits`, or ``serve.limits`` values (``ServeConfig.limit_values()``); None = defaults.
        The other keywords are ``ServeConfig.backend_settings()``: onnxruntime threads and spinning,
        ``encoder_batch`` (rows per encoder call after sorting by text length; 0 = one call) and
        ``vision_batch`` (images per vision call)."""
        self.encoder_batch = int(encoder_batch)
        self.vision_batch = int(vision_batch)
        model_dir = Path(model_dir)
        self.limits = limits if isinstance(limits, Limits) else Limits.from_mapping(limits or {})
        self.meta = m = read_export_meta(model_dir)
        self.hidden_size = int(m.hidden_size)
        self.dims = [int(d) for d in m.matryoshka_dims]
        self.image_size = int(m.image_size)
        self.keyframes = int(m.keyframes)
        self.feature_shape = [int(s) for s in m.vision_feature_shape]
        self.audio_dim = int(m.audio_dim)
        self.tokenizer = SegmentTokenizer(model_dir / m.tokenizer_file, int(m.max_length), int(m.max_instruction_length))
        providers = providers or ["CPUExecutionProvider"]
        threads = (intra_op_threads, device_id, inter_op_threads, allow_spinning)
        self.encoder = _session(model_dir / m.onnx_file, providers, *threads)
        self.vision = _session(model_dir / m.vision_file, providers, *threads)
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
    def _check_image_bytes(self, data, where: str) -> None:
        """Refuse an image entry (bytes or a ``Path``, not read) above ``limits.max_image_bytes``."""
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if size > self.limits.max_image_bytes:
            raise self.limits.refuse(where, f"is {size:,} bytes", "max_image_bytes",
                                     "send a smaller image (JPEG or PNG)")

    def _image(self, data, where: str) -> np.ndarray:
        self._check_image_bytes(data, where)
        try:
            return load_image(_read_path_or_bytes(data), self.image_size, max_pixels=self.limits.max_image_pixels)
        except ImageTooLarge as err:
            raise self.limits.refuse(where, f"declares {err.width} x {err.height} = {err.width * err.height:,} pixels",
                                     "max_image_pixels", f"resize it (the model sees {self.image_size} x "
                                     f"{self.image_size} pixels)") from None
        except ValueError as err:
            raise ValueError(f"{where}: {_tidy(err)}") from None

    def _audio(self, data, where: str) -> np.ndarray:
        try:
            samples, rate = read_wav(data, max_seconds=self.limits.max_audio_seconds)  # a path: read after its header
        except AudioTooLong as err:
            raise self.limits.refuse(where, f"lasts {err.seconds:,.1f} s ({err.frames:,} frames at {err.rate} Hz)",
                                     "max_audio_seconds", "cut the clip") from None
        except ValueError as err:
            raise ValueError(f"{where}: {_tidy(err)}") from None
        if samples.size == 0:
            raise ValueError(f"{where}: the WAV holds no samples (0 frames); send a clip with sound, or leave AUDIO "
                             "empty (b\"\") for a row without audio")
        try:
            return self.speech(samples, rate)
        except ValueError as err:
            raise ValueError(f"{where}: {_tidy(err)}") from None

    def _check_text(self, text: str, where: str) -> str:
        if len(text) > self.limits.max_text_chars:
            raise self.limits.refuse(where, f"has {len(text):,} characters", "max_text_chars",
                                     f"shorten it (the model reads its first {self.tokenizer.max_text_length} tokens)")
        return text

    def _shots(self, row_frames, i: int) -> list:
        """The row's keyframes to decode: all present entries up to ``limits.max_frames``, subsampled uniformly to
        the model's ``keyframes``; more entries than the limit are refused."""
        shots = [(j, f) for j, f in enumerate(row_frames or []) if _present(f)]  # (position in the row, bytes)
        if len(shots) > self.limits.max_frames:
            raise self.limits.refuse(f"FRAMES[{i}]", f"has {len(shots):,} keyframes", "max_frames",
                                     f"send at most {self.limits.max_frames} per row (the model samples "
                                     f"{self.keyframes} of them uniformly over time)")
        for j, f in shots:  # every entry's size before any is decoded
            self._check_image_bytes(f, f"FRAMES[{i}][{j}]")
        return [shots[k] for k in keyframe_indices(len(shots), self.keyframes)]

    def decode(self, texts: Sequence | None = None, images: Sequence | None = None,
               frames: Sequence[Sequence] | None = None, audios: Sequence | None = None,
               tasks: Sequence | None = None, sides: Sequence | None = None) -> list[Row]:
        """Rows from column-wise inputs (one entry per row, ``None``/empty = absent); ValueError names the bad entry.

        Every limit is checked before anything is decoded; then rows are decoded in order.
        """
        given = {n: v for n, v in zip(MODALITY_INPUTS, (texts, images, frames, audios)) if v is not None}
        if not given:
            raise ValueError("the request has no TEXT, IMAGE, FRAMES or AUDIO: send at least one modality")
        n = len(next(iter(given.values())))
        if n == 0:
            raise ValueError("the request has no rows: send at least one input")
        if self.limits.max_rows is not None and n > self.limits.max_rows:
            raise self.limits.refuse("the request", f"has {n:,} rows", "max_rows",
                                     f"split it into requests of at most {self.limits.max_rows} rows "
                                     "(serving.client.embed does)")
        texts, images = _column(texts, n, "TEXT"), _column(images, n, "IMAGE")
        frames, audios = _column(frames, n, "FRAMES"), _column(audios, n, "AUDIO")
        tasks, sides = _column(tasks, n, "TASK"), _column(sides, n, "SIDE")
        texts = [self._check_text(str(t), f"TEXT[{i}]") if _present(t) else None for i, t in enumerate(texts)]
        for i, image in enumerate(images):
            if _present(image):
                self._check_image_bytes(image, f"IMAGE[{i}]")
        shots = [self._shots(frames[i], i) for i in range(n)]
        rows = []
        for i in range(n):
            text, image, audio = texts[i], images[i], audios[i]
            if text is None and not _present(image) and not shots[i] and not _present(audio):
                raise ValueError(f"row {i} is empty: its TEXT, IMAGE, FRAMES and AUDIO are all missing or empty; "
                                 "send at least one modality per row")
            has_media = _present(image) or bool(shots[i]) or _present(audio)
            rows.append(Row(
                instruction=resolve_instruction(self.meta.instructions, self.meta.instruction_defaults,
                                                tasks[i], sides[i], has_media),
                text=text,
                cover=self._image(image, f"IMAGE[{i}]") if _present(image) else None,
                frames=np.stack([self._image(f, f"FRAMES[{i}][{j}]") for j, f in shots[i]]) if shots[i] else None,
                audio=self._audio(audio, f"AUDIO[{i}]") if _present(audio) else None,
            ))
        return rows

    # -- inference --------------------------------------------------------------------------
    def _features(self, pixels: list[np.ndarray]) -> np.ndarray:
        step = self.vision_batch
        out = [self.vision.run(None, {"pixels": np.stack(pixels[s : s + step]).astype(np.float32)})[0]
               for s in range(0, len(pixels), step)]
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
        chunk = self.encoder_batch
        if not chunk or len(rows) <= chunk:
            return self._encode(rows, cover, frames)
        # Sorted by text length, chunks pad to their own longest text rather than the batch's.
        order = sorted(range(len(rows)), key=lambda j: len(rows[j].text or ""))
        out = np.empty((len(rows), self.hidden_size), dtype=np.float32)
        for s in range(0, len(order), chunk):
            part = order[s : s + chunk]
            out[part] = self._encode([rows[j] for j in part], [cover[j] for j in part], [frames[j] for j in part])
        return out

    def _encode(self, rows: list[Row], cover: list, frames: list) -> np.ndarray:
        """One ``model.onnx`` call for ``rows`` and their vision features."""
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
