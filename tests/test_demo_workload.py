"""The demo's workload is pinned: speed must never come from silently shrinking it.

`make demo` has a hard ceiling of 15 minutes on 2 cores (install excluded). If a change makes the demo
faster by training less, evaluating on fewer held-out items or building a smaller catalogue, this test
fails and the change has to say so here, on purpose.
"""

from __future__ import annotations

import pytest

from sail_core.config import load_config
from sail_core.data.demo import demo_tables
from sail_core.data.pairs import derive_pairs


@pytest.fixture(scope="module")
def demo():
    return load_config(profile="demo")


def test_training_workload(demo):
    stages = [(s.name, s.steps, s.batch_size, list(s.datasets)) for s in demo.train.stages]
    assert stages == [("stage1", 100, 32, ["copair_i2i", "q2i", "cls", "xmodal"])]
    assert demo.model.backbone == "minilm" and demo.model.max_length == 64
    assert demo.model.inputs.keyframes == 2 and demo.data.render_keyframes == 2 and demo.data.media is True


def test_evaluation_workload(demo):
    assert set(demo.eval.tasks) == {"i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni"}
    assert list(demo.eval.ks) == [1, 10, 50]


def test_catalogue_and_held_out_items(demo):
    """1,000 items and 96,056 ratings; per dataset, the test pairs and the held-out items they touch."""
    items, interactions = demo_tables(demo.data)
    assert (len(items), len(interactions)) == (1000, 96056)
    pairs = derive_pairs(items, interactions, demo.data)
    workload = {}
    for name, frame in pairs.items():
        sides = ["query_item", "target_item"]
        test, train = frame[frame["split"] == "test"], frame[frame["split"] == "train"]
        held = set(test[sides].stack().dropna()) - set(train[sides].stack().dropna())
        workload[name] = (len(frame), len(test), len(held))
    assert workload == {
        "copair_i2i": (20000, 6182, 149),
        "q2i": (2000, 300, 150),
        "cls": (1938, 300, 150),
        "xmodal": (1000, 150, 150),
    }
