"""Training parts: batches (instructions, keys), warm-up/cosine schedule, atomic checkpoints."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from sail_core.config import DatasetConfig
from sail_core.losses.keys import side_key
from sail_core.train.batches import make_batch, with_negatives
from sail_core.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from sail_core.train.schedule import warmup_cosine_factor

ITEMS = {"m1": "Alien Day (1979). Genres: Sci-Fi", "m2": "Love Story (1970). Genres: Romance"}
DS = DatasetConfig(task="q2i", query_instruction="Find a movie.", target_instruction="A movie.")


def test_make_batch_wraps_instructions_and_keys():
    rows = pd.DataFrame({"query_item": [None, "m2"], "query_text": ["space film", None],
                         "target_item": ["m1", None], "target_text": [None, "Romance"]})
    b = make_batch(rows, "q2i", DS, ITEMS)
    assert b.queries == ["Instruct: Find a movie.\nInput: space film", f"Instruct: Find a movie.\nInput: {ITEMS['m2']}"]
    assert b.targets == [f"Instruct: A movie.\nInput: {ITEMS['m1']}", "Instruct: A movie.\nInput: Romance"]
    assert b.target_keys.tolist() == [side_key("m1", None), side_key(None, "Romance")]
    assert b.query_keys.tolist() == [side_key(None, "space film"), side_key("m2", None)]
    b = with_negatives(b, [["m2"], ["m1"]], DS, ITEMS)
    assert b.hard_negatives_per_query == 1 and b.negatives[0].endswith(ITEMS["m2"])
    with pytest.raises(ValueError, match="same number"):
        with_negatives(b, [["m2"], ["m1", "m2"]], DS, ITEMS)


def test_make_batch_names_unknown_item():
    rows = pd.DataFrame({"query_item": ["zz"], "query_text": [None], "target_item": ["m1"], "target_text": [None]})
    with pytest.raises(KeyError, match="pairs/q2i row 0: item 'zz'"):
        make_batch(rows, "q2i", DS, ITEMS)


def test_warmup_then_cosine():
    f = [warmup_cosine_factor(s, warmup_steps=4, total_steps=12) for s in range(12)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and f[8] == pytest.approx(0.5) and f[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(f[4:], f[5:]))


def test_checkpoints_are_atomic_pruned_and_warn_on_mismatch(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"w": torch.tensor([step]), "meta": {"seed": 0, "steps": 10}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004.pt", "step_0000006.pt"]
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / ".step_0000008.pt.tmp").write_bytes(b"half-written")  # a crash mid-save is ignored
    last = latest_checkpoint(tmp_path)
    assert last.name == "step_0000006.pt"
    state = load_checkpoint(last, expect={"seed": 0, "steps": 10})
    assert state["step"] == 6 and state["w"].item() == 6
    with pytest.warns(UserWarning, match="checkpoint has seed=0 but this run has seed=1"):
        load_checkpoint(last, expect={"seed": 1, "steps": 10})


def test_embed_with_grad_equals_one_padded_forward():
    from sail_core.config import ModelConfig
    from sail_core.model.embedder import build_model
    from sail_core.train.embed import embed_with_grad

    model = build_model(ModelConfig(max_length=32)).eval()
    texts = ["Romance", "Alien Day (1979). Genres: Sci-Fi, Horror, Thriller", "Romance", "a", "Love Story (1970)"]
    direct = model(**model.tokenize(texts))
    chunked = embed_with_grad(model, model, texts, chunk=2)
    assert torch.allclose(direct, chunked, atol=1e-5)
    chunked.sum().backward()
    assert model.backbone.embeddings.word_embeddings.weight.grad is not None
