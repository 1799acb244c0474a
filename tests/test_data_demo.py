"""The MovieLens demo builder: determinism, slices, schema, held-out split, real co-rating signal.

The split rules themselves (no leak by item or by time) are tested in tests/test_splits.py."""

from __future__ import annotations

import pandas as pd
import pytest

from sail_core.data import io, movielens, schema
from sail_core.data.demo import build_demo
from sail_core.data.pairs import split_tags
from sail_core.data.queries import decade, title_keywords
from sail_core.data.splits import item_splits

DATASETS = ("copair_i2i", "q2i", "cls", "xmodal")


def _frames(folder):
    return io.read_items(folder), io.read_interactions(folder), io.read_pairs(folder)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path, demo_data, tiny_data_cfg):
    build_demo(tmp_path / "again", tiny_data_cfg)
    for rel in ["items.parquet", "interactions.parquet", "item_splits.parquet"] + [f"pairs/{d}.parquet" for d in DATASETS]:
        assert (tmp_path / "again" / rel).read_bytes() == (demo_data / rel).read_bytes(), rel
    other = tiny_data_cfg.model_copy(update={"seed": 1, "media": False})
    build_demo(tmp_path / "seed1", other)
    a, b = item_splits(demo_data), item_splits(tmp_path / "seed1")
    assert a.keys() == b.keys() and a != b, "the held-out items should depend on the seed"


def test_tables_follow_the_schema_exactly(demo_data):
    for rel, columns in [("items.parquet", schema.ITEM_COLUMNS), ("interactions.parquet", schema.INTERACTION_COLUMNS)] + [
        (f"pairs/{d}.parquet", schema.PAIR_COLUMNS) for d in DATASETS
    ]:
        df = pd.read_parquet(demo_data / rel)
        assert list(df.columns) == list(columns), rel
        assert {c: str(t) for c, t in df.dtypes.items()} == columns, rel
    items = io.read_items(demo_data)
    assert items["item_id"].is_unique and items["title"].notna().all()
    assert items[["ocr", "asr", "author"]].isna().all().all()
    toy = items[items["item_id"] == "1"].iloc[0]
    assert (toy["title"], toy["year"], toy["tags"]) == ("Toy Story", 1995, "Animation, Children's, Comedy")


def test_slice_keeps_most_rated_items_and_most_active_users(demo_data, tiny_data_cfg):
    items, inter, pairs = _frames(demo_data)
    assert len(items) == tiny_data_cfg.max_items
    assert inter["user_id"].nunique() == tiny_data_cfg.max_users
    counts = movielens.read_ratings()["item_id"].value_counts()
    kept = set(items["item_id"])
    assert counts[list(kept)].min() >= counts.drop(list(kept)).max()
    assert set(inter["item_id"]) <= kept
    for name, df in pairs.items():
        assert len(df) and df["split"].value_counts().max() <= tiny_data_cfg.max_pairs_per_dataset, name  # cap per split


def test_four_datasets_each_with_train_val_and_test(demo_data):
    pairs = io.read_pairs(demo_data)
    assert set(pairs) == set(DATASETS)
    for name, df in pairs.items():
        assert set(df["split"]) == {"train", "val", "test"}, name


def test_item_split_sizes_and_pairs_follow_their_items(demo_data, tiny_data_cfg):
    items, _, pairs = _frames(demo_data)
    splits = item_splits(demo_data)
    assert sorted(splits) == sorted(items["item_id"])
    values = list(splits.values())
    assert values.count("test") == round(tiny_data_cfg.holdout_fraction * len(items))
    assert values.count("val") == round(tiny_data_cfg.val_fraction * len(items))
    for name, df in pairs.items():
        for split in ("val", "test"):
            held = {i for i, s in splits.items() if s == split}
            touches = df["query_item"].isin(held) | df["target_item"].isin(held)
            assert touches[df["split"] == split].all(), (name, split)


def test_copairs_are_co_rated_within_the_window(demo_data, tiny_data_cfg):
    _, inter, pairs = _frames(demo_data)
    cop = pairs["copair_i2i"]
    for split, part in cop.groupby("split"):
        assert part["score"].is_monotonic_decreasing, f"{split}: the most frequent co-occurrences come first"
    window = tiny_data_cfg.copair_window_days * 86400
    pos = inter[inter["rating"] >= tiny_data_cfg.positive_rating]
    by_item = {i: g.set_index("user_id")["timestamp"] for i, g in pos.groupby("item_id")}
    for q, t, score in cop[["query_item", "target_item", "score"]].sample(25, random_state=0).itertuples(index=False):
        a, b = by_item[q], by_item[t]
        both = a.index.intersection(b.index)
        close = [u for u in both if (abs(a[[u]].to_numpy()[:, None] - b[[u]].to_numpy()[None, :]) <= window).any()]
        assert len(close) >= score >= 1, (q, t)


def test_q2i_queries_describe_the_item_without_its_title(demo_data):
    items, _, pairs = _frames(demo_data)
    meta = items.set_index("item_id")
    q2i = pairs["q2i"]
    assert q2i["query_item"].isna().all() and q2i["target_text"].isna().all()
    for text, item in zip(q2i["query_text"], q2i["target_item"]):
        row = meta.loc[item]
        assert text != row["title"].lower()
        words = {g.lower() for g in split_tags(row["tags"])} | set(title_keywords(row["title"]))
        if pd.notna(row["year"]):
            words |= {str(row["year"]), decade(row["year"])}
        assert any(w in text for w in words), (text, row["title"])


def test_cls_is_one_row_per_item_and_tag(demo_data):
    items, _, pairs = _frames(demo_data)
    cls = pairs["cls"]
    expected = {(i, g) for i, tags in zip(items["item_id"], items["tags"]) for g in split_tags(tags)}
    got = set(zip(cls["query_item"], cls["target_text"]))
    assert len(got) == len(cls) and got <= expected
    assert len(got) == len(expected)  # under the cap (400 rows per split) in the tiny profile


@pytest.mark.parametrize("title, words", [("Usual Suspects, The", ["suspects", "usual"]), ("Seven (Se7en)", ["seven"]), ("M", [])])
def test_title_keywords(title, words):
    assert title_keywords(title) == words


def test_full_catalogue(tmp_path):
    from sail_core.config import load_config

    # without media (tests/test_contracts.py builds the full demo with media, once)
    summary = build_demo(tmp_path, load_config(profile="demo").data.model_copy(update={"media": False, "max_items": None}))
    # 1,682 MovieLens items minus item 267, which has neither title nor year
    assert (summary["items"], summary["interactions"], summary["users"]) == (1681, 99991, 943)
    # measured; the split (tests/test_splits.py) and the time cutoff decide how many copairs are left
    assert summary["item_splits"] == {"train": 1009, "val": 168, "test": 504}
    assert summary["pairs"]["copair_i2i"] == {"train": 6516, "val": 1525, "test": 6056}
    assert summary["pairs"]["q2i"] == {"train": 2016, "val": 168, "test": 504}  # one query per held-out item
    assert summary["pairs"]["xmodal"] == summary["item_splits"]
    assert "media" not in summary and io.read_items(tmp_path)[["cover_path", "frame_paths", "audio_path"]].isna().all().all()
