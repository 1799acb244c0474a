"""A small, self-contained data folder for the training/evaluation tests.

Items are movies of six genres whose titles use genre-specific words, so the
pair datasets carry real, learnable signal:

- ``copair_i2i``: item -> another item of the same genre;
- ``q2i``: a genre/year search query -> an item;
- ``cls``: item -> its genre label (text target);
- ``xmodal``: item -> itself (self-pairs: its media -> its own text).

Items with index % 5 == 0 are test items, the others train items (there are no
validation items here): pairs touching a test item are ``test``. The split is
recorded per item in ``item_splits.parquet``, as the data builders do.

With ``media=True`` every item also gets the demo's own media
(:func:`sail_core.data.media.render_media`: a cover and ``keyframes`` keyframes
drawn from its genre, title and year, and its title and genre spoken by
``espeak-ng``), and then some items lose one modality on purpose
(:data:`MISSING`): index % 7 == 3 has no audio, index % 11 == 4 no cover,
index % 13 == 5 no keyframes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sail_core.data.splits import write_item_splits

GENRES = {
    "Comedy": ["Laugh", "Party", "Wedding", "Crazy", "Funny", "Vacation", "Buddies", "Prank"],
    "Horror": ["Blood", "Haunted", "Scream", "Zombie", "Nightmare", "Curse", "Ghost", "Terror"],
    "Sci-Fi": ["Galaxy", "Robot", "Alien", "Star", "Planet", "Cyber", "Quantum", "Orbit"],
    "Romance": ["Love", "Kiss", "Heart", "Paris", "Forever", "Sweetheart", "Valentine", "Passion"],
    "Western": ["Gunfight", "Outlaw", "Sheriff", "Frontier", "Canyon", "Cowboy", "Saloon", "Desert"],
    "Animation": ["Cartoon", "Bunny", "Dragon", "Toy", "Kingdom", "Penguin", "Fairy", "Magic"],
}
NOUNS = ["Story", "Night", "Road", "City", "Island", "Day", "Code", "Game", "River", "Home"]


IMAGE_SIZE = 96  # rendered cover/keyframe size: small pictures keep the tests fast (the model resizes them)
MISSING = {"audio_path": (7, 3), "cover_path": (11, 4), "frame_paths": (13, 5)}  # column -> (m, r): index % m == r


def _media(folder: Path, items: pd.DataFrame, keyframes: int, seed: int) -> pd.DataFrame:
    """Render every item's media with the demo's code, then remove the :data:`MISSING` ones (path nulled, file deleted)."""
    from sail_core.data.media import render_media, split_frames

    items = render_media(items, folder, seed, keyframes, IMAGE_SIZE, audio=True, workers=1)
    position = np.arange(len(items))
    for column, (m, r) in MISSING.items():
        drop = (position % m == r) & items[column].notna().to_numpy()
        for value in items.loc[drop, column]:
            for rel in split_frames(value):
                (folder / rel).unlink()
        items.loc[drop, column] = pd.NA
    return items


def build(folder: Path, per_genre: int = 8, pairs_per_dataset: int = 200, seed: int = 0, media: bool = False,
          keyframes: int = 3) -> Path:
    """Write items/interactions/pairs (and with ``media``, media files + paths) under ``folder``; returns it."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for g, (genre, words) in enumerate(GENRES.items()):
        for j in range(per_genre):
            idx = len(rows)
            word = words[j % len(words)]
            title = f"{word} {NOUNS[(j // len(words) + g) % len(NOUNS)]}" + (f" {j // len(words) + 1}" if j >= len(words) else "")
            rows.append({"item_id": f"m{idx}", "title": title, "year": 1960 + (idx * 7) % 40, "tags": genre,
                         "ocr": None, "asr": None, "author": None})
    items = pd.DataFrame(rows).astype({"item_id": "string", "title": "string", "year": "Int64", "tags": "string",
                                       "ocr": "string", "asr": "string", "author": "string"})
    if media:
        items = _media(folder, items, keyframes, seed)
    items.to_parquet(folder / "items.parquet", index=False)
    held = {f"m{i}" for i in range(len(items)) if i % 5 == 0}
    write_item_splits(folder, {i: "test" if i in held else "train" for i in items["item_id"]})
    by_genre = items.groupby("tags")["item_id"].apply(list).to_dict()
    genre_of = dict(zip(items["item_id"], items["tags"]))

    def split(*ids) -> str:
        return "test" if any(i in held for i in ids if i is not None) else "train"

    def frame(records):
        return pd.DataFrame(records, columns=["query_item", "query_text", "target_item", "target_text", "score", "split"]).astype(
            {"query_item": "string", "query_text": "string", "target_item": "string", "target_text": "string",
             "score": "Float64", "split": "string"})

    ids = list(items["item_id"])
    copair, q2i, cls = [], [], []
    for _ in range(pairs_per_dataset):
        a = ids[rng.integers(len(ids))]
        b = [x for x in by_genre[genre_of[a]] if x != a][rng.integers(per_genre - 1)]
        copair.append((a, None, b, None, None, split(a, b)))
        c = ids[rng.integers(len(ids))]
        year = int(items.loc[items["item_id"] == c, "year"].iloc[0])
        q2i.append((None, f"{genre_of[c].lower()} movie from the {year // 10 * 10}s", c, None, None, split(c)))
        d = ids[rng.integers(len(ids))]
        cls.append((d, None, None, genre_of[d], None, split(d)))
    xmodal = [(i, None, i, None, None, split(i)) for i in ids]
    for name, recs in (("copair_i2i", copair), ("q2i", q2i), ("cls", cls), ("xmodal", xmodal)):
        frame(recs).drop_duplicates(subset=["query_item", "query_text", "target_item", "target_text"]).to_parquet(
            folder / "pairs" / f"{name}.parquet", index=False)
    inter = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(60)], "item_id": [ids[i % len(ids)] for i in range(60)],
                          "timestamp": np.arange(60) + 900_000_000, "rating": (np.arange(60) % 5 + 1).astype(float)})
    inter.to_parquet(folder / "interactions.parquet", index=False)
    return folder


# -- shared media fixture for the train/eval/pattern tests ---------------------------------------
FAST = {  # test-only overrides: fewer tokens and shorter audio chunks keep CPU tests fast
    "model.audio.chunk_seconds": 2.0,
    "model.perceiver.latents": 4,
    "model.perceiver.depth": 1,
    "model.perceiver.dim": 64,
    "model.max_length": 16,
    "model.inputs.keyframes": 2,
}
_SHARED: dict[str, Path] = {}


def fast_config(**overrides):
    """The ``tiny`` profile with :data:`FAST` (and ``overrides``, dotted keys) applied."""
    from sail_core.config import load_config

    return load_config(profile="tiny", overrides={**FAST, **overrides})


def media_data() -> tuple[Path, Path]:
    """``(data folder, feature cache folder)`` of a media data set built once per test process.

    Read-only for tests: copy it before changing files.
    """
    if "data" not in _SHARED:
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="sail-tiny-media-"))
        _SHARED["data"] = build(root / "data", per_genre=6, media=True)
        _SHARED["cache"] = root / "features"
    return _SHARED["data"], _SHARED["cache"]
