"""Leak-free splits (sail_core.data.splits): one test per rule.

1. no val/test item in any train pair, on either side, of any dataset;
2. no held-out item can be drawn as a negative (HardNegativePool and the training loop's pool);
3. training copairs use events before each user's time cutoff, held-out copair targets come after it;
4. the item split is deterministic and independent of row order; ``item_splits`` is exact;
5. the data contracts accept ``val`` (and still quarantine a bad split value with its reason);
6. the demo profile has at least 500 distinct test items behind each gated task.

The full demo catalogue is derived in memory without media (a second or two); the tiny demo
folder (``demo_data``) is the one the other data tests use.
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from sail_core.config import load_config
from sail_core.data import io
from sail_core.data.demo import demo_tables
from sail_core.data.importer import import_tables
from sail_core.data.media import MEDIA_COLUMNS
from sail_core.data.pairs import copair_pairs, derive_item_splits, derive_pairs
from sail_core.data.splits import item_splits, split_items, train_items, user_cutoffs, write_item_splits
from sail_core.train.hard_negatives import HardNegativePool

SIDES = ["query_item", "target_item"]


@pytest.fixture(scope="module")
def full():
    """The demo profile's whole catalogue, derived in memory (no media): ``(cfg, items, interactions, splits, pairs)``."""
    cfg = load_config(profile="demo").data.model_copy(update={"media": False})
    items, interactions = demo_tables(cfg)
    splits = derive_item_splits(items, interactions, cfg)
    return cfg, items, interactions, splits, derive_pairs(items, interactions, cfg, splits)


def _of(splits: dict[str, str], split: str) -> set[str]:
    return {i for i, s in splits.items() if s == split}


# -- rule 1: by item ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["full demo", "tiny demo folder"])
def test_no_held_out_item_in_any_train_pair(source, full, demo_data):
    if source == "full demo":
        _, _, _, splits, pairs = full
    else:
        splits, pairs = item_splits(demo_data), io.read_pairs(demo_data)
    held = _of(splits, "val") | _of(splits, "test")
    assert held and len(pairs) == 4
    for name, df in pairs.items():
        train = df[df["split"] == "train"]
        assert len(train), name
        for side in SIDES:
            assert not train[side].isin(held).any(), (name, side)
        val = df[df["split"] == "val"]
        for side in SIDES:  # validation pairs never show a test item either
            assert not val[side].isin(_of(splits, "test")).any(), (name, side)


# -- rule 2: negatives -------------------------------------------------------------------------------


def test_hard_negative_pool_draws_train_items_only_and_refuses_held_out_mined_ones(demo_data):
    splits = item_splits(demo_data)
    train = sorted(_of(splits, "train"))
    catalogue = sorted(splits)
    assert train_items(demo_data, catalogue) == train
    held = sorted(_of(splits, "test"))
    mined = pd.DataFrame({"query_item": [train[0], train[1]], "query_text": [None, None],
                          "negative_item": [train[2], train[3]]})
    pool = HardNegativePool(mined, train_items(demo_data, catalogue), per_query=4, seed=0)
    drawn = {i for _ in range(200) for row in pool.draw([0, 1, 2]) for i in row}
    assert drawn <= set(train) and len(drawn) > 20
    leaky = pd.concat([mined, pd.DataFrame({"query_item": [train[0]], "query_text": [None], "negative_item": [held[0]]})])
    with pytest.raises(ValueError, match=rf"1 mined hard negative\(s\) of 3 are not train items .* e\.g\. '{held[0]}'"):
        HardNegativePool(leaky, train, per_query=4, seed=0)


class _PoolBuilt(Exception):
    pass


def _no_media_copy(src, dest):
    """The tables of a data folder without its media (the training loop then computes no media features)."""
    dest.mkdir(parents=True)
    io.read_items(src).assign(**{c: pd.NA for c in MEDIA_COLUMNS}).astype({c: "string" for c in MEDIA_COLUMNS}).to_parquet(
        dest / "items.parquet", index=False)
    for rel in ["interactions.parquet", "item_splits.parquet", "pairs"]:
        (shutil.copytree if rel == "pairs" else shutil.copyfile)(src / rel, dest / rel)
    return dest


