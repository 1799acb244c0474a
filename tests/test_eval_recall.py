"""Recall@k against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from sail_core.eval.recall import recall_at_k


def test_single_target_hand_computed():
    # corpus: 4 unit vectors; query 0 prefers c0 > c1 > c2 > c3, query 1 prefers c3 > c2 > c1 > c0
    corpus = torch.eye(4)
    queries = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    # q0's target c1 sits at rank 2; q1's target c3 at rank 1
    got = recall_at_k(queries, corpus, torch.tensor([1, 3]), ks=[1, 2, 4])
    assert got == {1: pytest.approx(0.5), 2: pytest.approx(1.0), 4: pytest.approx(1.0)}


def test_query_item_is_excluded_for_i2i():
    corpus = torch.eye(4)
    queries = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    # without exclusion c0 (the query item itself) takes rank 1 and the target c1 falls to rank 2
    assert recall_at_k(queries, corpus, [1], ks=[1])[1] == 0.0
    assert recall_at_k(queries, corpus, [1], ks=[1], exclude_index=[0])[1] == 1.0
    assert recall_at_k(queries, corpus, [1], ks=[1], exclude_index=[-1])[1] == 0.0


def test_several_targets_per_query():
    corpus = torch.eye(5)
    queries = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    # q0 relevant {1, 3}: ranks 2 and 4; q1 relevant {0}: rank 5
    got = recall_at_k(queries, corpus, [[1, 3], [0]], ks=[1, 2, 4, 5])
    # k=1: (0/2 + 0)/2; k=2: (1/2 + 0)/2; k=4: (2/2 + 0)/2; k=5: (1 + 1)/2
    assert got == {1: 0.0, 2: pytest.approx(0.25), 4: pytest.approx(0.5), 5: pytest.approx(1.0)}


def test_k_larger_than_corpus_and_bad_input():
    corpus = torch.eye(3)
    assert recall_at_k(torch.eye(3), corpus, [0, 1, 2], ks=[50])[50] == 1.0
    with pytest.raises(ValueError, match="entries for 3 queries"):
        recall_at_k(torch.eye(3), corpus, [0, 1], ks=[1])
