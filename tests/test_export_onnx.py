"""ONNX export of the omni embedder (real MiniLM + real frozen EfficientNet-Lite0): parity with PyTorch per
modality combination, graph axes and metadata, and the torch-free serving runner
(serving.backend.embedder) against PyTorch on fresh PNG/JPEG/WAV bytes, with its errors."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

from sail_core.config import load_config
from sail_core.export.onnx import COMBINATIONS, ExportParityError, export_onnx
from sail_core.preprocess import samples
from sail_core.preprocess.export_format import FORMAT, ExportFormatError, ExportMeta, read_export_meta
from sail_core.model.omni import OmniEmbedder
from sail_core.preprocess.instructions import instruction_tables, resolve_instruction
from serving.backend.embedder import OnnxEmbedder, truncate_normalise
from exports import ITEM, QUERY, cached_export, nudged_model, torch_embed

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def cfg():
    return load_config(profile="demo")


@pytest.fixture(scope="module")
def exported():
    out, _, result = cached_export(1)
    return out, result


@pytest.fixture(scope="module")
def model(exported) -> OmniEmbedder:
    return cached_export(1)[1]


@pytest.fixture(scope="module")
def runner(exported) -> OnnxEmbedder:
    return OnnxEmbedder(exported[0])


def test_export_parity_for_every_modality_combination(exported):
    out, result = exported
    assert set(result["parity"]) == {*COMBINATIONS, "mixed"}
    assert {"text", "image", "frames", "audio", "text_image", "omni"} <= set(COMBINATIONS)
    for name in result["parity"]:  # logged as MLflow metrics export.parity.<name>
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
    for name, diff in result["parity"].items():
        assert 0.0 <= diff <= 1e-4, (name, diff)
    assert result["max_abs_diff"] == max(result["parity"].values())
    assert result["vision_max_rel_diff"] <= 1e-4 and result["parity_ok"] is True
    meta = read_export_meta(out)
    assert meta.parity == result["parity"] and meta.parity_ok is True
    assert meta.export_seconds > 0


def test_export_metadata_says_what_serving_needs(exported, cfg):
    out, _ = exported
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == FORMAT
    assert ExportMeta.from_dict(meta).to_dict() == meta  # the typed record round-trips
    assert meta["hidden_size"] == 384 and meta["matryoshka_dims"] == [384, 128, 64]
    assert meta["image_size"] == 224 and meta["vision_feature_shape"] == [1280, 7, 7]
    assert meta["keyframes"] == cfg.model.inputs.keyframes and meta["audio_dim"] == 96
    assert meta["instructions"]["q2i"] == {"task": "q2i", "query": QUERY, "target": ITEM}
    assert set(meta["instructions"]) == set(cfg.datasets)
    assert meta["instruction_defaults"] == {"query": "q2i", "target": "copair_i2i"}
    for name in meta["files"]:
        assert (out / name).is_file(), name


def test_other_formats_and_incomplete_folders_are_refused_by_name(exported, tmp_path):
    out, _ = exported
    (tmp_path / "export.json").write_text(json.dumps({"format": "sail-embedding-onnx/1", "hidden_size": 384}))
    with pytest.raises(ExportFormatError, match=r"'sail-embedding-onnx/1' cannot be served.*sail export"):
        read_export_meta(tmp_path)
    meta = json.loads((out / "export.json").read_text())
    (tmp_path / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ExportFormatError, match=r"incomplete ONNX export \(missing model.onnx"):
        read_export_meta(tmp_path)
    del meta["hidden_size"]
    (tmp_path / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ExportFormatError, match="missing keys hidden_size"):
        read_export_meta(tmp_path)


def test_graphs_keep_batch_length_and_frame_axes_symbolic(exported):
    out, _ = exported
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["instr_ids"] == ["batch", "instr_length"] and dims["text_mask"] == ["batch", "text_length"]
    assert dims["frame_feats"] == ["batch", "frames", 1280, 7, 7] and dims["frame_mask"] == ["batch", "frames"]
    assert dims["cover_feats"] == ["batch", 1280, 7, 7] and dims["audio_feats"] == ["batch", 96]
    assert [o.name for o in graph.output] == ["embedding"]
    vision = onnx.load(str(out / "vision_encoder.onnx"), load_external_data=False).graph
    assert [d.dim_param or d.dim_value for d in vision.input[0].type.tensor_type.shape.dim] == ["images", 3, 224, 224]


def test_serving_runner_matches_pytorch_on_fresh_media(model, runner, cfg):
    """Bytes in (PNG, JPEG, a stereo 8 kHz WAV, more keyframes than the model takes) -> the same as PyTorch."""
    png, jpg = samples.image_bytes(101, (250, 140), "PNG"), samples.image_bytes(102, (90, 90), "JPEG")
    frames = [samples.image_bytes(110 + j, (128, 72), "JPEG") for j in range(cfg.model.inputs.keyframes + 3)]
    wav = samples.wav_bytes(103, seconds=2.5, rate=8000)
    rows = {  # name: (text, image, frames, audio, expected instruction)
        "text": ("a heist film in a snowy town", None, None, None, QUERY),
        "image": (None, png, None, None, ITEM),
        "frames": (None, None, frames[:2], None, ITEM),
        "audio": (None, None, None, wav, ITEM),
        "text+image": ("Heat (1995)", jpg, None, None, ITEM),
        "omni": ("Heat (1995) | Action", png, frames, wav, ITEM),
    }
    cols = list(zip(*rows.values()))
    want_full = torch_embed(model, *cols)
    for dim in (None, 128, 64):
        want = truncate_normalise(want_full, dim) if dim else want_full
        got = runner.embed(texts=cols[0], images=cols[1], frames=cols[2], audios=cols[3], dim=dim)
        assert got.shape == want.shape == (len(rows), dim or 384)
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # each row alone gives what it gives inside the mixed batch
    full = runner.embed(texts=cols[0], images=cols[1], frames=cols[2], audios=cols[3])
    for k, (t, i, f, a, _) in enumerate(rows.values()):
        np.testing.assert_allclose(runner.embed(texts=[t], images=[i], frames=[f], audios=[a])[0], full[k], atol=1e-5)
    # different modality sets give different embeddings (nothing is silently dropped)
    assert np.abs(full[:, None] - full[None]).max(-1)[np.triu_indices(len(rows), 1)].min() > 1e-3


def test_task_and_side_choose_the_instruction(runner, cfg):
    table, defaults = instruction_tables(cfg.datasets)
    assert resolve_instruction(table, defaults, None, None, has_media=False) == QUERY
    assert resolve_instruction(table, defaults, None, None, has_media=True) == ITEM
    assert resolve_instruction(table, defaults, None, "target", has_media=False) == ITEM
    assert resolve_instruction(table, defaults, "xmodal", "query", True) == cfg.datasets["xmodal"].query_instruction
    assert resolve_instruction(table, defaults, "cls", None, False) == cfg.datasets["cls"].query_instruction
    assert resolve_instruction(table, defaults, "i2i", "query", False) == cfg.datasets["copair_i2i"].query_instruction
    text = ["Toy Story (1995)"]
    as_query, as_item = runner.embed(texts=text), runner.embed(texts=text, sides=["target"])
    assert np.abs(as_query - as_item).max() > 1e-3
    np.testing.assert_allclose(runner.embed(texts=text, tasks=["q2i"], sides=["query"]), as_query, atol=1e-6)


def test_runner_rejects_bad_inputs_with_clear_errors(runner):
    png = samples.image_bytes(1)
    cases = [
        (dict(images=[png, b"GIF89a but not really"]), r"IMAGE\[1\]: .*not a decodable image.*JPEG or PNG"),
        (dict(frames=[[png, b"\x00\x01"]]), r"FRAMES\[0\]\[1\]: .*not a decodable image"),
        (dict(audios=[b"RIFF\x00\x00"]), r"AUDIO\[0\]: .*not a readable PCM WAV"),
        (dict(audios=[png]), r"AUDIO\[0\]: .*not a readable PCM WAV"),
        (dict(texts=["ok", "  "]), r"row 1 is empty"),
        (dict(texts=[None], images=[b""]), r"row 0 is empty"),
        (dict(), r"no TEXT, IMAGE, FRAMES or AUDIO"),
        (dict(texts=["ok"], dim=100), r"DIM=100 is not a Matryoshka dim.*\[384, 128, 64\]"),
        (dict(texts=["ok"], tasks=["nope"]), r"TASK='nope' is not a dataset or task"),
        (dict(texts=["ok"], sides=["middle"]), r"SIDE='middle' is not allowed"),
        (dict(texts=["a", "b"], images=[png]), r"IMAGE has 1 rows but the request has 2"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            runner.embed(**kwargs)


class _Drifted(OmniEmbedder):
    """PyTorch says one thing, the exported graph (built from the parts) another."""

    def forward(self, batch):
        return -super().forward(batch)


def test_export_refuses_a_graph_that_drifts(cfg, tmp_path):
    model = nudged_model(3)
    model.__class__ = _Drifted
    try:
        with pytest.raises(ExportParityError, match="differs from PyTorch"):
            export_onnx(model, tmp_path, datasets=cfg.datasets)
    finally:
        model.__class__ = OmniEmbedder
    meta = json.loads((tmp_path / "export.json").read_text())
    assert meta["parity_ok"] is False and min(meta["parity"].values()) > 1e-2


def test_export_refuses_the_clap_audio_tower(cfg, tmp_path):
    paper_audio = load_config(profile="paper").model.audio
    from sail_core.export.onnx import _check_exportable

    model = type("Stub", (), {"cfg": cfg.model.model_copy(update={"audio": paper_audio}), "vision_tower": None})()
    with pytest.raises(ValueError, match="speech_embedding audio encoder"):
        _check_exportable(model)