def test_the_training_loop_offers_train_items_only_as_negatives(demo_data, tmp_path, monkeypatch):
    import sail_core.train.loop as loop

    data = _no_media_copy(demo_data, tmp_path / "data")
    splits = item_splits(data)
    train = sorted(_of(splits, "train"))
    cfg = load_config(profile="tiny")
    stage = cfg.train.stages[0].model_copy(update={"hard_negatives": 2, "datasets": ["copair_i2i", "q2i"],
                                                   "hard_negative_datasets": ["copair_i2i", "q2i"]})
    (data / "hard_negatives").mkdir()
    for name in stage.datasets:
        pd.DataFrame({"query_item": [train[0]], "query_text": [None], "negative_item": [train[1]]}).to_parquet(
            data / "hard_negatives" / f"{name}.parquet")
    pools = []

    class Recording(HardNegativePool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)
            if len(pools) == len(stage.datasets):
                raise _PoolBuilt  # what training would draw from is known: stop before the model is built

    monkeypatch.setattr(loop, "HardNegativePool", Recording)
    with pytest.raises(_PoolBuilt):
        loop.train_stage(cfg, stage, data, tmp_path / "out", cache_dir=tmp_path / "cache")
    for pool in pools:
        assert sorted(pool.item_ids) == train
        drawn = {i for _ in range(100) for row in pool.draw([0, 1, 2, 3]) for i in row}
        assert drawn <= set(train)
    # the real pool, fed by the real loop, refuses a mined negative that is a held-out item
    monkeypatch.undo()
    held = sorted(_of(splits, "val"))[0]
    pd.DataFrame({"query_item": [train[0]], "query_text": [None], "negative_item": [held]}).to_parquet(
        data / "hard_negatives" / "copair_i2i.parquet")
    with pytest.raises(ValueError, match=rf"not train items .* e\.g\. '{held}'.*Mine negatives among the train items"):
        loop.train_stage(cfg, stage, data, tmp_path / "out2", cache_dir=tmp_path / "cache")


# -- rule 3: by time ---------------------------------------------------------------------------------


def test_user_cutoff_definition_on_a_hand_made_history():
    inter = pd.DataFrame({"user_id": ["u"] * 5 + ["v"], "timestamp": [30, 10, 20, 30, 40, 7]})
    # u: sorted 10, 20, 30, 30, 40; floor(0.5 * 5) = 2 -> T = 30: two events before, three after
    # v: one event; floor(0.5 * 1) = 0 -> T = 7: none before
    assert user_cutoffs(inter, 0.5).to_dict() == {"u": 30, "v": 7}


def _naive_copairs(inter: pd.DataFrame, splits: dict[str, str], cfg) -> dict[str, dict[tuple, set]]:
    """Reference: walk each user's history; the rules written out plainly, one event pair at a time.

    Returns ``{split: {pair: users}}``; train pairs are unordered (sorted tuple), held-out ones
    (earlier item, later item).
    """
    rank = {"train": 0, "val": 1, "test": 2}
    out: dict[str, dict[tuple, set]] = {"train": defaultdict(set), "val": defaultdict(set), "test": defaultdict(set)}
    for user, hist in inter.groupby("user_id"):
        stamps = sorted(hist["timestamp"])
        cutoff = stamps[math.floor(cfg.train_time_fraction * len(stamps))]
        pos = sorted((t, i) for t, i, r in zip(hist["timestamp"], hist["item_id"], hist["rating"]) if r >= cfg.positive_rating)
        for (t0, a), (t1, b) in zip(pos, pos[1:]):
            if a == b or t1 - t0 > cfg.copair_window_days * 86400:
                continue
            split = max((splits[a], splits[b]), key=rank.get)
            if split == "train" and t1 < cutoff:  # both events before the cutoff (t0 <= t1)
                out["train"][tuple(sorted((a, b)))].add(user)
            elif split != "train" and t1 >= cutoff:  # the target event after it
                out[split][(a, b)].add(user)
    return out


def test_copairs_respect_each_users_time_cutoff(full):
    cfg, _, inter, splits, _ = full
    cfg = cfg.model_copy(update={"max_pairs_per_dataset": 10**6})
    got = copair_pairs(inter, splits, cfg, np.random.default_rng(0))
    ref = _naive_copairs(inter, splits, cfg)
    for split in ("train", "val", "test"):
        part = got[got["split"] == split]
        keys = [tuple(sorted(p)) if split == "train" else p for p in zip(part["query_item"], part["target_item"])]
        assert len(set(keys)) == len(keys), f"{split}: a pair appears twice"
        assert dict(zip(keys, part["score"])) == {k: float(len(v)) for k, v in ref[split].items()}, split
        assert len(part) > 1000, split
    # and the other way round: the reference's pairs never mix splits by item
    held = _of(splits, "val") | _of(splits, "test")
    assert not any(set(k) & held for k in ref["train"])
    assert all(set(k) & _of(splits, "test") for k in ref["test"])


# -- rule 4: determinism, exactness ------------------------------------------------------------------


