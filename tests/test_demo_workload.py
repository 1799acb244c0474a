"""The demo's workload is pinned: speed must never come from silently shrinking it.

`make demo` has a hard ceiling of 15 minutes on 2 cores (install excluded). If a change makes the demo
faster by training less, evaluating on fewer held-out items or building a smaller catalogue, this test
fails and the change has to say so here, on purpose.
"""

from __future__ import annotations

import pytest

from sail_core.config import load_config
from sail_core.data.demo import demo_tables
from sail_core.data.pairs import derive_item_splits, derive_pairs


@pytest.fixture(scope="module")
def demo():
    return load_config(profile="demo")


def test_training_workload(demo):
    stages = [(s.name, s.steps, s.batch_size, list(s.datasets), s.balance, s.hard_negatives) for s in demo.train.stages]
    assert stages == [("stage1", 100, 32, ["copair_i2i", "q2i", "cls", "xmodal"], False, 0),
                      ("stage2", 20, 32, ["copair_i2i", "q2i", "xmodal"], True, 0),
                      ("stage3", 20, 32, ["copair_i2i", "q2i", "xmodal"], True, 2),
                      ("cre", 40, 32, ["seq2item", "id2item", "copair_i2i"], False, 0)]
    assert demo.train.stages[2].hard_negative_datasets == ["copair_i2i", "q2i"] and demo.train.balance.enabled
    copair = demo.datasets["copair_i2i"]
    assert (copair.cosent_weight, copair.micl_weight, copair.late_fusion_weight) == (0.1, 0.1, 0.1)
    assert demo.model.backbone == "minilm" and demo.model.max_length == 64
    assert demo.model.inputs.keyframes == 2 and demo.data.render_keyframes == 2 and demo.data.media is True


def test_evaluation_workload(demo):
    assert set(demo.eval.tasks) == {"i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni", "cls"}
    assert list(demo.eval.ks) == [1, 10, 50] and list(demo.eval.label_ks) == [1, 3] and demo.eval.reference


def test_catalogue_and_held_out_items(demo):
    """All of MovieLens-100k (1,681 items with a title, 99,991 ratings); per dataset, its rows per split and the
    distinct test items behind its test pairs (at least 500 behind every gated task: issue 9)."""
    items, interactions = demo_tables(demo.data)
    assert (len(items), len(interactions)) == (1681, 99991)
    pairs = derive_pairs(items, interactions, demo.data)
    splits = derive_item_splits(items, interactions, demo.data)
    test_items = {i for i, s in splits.items() if s == "test"}
    workload = {}
    for name, frame in pairs.items():
        test = frame[frame["split"] == "test"]
        touched = set(test[["query_item", "target_item"]].stack().dropna()) & test_items
        workload[name] = tuple(int((frame["split"] == s).sum()) for s in ("train", "val", "test")) + (len(touched),)
    assert workload == {
        "copair_i2i": (6516, 1525, 6056, 504),
        "q2i": (2016, 168, 504, 504),
        "cls": (1666, 315, 910, 504),
        "xmodal": (1009, 168, 504, 504),
    }
