"""Items of a data folder -> model inputs (:class:`OmniSample`) for one *side modality*.

A pair side is shown to the model as one of these modalities:

- ``text``: the item's text fields (title, year, tags, OCR, ASR, author) joined by
  :func:`sail_core.preprocess.segments.join_fields`;
- ``image``: the cover only; ``frames``: the keyframes only; ``audio``: the spoken track only;
- ``omni``: everything the item has.

A free-text side (a q2i query, a cls label) is text-only: any other modality is
missing for it. :meth:`ItemInputs.has` says whether a side has a modality, so a
pattern such as ``audio->text`` is skipped for an item without audio.

In training, text fields are randomly dropped (``model.inputs.field_dropout``;
never all of them) and keyframes are sampled at random inside ``k`` equal
segments; modality dropout happens inside the model. In evaluation, all fields
are kept and keyframes are the segment centres.

Media come as frozen-tower features from :mod:`sail_core.features.media_cache`
(the demo: EfficientNet-Lite0 frozen, speech_embedding) or, for trainable towers
(the ``paper`` profile), as pixels and log-mel chunks loaded per sample (no cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sail_core.config import ModelConfig
from sail_core.model.assembly import OmniSample
from sail_core.preprocess.image import keyframe_indices, load_image
from sail_core.preprocess.segments import drop_text_fields, join_fields

SIDE_MODALITIES = ("text", "image", "frames", "audio", "omni")
TEXT_COLUMNS = ("title", "year", "tags", "ocr", "asr", "author")


def _present(value) -> bool:
    if value is None or value is pd.NA:
        return False
    try:
        return bool(value == value) and str(value).strip() != ""
    except TypeError:
        return False


@dataclass
class Item:
    """One catalogue item: its text fields and relative media paths."""

    item_id: str
    fields: dict[str, str | None]
    cover: str | None
    frames: list[str]
    audio: str | None

    def has(self, modality: str) -> bool:
        return {
            "text": any(v for v in self.fields.values()),
            "image": self.cover is not None,
            "frames": bool(self.frames),
            "audio": self.audio is not None,
            "omni": True,
        }[modality]


def items_from_frame(items: pd.DataFrame) -> dict[str, Item]:
    """item_id -> :class:`Item` from an items table (media columns optional)."""
    out = {}
    for r in items.to_dict("records"):
        fields = {}
        for c in TEXT_COLUMNS:
            v = r.get(c)
            if _present(v):
                fields[c] = str(int(v)) if c == "year" else str(v)
            else:
                fields[c] = None
        frames = str(r["frame_paths"]).split("|") if _present(r.get("frame_paths")) else []
        out[str(r["item_id"])] = Item(
            str(r["item_id"]), fields,
            str(r["cover_path"]) if _present(r.get("cover_path")) else None,
            [f for f in frames if f],
            str(r["audio_path"]) if _present(r.get("audio_path")) else None,
        )
    return out


def item_text(item: Item, train: bool = False, p: float = 0.0, rng: np.random.Generator | None = None) -> str:
    """The item's joined text; in training with text-field dropout ``p``."""
    fields = drop_text_fields(item.fields, p, rng) if train and p > 0 else item.fields
    return join_fields(fields)


