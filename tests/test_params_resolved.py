"""params.resolved.yaml, the params file dvc.yaml reads: committed up to date, and its training-stage chain."""

from __future__ import annotations

import yaml

from sail_core.config import load_config
from sail_core.pipeline.dvc_params import RESOLVED_PARAMS, dvc_section, model_stages, resolved_params
from tests.project import REPO


def test_the_committed_file_is_the_resolved_configuration_of_its_profile():
    path = REPO / RESOLVED_PARAMS
    written = path.read_text()
    profile = yaml.safe_load(written)["profile"]
    cfg = load_config(REPO / "params.yaml", profile)
    assert written == resolved_params(cfg), (
        f"{path} is out of date with params.yaml; run `.venv/bin/sail --profile {profile} config resolve`")


def test_the_resolved_file_holds_the_whole_configuration_and_the_chain():
    cfg = load_config(REPO / "params.yaml", "tiny")
    tree = yaml.safe_load(resolved_params(cfg))
    assert tree["profile"] == tree["dvc"]["profile"] == "tiny"
    assert tree["train"]["stages"] == [s.model_dump(mode="json") for s in cfg.train.stages]
    assert {"data", "contracts", "datasets", "model", "train", "eval"} <= set(tree)


def test_each_training_stage_starts_from_the_one_before():
    cfg = load_config(REPO / "params.yaml", "tiny")
    first = cfg.train.stages[0]
    second = first.model_copy(update={"name": "stage2"})
    third = first.model_copy(update={"name": "polish", "hard_negatives": 2, "hard_negative_datasets": ["q2i"]})
    cre = first.model_copy(update={"name": "cre", "datasets": ["seq2item", "id2item", "copair_i2i"]})
    cfg.train.stages = [first, second, third, cre]
    no, no_teacher = "sail_core/train/hard_negatives.py", "sail_core/train/cre.py"
    assert dvc_section(cfg) == {
        "profile": "tiny",
        "train_stages": {
            first.name: {"index": 0, "starts_from": "sail_core/model", "negatives": no, "teacher": no_teacher},
            "stage2": {"index": 1, "starts_from": f"models/{first.name}", "negatives": no, "teacher": no_teacher},
            "polish": {"index": 2, "starts_from": "models/stage2", "negatives": "data/mined/polish",
                       "teacher": no_teacher},
            "cre": {"index": 3, "starts_from": "models/polish", "negatives": no, "teacher": "data/teacher"},
        },
        "mine_stages": {"polish": {"index": 2, "starts_from": "models/stage2"}},
        "final_model": "models/cre",
    }
    assert model_stages(cfg) == ["teacher", "mine@polish", f"train@{first.name}", "train@stage2", "train@polish",
                                 "train@cre", "index", "sid", "evaluate", "export"]


def test_ingest_tracks_every_data_key_that_changes_its_output():
    from sail_core.config import DataConfig

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    tracked = {key.removeprefix("data.") for key in stages["ingest"]["params"][0][RESOLVED_PARAMS]}
    speed_only = {"media_workers"}
    assert tracked == set(DataConfig.model_fields) - speed_only, (
        "dvc.yaml's ingest stage must list every data.* key that changes the data as params")
