"""The one typed configuration: ``params.yaml`` loaded into pydantic models.

``params.yaml`` holds a ``base`` section and named ``profiles`` whose values
are deep-merged over it (``train.stages`` merge by stage ``name``; every other
list is replaced whole). Overrides (``--set``, the DAG's run parameters) then
set single keys by dotted path, list items by index (``gate.metrics.0.min_delta``).
The pydantic defaults below equal the values ``base`` sets. Unknown keys,
ill-typed values and settings that could only fail later (a gate metric that
evaluation never logs, ``warmup_steps >= steps``, an empty dataset list) fail at
start-up with a message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"


def default_params() -> Path:
    """``params.yaml`` of the current DVC project (cwd) if there is one, else the repository's."""
    local = Path.cwd() / "params.yaml"
    return local if local.exists() and (Path.cwd() / "dvc.yaml").exists() else DEFAULT_PARAMS


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataConfig(_Strict):
    """How the demo catalogue and its pair datasets are built."""

    source: Literal["demo", "files"] = Field("demo", description="demo = MovieLens-100k from recbole; files = your own tables")
    items_file: str | None = Field(None, description="items CSV/parquet when source=files")
    interactions_file: str | None = Field(None, description="interactions CSV/parquet when source=files")
    pairs_dir: str | None = Field(None, description="optional folder of pair tables when source=files")
    seed: int = 0
    max_items: int | None = Field(1000, ge=10, description="keep the most-rated items only; null = the whole catalogue")
    max_users: int | None = Field(None, ge=5)
    holdout_fraction: float = Field(0.15, gt=0.0, lt=0.9, description="share of items held out for evaluation")
    positive_rating: float = Field(4.0, ge=0.0, le=5.0, description="ratings at or above this are positive")
    copair_window_days: float = Field(7.0, gt=0.0, description="co-engagement window for copair_i2i")
    max_pairs_per_dataset: int = Field(20000, ge=10)
    media: bool = Field(True, description="demo: render cover + keyframes and speak an ASR track per item")
    render_keyframes: int = Field(2, ge=0, le=32, description=(
        "demo: keyframes rendered per item (how many the model samples is model.inputs.keyframes)"))
    image_size: int = Field(224, ge=32, le=1024, description="demo: rendered cover/keyframe size in pixels")
    media_workers: int | None = Field(None, ge=1, description=(
        "processes that render the demo's media and threads that check media files at validation; "
        "null = the CPUs this process may use"))

    @model_validator(mode="after")
    def _files_need_paths(self) -> "DataConfig":
        if self.source == "files" and not (self.items_file and self.interactions_file):
            raise ValueError("data.source=files needs data.items_file and data.interactions_file")
        return self


class ContractsConfig(_Strict):
    """Tolerances for the Great Expectations data contracts."""

    # Share of a table's rows that may be quarantined before the run stops.
    max_quarantine_fraction: float = Field(0.0, ge=0.0, le=1.0)


MODALITIES = ("text", "image", "frames", "audio", "omni")


class DatasetConfig(_Strict):
    """One pair dataset: its task, instructions, sampling weight, loss and modality patterns.

    ``patterns`` lists the valid ``query->target`` modality pairs, e.g.
    ``text->image``, ``frames->text``, ``omni->omni`` (modalities: text,
    image = the cover, frames = the keyframes, audio, omni = every field the
    item has). Every valid pattern of a batch is built and its loss computed
    in one forward pass; a modality that no pattern names contributes no loss.
    A free-text side (q2i queries, cls labels) is always ``text``.
    """

    task: Literal["i2i", "q2i", "cls"]
    weight: float = Field(1.0, gt=0.0)
    temperature_init: float = Field(0.05, gt=0.0, lt=1.0)
    query_instruction: str = ""
    target_instruction: str = ""
    loss: Literal["infonce"] = "infonce"
    patterns: list[str] = Field(default_factory=lambda: ["text->text"])
    target_gradient: bool = Field(True, description=(
        "False: this dataset's targets (and hard negatives) are detached in its loss, so its queries learn to "
        "meet the current target space without moving it (LiT-style locked targets)"))

    @model_validator(mode="after")
    def _patterns_known(self) -> "DatasetConfig":
        for p in self.patterns:
            q, _, t = p.partition("->")
            if q not in MODALITIES or t not in MODALITIES:
                raise ValueError(
                    f"pattern {p!r} must be QUERY->TARGET with each side one of {', '.join(MODALITIES)}"
                )
        if len(set(self.patterns)) != len(self.patterns) or not self.patterns:
            raise ValueError(f"patterns must be non-empty and distinct, got {self.patterns}")
        return self


