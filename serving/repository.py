"""Writes a standard Triton model repository for the embedding model.

Layout (``<repo>`` is ``home().triton_repo`` by default)::

    <repo>/<name>/config.pbtxt                 python backend, CPU (what runs here)
    <repo>/<name>/config.gpu.pbtxt.example     the production variant: KIND_GPU, CUDA onnxruntime
    <repo>/<name>/serving_state.json           current version + history (see ``serving.promote``)
    <repo>/<name>/<N>/model.py                 from serving/backend/model.py
    <repo>/<name>/<N>/embedder.py              from serving/backend/ (the onnxruntime runner)
    <repo>/<name>/<N>/model.onnx, vision_encoder.onnx, speech_*.onnx, tokenizer.json, export.json
                                               the export folder's files (export.json lists them)
    <repo>/<name>/<N>/sail_core/preprocess/    a copy: preprocessing in Triton is the training code

The model's inputs (all optional, any subset): ``TEXT``, ``IMAGE`` (cover
bytes), ``FRAMES`` (keyframe bytes, ``[-1]`` per row), ``AUDIO`` (WAV bytes),
``DIM``, ``TASK``, ``SIDE``; output ``EMBEDDING``. See ``backend/model.py``.

``config.pbtxt`` pins the served versions with ``version_policy: { specific }``,
so that in explicit model-control mode only the intended version is loaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sail_core.config import ServeConfig
from sail_core.preprocess.export_format import read_export_meta

BACKEND_DIR = Path(__file__).resolve().parent / "backend"
PREPROCESS_DIR = Path(__file__).resolve().parent.parent / "sail_core" / "preprocess"
BACKEND_FILES = ["model.py", "embedder.py"]
CONFIG = "config.pbtxt"
GPU_CONFIG = "config.gpu.pbtxt.example"

def _input(name: str, dtype: str, dims: str) -> str:
    return f"""  {{
    name: "{name}"
    data_type: {dtype}
    dims: [ {dims} ]
    optional: true
  }}"""


# Every input is optional: any subset of the modalities, DIM/TASK/SIDE defaulted by the model.
_INPUTS = [("TEXT", "TYPE_STRING", "1"), ("IMAGE", "TYPE_STRING", "1"), ("FRAMES", "TYPE_STRING", "-1"),
           ("AUDIO", "TYPE_STRING", "1"), ("DIM", "TYPE_INT32", "1"), ("TASK", "TYPE_STRING", "1"),
           ("SIDE", "TYPE_STRING", "1")]
_IO = "input [\n" + ",\n".join(_input(*spec) for spec in _INPUTS) + """
]
output [
  {
    name: "EMBEDDING"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }
]"""


def model_dir(repo_dir: str | Path, cfg: ServeConfig) -> Path:
    return Path(repo_dir) / cfg.model_name


def _policy(versions: list[int]) -> str:
    listed = ", ".join(str(int(v)) for v in versions)
    return f"version_policy: {{ specific: {{ versions: [ {listed} ] }} }}"


def render_config(cfg: ServeConfig, versions: list[int]) -> str:
    """The CPU ``config.pbtxt``: python backend running onnxruntime, dynamic batching."""
    return f"""# Written by serving/repository.py; the served versions are managed by `sail promote` / `sail rollback`.
name: "{cfg.model_name}"
backend: "python"
max_batch_size: {cfg.max_batch_size}
{_policy(versions)}
{_IO}
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    kind: KIND_CPU
    count: 1
  }}
]
parameters: {{ key: "onnx_providers" value: {{ string_value: "CPUExecutionProvider" }} }}
parameters: {{ key: "intra_op_threads" value: {{ string_value: "0" }} }}
"""


def render_gpu_config(cfg: ServeConfig, versions: list[int]) -> str:
    """The production variant: the same model on GPUs in NVIDIA's Triton container.

    Not used on this CPU machine (nothing here can load it); the python-backend
    model reads ``onnx_providers`` and puts onnxruntime on the instance's GPU.
    """
    return f"""# Production (GPU) variant of config.pbtxt, written by serving/repository.py.
# To use it in NVIDIA's Triton container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3):
#   1. install onnxruntime-gpu, tokenizers, pillow and numpy<2 in the container's python
#      (or point the python backend at a packed env with EXECUTION_ENV_PATH);
#   2. copy this file over config.pbtxt (same model name, inputs and outputs);
#   3. start tritonserver with --model-control-mode=explicit and load the model.
# The same model.py reads "onnx_providers" and runs onnxruntime's CUDA provider on
# the GPU Triton assigns to each instance, for both vision_encoder.onnx and model.onnx
# (the speech models stay on the CPU). A further step is the native "onnxruntime"
# backend for the two graphs with decoding/tokenisation as a python model in an
# ensemble; the python backend keeps preprocessing identical to training.
name: "{cfg.model_name}"
backend: "python"
max_batch_size: {max(cfg.max_batch_size, 256)}
{_policy(versions)}
{_IO}
dynamic_batching {{
  preferred_batch_size: [ 64, 128 ]
  max_queue_delay_microseconds: 1000
}}
instance_group [
  {{
    kind: KIND_GPU
    count: 2
    gpus: [ 0 ]
  }}
]
parameters: {{ key: "onnx_providers" value: {{ string_value: "CUDAExecutionProvider,CPUExecutionProvider" }} }}
parameters: {{ key: "intra_op_threads" value: {{ string_value: "0" }} }}
"""


def write_configs(repo_dir: str | Path, cfg: ServeConfig, versions: list[int]) -> Path:
    """Write both ``config.pbtxt`` variants, serving exactly ``versions``; returns the CPU config path."""
    if not versions:
        raise ValueError("a Triton model config needs at least one version to serve")
    folder = model_dir(repo_dir, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_config(cfg, versions))
    tmp.replace(path)  # atomic: Triton never reads a half-written config
    (folder / GPU_CONFIG).write_text(render_gpu_config(cfg, versions))
    return path


def write_version(repo_dir: str | Path, cfg: ServeConfig, onnx_dir: str | Path, version: int) -> Path:
    """Create ``<repo>/<name>/<version>/`` from an export folder; returns the version folder.

    Raises ``FileExistsError`` if the version folder exists (versions are immutable)
    and ``ExportFormatError`` if the export folder is incomplete or of another format.
    """
    onnx_dir = Path(onnx_dir)
    if int(version) < 1:
        raise ValueError(f"Triton model versions start at 1, got {version}")
    files = read_export_meta(onnx_dir).files  # raises ExportFormatError naming what is missing
    target = model_dir(repo_dir, cfg) / str(int(version))
    if target.exists():
        raise FileExistsError(f"model version folder {target} already exists; versions are immutable, "
                              "promote under a new version number")
    staging = target.with_name(f".{target.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in BACKEND_FILES:
        shutil.copy2(BACKEND_DIR / name, staging / name)
    for name in files:
        shutil.copy2(onnx_dir / name, staging / name)
    shutil.copytree(PREPROCESS_DIR, staging / "sail_core" / "preprocess",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staging / "sail_core" / "__init__.py").write_text(
        '"""A copy of sail_core.preprocess only: preprocessing inside Triton is the training code."""\n')
    staging.rename(target)  # the version appears whole or not at all
    return target
