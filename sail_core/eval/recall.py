"""Recall@k for embedding retrieval, against a corpus of candidates.

For query i with relevant corpus rows ``R_i``, ``recall@k = |top_k(i) ∩ R_i| / |R_i|``,
averaged over queries. ``target_index`` is either one corpus row per query (a
1-D tensor/sequence) or a list of lists (several relevant rows per query).
``exclude_index`` (i2i) names each query's own item in the corpus, which is
removed from its ranking; -1 means nothing to exclude.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_sets(target_index, n: int) -> list[set[int]]:
    if isinstance(target_index, torch.Tensor):
        target_index = target_index.tolist()
    sets = [set(t) if isinstance(t, (list, tuple, set)) else {int(t)} for t in target_index]
    if len(sets) != n:
        raise ValueError(f"target_index has {len(sets)} entries for {n} queries")
    if any(not s for s in sets):
        raise ValueError("every query needs at least one relevant corpus row in target_index")
    return sets


def per_query_recall(
    query_emb: torch.Tensor,
    corpus_emb: torch.Tensor,
    target_index: torch.Tensor | Sequence,
    ks: Sequence[int],
    exclude_index: torch.Tensor | Sequence[int] | None = None,
    chunk: int = 1024,
) -> dict[int, torch.Tensor]:
    """Recall@k of each query (shape (Q,)) for each k; scores are dot products of the given embeddings."""
    q_n, c_n = query_emb.shape[0], corpus_emb.shape[0]
    targets = _as_sets(target_index, q_n)
    if exclude_index is not None:
        exclude = torch.as_tensor(list(exclude_index) if not isinstance(exclude_index, torch.Tensor) else exclude_index)
    kmax = min(max(ks), c_n)
    out = {k: torch.zeros(q_n) for k in ks}
    for s in range(0, q_n, chunk):
        scores = query_emb[s : s + chunk].float() @ corpus_emb.float().T
        if exclude_index is not None:
            ex = exclude[s : s + chunk]
            rows = torch.nonzero(ex >= 0).flatten()
            scores[rows, ex[rows]] = float("-inf")
        top = scores.topk(kmax, dim=1).indices.tolist()
        for i, ranked in enumerate(top):
            rel = targets[s + i]
            for k in ks:
                out[k][s + i] = len(rel.intersection(ranked[:k])) / len(rel)
    return out


def recall_at_k(
    query_emb: torch.Tensor,
    corpus_emb: torch.Tensor,
    target_index: torch.Tensor | Sequence,
    ks: Sequence[int],
    exclude_index: torch.Tensor | Sequence[int] | None = None,
) -> dict[int, float]:
    """Mean Recall@k over queries, ``{k: value}`` with values in [0, 1]."""
    per = per_query_recall(query_emb, corpus_emb, target_index, ks, exclude_index)
    return {k: float(v.mean()) if len(v) else float("nan") for k, v in per.items()}