class Qwen2ShapeConfig(_Strict):
    """Shape of the ``qwen2`` fusion backbone (random weights; defaults are Qwen2-1.5B's)."""

    hidden_size: int = Field(1536, ge=8)
    layers: int = Field(28, ge=1)
    heads: int = Field(12, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(8960, ge=8)
    rope_theta: float = Field(1_000_000.0, gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> "Qwen2ShapeConfig":
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"model.qwen2: hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads}) "
                f"and heads by kv_heads ({self.kv_heads})"
            )
        return self


class VisionConfig(_Strict):
    """Vision tower: frozen EfficientNet-Lite0 (demo) or a SigLIP-shaped ViT built from config (paper)."""

    encoder: Literal["efficientnet_lite0", "siglip"] = "efficientnet_lite0"
    image_size: int = Field(224, ge=14, description="square input resolution in pixels")
    frozen: bool = Field(True, description="no gradients into the tower (features can then be cached)")
    patch_size: int = Field(14, ge=1, description="siglip only")
    hidden_size: int = Field(1024, ge=8, description="siglip only")
    layers: int = Field(24, ge=1, description="siglip only")
    heads: int = Field(16, ge=1, description="siglip only")
    intermediate_size: int = Field(4096, ge=8, description="siglip only")


class PerceiverConfig(_Strict):
    """Perceiver resampler: ``latents`` learned queries per visual group (cover; keyframes)."""

    latents: int = Field(16, ge=1)
    dim: int = Field(384, ge=8, description="working width of the resampler")
    depth: int = Field(1, ge=1)
    heads: int = Field(8, ge=1)
    ff_mult: int = Field(4, ge=1)
    max_frames: int = Field(16, ge=1, description="size of the learned per-frame position table")


class ClapShapeConfig(_Strict):
    """Shape of transformers' CLAP audio tower (HTSAT-Swin) for the ``clap`` audio encoder."""

    hidden_size: int = Field(768, ge=8)
    patch_embeds_hidden_size: int = Field(96, ge=8)
    depths: list[int] = Field(default_factory=lambda: [2, 2, 6, 2])
    heads: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = Field(8, ge=1)
    num_mel_bins: int = Field(64, ge=8)
    spec_size: int = Field(256, ge=16)
    projection_dim: int = Field(512, ge=8)


class AudioConfig(_Strict):
    """Audio: one token per item, from ``chunk_seconds`` chunks mean-pooled, through an adapter MLP."""

    encoder: Literal["speech_embedding", "clap"] = "speech_embedding"
    chunk_seconds: float = Field(2.0, gt=0, description="clips are cut (or repeat-padded) to chunks of this length")
    adapter_hidden: int = Field(512, ge=8)
    frozen: bool = Field(True, description="clap only: no gradients into the tower")
    clap: ClapShapeConfig = ClapShapeConfig()


class InputsConfig(_Strict):
    """How items become model inputs."""

    keyframes: int = Field(2, ge=0, le=64, description=(
        "keyframes the model samples per item, uniformly over the video (data.render_keyframes: how many the demo renders)"))
    field_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="training: chance to drop each present modality/text field (never all)")
    max_instruction_length: int = Field(48, ge=4, le=256)


class ModelConfig(_Strict):
    """The encoder. ``demo`` uses the packaged all-MiniLM-L6-v2 backbone; ``paper`` a Qwen2-shaped one."""

    backbone: Literal["minilm", "qwen2"] = "minilm"
    max_length: int = Field(64, ge=8, le=512)
    matryoshka_dims: list[int] = Field(default_factory=lambda: [384, 128, 64])
    qwen2: Qwen2ShapeConfig = Qwen2ShapeConfig()
    vision: VisionConfig = VisionConfig()
    perceiver: PerceiverConfig = PerceiverConfig()
    audio: AudioConfig = AudioConfig()
    inputs: InputsConfig = InputsConfig()
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _dims_descending(self) -> "ModelConfig":
        dims = self.matryoshka_dims
        if not dims or sorted(dims, reverse=True) != dims or len(set(dims)) != len(dims):
            raise ValueError(f"model.matryoshka_dims must be distinct and descending, got {dims}")
        width = embedding_width(self)
        if dims[0] > width:
            raise ValueError(f"model.matryoshka_dims {dims} exceed the {self.backbone} backbone's width {width}; "
                             f"allowed: dims of at most {width}")
        return self


