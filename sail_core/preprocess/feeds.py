"""Input arrays of the exported omni encoder graph (numpy + tokenizers only, no torch).

The ONNX encoder (``sail_core.export.onnx``) takes precomputed frozen features
and presence masks for every modality, always all ten inputs:

===============  =========================  ====================================
name             shape, dtype               meaning
===============  =========================  ====================================
instr_ids/mask   (B, Li) int64              ``[CLS] Instruct: ... Input:``
text_ids/mask    (B, Lt) int64              text tokens (an empty row = no text)
audio_feats      (B, Da) float32            clip vector (demo: 96-d speech)
audio_mask       (B,) int64                 1 = the row has audio
cover_feats      (B, C, h, w) float32       frozen vision features of the cover
cover_mask       (B,) int64                 1 = the row has a cover
frame_feats      (B, K, C, h, w) float32    features of up to K keyframes
frame_mask       (B, K) int64               1 = that keyframe is present
===============  =========================  ====================================

Absent media are zeros with mask 0; the graph masks them out. With no
keyframes in the batch, K is 1 (one masked frame). The same function builds
the feeds for the export's parity check and for the Triton python backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sail_core.preprocess.segments import SegmentTokenizer


def _stack(values: Sequence[np.ndarray | None], shape: tuple[int, ...], what: str) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(values), *shape), dtype=np.float32)
    mask = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is not None:
            v = np.asarray(v, dtype=np.float32)
            if v.shape != shape:
                raise ValueError(f"{what}[{i}] has shape {v.shape}, the encoder expects {shape}")
            out[i], mask[i] = v, 1
    return out, mask


def encoder_feeds(
    tokenizer: SegmentTokenizer,
    instructions: Sequence[str],
    texts: Sequence[str | None],
    audio: Sequence[np.ndarray | None],
    cover: Sequence[np.ndarray | None],
    frames: Sequence[np.ndarray | None],
    audio_dim: int,
    feature_shape: Sequence[int],
) -> dict[str, np.ndarray]:
    """The ten encoder inputs for B rows; each list has one entry per row (None = absent)."""
    b = len(instructions)
    if not (len(texts) == len(audio) == len(cover) == len(frames) == b):
        raise ValueError("encoder_feeds: instructions, texts, audio, cover and frames must have one entry per row")
    shape = tuple(int(s) for s in feature_shape)
    feeds: dict[str, np.ndarray] = {}
    feeds["instr_ids"], feeds["instr_mask"] = tokenizer.instructions(list(instructions))
    feeds["text_ids"], feeds["text_mask"] = tokenizer.texts(list(texts))
    feeds["audio_feats"], feeds["audio_mask"] = _stack(audio, (int(audio_dim),), "audio")
    feeds["cover_feats"], feeds["cover_mask"] = _stack(cover, shape, "cover")
    k = max([len(f) for f in frames if f is not None] + [1])
    feeds["frame_feats"] = np.zeros((b, k, *shape), dtype=np.float32)
    feeds["frame_mask"] = np.zeros((b, k), dtype=np.int64)
    for i, f in enumerate(frames):
        if f is not None and len(f):
            f = np.asarray(f, dtype=np.float32)
            if f.shape[1:] != shape:
                raise ValueError(f"frames[{i}] have shape {f.shape[1:]}, the encoder expects {shape}")
            feeds["frame_feats"][i, : len(f)] = f
            feeds["frame_mask"][i, : len(f)] = 1
    return feeds
