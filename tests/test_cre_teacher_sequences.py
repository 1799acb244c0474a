"""The CRE building blocks on hand-made data: the teacher sees only train items before the cutoff, its
ranking metrics by hand, its contract, the sequence builders and the mean sequence encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from data_contracts.breach import ContractBreach
from data_contracts.id_embeddings import check_id_embeddings
from sail_core.config import load_config
from sail_core.data.splits import write_item_splits
from sail_core.rec.sequence_encoder import SequenceEncoder, pack
from sail_core.rec.sequences import multi_peak, single_peak
from sail_core.rec.teacher import build_teacher, positive_events, ranking_metrics


@pytest.fixture
def data(tmp_path):
    """12 items (i0..i9 train, h0 val, h1 test), 30 users each rating 6 items in time order."""
    items = [f"i{n}" for n in range(10)] + ["h0", "h1"]
    tags = ["Drama", "Comedy", "Drama, Romance"] * 4
    pd.DataFrame({"item_id": items, "title": items, "tags": tags}).to_parquet(tmp_path / "items.parquet")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        for t, item in enumerate(rng.choice(items, size=6, replace=False)):
            rows.append((f"u{u}", str(item), 1_000_000 + 100 * t, 5.0))
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).to_parquet(tmp_path / "interactions.parquet")
    write_item_splits(tmp_path, {**{i: "train" for i in items[:10]}, "h0": "val", "h1": "test"})
    return tmp_path


def _cfg():
    return load_config(profile="tiny", overrides={"cre.teacher.factors": 4, "cre.teacher.iterations": 3})


def test_the_teacher_sees_train_items_before_the_cutoff_only(data):
    cfg = _cfg()
    built = build_teacher(cfg, data)
    events = positive_events(cfg, data).frame
    table = built["tables"]["id_embeddings"]
    assert set(table["item_id"]) <= {f"i{n}" for n in range(10)}           # never h0 / h1
    seen = set(events[~events["after"] & events["item_id"].str.startswith("i")]["item_id"])
    assert set(table["item_id"]) == seen
    assert {"h0", "h1"} <= set(built["tables"]["eval_id_embeddings"]["item_id"])  # labels only: every item
    assert built["per_user"]["recall_at_10"].shape == built["per_user"]["ndcg_at_10"].shape
    check_id_embeddings(table, [f"i{n}" for n in range(10)], 4, "id_embeddings.parquet")


def test_the_contract_refuses_a_held_out_item_and_a_broken_vector():
    frame = pd.DataFrame({"item_id": ["i0", "h1", "i2"],
                          "vector": [np.ones(4), np.ones(4), np.array([1.0, np.nan, 0, 0])]})
    with pytest.raises(ContractBreach) as err:
        check_id_embeddings(frame, ["i0", "i2"], 4, "data/teacher/id_embeddings.parquet")
    text = str(err.value)
    assert "row 1 (item 'h1')" in text and "held-out items must stay unseen" in text
    assert "row 2 (item 'i2')" in text and "NaN or infinite" in text


def test_ranking_metrics_by_hand():
    # one user, 4 candidates scored [0.9, 0.1, 0.8, 0.5] -> order 0, 2, 3, 1; relevant {2, 1}
    # recall@2 = |{0,2} ∩ {1,2}| / 2 = 0.5; ndcg@2 = (1/log2(3)) / (1 + 1/log2(3)) = 0.6309 / 1.6309
    got = ranking_metrics(np.array([[0.9, 0.1, 0.8, 0.5]]), [np.array([2, 1])], [2, 4])
    assert got["recall_at_2"][0] == pytest.approx(0.5)
    assert got["ndcg_at_2"][0] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # @4: both found at ranks 2 and 4: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3))
    assert got["recall_at_4"][0] == 1.0
    assert got["ndcg_at_4"][0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))


def test_sequence_builders_by_hand():
    sim = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    # single peak: the 3 most similar (ties -> the later candidate first): 3, 1, 2 -> in time order 1, 2, 3
    assert single_peak(sim, 3).tolist() == [1, 2, 3]
    # multi peak: clusters a=0 {0, 1, 2}, b=1 {3, 4}; 2 peaks, in turn: a's best 1, b's best 3, a's next 2
    assert multi_peak(sim, np.array([0, 0, 0, 1, 1]), peaks=2, k=3).tolist() == [1, 2, 3]
    # one peak only: the most frequent cluster (a), by similarity: 1, 2
    assert multi_peak(sim, np.array([0, 0, 0, 1, 1]), peaks=1, k=2).tolist() == [1, 2]


def test_mean_sequence_encoder_is_the_masked_mean_of_unit_vectors():
    table = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    index, mask = pack([[0, 1], [2]], max_length=10)
    assert mask.tolist() == [[True, True], [False, True]]  # left-padded: the most recent item last
    pooled = SequenceEncoder("mean", 2, 10)(table[index], mask)
    assert torch.allclose(pooled, torch.tensor([[(0.6 + 0.0) / 2, (0.8 + 1.0) / 2], [1.0, 0.0]]))
    encoder = SequenceEncoder("transformer", 4, 10, layers=1, heads=2)
    out = encoder(torch.randn(2, 3, 4), torch.tensor([[True, True, True], [False, True, True]]))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_a_recommendation_metric_can_be_gated_and_an_unknown_one_is_refused():
    from sail_core.config import ConfigError

    cfg = load_config(profile="tiny", overrides={"gate.metrics": [{"metric": "eval.seq2item.filtered.recall_at_10",
                                                                    "min_delta": 0.0}]})
    assert cfg.gate.metrics[0].metric == "eval.seq2item.filtered.recall_at_10"
    with pytest.raises((ConfigError, ValueError), match="seq2item.recall_at_11"):
        load_config(profile="tiny", overrides={"gate.metrics": [{"metric": "eval.seq2item.recall_at_11",
                                                                  "min_delta": 0.0}]})


def test_reference_rows_teacher_vectors_and_the_ridge_stand_in(data):
    from sail_core.eval.cre_reference import TableEncoder, ridge_standin_vectors, teacher_vectors

    cfg = _cfg()
    built = build_teacher(cfg, data)
    folder = data / "teacher"
    folder.mkdir()
    built["tables"]["id_embeddings"].to_parquet(folder / "id_embeddings.parquet")
    ids = [f"i{n}" for n in range(10)] + ["h0", "h1"]
    vectors = teacher_vectors(ids, folder, seed=0)
    known = dict(zip(built["tables"]["id_embeddings"]["item_id"], built["tables"]["id_embeddings"]["vector"]))
    for r, i in enumerate(ids):
        if i in known:
            np.testing.assert_allclose(vectors[r], known[i])
    assert np.linalg.norm(vectors[-2:], axis=1).min() > 0   # unseen items: random, never zero
    text = np.random.default_rng(1).normal(size=(len(ids), 8)).astype(np.float32)
    standin, meta = ridge_standin_vectors(cfg, data, ids, text, factors=3)
    assert standin.shape == (len(ids), 8 + meta["factors"])
    np.testing.assert_allclose(np.linalg.norm(standin, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="free text"):
        TableEncoder(ids, standin)([(None, "a query", "text", "")])


def test_recommendation_metrics_run_on_catalogue_vectors(data):
    from sail_core.eval.recommendation import recommendation_metrics

    cfg = _cfg()
    folder = data / "teacher"
    folder.mkdir()
    for name, frame in build_teacher(cfg, data)["tables"].items():
        frame.to_parquet(folder / f"{name}.parquet")
    ids = [f"i{n}" for n in range(10)] + ["h0", "h1"]
    vectors = np.random.default_rng(3).normal(size=(len(ids), 6)).astype(np.float32)
    per, single = recommendation_metrics(cfg, data, vectors, ids, folder, None)
    users = positive_events(cfg, data).frame
    assert len(per["seq2item.recall_at_10"]) == users.loc[users["after"], "user_id"].nunique()
    for name, values in per.items():
        assert np.isfinite(values).all(), name
        if "recall" in name or name == "bijective.accuracy":
            assert set(np.unique(values)) <= {0.0, 1.0} or name.startswith("gid_i2i"), name
    # 12 items: every target is in the top 25 of an unfiltered ranking
    assert per["seq2item.recall_at_25"].min() == 1.0
    # first listed genres: Drama, Comedy, Drama ("Drama, Romance") -> k = 2
    assert single["nmi_k"] == 2 and 0.0 <= single["nmi"] <= 1.0