MINILM_WIDTH = 384  # hidden size of the packaged all-MiniLM-L6-v2 (the model checks it against the loaded backbone)


def embedding_width(model: ModelConfig) -> int:
    """The full embedding size: the backbone's hidden size."""
    return MINILM_WIDTH if model.backbone == "minilm" else model.qwen2.hidden_size


class StageConfig(_Strict):
    """One training stage; stages are data, run by one training loop."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description=(
        "letters, digits and _: the name is also an Airflow task id (train.NAME), a DVC stage (train@NAME) "
        "and a folder (models/NAME)"))
    datasets: list[str]
    steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float = Field(1.0, gt=0.0)
    checkpoint_every: int = Field(50, ge=1)
    hard_negatives: int = Field(0, ge=0, description="mined hard negatives per query (stage III)")
    temperature_lr: float | None = Field(None, gt=0.0, description="lr of the learnable temperatures; None = the stage's lr")
    media_lr: float | None = Field(None, gt=0.0, description="lr of the freshly initialised media modules (Perceiver, audio adapter, media-type embeddings); None = the stage's lr")


class TrainConfig(_Strict):
    """The training stages, run in order, and the CPU threads of training and evaluation."""

    seed: int = 0
    stages: list[StageConfig]
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    feature_threads: int | None = Field(None, ge=1, description=(
        "onnxruntime threads of the frozen towers that fill the media feature cache (training and evaluation); "
        "None = torch's thread count"))


ITEM_TASKS = {"i2i": "i2i", "q2i": "q2i", "omni2omni": "i2i"}   # eval task -> the dataset task it ranks
CROSS_MODAL_TASKS = {"image2text": "image", "frames2text": "frames", "audio2text": "audio"}   # eval task -> query modality
EvalTask = Literal["i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni"]


class EvalConfig(_Strict):
    """Held-out evaluation: Recall@k for each of ``ks`` on each of ``tasks``."""

    ks: list[int] = Field(default_factory=lambda: [1, 10, 50])
    tasks: list[EvalTask] = Field(
        default_factory=lambda: ["i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni"]
    )
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _distinct(self) -> "EvalConfig":
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"eval.ks must be distinct positive integers, got {self.ks}")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"eval.tasks must be non-empty and distinct, got {self.tasks}")
        return self


def eval_metric_names(eval_cfg: EvalConfig, model: ModelConfig) -> list[str]:
    """The metric names the evaluate step logs for the candidate: ``eval.<task>.recall_at_<k>``, and for
    i2i and q2i also ``eval.<task>.dim<d>.recall_at_<k>`` for each Matryoshka dim below the full width."""
    width = embedding_width(model)
    smaller = [d for d in model.matryoshka_dims if d < width]
    names = []
    for task in eval_cfg.tasks:
        names += [f"eval.{task}.recall_at_{k}" for k in eval_cfg.ks]
        if task in ("i2i", "q2i"):
            names += [f"eval.{task}.dim{d}.recall_at_{k}" for d in smaller for k in eval_cfg.ks]
    return names


class GateMetric(_Strict):
    """One gate check: ``metric`` of the candidate minus the reference's must be at least ``min_delta``."""

    metric: str = Field(description="a metric the evaluate step logs, e.g. eval.i2i.recall_at_10")
    min_delta: float = Field(0.0, description="required improvement over the reference (negative: allowed loss)")


