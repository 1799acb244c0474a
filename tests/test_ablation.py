"""`sail ablate`: the eight rows are valid configurations that differ from the row before by one step of
the recipe, and a (tiny) ablation runs real pipeline runs and writes its table from them."""

from __future__ import annotations

import json
import os

import pytest

from sail_core.config import load_config
from sail_core.pipeline.ablation import NAMES, rows


def _cfgs(profile: str):
    return {r: load_config(profile=profile, overrides=o) for r, o in rows(load_config(profile=profile)).items()}


def test_the_eight_rows_are_cumulative():
    base = load_config(profile="demo")
    cfg = _cfgs("demo")
    content = [s for s in base.train.stages if s.name != "cre"]  # the CRE stage is not part of this ablation
    total = sum(s.steps for s in content)
    assert sorted(cfg) == list(range(1, 9)) == sorted(NAMES)
    for r in range(1, 8):  # one stage of the recipe's total steps
        assert [(s.name, s.steps) for s in cfg[r].train.stages] == [("stage1", total)]
    assert cfg[8].train.stages == content
    assert not cfg[1].data.media and cfg[2].data.media and "xmodal" not in cfg[1].train.stages[0].datasets
    assert all(d.patterns == ["text->text"] for d in cfg[1].datasets.values())
    shared = {d.query_instruction for d in cfg[2].datasets.values()} | {d.target_instruction for d in cfg[2].datasets.values()}
    assert len(shared) == 1 and cfg[3].datasets["q2i"].query_instruction == base.datasets["q2i"].query_instruction
    c = "copair_i2i"
    assert (cfg[3].datasets[c].cosent_weight, cfg[4].datasets[c].cosent_weight) == (0.0, base.datasets[c].cosent_weight)
    assert cfg[4].datasets[c].micl_weight == 0.0 and cfg[5].datasets[c].micl_weight == base.datasets[c].micl_weight
    assert not cfg[5].train.stages[0].balance and cfg[6].train.stages[0].balance
    assert cfg[6].train.stages[0].hard_negatives == 0 and cfg[7].train.stages[0].hard_negatives > 0
    assert all(cfg[r].eval.tasks == cfg[1].eval.tasks for r in cfg) and cfg[8].eval.reference


@pytest.mark.slow
@pytest.mark.train
def test_a_tiny_ablation_runs_real_runs_and_writes_its_table(tmp_path, monkeypatch):
    from sail_core.pipeline import tracking
    from sail_core.pipeline.ablation import ablate

    monkeypatch.setenv("SAIL_HOME", str(tmp_path / "home"))
    out = ablate("tiny", name="t", seeds=(0,), only=[2, 3], out_dir=tmp_path / "table",
                 overrides={"registry.experiment": "ablate-test"})
    table = json.loads((tmp_path / "table" / "ablation.json").read_text())
    assert [r["row"] for r in table["rows"]] == [2, 3] and "i2i.recall_at_10" in table["rows"][1]["gain"]
    md = (tmp_path / "table" / "ablation.md").read_text()
    assert "+ task instructions" in md and all(i in md for i in out["runs"].values())
    assert (tmp_path / "table" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    tags = tracking.run_tags(out["runs"]["3.s0"])
    assert tags["sail.ablation"] == "t" and tags["sail.ablation.row"] == "3" and tags["sail.ablation.done"] == "1"
    # a rerun resumes: both rows are found finished, nothing trains again
    again = ablate("tiny", name="t", seeds=(0,), only=[2, 3], out_dir=tmp_path / "table",
                   overrides={"registry.experiment": "ablate-test"})
    assert again["runs"] == out["runs"]
