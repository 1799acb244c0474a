"""Embed a training batch's strings with gradient, without wasted compute.

Identical strings (a genre label that is the target of many rows, an item that
is both a query and a target) are embedded once and shared by index, and the
unique strings are sorted by token length and run in chunks trimmed to each
chunk's longest sequence, so short texts do not pay for the longest one's
padding. The result equals one padded forward of all strings (attention masks
make padding inert) up to float rounding.
"""

from __future__ import annotations

import torch

from sail_core.model.embedder import SailEmbedder


def embed_with_grad(net: torch.nn.Module, model: SailEmbedder, texts: list[str], chunk: int | None = 32) -> torch.Tensor:
    """(len(texts), D) embeddings from ``net`` (the model, or its DDP wrapper) in train mode.

    ``chunk=None`` runs one forward (DDP needs exactly one forward per backward).
    """
    unique = list(dict.fromkeys(texts))
    chunk = chunk or len(unique)
    where = {t: i for i, t in enumerate(unique)}
    tokens = model.tokenize(unique)
    lengths = tokens["attention_mask"].sum(dim=1)
    order = torch.argsort(lengths, descending=True)
    parts = []
    for s in range(0, len(unique), chunk):
        idx = order[s : s + chunk]
        width = int(lengths[idx].max())
        parts.append(net(input_ids=tokens["input_ids"][idx, :width], attention_mask=tokens["attention_mask"][idx, :width]))
    z = torch.empty(len(unique), parts[0].shape[-1], dtype=parts[0].dtype)
    z = z.index_put((order,), torch.cat(parts))
    return z[torch.tensor([where[t] for t in texts])]
