"""The MLflow registry alias flow on a real sqlite store (SAIL_HOME is a temp folder)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from sail_core.pipeline import registry, tracking
from sail_core.config import load_config
from sail_core.paths import Workdir


def _tiny_onnx(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "export.json").write_text(json.dumps({"dims": [4]}))
    return folder


def test_register_challenger_then_champion_and_previous(tmp_path):
    cfg = load_config(profile="tiny", overrides={"registry.mlflow_model": "test-alias-flow"})
    wd = Workdir(tmp_path)
    name = cfg.registry.mlflow_model
    onnx_dir = _tiny_onnx(tmp_path / "onnx")

    run1 = tracking.start_pipeline_run(cfg, wd, {"sail.data_hash": "abc"})
    v1 = registry.register_onnx(run1, onnx_dir, name, {"git_sha": "s1", "data_hash": "abc", "airflow_run_id": "r1"})
    assert registry.by_alias(name, registry.CHALLENGER).version == v1
    assert registry.by_alias(name, registry.CHAMPION) is None
    assert registry.set_champion(name, v1) is None

    run2 = tracking.start_pipeline_run(cfg, wd, {})
    v2 = registry.register_onnx(run2, onnx_dir, name, {"git_sha": "s2", "data_hash": "def", "airflow_run_id": "r2"})
    assert v2 == v1 + 1
    assert registry.by_alias(name, registry.CHALLENGER) == registry.ModelRef(v2, run2)
    assert registry.by_alias(name, registry.CHAMPION).version == v1   # challenger does not replace champion

    assert registry.set_champion(name, v2) == v1
    assert registry.by_alias(name, registry.CHAMPION).version == v2
    assert registry.by_alias(name, registry.PREVIOUS).version == v1

    mv = registry.client().get_model_version(name, str(v2))
    assert mv.tags["git_sha"] == "s2" and mv.tags["data_hash"] == "def" and mv.tags["airflow_run_id"] == "r2"
    fetched = registry.download_onnx(name, v1, tmp_path / "dl")
    assert {p.name for p in fetched.iterdir()} >= {"model.onnx", "tokenizer.json", "export.json"}
    run = registry.client().get_run(run1)
    assert run.data.tags["sail.data_hash"] == "abc" and run.data.params["profile"] == "tiny"