class ItemInputs:
    """Build :class:`OmniSample` objects for item or free-text sides, any side modality."""

    def __init__(self, items: dict[str, Item], data_dir: str | os.PathLike, cfg: ModelConfig,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 feature_threads: int | None = None, media_features: bool = True):
        self.items = items
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        self.vision = "features" if cfg.vision.encoder == "efficientnet_lite0" and cfg.vision.frozen else "pixels"
        self.audio_kind = "feats" if cfg.audio.encoder == "speech_embedding" else "chunks"
        self.features = None
        images = [p for it in items.values() for p in ([it.cover] if it.cover else []) + it.frames]
        audios = [it.audio for it in items.values() if it.audio]
        images = images if self.vision == "features" else []
        audios = audios if self.audio_kind == "feats" else []
        if (images or audios) and media_features:  # False: items and paths only (a caller that decodes media itself)
            from sail_core.features.media_cache import load_media_features

            self.features = load_media_features(self.data_dir, images, audios, cache_dir, cfg.vision.image_size,
                                                cfg.audio.chunk_seconds, progress, feature_threads)

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, cfg: ModelConfig, cache_dir=None, progress: bool = True,
                      feature_threads: int | None = None, media_features: bool = True) -> "ItemInputs":
        from sail_core.data import schema
        from sail_core.data.pair_data import plain_nulls

        path = Path(data_dir) / f"{schema.ITEMS}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; build the data first (`sail ingest`) or pass the right data folder")
        return cls(items_from_frame(plain_nulls(pd.read_parquet(path))), data_dir, cfg, cache_dir, progress,
                   feature_threads, media_features)

    @property
    def collate_modes(self) -> dict[str, str]:
        """Keyword arguments for :func:`sail_core.model.assembly.collate`."""
        return {"vision": self.vision, "audio": self.audio_kind}

    def item(self, item_id) -> Item:
        try:
            return self.items[str(item_id)]
        except KeyError:
            raise KeyError(f"item {item_id!r} is not in items.parquet; the pair table and items disagree") from None

    def has(self, item_id: str | None, modality: str) -> bool:
        """Whether a side (an item, or free text when ``item_id`` is None) has ``modality``."""
        if modality not in SIDE_MODALITIES:
            raise ValueError(f"unknown side modality {modality!r}; allowed: {', '.join(SIDE_MODALITIES)}")
        if item_id is None:
            return modality == "text"
        if modality == "frames" and self.cfg.inputs.keyframes == 0:
            return False
        return self.item(item_id).has(modality)

    # -- media loaders ------------------------------------------------------------------------
    def _image(self, rel: str) -> np.ndarray:
        if self.vision == "features":
            return self.features.image(rel)
        return load_image(self.data_dir / rel, self.cfg.vision.image_size)

    def _audio(self, rel: str) -> np.ndarray:
        if self.audio_kind == "feats":
            return self.features.audio(rel)
        from sail_core.features.clap_chunks import clap_chunks

        return clap_chunks(self.data_dir / rel, self.cfg.audio)

    # -- samples ------------------------------------------------------------------------------
    def text_sample(self, text: str, instruction: str) -> OmniSample:
        return OmniSample(instruction=instruction, text=str(text))

    def item_sample(self, item_id: str, modality: str, instruction: str, train: bool = False,
                    rng: np.random.Generator | None = None) -> OmniSample:
        """The item shown as ``modality``; raises when the item lacks it (check :meth:`has` first)."""
        it = self.item(item_id)
        if not it.has(modality):
            raise ValueError(f"item {item_id!r} has no {modality}; skip the pattern for it (ItemInputs.has)")
        rng = rng if rng is not None else np.random.default_rng()
        p = self.cfg.inputs.field_dropout
        s = OmniSample(instruction=instruction)
        if modality in ("text", "omni"):
            text = item_text(it, train, p, rng)
            s.text = text or None
        if modality in ("image", "omni") and it.cover:
            s.cover = self._image(it.cover)
        if modality in ("frames", "omni") and it.frames and self.cfg.inputs.keyframes > 0:
            picks = keyframe_indices(len(it.frames), self.cfg.inputs.keyframes, train=train, rng=rng)
            s.frames = np.stack([self._image(it.frames[i]) for i in picks])
        if modality in ("audio", "omni") and it.audio:
            s.audio = self._audio(it.audio)
        return s

    def side(self, item_id: str | None, text: str | None, modality: str, instruction: str, train: bool = False,
             rng: np.random.Generator | None = None) -> OmniSample:
        """A pair side: the item as ``modality``, or the free text (``modality`` must be text)."""
        if item_id is not None:
            return self.item_sample(item_id, modality, instruction, train, rng)
        if modality != "text":
            raise ValueError(f"a free-text side has only the text modality, not {modality!r}")
        return self.text_sample(text, instruction)