class GateConfig(_Strict):
    """Promotion gate: for every entry, candidate metric minus reference metric must reach ``min_delta``.

    The reference is the champion, or the untrained baseline when there is none."""

    metrics: list[GateMetric] = Field(default_factory=lambda: [
        GateMetric(metric=f"eval.{task}.recall_at_10", min_delta=0.0) for task in ("i2i", "image2text", "audio2text")
    ])

    @model_validator(mode="after")
    def _distinct(self) -> "GateConfig":
        names = [m.metric for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"gate.metrics names a metric twice: {names}; keep one entry per metric")
        return self


class ServeConfig(_Strict):
    """The local Triton server, and the name the model has in its model repository."""

    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    triton_model: str = Field("sail_embedding", description="the model's name in the Triton model repository")
    max_batch_size: int = Field(64, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)


class RegistryConfig(_Strict):
    """MLflow: the registered model that versions are added to, and the experiment of pipeline runs."""

    mlflow_model: str = Field("sail-embedding", description="the MLflow registered model (aliases champion, challenger)")
    experiment: str = "sail-embedding"


class Config(_Strict):
    """The configuration of one profile: ``base`` merged with the profile and the overrides, checked."""

    profile: str = "demo"
    data: DataConfig = DataConfig()
    contracts: ContractsConfig = ContractsConfig()
    datasets: dict[str, DatasetConfig]
    model: ModelConfig = ModelConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        """Settings that only make sense together; all problems are reported at once."""
        problems = self._dataset_problems() + self._stage_problems() + self._eval_problems() + self._gate_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _dataset_problems(self) -> list[str]:
        if not self.datasets:
            return ["datasets is empty; define at least one pair dataset (task, patterns, ...) under base.datasets"]
        return []

    def _stage_problems(self) -> list[str]:
        problems, allowed = [], ", ".join(sorted(self.datasets)) or "(none defined)"
        if not self.train.stages:
            problems.append("train.stages is empty; list at least one stage (name, datasets, steps, ...)")
        seen: set[str] = set()
        for i, stage in enumerate(self.train.stages):
            if stage.name in seen:
                problems.append(f"train.stages.{i}.name: stage {stage.name!r} is listed twice; stage names must be distinct")
            seen.add(stage.name)
            if not stage.datasets:
                problems.append(f"train.stages.{i}.datasets is empty; list datasets to train on; allowed: {allowed}")
            for j, name in enumerate(stage.datasets):
                if name not in self.datasets:
                    problems.append(f"train.stages.{i}.datasets.{j}: unknown dataset {name!r}; allowed: {allowed}")
            if stage.warmup_steps >= stage.steps:
                problems.append(f"train.stages.{i}.warmup_steps = {stage.warmup_steps} must be smaller than "
                                f"train.stages.{i}.steps = {stage.steps} (stage {stage.name!r}); allowed: 0..{stage.steps - 1}")
        return problems

    def _eval_problems(self) -> list[str]:
        problems = []
        tasks = {name: d.task for name, d in self.datasets.items()}
        for j, task in enumerate(self.eval.tasks):
            kind = ITEM_TASKS.get(task)
            if kind and kind not in tasks.values():
                problems.append(f"eval.tasks.{j} = {task!r} ranks the test pairs of datasets with task {kind!r}, and no "
                                f"dataset has it (datasets: {tasks}); add one or remove {task!r} from eval.tasks")
        return problems

    def _gate_problems(self) -> list[str]:
        problems = []
        allowed = eval_metric_names(self.eval, self.model)
        for i, gate in enumerate(self.gate.metrics):
            if gate.metric not in allowed:
                problems.append(
                    f"gate.metrics.{i}.metric = {gate.metric!r} is not logged by evaluation with eval.tasks "
                    f"{list(self.eval.tasks)} and eval.ks {list(self.eval.ks)}; allowed: {', '.join(allowed)}")
                continue
            task = gate.metric.split(".")[1]
            modality = CROSS_MODAL_TASKS.get(task)
            if modality and not any(f"{modality}->text" in d.patterns for d in self.datasets.values()):
                problems.append(
                    f"gate.metrics.{i}.metric = {gate.metric!r}: evaluation skips {task} because no dataset lists "
                    f"the pattern {modality}->text; add it to a dataset's patterns or gate on another metric")
        return problems


STAGES_KEY = "train.stages"


