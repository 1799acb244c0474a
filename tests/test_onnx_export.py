"""ONNX export of the real MiniLM embedder: parity with PyTorch, dynamic axes, metadata,
and the numpy Matryoshka path the Triton backend runs (serving.backend.embedding)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sail_core.config import load_config  # noqa: E402
from sail_core.export.onnx import ExportParityError, export_onnx  # noqa: E402
from sail_core.model.embedder import SailEmbedder, build_model  # noqa: E402
from serving.backend.embedding import OnnxTextEmbedder, truncate_normalise  # noqa: E402

# Strings not used by the exporter's own parity check, of very different lengths.
FRESH_TEXTS = [
    "Star Wars (1977)",
    "Instruct: Represent this search query to find matching movies.\nInput: a funny cartoon about toys",
    "Fargo (1996) | Crime, Drama, Thriller | a pregnant police chief investigates a string of homicides "
    "in the snowy plains of Minnesota while a car salesman's kidnapping plot unravels",
]


@pytest.fixture(scope="module")
def model() -> SailEmbedder:
    return build_model(load_config(profile="tiny").model).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(model, out)


def test_export_matches_pytorch(model, exported):
    out, result = exported
    assert result["parity_ok"] is True
    assert result["max_abs_diff"] < 1e-4
    assert (out / "model.onnx").exists() and (out / "tokenizer.json").exists()
    # An independent check on strings the exporter never saw.
    import onnxruntime as ort

    session = ort.InferenceSession(result["onnx_path"], providers=["CPUExecutionProvider"])
    enc = model.tokenize(FRESH_TEXTS)
    with torch.no_grad():
        want = model(**enc).numpy()
    got = session.run(["embedding"], {k: v.numpy() for k, v in enc.items()})[0]
    assert got.dtype == np.float32 and got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_export_has_dynamic_axes_and_metadata(model, exported):
    out, _ = exported
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for tensor in inputs.values():
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]  # symbolic, not frozen
    assert [o.name for o in graph.output] == ["embedding"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["hidden_size"] == 384
    assert meta["max_length"] == model.cfg.max_length
    assert meta["matryoshka_dims"] == [384, 128, 64]
    assert meta["parity_ok"] is True


def test_backend_embedder_matches_torch_matryoshka(model, exported):
    """The numpy truncation + re-normalisation in Triton equals the training-side torch maths."""
    out, _ = exported
    embedder = OnnxTextEmbedder(out)
    for dim in (None, 384, 128, 64):
        want = model.embed_texts(FRESH_TEXTS, dim=dim).numpy()
        got = embedder.embed(FRESH_TEXTS, dim)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_truncate_normalise_by_hand():
    z = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    got = truncate_normalise(z, 2)
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)  # a zero prefix stays zero


def test_backend_embedder_rejects_bad_inputs(exported):
    embedder = OnnxTextEmbedder(exported[0])
    with pytest.raises(ValueError, match=r"allowed dims: \[384, 128, 64\]"):
        embedder.embed(["ok"], 100)
    with pytest.raises(ValueError, match=r"TEXT\[1\] is an empty string"):
        embedder.embed(["ok", "  "], None)


class _LengthDependent(SailEmbedder):
    """A forward with python control flow on the sequence length: tracing freezes the branch."""

    def forward(self, input_ids, attention_mask):
        z = super().forward(input_ids, attention_mask)
        if input_ids.shape[1] > 12:
            z = -z
        return z


def test_export_refuses_a_graph_that_drifts(model, tmp_path):
    bad = _LengthDependent(model.backbone, model.tokenizer_file, model.cfg).eval()
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        export_onnx(bad, tmp_path)
    assert json.loads((tmp_path / "export.json").read_text())["parity_ok"] is False
