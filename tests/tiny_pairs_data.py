"""A small, self-contained data folder for the training/evaluation tests (pandas only).

Items are movies of six genres whose titles use genre-specific words, so the
three pair datasets carry real, learnable signal:

- ``copair_i2i``: item -> another item of the same genre;
- ``q2i``: a genre/year search query -> an item;
- ``cls``: item -> its genre label (text target).

Items with index % 5 == 0 are held out: pairs touching them are ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENRES = {
    "Comedy": ["Laugh", "Party", "Wedding", "Crazy", "Funny", "Vacation", "Buddies", "Prank"],
    "Horror": ["Blood", "Haunted", "Scream", "Zombie", "Nightmare", "Curse", "Ghost", "Terror"],
    "Sci-Fi": ["Galaxy", "Robot", "Alien", "Star", "Planet", "Cyber", "Quantum", "Orbit"],
    "Romance": ["Love", "Kiss", "Heart", "Paris", "Forever", "Sweetheart", "Valentine", "Passion"],
    "Western": ["Gunfight", "Outlaw", "Sheriff", "Frontier", "Canyon", "Cowboy", "Saloon", "Desert"],
    "Animation": ["Cartoon", "Bunny", "Dragon", "Toy", "Kingdom", "Penguin", "Fairy", "Magic"],
}
NOUNS = ["Story", "Night", "Road", "City", "Island", "Day", "Code", "Game", "River", "Home"]


def build(folder: Path, per_genre: int = 8, pairs_per_dataset: int = 200, seed: int = 0) -> Path:
    """Write items/interactions/pairs under ``folder``; returns it."""
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
    items.to_parquet(folder / "items.parquet", index=False)
    held = {f"m{i}" for i in range(len(items)) if i % 5 == 0}
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
    for name, recs in (("copair_i2i", copair), ("q2i", q2i), ("cls", cls)):
        frame(recs).drop_duplicates(subset=["query_item", "query_text", "target_item", "target_text"]).to_parquet(
            folder / "pairs" / f"{name}.parquet", index=False)
    inter = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(60)], "item_id": [ids[i % len(ids)] for i in range(60)],
                          "timestamp": np.arange(60) + 900_000_000, "rating": (np.arange(60) % 5 + 1).astype(float)})
    inter.to_parquet(folder / "interactions.parquet", index=False)
    return folder
