"""Log-mel chunks for the ``clap`` audio tower (paper profile): WAV -> (C, 1, T, mels) float32.

CLAP's recipe (HTSAT): 48 kHz mono, 10 s chunks (shorter clips repeat-padded,
longer ones cut, as :func:`sail_core.preprocess.audio.repeat_chunks` does),
STFT with a 1024-sample Hann window and a 480-sample hop, Slaney mel filter
bank, power in dB. Built with transformers' numpy ``audio_utils``; the tower
is random-weighted in this project, so only the shapes and the chunking matter.
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from sail_core.config import AudioConfig

RATE = 48_000
N_FFT = 1024
HOP = 480


def clap_chunks(src: str | PathLike | bytes, cfg: AudioConfig) -> np.ndarray:
    """(chunks, 1, frames, num_mel_bins) log-mel features of one clip."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    from sail_core.preprocess.audio import read_wav, repeat_chunks, resample

    x, rate = read_wav(src)
    chunks = repeat_chunks(resample(x, rate, RATE), RATE, cfg.chunk_seconds)
    mels = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=cfg.clap.num_mel_bins,
                           min_frequency=50.0, max_frequency=14_000.0, sampling_rate=RATE,
                           norm="slaney", mel_scale="slaney")
    window = window_function(N_FFT, "hann")
    out = [spectrogram(c, window, frame_length=N_FFT, hop_length=HOP, power=2.0, mel_filters=mels,
                       log_mel="dB").T for c in chunks]
    max_frames = cfg.clap.spec_size * (cfg.clap.spec_size // cfg.clap.num_mel_bins)
    return np.stack(out)[:, None, :max_frames].astype(np.float32)
