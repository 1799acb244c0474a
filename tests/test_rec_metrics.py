"""Recommendation metrics against values computed by hand (the working is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sail_core.eval.rec_metrics import (
    auc,
    bijective_accuracy,
    cluster_nmi,
    collision_rate,
    interaction_auc,
    kendall_tau,
    nmi,
    prefix_candidate_recall,
    rank_recall,
    set_recall,
    topk_overlap,
)

# --- rank_recall ------------------------------------------------------------------


def test_rank_recall_hand_computed_with_pessimistic_ties():
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.4, 0.6]])
    # q0: target c2 (0.5); c0 (0.9) is above and c1 (0.5) ties, counted above -> rank 3
    # q1: target c3 (0.6); only c1 (0.8) is above -> rank 2
    got = rank_recall(scores, np.array([2, 3]), ks=[1, 2, 3])
    assert set(got) == {1, 2, 3}
    np.testing.assert_array_equal(got[1], [0.0, 0.0])
    np.testing.assert_array_equal(got[2], [0.0, 1.0])
    np.testing.assert_array_equal(got[3], [1.0, 1.0])
    assert got[1].dtype == np.float64 and got[1].shape == (2,)


def test_rank_recall_filtered_never_removes_target():
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.4, 0.6]])
    # q0: c0 removed -> only the tie c1 is above -> rank 2
    # q1: c1 removed, the target c3 is listed but stays -> rank 1
    got = rank_recall(scores, np.array([2, 3]), ks=[1, 2], exclude=[np.array([0]), np.array([1, 3])])
    np.testing.assert_array_equal(got[1], [0.0, 1.0])
    np.testing.assert_array_equal(got[2], [1.0, 1.0])


def test_rank_recall_edges():
    scores = np.array([[0.1, 0.2, 0.3]])
    # target c0 is last of 3: rank 3; k=50 > N still counts it
    assert rank_recall(scores, np.array([0]), ks=[50])[50].tolist() == [1.0]
    # every score equal: pessimistic rank is N
    assert rank_recall(np.zeros((1, 3)), np.array([0]), ks=[2, 3])[2].tolist() == [0.0]
    assert rank_recall(np.zeros((0, 3)), np.zeros(0, dtype=int), ks=[1])[1].shape == (0,)
    with pytest.raises(ValueError, match="targets"):
        rank_recall(scores, np.array([3]), ks=[1])
    with pytest.raises(ValueError, match="NaN"):
        rank_recall(np.array([[np.nan, 0.0]]), np.array([0]), ks=[1])
    with pytest.raises(ValueError, match="exclude"):
        rank_recall(scores, np.array([0]), ks=[1], exclude=[np.array([1]), np.array([2])])
    with pytest.raises(ValueError, match="positive"):
        rank_recall(scores, np.array([0]), ks=[0])


# --- set_recall ---------------------------------------------------------------------


def test_set_recall_hand_computed():
    scores = np.array([[0.9, 0.1, 0.5, 0.5, 0.3], [0.9, 0.1, 0.5, 0.5, 0.3]])
    relevant = [np.array([3, 4]), np.array([], dtype=int)]
    # stable order on -scores: c0 .9, c2 .5, c3 .5 (tie: lower index first), c4 .3, c1 .1
    # k=2: top {0, 2}, none relevant -> 0/2; k=3: top {0, 2, 3} -> 1/2; empty relevant -> NaN
    np.testing.assert_array_equal(set_recall(scores, relevant, k=2), [0.0, np.nan])
    np.testing.assert_array_equal(set_recall(scores, relevant, k=3), [0.5, np.nan])
    # c0 removed: order c2, c3, c4, c1 -> k=2: {2, 3} -> 1/2; k=3: {2, 3, 4} -> 2/2
    ex = [np.array([0]), np.array([0])]
    np.testing.assert_array_equal(set_recall(scores, relevant, k=2, exclude=ex), [0.5, np.nan])
    np.testing.assert_array_equal(set_recall(scores, relevant, k=3, exclude=ex), [1.0, np.nan])


def test_set_recall_denominator_duplicates_and_excluded_relevant():
    scores = np.array([[0.9, 0.1, 0.5, 0.5, 0.3]])
    # k=1: top {0}; relevant {0, 2} -> 1/|R| = 1/2 (not 1/min(k, |R|) = 1)
    assert set_recall(scores, [np.array([0, 2])], k=1).tolist() == [0.5]
    # duplicates collapse: {3, 4}; k=3 top {0, 2, 3} -> 1/2
    assert set_recall(scores, [np.array([3, 3, 4])], k=3).tolist() == [0.5]
    # a relevant item that is also excluded cannot be found but stays in |R|: 0/1
    assert set_recall(scores, [np.array([3])], k=4, exclude=[np.array([3])]).tolist() == [0.0]
    with pytest.raises(ValueError, match="relevant"):
        set_recall(scores, [np.array([5])], k=1)


# --- kendall_tau ------------------------------------------------------------------------


def test_kendall_tau_hand_computed():
    reference = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.0, 5.0]])
    candidate = np.array([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 5.0]])
    # row 0: 6 pairs, only (1, 2) discordant -> (5 - 1) / 6 = 2/3
    # row 1: all 6 pairs discordant -> -1
    # row 2: pair (1, 2) tied in reference only, other 5 concordant -> 5 / sqrt((5 + 1) * 5) = sqrt(5/6)
    got = kendall_tau(reference, candidate)
    np.testing.assert_allclose(got, [2 / 3, -1.0, math.sqrt(5 / 6)])
    assert got.dtype == np.float64


def test_kendall_tau_constant_row_is_nan():
    reference = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, np.nan]])
    candidate = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
    assert np.isnan(kendall_tau(reference, candidate)).all()
    assert np.isnan(kendall_tau(np.ones((2, 1)), np.ones((2, 1)))).all()  # M < 2
    with pytest.raises(ValueError, match="shape"):
        kendall_tau(np.ones((2, 3)), np.ones((2, 4)))


# --- topk_overlap --------------------------------------------------------------------------


def test_topk_overlap_hand_computed():
    reference = np.array([[1.0, 0.8, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    candidate = np.array([[1.0, 0.3, 0.6, 0.9], [0.4, 0.3, 0.2, 0.1]])
    # k=1, no exclusion: row 0 {0} vs {0} -> 1; row 1 {3} vs {0} -> 0
    np.testing.assert_array_equal(topk_overlap(reference, candidate, k=1), [1.0, 0.0])
    # k=2: row 0 {0, 1} vs {0, 3} -> 1/2; row 1 {3, 2} vs {0, 1} -> 0
    np.testing.assert_array_equal(topk_overlap(reference, candidate, k=2), [0.5, 0.0])
    # row 0 drops item 0 (the query itself): {1} vs {3} -> 0; row 1 excludes nothing (-1)
    np.testing.assert_array_equal(topk_overlap(reference, candidate, k=1, exclude=np.array([0, -1])), [0.0, 0.0])


def test_topk_overlap_ties_and_limits():
    reference = np.array([[0.5, 0.5, 0.5, 0.1]])
    candidate = np.array([[0.1, 0.5, 0.5, 0.5]])
    # ties go to the lower index: k=1 {0} vs {1} -> 0; k=2 {0, 1} vs {1, 2} -> 1/2
    assert topk_overlap(reference, candidate, k=1).tolist() == [0.0]
    assert topk_overlap(reference, candidate, k=2).tolist() == [0.5]
    assert topk_overlap(reference, candidate, k=4).tolist() == [1.0]
    with pytest.raises(ValueError, match="exceeds"):
        topk_overlap(reference, candidate, k=4, exclude=np.array([0]))
    with pytest.raises(ValueError, match="exclude"):
        topk_overlap(reference, candidate, k=1, exclude=np.array([4]))


# --- bijective_accuracy ------------------------------------------------------------------------


def _at(deg: float, scale: float = 1.0) -> list[float]:
    return [scale * math.cos(math.radians(deg)), scale * math.sin(math.radians(deg))]


def test_bijective_accuracy_hand_computed():
    # items at angles 0, 10, 90 (length 5: normalised away), 95, 30 degrees
    vectors = np.array([_at(0), _at(10), _at(90, 5.0), _at(95), _at(30)])
    # q0 -> nearest 1 (10 deg); 1 -> nearest 0 (10 deg)                 -> 1
    # q2 -> nearest 3 (5 deg);  3 -> nearest 2 (5 deg)                  -> 1
    # q4 -> nearest 1 (20 deg); 1 -> nearest 0 (10 deg), not 4          -> 0
    got = bijective_accuracy(vectors, np.array([0, 2, 4]))
    np.testing.assert_array_equal(got, [1.0, 1.0, 0.0])
    assert got.dtype == np.float64


def test_bijective_accuracy_tie_goes_to_lowest_index():
    vectors = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [1.0, -1.0]])
    # q0: cos to 1 = 0, to 2 = 0, to 3 = -0.71 -> tie, j = 1 (lowest index)
    # 1: cos to 0 = 0, to 2 = -1, to 3 = 0.71 -> nearest 3, not 0 -> 0
    # (had the tie gone to 2: 2's nearest is 0 -> 1)
    assert bijective_accuracy(vectors, np.array([0])).tolist() == [0.0]
    assert bijective_accuracy(vectors, np.zeros(0, dtype=int)).shape == (0,)
    with pytest.raises(ValueError, match="non-zero"):
        bijective_accuracy(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="at least 2"):
        bijective_accuracy(np.array([[1.0, 0.0]]), np.array([0]))


# --- nmi / cluster_nmi -----------------------------------------------------------------------------


def test_nmi_hand_computed():
    # labels [0,0,1,1], clusters [0,0,0,1]:
    # H(L) = ln 2; H(C) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 2 ln 2 - 3/4 ln 3
    # H(L|C) = 3/4 * H(2/3, 1/3) = 3/4 ln 3 - 1/2 ln 2, so I = 3/2 ln 2 - 3/4 ln 3
    # NMI = I / ((H(L) + H(C)) / 2) = (3 ln 2 - 3/2 ln 3) / (3 ln 2 - 3/4 ln 3) ~= 0.3437
    ln2, ln3 = math.log(2), math.log(3)
    expected = (3 * ln2 - 1.5 * ln3) / (3 * ln2 - 0.75 * ln3)
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(expected)
    assert nmi(np.array(["a", "a", "b", "b"]), np.array([7, 7, 3, 3])) == pytest.approx(1.0)
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def _four_blobs(per: int = 8) -> np.ndarray:
    """4 tight clusters around the first 4 axes of R^8, ``per`` items each, blob-major."""
    rng = np.random.default_rng(0)
    return np.repeat(np.eye(8)[:4], per, axis=0) + 0.01 * rng.standard_normal((4 * per, 8))


def test_cluster_nmi_separated_clusters_recovered():
    vectors = _four_blobs() * 3.0  # the scale is normalised away
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 8)
    got = cluster_nmi(vectors, labels, seed=0, bootstrap=50)
    assert got["k"] == 4
    assert got["nmi"] == pytest.approx(1.0)
    assert got["ci_low"] == pytest.approx(1.0) and got["ci_high"] == pytest.approx(1.0)
    assert got["clusters"].shape == (32,)
    # one cluster id per blob, 4 distinct ids
    assert [len(set(b)) for b in got["clusters"].reshape(4, 8).tolist()] == [1, 1, 1, 1]
    assert len(set(got["clusters"].tolist())) == 4


def test_cluster_nmi_independent_labels_near_zero():
    vectors = _four_blobs()
    # every blob holds each label exactly twice: a uniform contingency table, so I(L; C) = 0
    labels = np.tile(np.arange(4), 8)
    got = cluster_nmi(vectors, labels, seed=0, bootstrap=50)
    assert got["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= got["ci_low"] <= got["ci_high"] < 0.5
    again = cluster_nmi(vectors, labels, seed=0, bootstrap=50)
    np.testing.assert_array_equal(again["clusters"], got["clusters"])
    assert again["ci_high"] == got["ci_high"]


def test_cluster_nmi_edges():
    vectors = _four_blobs(per=2)
    labels = np.repeat(np.arange(4), 2)
    got = cluster_nmi(vectors, labels, k=2, bootstrap=0)
    assert got["k"] == 2 and len(set(got["clusters"].tolist())) <= 2
    assert math.isnan(got["ci_low"]) and math.isnan(got["ci_high"])
    with pytest.raises(ValueError, match="at least"):
        cluster_nmi(vectors, labels, k=9)
    with pytest.raises(ValueError, match="labels"):
        cluster_nmi(vectors, labels[:3])


# --- auc / interaction_auc -----------------------------------------------------------------------------


def test_auc_hand_computed():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # a tie counts 1/2
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_interaction_auc_perfect_separation():
    x_train = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    y_train = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    got = interaction_auc(x_train, y_train, np.array([[0.5], [1.5], [11.0], [12.0]]), np.array([0, 0, 1, 1]))
    assert got["auc"] == pytest.approx(1.0)
    assert got["per_group"].shape == (0,)
    assert len(got["coef"]) == 1 and got["coef"][0] > 0


def test_interaction_auc_per_group_hand_computed():
    x_train = np.arange(10.0).reshape(-1, 1)
    y_train = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1, 1])
    x_test = np.array([[1.0], [4.0], [3.0], [8.0], [2.0], [5.0], [6.0]])
    y_test = np.array([0, 0, 1, 1, 1, 0, 1])
    groups = np.array(["u1", "u1", "u1", "u1", "u2", "u2", "u3"])
    got = interaction_auc(x_train, y_train, x_test, y_test, groups_test=groups)
    # one feature with a positive coefficient: the score is increasing in x, so AUCs are those of x
    assert got["coef"][0] > 0
    # u1: positives 3, 8; negatives 1, 4 -> 3 beats 1; 8 beats both -> 3/4
    # u2: positive 2 < negative 5 -> 0; u3: one class -> skipped
    np.testing.assert_allclose(got["per_group"], [0.75, 0.0])
    assert got["groups"].tolist() == ["u1", "u2"]
    # all: positives 3, 8, 2, 6; negatives 1, 4, 5 -> 1 + 3 + 1 + 3 = 8 of 12 pairs
    assert got["auc"] == pytest.approx(8 / 12)
    with pytest.raises(ValueError, match="groups_test"):
        interaction_auc(x_train, y_train, x_test, y_test, groups_test=groups[:3])


# --- semantic IDs ------------------------------------------------------------------------------------------

# item: codes        level-1 prefix groups: {0, 1, 2, 4}, {3}
#  0: [1, 1]         level-2 prefix groups: {0, 1}, {2}, {3}, {4}
#  1: [1, 1]
#  2: [1, 2]
#  3: [2, 1]
#  4: [1, 3]
CODES = np.array([[1, 1], [1, 1], [1, 2], [2, 1], [1, 3]])


def test_prefix_candidate_recall_hand_computed():
    queries = np.array([0, 3, 2])
    relevant = [np.array([1, 2, 3]), np.array([0]), np.array([], dtype=int)]
    # level 1: q0 candidates {1, 2, 4}, relevant hits {1, 2} -> 2/3; q3 no candidates -> 0/1;
    # q2 candidates {0, 1, 4}, empty relevant -> NaN
    recall, count = prefix_candidate_recall(CODES, queries, relevant, level=1)
    np.testing.assert_allclose(recall, [2 / 3, 0.0, np.nan])
    assert count.tolist() == [3, 0, 3]
    # level 2: q0 candidates {1} -> 1/3; q3 {} -> 0; q2 {} -> NaN
    recall, count = prefix_candidate_recall(CODES, queries, relevant, level=2)
    np.testing.assert_allclose(recall, [1 / 3, 0.0, np.nan])
    assert count.tolist() == [1, 0, 0]


def test_prefix_candidate_recall_query_is_never_its_own_candidate():
    # q0 at level 2: candidates {1}; relevant {0, 1} -> 1/2
    recall, _ = prefix_candidate_recall(CODES, np.array([0]), [np.array([0, 1])], level=2)
    assert recall.tolist() == [0.5]
    with pytest.raises(ValueError, match="level"):
        prefix_candidate_recall(CODES, np.array([0]), [np.array([1])], level=3)
    with pytest.raises(ValueError, match="relevant"):
        prefix_candidate_recall(CODES, np.array([0, 1]), [np.array([1])], level=1)


def test_collision_rate_hand_computed():
    # level 1: 0, 1, 2, 4 share prefix [1] -> 4/5; level 2: only 0 and 1 share [1, 1] -> 2/5
    assert collision_rate(CODES, level=1) == pytest.approx(0.8)
    assert collision_rate(CODES, level=2) == pytest.approx(0.4)
    assert collision_rate(CODES[:1], level=2) == 0.0
    assert math.isnan(collision_rate(np.zeros((0, 2), dtype=int), level=1))
    with pytest.raises(ValueError, match="level"):
        collision_rate(CODES, level=0)
