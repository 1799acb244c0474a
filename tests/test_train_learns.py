"""Training learns: a short real run at least doubles the untrained model's Recall@10 on the pairs it
trained on, and the same run on shuffled targets does not.

The slice is the ``tiny`` profile's MovieLens catalogue without media (titles, years, genres), and the
task is ``copair_i2i`` as text -> text: a fixed subset of its training pairs (a movie -> a movie rated by
the same people within a week). Pretrained MiniLM knows nothing of who watched what, so the untrained
model's recall is low and what it gains is learnt from the pairs. The model is the real one, trained
by :func:`sail_core.train.loop.train_stage` with the real InfoNCE loss, and scored with the evaluation
code's embedder and Recall@k against the whole catalogue (the query's own item excluded). The control
run permutes the target column across the same rows: the same items, the same number of steps, but no
true pair, so a loss or loop that "improves" without learning the pairs (a sign error, a detached graph,
a dead optimizer) fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sail_core.config import load_config
from sail_core.data.demo import build_demo
from sail_core.data.pair_data import load_pairs
from sail_core.eval.embed import ModelEncoder, item_sides
from sail_core.eval.evaluate import baseline_model
from sail_core.eval.recall import recall_at_k
from sail_core.features.item_inputs import ItemInputs
from sail_core.model.omni import load_model
from sail_core.train.loop import train_stage

pytestmark = pytest.mark.train

DATASET = "copair_i2i"
PAIRS = 48  # training pairs in the fixed subset
STEPS = 20
K = 10


@pytest.fixture(scope="module")
def cfg():
    """``tiny`` with copair_i2i as text -> text only, and a short single-dataset stage at a higher learning rate."""
    base = load_config(profile="tiny", overrides={f"datasets.{DATASET}.patterns": ["text->text"]})
    stage = base.train.stages[0].model_copy(update={
        "name": "learns", "datasets": [DATASET], "steps": STEPS, "batch_size": 16, "lr": 2e-4,
        "warmup_steps": 2, "checkpoint_every": STEPS, "hard_negatives": 0,
    })
    return base.model_copy(update={"train": base.train.model_copy(update={"stages": [stage]})})


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory, cfg):
    """The tiny MovieLens slice without media; its copair_i2i table cut to :data:`PAIRS` training pairs."""
    out = tmp_path_factory.mktemp("learns") / "data"
    build_demo(out, cfg.data.model_copy(update={"media": False}))
    _write_pairs(out, load_pairs(out, DATASET, "train").sample(n=PAIRS, random_state=0))
    return out


def _write_pairs(folder: Path, pairs: pd.DataFrame) -> None:
    """Replace ``folder``'s :data:`DATASET` table by ``pairs``, all in the train split, in the table's dtypes."""
    path = folder / "pairs" / f"{DATASET}.parquet"
    dtypes = pd.read_parquet(path).dtypes.to_dict()
    pairs.reset_index(drop=True).assign(split="train").astype(dtypes).to_parquet(path, index=False)


def _shuffled_copy(src: Path, dst: Path) -> Path:
    """``src`` with the target column permuted across rows: no row keeps its target, none pairs an item with itself."""
    shutil.copytree(src, dst)
    pairs = load_pairs(dst, DATASET, "train")
    queries, targets = pairs["query_item"].to_numpy(), pairs["target_item"].to_numpy()
    rng = np.random.default_rng(1)
    while True:
        shuffled = targets[rng.permutation(len(targets))]
        if not ((shuffled == targets) | (shuffled == queries)).any():
            break
    _write_pairs(dst, pairs.assign(target_item=shuffled))
    return dst


def recall_on_pairs(model, data_dir: Path, cfg) -> float:
    """Recall@K of the subset's true pairs (query item -> target item, text only) against the whole catalogue."""
    ds = cfg.datasets[DATASET]
    inputs = ItemInputs.from_data_dir(data_dir, model.cfg, data_dir.parent / "features", progress=False)
    pairs = load_pairs(data_dir, DATASET, "train")
    items = list(inputs.items)
    row = {item: n for n, item in enumerate(items)}
    relevant: dict[str, set[int]] = {}
    for q, t in zip(pairs["query_item"], pairs["target_item"]):
        relevant.setdefault(str(q), set()).add(row[str(t)])
    encode = ModelEncoder(model, inputs, batch_size=64)
    corpus = torch.from_numpy(encode(item_sides(items, "text", ds.target_instruction)))
    queries = torch.from_numpy(encode(item_sides(list(relevant), "text", ds.query_instruction)))
    own = [row[q] for q in relevant]
    return recall_at_k(queries, corpus, [sorted(r) for r in relevant.values()], [K], exclude_index=own)[K]


def test_training_doubles_recall_on_its_pairs_and_shuffled_targets_do_not(cfg, slice_dir, tmp_path):
    stage = cfg.train.stages[0]
    untrained = recall_on_pairs(baseline_model(cfg), slice_dir, cfg)

    summary = train_stage(cfg, stage, slice_dir, tmp_path / "real", cache_dir=tmp_path / "features")
    trained = recall_on_pairs(load_model(tmp_path / "real" / "model"), slice_dir, cfg)

    shuffled_dir = _shuffled_copy(slice_dir, tmp_path / "shuffled" / "data")
    train_stage(cfg, stage, shuffled_dir, tmp_path / "shuffled", cache_dir=tmp_path / "features")
    shuffled = recall_on_pairs(load_model(tmp_path / "shuffled" / "model"), slice_dir, cfg)

    print(f"\n{DATASET} text->text Recall@{K} on its {PAIRS} training pairs after {STEPS} steps: "
          f"untrained {untrained:.3f}, trained {trained:.3f}, trained on shuffled targets {shuffled:.3f} "
          f"(final loss {summary['final_loss']:.3f})")
    assert untrained > 0, "the untrained model finds none of the pairs: the slice gives no baseline to double"
    assert trained >= 2 * untrained, (
        f"training did not learn its own pairs: Recall@{K} {untrained:.3f} -> {trained:.3f} (needs >= {2 * untrained:.3f})")
    assert shuffled < 2 * untrained, (
        f"training on shuffled targets reached Recall@{K} {shuffled:.3f} (>= 2 x {untrained:.3f}): "
        "the gain does not come from the true pairs")
