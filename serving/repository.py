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
    <repo>/<name>/<N>/catalogue/               the catalogue index built by this very encoder
                                               (:mod:`sail_core.index.catalogue`; read by serving.catalogue)
    <repo>/<name>/<N>/sid/                     optional: the semantic-ID codebooks and codes of that catalogue
                                               (:mod:`sail_core.index.semantic_ids`; the backend encodes SID with them)

A version folder is the unit of promotion and rollback: the encoder and the
catalogue index it embedded travel together, so a query is always encoded by
the model whose vectors it searches. Triton ignores the ``catalogue/`` subfolder.

The model's inputs (all optional, any subset): ``TEXT``, ``IMAGE`` (cover
bytes), ``FRAMES`` (keyframe bytes, ``[-1]`` per row), ``AUDIO`` (WAV bytes),
``DIM``, ``TASK``, ``SIDE``; outputs ``EMBEDDING`` and ``SID`` (semantic IDs, ``[-1]``:
one code per level; only from versions with ``sid/``). See ``backend/model.py``.
Both configs carry ``serve.limits`` as parameters (``max_text_chars``, ...,
``max_rows``: null there means ``serve.max_batch_size``), which the backend
enforces before decoding a request.

``config.pbtxt`` pins the served versions with ``version_policy: { specific }``,
so that in explicit model-control mode only the intended version is loaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sail_core.config import ServeConfig
from sail_core.index import catalogue as catalogue_format
from sail_core.index import semantic_ids as sid_format
from sail_core.preprocess.export_format import read_export_meta

BACKEND_DIR = Path(__file__).resolve().parent / "backend"
PREPROCESS_DIR = Path(__file__).resolve().parent.parent / "sail_core" / "preprocess"
BACKEND_FILES = ["model.py", "embedder.py"]
CONFIG = "config.pbtxt"
CATALOGUE_DIR = "catalogue"  # <repo>/<name>/<N>/catalogue/: the index served with version N
CATALOGUE_FILES = (catalogue_format.META, catalogue_format.IDS, catalogue_format.VECTORS, catalogue_format.INDEX)
SID_DIR = "sid"  # <repo>/<name>/<N>/sid/: the semantic-ID codebooks (and codes) served with version N
SID_FILES = sid_format.FILES
GPU_CONFIG = "config.gpu.pbtxt.example"

# Every input is optional: any subset of the modalities, DIM/TASK/SIDE defaulted by the model.
_INPUTS = [("TEXT", mc.TYPE_STRING, [1]), ("IMAGE", mc.TYPE_STRING, [1]), ("FRAMES", mc.TYPE_STRING, [-1]),
           ("AUDIO", mc.TYPE_STRING, [1]), ("DIM", mc.TYPE_INT32, [1]), ("TASK", mc.TYPE_STRING, [1]),
           ("SIDE", mc.TYPE_STRING, [1])]

CPU_HEADER = ["Written by serving/repository.py; the served versions are managed by `sail promote` / `sail rollback`."]
GPU_HEADER = [
    "Production (GPU) variant of config.pbtxt, written by serving/repository.py.",
    "To use it in NVIDIA's Triton container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3):",
    "  1. install onnxruntime-gpu, tokenizers, pillow and numpy<2 in the container's python",
    "     (or point the python backend at a packed env with EXECUTION_ENV_PATH);",
    "  2. copy this file over config.pbtxt (same model name, inputs and outputs);",
    "  3. start tritonserver with --model-control-mode=explicit and load the model.",
    "The same model.py reads \"onnx_providers\" and runs onnxruntime's CUDA provider on",
    "the GPU Triton assigns to each instance, for both vision_encoder.onnx and model.onnx",
    "(the speech models stay on the CPU). A further step is the native \"onnxruntime\"",
    "backend for the two graphs with decoding/tokenisation as a python model in an",
    "ensemble; the python backend keeps preprocessing identical to training.",
]


def model_dir(repo_dir: str | Path, cfg: ServeConfig) -> Path:
    return Path(repo_dir) / cfg.triton_model


def _model_config(name: str, versions: list[int], max_batch_size: int, providers: str,
                  limits: dict[str, int | float], runtime: dict[str, int | bool] | None = None) -> mc.ModelConfig:
    """The fields both variants share: python backend, the optional inputs, the outputs, the pinned versions,
    and the request limits (``serve.limits``, one string parameter each, read by ``backend/model.py``).

    ``SID`` has ``dims: [-1]``: the number of semantic-ID levels is the served version's.
    """
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.version_policy.specific.versions.extend(int(v) for v in versions)
    for input_name, dtype, dims in _INPUTS:
        config.input.add(name=input_name, data_type=dtype, dims=dims, optional=True)
    config.output.add(name="EMBEDDING", data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name="SID", data_type=mc.TYPE_INT32, dims=[-1])
    config.parameters["onnx_providers"].string_value = providers
    runtime = {"intra_op_threads": 0, **(runtime or {})}
    for key, value in runtime.items():  # booleans as "1"/"0"
        config.parameters[key].string_value = str(int(value)) if isinstance(value, bool) else str(value)
    for key, value in limits.items():
        config.parameters[key].string_value = str(value)
    return config


def cpu_config(cfg: ServeConfig, versions: list[int]) -> mc.ModelConfig:
    """The CPU model config: python backend running onnxruntime, with ``serve``'s dynamic batching
    (``max_queue_delay_us``, ``preferred_batch_sizes``), ``instances`` CPU instances, and the onnxruntime
    threads and encoder/vision batches of ``cfg.backend_settings()`` as parameters ``backend/model.py`` reads."""
    config = _model_config(cfg.triton_model, versions, cfg.max_batch_size, "CPUExecutionProvider",
                           cfg.limit_values(), cfg.backend_settings())
    config.dynamic_batching.max_queue_delay_microseconds = cfg.max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(cfg.preferred_batch_sizes)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=cfg.instances)
    return config


