"""Hard-negative mining (sail_core.train.mining): the F1 threshold by hand, the selection rule on hand-made
embeddings (a fake encoder), the miner live on the untrained model, and the table the training pool reads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sail_core.data.pair_data import load_hard_negatives, load_pairs
from sail_core.data.splits import train_items
from sail_core.losses.keys import side_key
from sail_core.train.hard_negatives import HardNegativePool
from sail_core.train.mining import f1_curve_png, f1_threshold, mine, write_hard_negatives

import tiny_pairs_data


# -- f1_threshold ------------------------------------------------------------------------------------


def test_f1_threshold_ties_pick_the_smallest_maximiser():
    # pos = {0.9, 0.5}, neg = {0.7, 0.5, 0.1}; P = 2; "score >= λ" is positive, F1 = 2TP / (TP + FP + P):
    #   λ = 0.9: TP 1, FP 0 -> 2/3
    #   λ = 0.7: TP 1, FP 1 -> 2/4 = 0.5
    #   λ = 0.5: TP 2, FP 2 (the tied negative 0.5 counts as predicted positive too) -> 4/6 = 2/3
    #   λ = 0.1: TP 2, FP 3 -> 4/7
    # F1 ties at 2/3 between 0.9 and 0.5: the smallest, 0.5, is λ* (precision 0.5, recall 1).
    lam, f1, curve = f1_threshold([0.9, 0.5], [0.7, 0.5, 0.1])
    assert lam == 0.5 and f1 == pytest.approx(2 / 3)
    np.testing.assert_allclose(curve["threshold"], [0.1, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(curve["f1"], [4 / 7, 2 / 3, 0.5, 2 / 3])
    np.testing.assert_allclose(curve["precision"], [2 / 5, 2 / 4, 1 / 2, 1.0])
    np.testing.assert_allclose(curve["recall"], [1.0, 1.0, 0.5, 0.5])


def test_f1_threshold_general_and_separable_cases():
    # pos = {0.9, 0.8, 0.6, 0.5}, neg = {0.7, 0.6, 0.4, 0.3, 0.2}; P = 4:
    #   0.9: 1,0 -> 2/5   0.8: 2,0 -> 4/6   0.7: 2,1 -> 4/7   0.6: 3,2 -> 6/9 (tie 0.6 both sides)
    #   0.5: 4,2 -> 8/10  0.4: 4,3 -> 8/11  0.3: 4,4 -> 8/12  0.2: 4,5 -> 8/13      => λ* 0.5, F1* 0.8
    lam, f1, _ = f1_threshold([0.9, 0.8, 0.6, 0.5], [0.7, 0.6, 0.4, 0.3, 0.2])
    assert lam == 0.5 and f1 == pytest.approx(0.8)
    # every positive above every negative: λ* is the lowest positive (TP 2, FP 0 -> F1 1), not a midpoint
    lam, f1, _ = f1_threshold([0.9, 0.8], [0.3, 0.2])
    assert lam == 0.8 and f1 == 1.0
    # all tied at 0.6: one threshold, TP 3, FP 1 -> 6/7
    lam, f1, _ = f1_threshold([0.6, 0.6, 0.6], [0.6])
    assert lam == 0.6 and f1 == pytest.approx(6 / 7)
    # no negatives: the lowest positive, F1 1
    assert f1_threshold([0.3, 0.7], [])[:2] == (0.3, 1.0)
    with pytest.raises(ValueError, match="positive"):
        f1_threshold([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        f1_threshold([0.5], [float("nan")])


# -- mine() on hand-made embeddings ------------------------------------------------------------------


def _unit(dims: tuple[int, int], cos: float) -> np.ndarray:
    """A unit vector in the plane of axes ``dims`` at cosine ``cos`` with the first axis (dim 4)."""
    v = np.zeros(4, dtype=np.float32)
    v[dims[0]], v[dims[1]] = cos, math.sqrt(1 - cos * cos)
    return v


A, B = (0, 1), (2, 3)  # query "alpha" lives on axis 0, query item "qB" on axis 2: cross scores are 0
VECTORS = {
    "alpha": _unit(A, 1.0),
    "heldA": _unit(A, 1.0),   # a test item, the best match of alpha: must never come back
    "pA": _unit(A, 0.95),     # alpha's positive
    "fnA": _unit(A, 0.97),    # non-positive above λ*: a probable false negative, dropped
    "hA1": _unit(A, 0.6), "hA2": _unit(A, 0.5), "hA3": _unit(A, 0.4),
    "qB": _unit(B, 1.0),      # an item query, itself a train item (its own hit is not a negative)
    "heldB": _unit(B, 0.99),
    "pB": _unit(B, 0.9),
    "fnB": _unit(B, 0.92),
    "hB1": _unit(B, 0.55), "hB2": _unit(B, 0.45),
}
TRAIN = ["pA", "fnA", "hA1", "hA2", "hA3", "qB", "pB", "fnB", "hB1", "hB2"]


class FakeEncoder:
    """Looks sides up in :data:`VECTORS` by item id or text; records every side it was asked for."""

    dim = 4

    def __init__(self):
        self.seen: list[tuple] = []

    def __call__(self, sides):
        self.seen.extend(sides)
        return np.stack([VECTORS[i if i is not None else t] for i, t, _, _ in sides])


def _hand_pairs() -> pd.DataFrame:
    return pd.DataFrame({"query_item": [None, None, "qB"], "query_text": ["alpha", " alpha ", None],
                         "target_item": ["pA", "pA", "pB"], "target_text": [None] * 3, "split": ["train"] * 3})


def test_mine_keeps_the_top_below_lambda_and_never_a_held_out_item(tmp_path):
    # candidates (search_k 20 reaches every train item): alpha: fnA .97, hA1 .6, hA2 .5, hA3 .4 and five
    # B-plane items at 0 (qB, pB, fnB, hB1, hB2): 9; qB (its own item and pB excluded): fnB .92, hB1 .55, hB2 .45
    # and five A-plane items at 0: 8.
    # positives .95 (alpha, pA; the duplicate " alpha " is the same query) and .9 (qB, pB); P = 2:
    #   .97: TP 0 FP 1 -> 0   .95: 1,1 -> 2/4   .92: 1,2 -> 2/5   .9: 2,2 -> 4/6   .6: 2,3 -> 4/7 ...
    # => λ* = .9, F1* = 2/3: fnA and fnB dropped; per_query 2 keeps hA1, hA2 and hB1, hB2.
    enc = FakeEncoder()
    frame, stats, curve = mine(_hand_pairs(), enc, TRAIN, tmp_path, query_instruction="Q:", target_instruction="T:",
                               query_modality="image", target_modality="omni", per_query=2, search_k=20,
                               dataset="hand")
    assert stats["lambda_star"] == pytest.approx(0.9) and stats["f1_star"] == pytest.approx(2 / 3)
    assert (stats["queries"], stats["positives"], stats["kept"], stats["dropped"]) == (2, 2, 4, 2)
    assert stats["candidates"] == 9 + 8 and stats["queries_with_negatives"] == 2
    assert frame["negative_item"].tolist() == ["hA1", "hA2", "hB1", "hB2"]
    assert frame["query_text"].tolist()[:2] == ["alpha", "alpha"] and frame["query_text"].isna().tolist()[2:] == [True] * 2
    assert frame["query_item"].isna().tolist()[:2] == [True] * 2 and frame["query_item"].tolist()[2:] == ["qB", "qB"]
    np.testing.assert_allclose(frame["score"], [0.6, 0.5, 0.55, 0.45], atol=1e-6)
    assert (frame["score"] < stats["lambda_star"]).all()
    assert set(frame["negative_item"]) <= set(TRAIN) and not {"heldA", "heldB", "fnA", "fnB", "qB"} & set(frame["negative_item"])
    assert all(str(v) == "string" for v in frame[["query_item", "query_text", "negative_item"]].dtypes)
    assert stats["mean_cos_kept"] == pytest.approx((0.6 + 0.5 + 0.55 + 0.45) / 4, abs=1e-6)
    assert stats["mean_cos_positive"] == pytest.approx((0.95 + 0.9) / 2, abs=1e-6)
    # the held-out items were never even embedded; sides carry the dataset's instructions and modalities
    assert not {"heldA", "heldB"} & {s[0] for s in enc.seen}
    assert ("qB", None, "image", "Q:") in enc.seen and (None, "alpha", "text", "Q:") in enc.seen
    assert ("hA1", None, "omni", "T:") in enc.seen and len(enc.seen) == 2 + len(TRAIN)
    assert curve["threshold"].min() == pytest.approx(0.0, abs=1e-6)
    # a narrower search depth: alpha's first 2 candidates are fnA (dropped) and hA1 -> one kept each
    frame2, stats2, _ = mine(_hand_pairs(), FakeEncoder(), TRAIN, tmp_path / "narrow", per_query=2, search_k=2)
    assert frame2["negative_item"].tolist() == ["hA1", "hB1"] and stats2["dropped"] == 2


def test_mine_refuses_non_train_pairs_and_text_targets(tmp_path):
    pairs = _hand_pairs()
    with pytest.raises(ValueError, match="not in the train split"):
        mine(pairs.assign(split=["train", "train", "test"]), FakeEncoder(), TRAIN, tmp_path)
    with pytest.raises(ValueError, match="text targets"):
        mine(pairs.assign(target_item=[None] * 3, target_text=["x"] * 3), FakeEncoder(), TRAIN, tmp_path)


def test_written_table_round_trips_and_the_pool_accepts_it(tmp_path):
    frame, stats, curve = mine(_hand_pairs(), FakeEncoder(), TRAIN, tmp_path / "work", per_query=2, search_k=20,
                               dataset="hand")
    path = write_hard_negatives(tmp_path / "data", "hand", frame)
    assert path == tmp_path / "data" / "hard_negatives" / "hand.parquet"
    schema = pq.read_schema(path)  # pandas' "string" dtype is stored as arrow (large_)string and read back as it
    assert all(pa.types.is_large_string(schema.field(c).type) or pa.types.is_string(schema.field(c).type)
               for c in ("query_item", "query_text", "negative_item"))
    assert [str(t) for t in pd.read_parquet(path).dtypes] == ["string", "string", "string", "float32"]
    loaded = load_hard_negatives(tmp_path / "data", "hand")
    assert loaded["negative_item"].tolist() == frame["negative_item"].tolist()
    assert loaded["query_item"].tolist() == [None, None, "qB", "qB"]
    assert loaded["query_text"].tolist() == ["alpha", "alpha", None, None]
    pool = HardNegativePool(loaded, TRAIN, per_query=2, seed=0)
    drawn = pool.draw([side_key(None, "alpha"), side_key("qB", None)])
    assert sorted(drawn[0]) == ["hA1", "hA2"] and sorted(drawn[1]) == ["hB1", "hB2"]
    # the same table with a held-out item is what the pool refuses
    with pytest.raises(ValueError, match="not train items"):
        HardNegativePool(loaded.assign(negative_item=["heldA"] * 4), TRAIN, per_query=2, seed=0)
    png = f1_curve_png(curve, tmp_path / "f1.png")
    assert png.stat().st_size > 0


# -- live: the untrained model on the tiny media data ------------------------------------------------


def test_miner_is_live_on_the_untrained_model(tmp_path):
    from sail_core.eval.embed import ModelEncoder
    from sail_core.eval.evaluate import baseline_model
    from sail_core.features.item_inputs import ItemInputs

    data, cache = tiny_pairs_data.media_data()
    cfg = tiny_pairs_data.fast_config()
    inputs = ItemInputs.from_data_dir(data, cfg.model, cache, progress=False)
    encoder = ModelEncoder(baseline_model(cfg), inputs, batch_size=64)
    ds = cfg.datasets["copair_i2i"]
    train = train_items(data, inputs.items)
    frame, stats, _ = mine(load_pairs(data, "copair_i2i", "train"), encoder, train, tmp_path, dataset="copair_i2i",
                           query_instruction=ds.query_instruction, target_instruction=ds.target_instruction,
                           per_query=4, search_k=16)
    print(f"\nmined copair_i2i with the untrained model: {stats}")
    assert stats["kept"] > 0 and set(frame["negative_item"]) <= set(train)
    assert not set(frame["negative_item"]) & {i for i in inputs.items if i not in set(train)}
    assert (frame["score"] < stats["lambda_star"]).all()
    assert stats["mean_cos_kept"] > stats["mean_cos_random"], stats
    HardNegativePool(frame, train, per_query=4, seed=0)
