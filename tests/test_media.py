"""Demo media: deterministic covers/keyframes with real genre signal, espeak-ng speech, xmodal self-pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sail_core.data import io
from sail_core.data.media import item_rng, render_media, split_frames
from sail_core.data.render import GENRE_LOOKS, genre_look, render_cover, render_keyframes
from sail_core.data.speech import EspeakMissing, Voice, espeak_path, pick_voice, spoken_text, synthesize
from sail_core.data.splits import item_splits
from sail_core.preprocess.audio import SAMPLE_RATE, read_wav


def _items(rows):
    return pd.DataFrame(rows, columns=["item_id", "title", "year", "tags"]).astype(
        {"item_id": "string", "title": "string", "year": "Int64", "tags": "string"})


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_demo_items_point_at_decodable_media(demo_data, tiny_data_cfg):
    items = io.read_items(demo_data)
    assert items["cover_path"].tolist() == [f"media/covers/{i}.jpg" for i in items["item_id"]]
    assert items["audio_path"].tolist() == [f"media/audio/{i}.wav" for i in items["item_id"]]
    for i, frames in zip(items["item_id"], items["frame_paths"]):
        assert split_frames(frames) == [f"media/frames/{i}_{k}.jpg" for k in range(tiny_data_cfg.render_keyframes)]
    row = items.iloc[0]
    for rel in [row.cover_path, *split_frames(row.frame_paths)]:
        with Image.open(demo_data / rel) as img:
            assert img.format == "JPEG" and img.size == (tiny_data_cfg.image_size,) * 2
    x, rate = read_wav(demo_data / row.audio_path)
    assert rate == SAMPLE_RATE and 0.5 < len(x) / rate < 15 and np.abs(x).max() > 0.1
    on_disk = sorted(p.relative_to(demo_data).as_posix() for p in (demo_data / "media").rglob("*") if p.is_file())
    named = sorted([*items["cover_path"], *items["audio_path"], *(f for v in items["frame_paths"] for f in split_frames(v))])
    assert on_disk == named


def test_rendering_is_deterministic_and_distinct(tmp_path, demo_data, tiny_data_cfg):
    items = io.read_items(demo_data).head(3)[["item_id", "title", "year", "tags"]]
    render_media(items, tmp_path, tiny_data_cfg.seed, tiny_data_cfg.render_keyframes, tiny_data_cfg.image_size, workers=1)
    for rel in ["covers/{i}.jpg", "frames/{i}_0.jpg", "frames/{i}_3.jpg", "audio/{i}.wav"]:
        blobs = [(tmp_path / "media" / rel.format(i=i)).read_bytes() for i in items["item_id"]]
        # same seed, other worker count, other slice: the same bytes as the session's demo build
        assert blobs == [(demo_data / "media" / rel.format(i=i)).read_bytes() for i in items["item_id"]], rel
        assert len(set(blobs)) == len(blobs), f"{rel}: two items got the same file"
    first = items.iloc[0]
    other_seed = render_cover(first.title, first.year, first.tags.split(", "), 64, item_rng(1, first.item_id))
    same_seed = render_cover(first.title, first.year, first.tags.split(", "), 64, item_rng(0, first.item_id))
    assert np.array_equal(np.asarray(same_seed), np.asarray(render_cover(first.title, first.year, first.tags.split(", "), 64, item_rng(0, first.item_id))))
    assert not np.array_equal(np.asarray(other_seed), np.asarray(same_seed))
    frames = [np.asarray(f, np.float32) for f in render_keyframes(first.title, ["Comedy"], 4, 64, item_rng(0, "x"))]
    assert all(np.abs(a - b).mean() > 1 for a, b in zip(frames, frames[1:])), "keyframes should change over time"


def test_cover_colour_carries_the_genre(tmp_path):
    """Mean colour: two covers of one genre are closer to each other than to covers of another genre."""
    rows = [(str(i), title, 1995, genre) for i, (title, genre) in enumerate([
        ("Heat", "Comedy"), ("A Long Title About Nothing In Particular", "Comedy"),
        ("Heat", "Sci-Fi"), ("A Long Title About Nothing In Particular", "Sci-Fi"),
        ("Heat", "Horror"), ("A Long Title About Nothing In Particular", "Horror"),
    ])]
    items = render_media(_items(rows), tmp_path, 0, 2, 64, audio=False, workers=1)
    cover = {r[0]: _pixels(tmp_path / p).mean(axis=(0, 1)) for r, p in zip(rows, items["cover_path"])}
    frame = {r[0]: _pixels(tmp_path / split_frames(p)[1]).mean(axis=(0, 1)) for r, p in zip(rows, items["frame_paths"])}
    for means in (cover, frame):
        same = [np.linalg.norm(means[a] - means[b]) for a, b in (("0", "1"), ("2", "3"), ("4", "5"))]
        across = [np.linalg.norm(means[a] - means[b]) for a in "012345" for b in "012345" if int(a) // 2 != int(b) // 2]
        assert max(same) < min(across), (same, sorted(across)[:3])
    assert items["audio_path"].isna().all()


def test_genres_have_distinct_looks():
    looks = list(GENRE_LOOKS.values())
    assert len({l.color for l in looks}) == len(looks)
    assert genre_look("COMEDY") == GENRE_LOOKS["comedy"] and genre_look("k-drama") == genre_look("K-Drama")


def test_espeak_speaks_the_title_and_genres():
    espeak_path()
    assert spoken_text("Usual Suspects, The", ["Crime", "Thriller"]) == "The Usual Suspects. Crime, Thriller."
    short = synthesize("Heat.", Voice("en-us", 170, 50))
    long = synthesize("The Usual Suspects. Crime, Thriller, Mystery, Drama.", Voice("en-us", 170, 50))
    assert 0.3 < len(short) / SAMPLE_RATE < len(long) / SAMPLE_RATE < 10
    assert np.array_equal(short, synthesize("Heat.", Voice("en-us", 170, 50))), "espeak-ng is deterministic"
    f3 = synthesize("Heat.", Voice("en+f3", 170, 50))
    assert len(f3) != len(short) or not np.array_equal(f3, short), "voices should differ"
    voices = {pick_voice(item_rng(0, str(i))) for i in range(40)}
    assert len({v.name for v in voices}) >= 10 and len({v.pitch for v in voices}) >= 10


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no espeak-ng
    with pytest.raises(EspeakMissing, match=r"apt-get install espeak-ng.*data\.media: false"):
        render_media(_items([("1", "Heat", 1995, "Crime")]), tmp_path, 0, 1, 32, workers=1)


def test_xmodal_is_one_self_pair_per_item_split_by_holdout(demo_data, tiny_data_cfg):
    items = io.read_items(demo_data)
    xm = io.read_pairs(demo_data)["xmodal"]
    assert sorted(xm["query_item"]) == sorted(items["item_id"]) and (xm["query_item"] == xm["target_item"]).all()
    assert xm[["query_text", "target_text", "score"]].isna().all().all()
    held = {i for i, s in item_splits(demo_data).items() if s == "test"}
    assert set(xm.loc[xm["split"] == "test", "query_item"]) == held
    # the other datasets' test items are the same held-out items
    q2i = io.read_pairs(demo_data)["q2i"]
    assert set(q2i.loc[q2i["split"] == "test", "target_item"]) <= held