def _merge(base: dict, over: dict, where: str = "") -> dict:
    """``over`` deep-merged over ``base``: dicts merge, ``train.stages`` merge by name, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{where}{key}"
        if path == STAGES_KEY and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_stages(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{path}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_stages(base: list, over: list) -> list:
    """A restated stage (same ``name``) overrides only the keys it gives; a new name is appended whole."""
    out = copy.deepcopy(base)
    index = {s.get("name"): n for n, s in enumerate(out) if isinstance(s, dict)}
    for i, stage in enumerate(over):
        if not isinstance(stage, dict) or "name" not in stage:
            raise ConfigError(f"{STAGES_KEY}.{i}: a profile's stage needs a `name` (stages merge with base's by "
                              f"name); got {stage!r}")
        if stage["name"] in index:
            out[index[stage["name"]]] = _merge(out[index[stage["name"]]], stage)
        else:
            index[stage["name"]] = len(out)
            out.append(copy.deepcopy(stage))
    return out


def _unwrap(annotation: Any) -> tuple[str, Any]:
    """What a field holds: ("model", cls), ("list", item type), ("dict", value type) or ("value", None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
        return next((k for k in kinds if k[0] != "value"), ("value", None))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is list:
        return "list", typing.get_args(annotation)[0]
    if origin is dict:
        return "dict", typing.get_args(annotation)[1]
    return "value", None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``model.max_length``, ``gate.metrics.0.min_delta``) in ``tree`` to ``value``.

    Every part must be a key the configuration defines (a missing section it defines is created),
    a list index in range, or a name under a free-form mapping (``datasets.<name>``)."""
    parts = dotted.split(".")
    node: Any = tree
    kind, inner = "model", Config
    for n, part in enumerate(parts):
        here = ".".join(parts[:n]) or "the top level"
        key: Any = part
        if kind == "model":
            fields = inner.model_fields
            if part not in fields or not isinstance(node, dict):
                key = ".".join(parts[:n + 1])
                renamed = f" ('{key}' is now '{RENAMED[key]}')" if key in RENAMED else ""
                raise ConfigError(f"override {dotted!r}: unknown key {key!r}{renamed}; "
                                  f"allowed keys at {here}: {', '.join(sorted(fields))}")
            child = fields[part].annotation
        elif kind == "dict" and isinstance(node, dict):
            child = inner
        elif kind == "list" and isinstance(node, list):
            if not re.fullmatch(r"\d+", part) or int(part) >= len(node):
                raise ConfigError(
                    f"override {dotted!r}: {here} is a list of {len(node)}, so the next part must be an index "
                    f"0..{len(node) - 1}, got {part!r}; or set the whole list as YAML, e.g. "
                    f"--set '{here}=[...]'" + (" (gate.metrics=[{metric: eval.i2i.recall_at_10, min_delta: 0.02}])"
                                              if here == "gate.metrics" else ""))
            key, child = int(part), inner
        else:
            raise ConfigError(f"override {dotted!r}: {here} holds the value {node!r}, not keys; set {here}=VALUE")
        if n == len(parts) - 1:
            node[key] = value
            return
        kind, inner = _unwrap(child)
        current = node.get(key) if isinstance(node, dict) else node[key]
        if current is None and kind in ("model", "dict"):
            current = node[key] = {}
        node = current


def _allowed_at(loc: tuple, model: type[BaseModel] = Config) -> list[str]:
    """The field names allowed at the parent of a pydantic error location."""
    kind, inner = "model", model
    for part in loc[:-1]:
        if kind == "model":
            field = inner.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            kind, inner = _unwrap(field.annotation)
        elif kind in ("list", "dict"):
            kind, inner = _unwrap(inner)
        else:
            return []
    return sorted(inner.model_fields) if kind == "model" else []


RENAMED = {  # old key -> its name now, for the message about a params.yaml or override written before the rename
    "data.keyframes": "data.render_keyframes",
    "serve.model_name": "serve.triton_model",
    "registry.model_name": "registry.mlflow_model",
}


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        ctx = e.get("ctx") or {}
        if e["type"] == "extra_forbidden":
            allowed = _allowed_at(e["loc"])
            renamed = f" ('{key}' is now '{RENAMED[key]}')" if key in RENAMED else ""
            lines.append(f"  - unknown key '{key}'{renamed}; allowed keys here: {', '.join(allowed)}")
        elif e["type"] == "value_error" and "error" in ctx:
            # our own validators: each line already names its key, value and what is allowed
            lines += [f"  - {line}" if not key else f"  - '{key}': {line}" for line in str(ctx["error"]).splitlines()]
        else:
            hint = f" (allowed: {ctx['expected']})" if "expected" in ctx else ""
            lines.append(f"  - '{key}': {e['msg']}{hint}; got {e.get('input')!r}")
    lines.append("Fix the key in params.yaml (or the override you passed) and run again.")
    return "\n".join(lines)


def params_path(params: str | os.PathLike | None = None) -> Path:
    """The ``params.yaml`` in use: ``params``, else ``$SAIL_PARAMS``, else :func:`default_params`."""
    return Path(params or os.environ.get("SAIL_PARAMS") or default_params())


def _read_params(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"configuration file {path} not found; pass --params or set SAIL_PARAMS")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "base" not in raw or "profiles" not in raw:
        raise ConfigError(f"{path} must have top-level keys 'base' and 'profiles'")
    return raw


def profile_names(params: str | os.PathLike | None = None) -> list[str]:
    """The profiles that ``params.yaml`` defines."""
    return sorted(_read_params(params_path(params))["profiles"] or {})


def exportable(model: ModelConfig) -> str | None:
    """Why this model cannot be exported to ONNX for Triton, or None when it can."""
    if model.audio.encoder != "speech_embedding":
        return (f"model.audio.encoder is {model.audio.encoder!r}; the ONNX export serves the "
                "speech_embedding audio encoder only (the paper profile's CLAP tower is not exported yet)")
    if not model.vision.frozen:
        return "model.vision.frozen is false; the ONNX export needs a frozen vision tower"
    return None


def check_steps(cfg: Config, steps) -> None:
    """Refuse, before anything runs, a profile that cannot run ``steps`` (for example export of ``paper``)."""
    steps = set(steps)
    if steps & {"export", "register", "promote"} and (why := exportable(cfg.model)):
        raise ConfigError(f"profile {cfg.profile!r} cannot run the export step: {why}. Leave out export, register "
                          "and promote, or pick a profile that can be exported.")


def runnable_profiles(steps, params: str | os.PathLike | None = None) -> list[str]:
    """The profiles that load and can run ``steps``."""
    out = []
    for name in profile_names(params):
        try:
            check_steps(load_config(params, name), steps)
        except ConfigError:
            continue
        out.append(name)
    return out


def stage_names(params: str | os.PathLike | None = None) -> list[str]:
    """Every training stage named in any profile, in the order the profiles list them."""
    names: list[str] = []
    for name in profile_names(params):
        for stage in load_config(params, name).train.stages:
            if stage.name not in names:
                names.append(stage.name)
    return names


def load_config(
    params: str | os.PathLike | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load ``params.yaml``, apply ``profile`` and dotted ``overrides``, validate.

    ``overrides`` maps dotted keys to values: ``{"model.max_length": 32}``, a list item by index
    (``{"gate.metrics.0.min_delta": 0.02}``) or a whole list (``{"gate.metrics": [{"metric": ...,
    "min_delta": ...}]}``). A key the configuration does not define is refused, never created.
    Raises :class:`ConfigError` naming each bad key and what is allowed.
    """
    path = params_path(params)
    raw = _read_params(path)
    name = profile or os.environ.get("SAIL_PROFILE") or raw.get("profile", "demo")
    profiles = raw["profiles"] or {}
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r} in {path}; allowed profiles: {', '.join(sorted(profiles))}")
    try:
        tree = _merge(raw["base"], profiles[name] or {})
    except ConfigError as err:
        raise ConfigError(f"invalid profile {name!r} in {path}: profiles.{name}.{err}") from None
    tree["profile"] = name
    for key, value in (overrides or {}).items():
        _set_dotted(tree, str(key), value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, f"{path} (profile {name!r})")) from None


def dump_config(cfg: Config, resolved: bool = True) -> str:
    """``cfg`` as YAML. ``resolved``: every key with its value (defaults included); else only the keys
    that ``params.yaml`` (base + profile + overrides) set."""
    tree = cfg.model_dump(mode="json", exclude_unset=not resolved)
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=120)