def test_split_is_deterministic_and_independent_of_row_order(full):
    cfg, items, inter, splits, pairs = full
    shuffled_items = items.sample(frac=1.0, random_state=1).reset_index(drop=True)
    shuffled_inter = inter.sample(frac=1.0, random_state=2).reset_index(drop=True)
    again = derive_item_splits(shuffled_items, shuffled_inter, cfg)
    assert again == splits
    for name, df in derive_pairs(shuffled_items, shuffled_inter, cfg, again).items():
        pd.testing.assert_frame_equal(df, pairs[name], obj=name)
    other = derive_item_splits(items, inter, cfg.model_copy(update={"seed": 1}))
    assert other != splits and sorted(other.values()) == sorted(splits.values())
    assert split_items(["b", "a", "c", "d"], {"c"}, 0.25, 0.25, 0) == split_items(["d", "c", "a", "b"], ["c"], 0.25, 0.25, 0)
    assert split_items(list("abcd"), {"c"}, 0.25, 0.0, 0)["c"] == "test"  # drawn among the evaluable items first


def test_item_splits_is_exact_when_a_train_item_is_the_other_side_of_a_test_pair(tmp_path, demo_data, tiny_data_cfg):
    # hand-made: "a" and "b" train, "c" test through the test pair a -> c, "d" val, "e" in no pair (train)
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\nd,D\ne,E\n")
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp,rating\nu,a,1,5\n")
    (tmp_path / "pairs").mkdir()
    pd.DataFrame({"query_item": ["a", "a", "d"], "target_item": ["b", "c", "b"], "split": ["train", "test", "val"]}).to_csv(
        tmp_path / "pairs" / "copair_i2i.csv", index=False)
    import_tables(tmp_path / "items.csv", tmp_path / "inter.csv", tmp_path / "pairs", tmp_path / "out", tiny_data_cfg)
    assert item_splits(tmp_path / "out") == {"a": "train", "b": "train", "c": "test", "d": "val", "e": "train"}
    # derived data: train items on the other side of a test copair stay train
    splits, cop = item_splits(demo_data), io.read_pairs(demo_data)["copair_i2i"]
    test = cop[cop["split"] == "test"]
    other_side = {i for q, t in zip(test["query_item"], test["target_item"]) for i in (q, t) if splits[i] == "train"}
    assert other_side and other_side <= _of(splits, "train")
    assert set(cop.loc[cop["split"] == "train", SIDES].stack()) & other_side  # and they train elsewhere
    # a recorded split that is not train/val/test is refused with the file and the fix
    write_item_splits(tmp_path / "bad", {"a": "holdout"})
    with pytest.raises(ValueError, match=r"item_splits\.parquet: split 'holdout' \(row 0\) is not one of \['train', 'val', 'test'\]"):
        item_splits(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match=r"records no item split .* `sail data demo` or `sail data import`"):
        item_splits(tmp_path)


# -- rule 5: contracts -------------------------------------------------------------------------------


def test_contracts_accept_val_and_quarantine_bad_split_values(tmp_path, demo_data):
    from data_contracts import ContractBreach, validate_dir
    from sail_core.config import ContractsConfig

    raw = shutil.copytree(demo_data, tmp_path / "raw")
    result = validate_dir(raw, tmp_path / "v", tmp_path / "q", ContractsConfig())
    assert result.passed
    assert item_splits(tmp_path / "v") == item_splits(raw)  # the validated folder keeps the item split
    for name, df in io.read_pairs(tmp_path / "v").items():
        assert (df["split"] == "val").any(), name
    q2i = pd.read_parquet(raw / "pairs" / "q2i.parquet")
    q2i.loc[0, "split"] = "dev"
    q2i.to_parquet(raw / "pairs" / "q2i.parquet")
    splits = pd.read_parquet(raw / "item_splits.parquet")
    splits.loc[3, "split"] = "holdout"
    splits.to_parquet(raw / "item_splits.parquet")
    with pytest.raises(ContractBreach):
        validate_dir(raw, tmp_path / "v2", tmp_path / "q2", ContractsConfig())
    q = pd.read_parquet(tmp_path / "q2" / "pairs" / "q2i.parquet")
    assert q["_reason"].tolist() == ["split must be one of train, val, test (value 'dev')"]
    q = pd.read_parquet(tmp_path / "q2" / "item_splits.parquet")
    assert q[["_row", "_reason"]].values.tolist() == [[3, "split must be one of train, val, test (value 'holdout')"]]


# -- rule 6: enough to evaluate ----------------------------------------------------------------------


def test_demo_profile_has_500_test_items_behind_each_gated_task(full):
    cfg, items, _, splits, pairs = full
    test = _of(splits, "test")
    assert len(items) == 1681 and len(test) == round(cfg.holdout_fraction * len(items)) >= 500
    cop = pairs["copair_i2i"]
    in_copair_tests = set(cop.loc[cop["split"] == "test", SIDES].stack()) & test
    assert len(in_copair_tests) >= 500  # i2i
    xm = pairs["xmodal"]
    assert set(xm.loc[xm["split"] == "test", "query_item"]) == test  # the cross-modal queries (all demo items have media)
    q2i = pairs["q2i"]
    per_item = q2i[q2i["split"] == "test"]["target_item"].value_counts()
    assert per_item.max() == 1 and len(per_item) >= 500  # one query per test item: no near-duplicate test queries
