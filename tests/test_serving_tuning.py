"""The serve tuning settings (dynamic batching, instances, onnxruntime threads, encoder batch) travel from
``ServeConfig`` into ``config.pbtxt`` and into the model a real tritonserver loads; sorted encoder chunks
answer every row in its own place. No timing is asserted (bench/serving.py measures it)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from pydantic import ValidationError

from exports import cached_export
from sail_core.config import ServeConfig, load_config
from sail_core.preprocess import samples
from serving.backend.embedder import OnnxEmbedder
from serving.client import infer, make_client
from serving.ephemeral import ephemeral_server
from serving.promote import promote
from serving.repository import CONFIG, model_dir, read_config

pytestmark = pytest.mark.triton

TUNED = dict(max_batch_size=16, instances=2, max_queue_delay_us=5000, preferred_batch_sizes=[4, 8],
             intra_op_threads=1, inter_op_threads=1, allow_spinning=False, encoder_batch=2, vision_batch=3)
PARAMETERS = {"intra_op_threads": "1", "inter_op_threads": "1", "allow_spinning": "0", "encoder_batch": "2",
              "vision_batch": "3"}
# Texts of very different lengths, so that sorting by length reorders them across the encoder chunks.
TEXTS = ["a long story about a detective who travels across the winter city to find a secret friend " * 2,
         "Heat", "Toy Story (1995)", "war", "a family drama on an island in summer, with music and a dream",
         "space ship"]
IMAGES = [samples.image_bytes(300 + i, (120 + 20 * i, 90), "PNG") for i in range(len(TEXTS) - 1)] + [b""]


@pytest.fixture(scope="module")
def served(runtime, tmp_path_factory):
    """A tritonserver serving an export with the TUNED settings; yields (config, repo, export folder)."""
    tmp = tmp_path_factory.mktemp("tuning")
    onnx_dir, _model, _ = cached_export(1)
    serve = load_config(profile="demo").serve.model_copy(update=TUNED)
    with ephemeral_server(tmp / "repo", serve, tmp / "state") as (cfg, _info):
        promote(onnx_dir, 1, cfg, tmp / "repo")
        yield cfg, tmp / "repo", onnx_dir


def test_config_pbtxt_carries_the_tuning(served):
    cfg, repo, _ = served
    config = read_config(model_dir(repo, cfg) / CONFIG)
    assert config.max_batch_size == 16
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    [group] = config.instance_group
    assert group.count == 2
    assert {k: config.parameters[k].string_value for k in PARAMETERS} == PARAMETERS


def test_the_server_loaded_the_model_with_the_tuning(served):
    cfg, repo, _ = served
    client = make_client(cfg, "http")
    try:
        loaded = client.get_model_config(cfg.triton_model)
    finally:
        client.close()
    assert loaded["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    assert loaded["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert [g["count"] for g in loaded["instance_group"]] == [2]
    assert {k: loaded["parameters"][k]["string_value"] for k in PARAMETERS} == PARAMETERS
    # Two instances: two python-backend processes running this repository's model.
    stubs = subprocess.run(["pgrep", "-f", f"triton_python_backend_stub {model_dir(repo, cfg)}/"],
                           capture_output=True, text=True).stdout.split()
    assert len(stubs) == 2, f"expected 2 python-backend stubs for {repo}, found {stubs}"


def test_sorted_encoder_chunks_answer_each_row_in_place(served):
    """Triton (rows sorted by length and encoded 2 at a time, images 3 per vision call) against one unchunked
    in-process call, on text rows and on text+image rows (the last without an image)."""
    cfg, _, onnx_dir = served
    whole = OnnxEmbedder(onnx_dir, encoder_batch=0, vision_batch=len(TEXTS))
    chunked = OnnxEmbedder(onnx_dir, **ServeConfig(**TUNED).backend_settings())
    for rows in (dict(texts=TEXTS), dict(texts=TEXTS, images=IMAGES)):
        want = whole.embed(**rows)
        assert np.abs(want[0] - want[1]).max() > 1e-3, "the rows must differ, or a swap would go unseen"
        np.testing.assert_allclose(chunked.embed(**rows), want, atol=1e-5)
        for protocol in ("http", "grpc"):
            client = make_client(cfg, protocol)
            try:
                got, version = infer(client, cfg, protocol, **rows)
            finally:
                client.close()
            assert version == "1"
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{protocol}, {sorted(rows)}")


def test_preferred_batch_sizes_above_max_batch_size_are_refused():
    with pytest.raises(ValidationError, match="preferred_batch_sizes"):
        ServeConfig(max_batch_size=8, preferred_batch_sizes=[4, 16])
