"""The frozen-tower media feature cache: equal to the towers' own output, reused on disk and in memory,
recomputed only for a changed file."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from sail_core.features import media_cache
from sail_core.features.media_cache import load_media_features
from sail_core.model.vision import EfficientNetLite0Tower, encode_images
from sail_core.preprocess.audio import SpeechEmbedder

import tiny_pairs_data


@pytest.fixture()
def folder(tmp_path):
    data, _ = tiny_pairs_data.media_data()
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


def test_features_equal_the_towers_and_are_reused(folder, tmp_path):
    images = sorted(str(p.relative_to(folder)) for p in (folder / "media" / "covers").glob("*.jpg"))[:5]
    audios = sorted(str(p.relative_to(folder)) for p in (folder / "media" / "audio").glob("*.wav"))[:3]
    cache = tmp_path / "cache"
    feats = load_media_features(folder, images, audios, cache, image_size=224, chunk_seconds=2.0, progress=False)
    ref = encode_images([folder / r for r in images], EfficientNetLite0Tower(), 224)
    got = feats.images(images)
    assert got.shape == (5, 1280, 7, 7)
    np.testing.assert_allclose(got, ref, atol=2e-2, rtol=1e-2)  # fp16 storage
    speech = SpeechEmbedder(chunk_seconds=2.0).embed_files([folder / r for r in audios])
    np.testing.assert_allclose(np.stack([feats.audio(r) for r in audios]), speech, atol=1e-2, rtol=1e-2)

    # same process: served from memory (same object)
    assert load_media_features(folder, images, audios, cache, 224, 2.0, progress=False) is feats
    # new process (memory cleared): read from disk, nothing recomputed
    media_cache._MEMORY.clear()
    before = (cache / "image.npy").stat().st_mtime_ns
    again = load_media_features(folder, images, audios, cache, 224, 2.0, progress=False)
    assert (cache / "image.npy").stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.images(images), got)

    # a changed file is recomputed; the others keep their values
    from PIL import Image

    Image.new("RGB", (64, 64), (0, 0, 0)).save(folder / images[0])
    media_cache._MEMORY.clear()
    changed = load_media_features(folder, images, audios, cache, 224, 2.0, progress=False)
    assert not np.allclose(changed.image(images[0]), got[0], atol=1e-2)
    np.testing.assert_array_equal(changed.images(images[1:]), got[1:])
    index = json.loads((cache / "index.json").read_text())
    assert index["image"][images[0]][1] == os.path.getsize(folder / images[0])

    with pytest.raises(KeyError, match="no cached image features"):
        changed.image("media/covers/nope.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        media_cache._MEMORY.clear()
        load_media_features(folder, images + ["media/covers/missing.jpg"], [], cache, 224, 2.0, progress=False)
