"""The CRE tasks a training stage can list among its datasets: ``seq2item`` and ``id2item``.

Both embed items the way the catalogue index does (``omni`` with ``cre.instruction``), so what they
train is what the index, the served encoder and the recommendation metrics read.

* **seq2item** (rows: :func:`sail_core.rec.sequences.training_sequences`, built at the start of the
  stage with its starting model and the teacher): the sequence's items are pooled by the sequence
  encoder (:mod:`sail_core.rec.sequence_encoder`), and InfoNCE (in-batch negatives, every Matryoshka
  dim, the learnable temperature ``seq2item``) pulls the pooled sequence to the target item's omni
  embedding. With ``sequence_gradient: false`` the sequence items come from the starting model's
  embeddings (computed once), so a step embeds only its targets.
* **id2item** (rows: the teacher's ``id_embeddings``): a learned projection (linear or a 2-layer MLP)
  maps the item's ID embedding into the embedding space, and InfoNCE aligns it with the item's omni
  embedding (in-batch negatives, every Matryoshka dim, temperature ``id2item``). **Why contrastive, not
  cosine/MSE**: a regression target can be met by collapsing the items onto the projection's image
  (the projection learns too, so both sides can shrink towards a mean), whereas InfoNCE must keep items
  apart that the teacher keeps apart, which is the collaborative structure we want, and it is the
  same objective as the retrieval it serves. The auxiliary i2i retrieval task is a pair dataset (the
  demo's ``copair_i2i``) listed in the same stage: stochastic specialisation alternates them.

The sequence encoder and projection are trained with the stage (outside DDP: their gradients are averaged
over ranks by the loop, like the temperatures), checkpointed, and saved beside the model as ``cre.pt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from sail_core.config import Config
from sail_core.features.embed import embed_samples
from sail_core.features.item_inputs import ItemInputs
from sail_core.losses.keys import key_tensor, side_key
from sail_core.rec.sequence_encoder import SequenceEncoder, pack
from sail_core.rec.sequences import training_sequences
from sail_core.rec.teacher import ID_EMBEDDINGS, positive_events, read_id_embeddings

SEQUENCES_FILE = "sequences.parquet"


def _projection(kind: str, factors: int, width: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(factors, width)
    return nn.Sequential(nn.Linear(factors, width), nn.GELU(), nn.Linear(width, width))


@torch.no_grad()
def embed_items(model, inputs: ItemInputs, items: list[str], instruction: str, chunk: int = 64) -> torch.Tensor:
    """(len(items), D) omni embeddings of ``items`` in eval mode, without gradient."""
    was = model.training
    model.eval()
    try:
        samples = [inputs.side(i, None, "omni", instruction) for i in items]
        return torch.cat([embed_samples(model, model, samples[s:s + chunk], inputs.collate_modes, chunk=None)
                          for s in range(0, len(samples), chunk)])
    finally:
        model.train(was)


class CreTasks(nn.Module):
    """The CRE tasks of one stage: their modules, their rows, and the loss terms of a step."""

    def __init__(self, cfg: Config, width: int, names: list[str]):
        super().__init__()
        self.cfg, self.names = cfg, list(names)
        s = cfg.cre.seq2item
        self.sequence = SequenceEncoder(s.encoder, width, s.max_length, s.encoder_layers, s.encoder_heads)
        self.projection = _projection(cfg.cre.id2item.projection, cfg.cre.teacher.factors, width)
        self.frozen: torch.Tensor | None = None   # starting model's embeddings of the teacher items
        self.frozen_index: dict[str, int] = {}
        self.teacher: dict[str, np.ndarray] = {}

    def prepare(self, model, inputs: ItemInputs, data_dir: Path, teacher_dir: Path, out_dir: Path) -> dict[str, pd.DataFrame]:
        """The stage's rows per CRE task, built with the starting ``model``; writes ``sequences.parquet``."""
        if teacher_dir is None:
            raise ValueError(f"the stage trains {self.names}, which need the teacher's tables; run the teacher step "
                             "(`sail teacher`, the DAG's `teacher` task) and pass its folder")
        items, vectors = read_id_embeddings(Path(teacher_dir), ID_EMBEDDINGS)
        if vectors.shape[1] != self.cfg.cre.teacher.factors:
            raise ValueError(f"{teacher_dir}/{ID_EMBEDDINGS}.parquet holds vectors of {vectors.shape[1]} dims but "
                             f"cre.teacher.factors = {self.cfg.cre.teacher.factors}; run the teacher step again")
        self.teacher = dict(zip(items, vectors))
        tables: dict[str, pd.DataFrame] = {}
        if "id2item" in self.names:
            tables["id2item"] = pd.DataFrame({"item_id": items})
        if "seq2item" in self.names:
            from sail_core.rec.teacher import seen_matrix

            events = positive_events(self.cfg, data_dir)
            self.frozen = embed_items(model, inputs, items, self.cfg.cre.instruction)
            self.frozen_index = {i: n for n, i in enumerate(items)}
            seen = seen_matrix(self.cfg, events) if {"collab_single", "collab_multi"} & set(
                self.cfg.cre.seq2item.builders) else None
            rows = training_sequences(self.cfg, events, items, self.frozen.numpy(), items, vectors, seen)
            if rows.empty:
                raise ValueError("seq2item: no user has two positive events on train items before the cutoff; "
                                 "drop seq2item from the stage")
            rows.to_parquet(Path(out_dir) / SEQUENCES_FILE, index=False)
            tables["seq2item"] = rows
        return tables

    def terms(self, name: str, frame: pd.DataFrame, net, model, inputs: ItemInputs, loss_fn, rng,
              one_forward: bool) -> dict[str, torch.Tensor]:
        """The loss terms of one step of ``name`` on ``frame``'s rows: ``<name>_<dim>_loss``."""
        instruction = self.cfg.cre.instruction
        if name == "id2item":
            ids = frame["item_id"].astype(str).tolist()
            samples = [inputs.side(i, None, "omni", instruction, True, rng) for i in ids]
            z = embed_samples(net, model, samples, inputs.collate_modes, chunk=None if one_forward else 64)
            q = self.projection(torch.as_tensor(np.stack([self.teacher[i] for i in ids])))
            return loss_fn(q, z, "id2item", query_keys=key_tensor([side_key(None, f"id:{i}") for i in ids]),
                           target_keys=key_tensor([side_key(i, None) for i in ids]), prefix="id2item")
        records = frame.to_dict("records")
        targets = [str(r["target_item"]) for r in records]
        if self.cfg.cre.seq2item.sequence_gradient:  # every item through the model, one forward
            unique = list(dict.fromkeys(targets + [str(i) for r in records for i in r["items"]]))
            where = {i: n for n, i in enumerate(unique)}
            z = embed_samples(net, model, [inputs.side(i, None, "omni", instruction, True, rng) for i in unique],
                              inputs.collate_modes, chunk=None if one_forward else 64)
            target_z, table = z[[where[t] for t in targets]], z
        else:
            where = self.frozen_index
            unique = list(dict.fromkeys(targets))
            z = embed_samples(net, model, [inputs.side(i, None, "omni", instruction, True, rng) for i in unique],
                              inputs.collate_modes, chunk=None if one_forward else 64)
            target_z, table = z[[unique.index(t) for t in targets]], self.frozen
        index, mask = pack([[where[str(i)] for i in r["items"]] for r in records], self.cfg.cre.seq2item.max_length)
        pooled = self.sequence(table[index], mask)
        keys = [side_key(None, f"seq:{r['user_id']}:{r['target_item']}:{r['builder']}") for r in records]
        return loss_fn(pooled, target_z, "seq2item", query_keys=key_tensor(keys),
                       target_keys=key_tensor([side_key(t, None) for t in targets]), prefix="seq2item")