def gpu_config(cfg: ServeConfig, versions: list[int]) -> mc.ModelConfig:
    """The production variant: the same model on GPUs in NVIDIA's Triton container.

    Not used on this CPU machine (nothing here can load it); the python-backend
    model reads ``onnx_providers`` and puts onnxruntime on the instance's GPU.
    """
    batch = max(cfg.max_batch_size, 256)
    limits = {**cfg.limit_values(), "max_rows": cfg.limits.max_rows or batch}
    config = _model_config(cfg.triton_model, versions, batch, "CUDAExecutionProvider,CPUExecutionProvider", limits,
                           {"vision_batch": 32})  # a GPU wants whole batches of images
    config.dynamic_batching.preferred_batch_size.extend([64, 128])
    config.dynamic_batching.max_queue_delay_microseconds = 1000
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=2, gpus=[0])
    return config


def to_pbtxt(config: mc.ModelConfig, header: list[str]) -> str:
    """``config`` in protobuf text format (what Triton reads), after ``header`` as ``#`` comment lines."""
    return "".join(f"# {line}\n" for line in header) + text_format.MessageToString(config)


def render_config(cfg: ServeConfig, versions: list[int]) -> str:
    """The CPU ``config.pbtxt``."""
    return to_pbtxt(cpu_config(cfg, versions), CPU_HEADER)


def render_gpu_config(cfg: ServeConfig, versions: list[int]) -> str:
    """``config.gpu.pbtxt.example``: the GPU variant with instructions in its header."""
    return to_pbtxt(gpu_config(cfg, versions), GPU_HEADER)


def read_config(path: str | Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` back into a ``ModelConfig`` (raises ``text_format.ParseError`` naming the line)."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


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


def check_catalogue_files(index_dir: str | Path) -> Path:
    """``index_dir`` if it is a complete catalogue index folder; ``FileNotFoundError`` naming what is missing."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise FileNotFoundError(f"catalogue index folder {index_dir} does not exist; build it with the index step")
    missing = [name for name in CATALOGUE_FILES if not (index_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"catalogue index folder {index_dir} lacks {', '.join(missing)}; "
                                "rebuild it with the index step")
    return index_dir


def check_sid_files(sid_dir: str | Path) -> Path:
    """``sid_dir`` if it is a complete semantic-ID folder; ``FileNotFoundError`` naming what is missing."""
    sid_dir = Path(sid_dir)
    if not sid_dir.is_dir():
        raise FileNotFoundError(f"semantic-ID folder {sid_dir} does not exist; {sid_format.REBUILD}")
    missing = [name for name in SID_FILES if not (sid_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"semantic-ID folder {sid_dir} lacks {', '.join(missing)}; {sid_format.REBUILD}")
    return sid_dir


def write_version(repo_dir: str | Path, cfg: ServeConfig, onnx_dir: str | Path, version: int,
                  index_dir: str | Path | None = None, sid_dir: str | Path | None = None) -> Path:
    """Create ``<repo>/<name>/<version>/`` from an export folder (and its catalogue index and semantic IDs);
    returns the version folder.

    ``index_dir`` (optional) is a catalogue index folder (:mod:`sail_core.index.catalogue`)
    built with this export's model; it is copied to ``<version>/catalogue/``. ``sid_dir``
    (optional) is a semantic-ID folder (:mod:`sail_core.index.semantic_ids`) fitted on
    this model's catalogue embeddings; its files are copied to ``<version>/sid/``, and the
    backend then answers the ``SID`` output. Both go into the same staging folder as the
    encoder, so the version appears whole (encoder, index, SIDs) or not at all.

    Raises ``FileExistsError`` if the version folder exists (versions are immutable),
    ``ExportFormatError`` if the export folder is incomplete or of another format and
    ``FileNotFoundError`` if the index or semantic-ID folder lacks one of its files.
    """
    onnx_dir = Path(onnx_dir)
    if int(version) < 1:
        raise ValueError(f"Triton model versions start at 1, got {version}")
    files = read_export_meta(onnx_dir).files  # raises ExportFormatError naming what is missing
    if index_dir is not None:
        index_dir = check_catalogue_files(index_dir)
    if sid_dir is not None:
        sid_dir = check_sid_files(sid_dir)
    target = model_dir(repo_dir, cfg) / str(int(version))
    if target.exists():
        raise FileExistsError(f"model version folder {target} already exists; versions are immutable, "
                              "promote under a new version number")
    staging = target.with_name(f".{target.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name in BACKEND_FILES:
            shutil.copy2(BACKEND_DIR / name, staging / name)
        for name in files:
            shutil.copy2(onnx_dir / name, staging / name)
        shutil.copytree(PREPROCESS_DIR, staging / "sail_core" / "preprocess",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (staging / "sail_core" / "__init__.py").write_text(
            '"""A copy of sail_core.preprocess only: preprocessing inside Triton is the training code."""\n')
        if index_dir is not None:
            shutil.copytree(index_dir, staging / CATALOGUE_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if sid_dir is not None:
            (staging / SID_DIR).mkdir()
            for name in SID_FILES:
                shutil.copy2(sid_dir / name, staging / SID_DIR / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(target)  # the version (encoder + catalogue index + SIDs) appears whole or not at all
    return target
