"""The Triton model configs written by serving/repository.py, parsed back with protobuf's text format, and the
semantic-ID folder a version carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sail_core.config import ServeConfig
from sail_core.index.semantic_ids import save_semantic_ids
from sail_core.preprocess.export_format import META_FILE, ExportMeta
from serving.repository import CONFIG, GPU_CONFIG, SID_DIR, SID_FILES, model_dir, read_config, write_configs, \
    write_version

INPUTS = {"TEXT": [1], "IMAGE": [1], "FRAMES": [-1], "AUDIO": [1], "DIM": [1], "TASK": [1], "SIDE": [1]}


def _check_shared(config: mc.ModelConfig, name: str, versions: list[int], intra_op_threads: str) -> None:
    assert config.name == name and config.backend == "python"
    assert list(config.version_policy.specific.versions) == versions
    assert {i.name: list(i.dims) for i in config.input} == INPUTS
    assert all(i.optional for i in config.input)
    types = {i.name: i.data_type for i in config.input}
    assert types.pop("DIM") == mc.TYPE_INT32 and set(types.values()) == {mc.TYPE_STRING}
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("EMBEDDING", mc.TYPE_FP32, [-1]), ("SID", mc.TYPE_INT32, [-1])]  # SID: one code per level
    assert config.parameters["intra_op_threads"].string_value == intra_op_threads


def test_cpu_and_gpu_configs_parse_back_with_the_same_fields(tmp_path):
    serve = ServeConfig(max_batch_size=48)
    path = write_configs(tmp_path, serve, [2, 5])
    folder = model_dir(tmp_path, serve)
    assert path == folder / CONFIG

    cpu = read_config(path)
    _check_shared(cpu, folder.name, [2, 5], str(serve.intra_op_threads))  # the serve block's threads
    assert cpu.max_batch_size == 48
    assert cpu.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(cpu.dynamic_batching.preferred_batch_size) == []
    [group] = cpu.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_CPU, serve.instances, [])
    assert cpu.parameters["onnx_providers"].string_value == "CPUExecutionProvider"

    gpu = read_config(folder / GPU_CONFIG)
    _check_shared(gpu, folder.name, [2, 5], "0")  # onnxruntime's default on a GPU host
    assert gpu.max_batch_size == 256  # at least 256 in production
    assert list(gpu.dynamic_batching.preferred_batch_size) == [64, 128]
    assert gpu.dynamic_batching.max_queue_delay_microseconds == 1000
    [group] = gpu.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [0])
    assert gpu.parameters["onnx_providers"].string_value == "CUDAExecutionProvider,CPUExecutionProvider"


def test_configs_start_with_their_comment_header(tmp_path):
    serve = ServeConfig()
    write_configs(tmp_path, serve, [1])
    folder = model_dir(tmp_path, serve)
    cpu = (folder / CONFIG).read_text().splitlines()
    assert cpu[0].startswith("# Written by serving/repository.py") and not cpu[1].startswith("#")
    gpu = (folder / GPU_CONFIG).read_text().splitlines()
    header = [line for line in gpu if line.startswith("#")]
    assert gpu[:len(header)] == header and len(header) > 5
    assert any("--model-control-mode=explicit" in line for line in header)


def test_rewriting_serves_only_the_new_version_and_leaves_no_temp_file(tmp_path):
    serve = ServeConfig(max_batch_size=8)
    write_configs(tmp_path, serve, [1])
    path = write_configs(tmp_path, serve, [3])
    assert list(read_config(path).version_policy.specific.versions) == [3]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([CONFIG, GPU_CONFIG])


def test_no_version_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one version"):
        write_configs(tmp_path, ServeConfig(), [])


def test_a_broken_config_fails_to_parse_naming_the_line(tmp_path):
    path = tmp_path / CONFIG
    path.write_text('name: "x"\nmax_batch_size: "many"\n')
    with pytest.raises(text_format.ParseError, match="2:"):
        read_config(path)


def _fake_export(folder):
    """An export folder whose files are placeholders: write_version copies them, nothing loads them here."""
    meta = ExportMeta(hidden_size=8, max_length=16, max_instruction_length=8, matryoshka_dims=[4],
                      image_size=32, vision_feature_shape=[4, 1, 1], keyframes=2, max_frames=2, audio_dim=4,
                      audio_chunk_seconds=1.0, instructions={}, instruction_defaults={}, inputs=["text"])
    folder.mkdir()
    for name in meta.files:
        (folder / name).write_bytes(b"placeholder")
    (folder / META_FILE).write_text(json.dumps(meta.to_dict()))
    return folder


def test_a_version_carries_its_semantic_ids_whole_or_not_at_all(tmp_path):
    serve = ServeConfig()
    export = _fake_export(tmp_path / "export")
    sid = tmp_path / "sid"
    save_semantic_ids(sid, ["a", "b", "c"], np.eye(3, 8, dtype=np.float32), [2, 2])
    target = write_version(tmp_path / "repo", serve, export, 1, sid_dir=sid)
    assert sorted(p.name for p in (target / SID_DIR).iterdir()) == sorted(SID_FILES)
    assert all((target / SID_DIR / n).read_bytes() == (sid / n).read_bytes() for n in SID_FILES)
    assert not (write_version(tmp_path / "repo", serve, export, 2) / SID_DIR).exists()

    (sid / "codes.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="lacks codes.parquet; rebuild it with"):
        write_version(tmp_path / "repo", serve, export, 3, sid_dir=sid)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_version(tmp_path / "repo", serve, export, 3, sid_dir=tmp_path / "nowhere")
    assert sorted(p.name for p in model_dir(tmp_path / "repo", serve).iterdir()) == ["1", "2"]
