"""The MovieLens demo builder: determinism, slices, schema, held-out split, real co-rating signal."""

from __future__ import annotations

import pandas as pd
import pytest

from sail_core.data import io, movielens, schema
from sail_core.data.demo import build_demo
from sail_core.data.pairs import copair_pairs, split_tags
from sail_core.data.queries import decade, title_keywords
from sail_core.data.splits import holdout_items

DATASETS = ("copair_i2i", "q2i", "cls", "xmodal")


def _frames(folder):
    return io.read_items(folder), io.read_interactions(folder), io.read_pairs(folder)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path, demo_data, tiny_data_cfg):
    build_demo(tmp_path / "again", tiny_data_cfg)
    for rel in ["items.parquet", "interactions.parquet"] + [f"pairs/{d}.parquet" for d in DATASETS]:
        assert (tmp_path / "again" / rel).read_bytes() == (demo_data / rel).read_bytes(), rel
    other = tiny_data_cfg.model_copy(update={"seed": 1})
    build_demo(tmp_path / "seed1", other)
    a, b = io.read_pairs(demo_data)["q2i"], io.read_pairs(tmp_path / "seed1")["q2i"]
    assert not a["split"].equals(b["split"]), "the held-out items should depend on the seed"


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
        assert 0 < len(df) <= tiny_data_cfg.max_pairs_per_dataset, name


def test_four_datasets_each_with_train_and_test(demo_data):
    pairs = io.read_pairs(demo_data)
    assert set(pairs) == set(DATASETS)
    for name, df in pairs.items():
        assert set(df["split"]) == {"train", "test"}, name


def test_held_out_items_never_in_train_pairs(demo_data, tiny_data_cfg):
    items, _, pairs = _frames(demo_data)
    held = holdout_items(items["item_id"], tiny_data_cfg.holdout_fraction, tiny_data_cfg.seed)
    assert len(held) == round(tiny_data_cfg.holdout_fraction * len(items))
    for name, df in pairs.items():
        touches = df["query_item"].isin(held) | df["target_item"].isin(held)
        assert not touches[df["split"] == "train"].any(), name
        assert touches[df["split"] == "test"].all(), name


def _naive_copairs(inter: pd.DataFrame, positive: float, window_s: float) -> dict[frozenset, int]:
    """Reference: walk each user's positive history in time order; count users per consecutive pair."""
    users: dict[frozenset, set] = {}
    pos = inter[inter["rating"] >= positive]
    for user, hist in pos.groupby("user_id"):
        rows = sorted(zip(hist["timestamp"], hist["item_id"]))
        for (t0, i0), (t1, i1) in zip(rows, rows[1:]):
            if i0 != i1 and t1 - t0 <= window_s:
                users.setdefault(frozenset((i0, i1)), set()).add(user)
    return {k: len(v) for k, v in users.items()}


def test_copairs_match_a_naive_reference_on_real_ratings(tiny_data_cfg):
    ratings = movielens.read_ratings()
    inter = ratings[ratings["user_id"].isin([str(u) for u in range(1, 41)])].reset_index(drop=True)
    cfg = tiny_data_cfg.model_copy(update={"max_pairs_per_dataset": 10**6})
    import numpy as np

    got = copair_pairs(inter, set(inter["item_id"]), cfg, np.random.default_rng(0))
    ref = _naive_copairs(inter, cfg.positive_rating, cfg.copair_window_days * 86400)
    got_map = {frozenset((q, t)): s for q, t, s in zip(got["query_item"], got["target_item"], got["score"])}
    assert len(got) == len(got_map), "a pair appears twice"
    assert got_map == {k: float(v) for k, v in ref.items()}


def test_copairs_are_co_rated_within_the_window(demo_data, tiny_data_cfg):
    _, inter, pairs = _frames(demo_data)
    cop = pairs["copair_i2i"]
    assert cop["score"].is_monotonic_decreasing, "the most frequent co-occurrences come first"
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
    assert len(expected) <= 400 or len(cls) == 400


@pytest.mark.parametrize("title, words", [("Usual Suspects, The", ["suspects", "usual"]), ("Seven (Se7en)", ["seven"]), ("M", [])])
def test_title_keywords(title, words):
    assert title_keywords(title) == words


def test_full_catalogue(tmp_path):
    from sail_core.config import load_config

    # without media (tests/test_contracts.py builds the full demo with media, once)
    summary = build_demo(tmp_path, load_config(profile="demo").data.model_copy(update={"media": False, "max_items": None}))
    # 1,682 MovieLens items minus item 267, which has neither title nor year
    assert (summary["items"], summary["interactions"], summary["users"]) == (1681, 99991, 943)
    assert summary["pairs"]["copair_i2i"]["train"] + summary["pairs"]["copair_i2i"]["test"] == 20000
    assert summary["pairs"]["xmodal"]["train"] + summary["pairs"]["xmodal"]["test"] == 1681
    assert "media" not in summary and io.read_items(tmp_path)[["cover_path", "frame_paths", "audio_path"]].isna().all().all()
