"""The demo's spoken "ASR" track: the title and genres read by Debian's ``espeak-ng``.

Each item gets its own voice (accent, male/female variant, pitch and speed,
picked by a seeded generator), so the audio tower cannot match items by the
voice alone. ``espeak-ng`` writes 22.05 kHz 16-bit mono; we resample to the
16 kHz that the speech encoder takes (:mod:`sail_core.preprocess.audio`) and
write a 16-bit PCM WAV. The output is deterministic for a given text and voice.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sail_core.preprocess.audio import SAMPLE_RATE, resample

ESPEAK = "espeak-ng"
# English voices shipped with Debian's espeak-ng-data (no mbrola voices: they need extra packages)
ACCENTS = ("en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029")
VARIANTS = ("", "+m1", "+m3", "+m7", "+f1", "+f2", "+f3", "+f4")


class EspeakMissing(RuntimeError):
    """``espeak-ng`` is not installed."""


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: ``name`` (accent + variant), ``speed`` (words/min), ``pitch`` (0..99)."""

    name: str
    speed: int
    pitch: int


def pick_voice(rng: np.random.Generator) -> Voice:
    """A voice drawn from ``rng``: accent, variant, 140..190 words/min, pitch 25..75."""
    accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
    variant = VARIANTS[int(rng.integers(len(VARIANTS)))]
    return Voice(accent + variant, int(rng.integers(140, 191)), int(rng.integers(25, 76)))


def espeak_path() -> str:
    """The ``espeak-ng`` executable, or :class:`EspeakMissing` saying how to install it."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise EspeakMissing(
            "espeak-ng is not installed: the demo's spoken audio tracks need it. "
            "Install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu; `make install` does this), "
            "or build the demo without media (data.media: false)."
        )
    return path


def spoken_text(title: str, genres: list[str]) -> str:
    """What the track says: the title (``"Usual Suspects, The"`` read as ``"The Usual Suspects"``) and the genres."""
    title = str(title).strip()
    m = re.match(r"^(.*), (The|A|An|La|Le|Les|El|Il|Das|Der|Die)(\s*\(.*\))?$", title)
    if m:
        title = f"{m.group(2)} {m.group(1)}{m.group(3) or ''}"
    text = title
    if genres:
        text += ". " + ", ".join(genres) + "."
    return text


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with ``voice``: mono float32 at 16 kHz."""
    cmd = [espeak_path(), "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", "--", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(
            f"espeak-ng failed for voice {voice.name!r} (rc {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip() or 'no audio written'}"
        )
    with wave.open(io.BytesIO(proc.stdout), "rb") as w:
        rate, width = w.getframerate(), w.getsampwidth()
        raw = w.readframes(w.getnframes())  # espeak's streamed header over-states the length
    if width != 2:
        raise RuntimeError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit PCM")
    x = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    # pad with silence to a 5-smooth length: the FFT resampler is ~15x slower on lengths with large prime factors
    n_out = int(round(x.size * SAMPLE_RATE / rate))
    padded = np.concatenate([x, np.zeros(_smooth_length(x.size) - x.size, np.float32)])
    return resample(padded, rate, SAMPLE_RATE)[:n_out]


def _smooth_length(n: int) -> int:
    """The smallest ``2^a * 3^b * 5^c >= n``."""
    best = 1 << max(0, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def write_wav(path: Path, x: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV."""
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def speak_to_wav(text: str, voice: Voice, path: Path) -> Path:
    """Speak ``text`` with ``voice`` into a 16 kHz 16-bit WAV at ``path``."""
    return write_wav(path, synthesize(text, voice))
