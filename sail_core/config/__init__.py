"""The one typed configuration: ``params.yaml`` loaded into pydantic models.

``params.yaml`` holds a ``base`` section and named ``profiles`` whose values
are deep-merged over it (``train.stages`` merge by stage ``name``; every other
list is replaced whole). Overrides (``--set``, the DAG's run parameters) then
set single keys by dotted path, list items by index (``gate.metrics.0.min_delta``).
The pydantic defaults (``schema.py``) equal the values ``base`` sets. Unknown keys,
ill-typed values and settings that could only fail later (a gate metric that
evaluation never logs, ``warmup_steps >= steps``, an empty dataset list) fail at
start-up with a message that names the key, the value and what is allowed.
"""

from sail_core.config.load import DEFAULT_PARAMS, REPO_ROOT, default_params, dump_config, load_config, params_path
from sail_core.config.profiles import (check_steps, exportable, mining_stage_names, profile_names, runnable_profiles,
                                       stage_names)
from sail_core.config.schema import (
    CRE_TASKS,
    CROSS_MODAL_TASKS,
    CreConfig,
    ITEM_TASKS,
    MINILM_WIDTH,
    MODALITIES,
    REC_METRICS,
    REFERENCE_TASKS,
    AudioConfig,
    BalanceConfig,
    ClapShapeConfig,
    Config,
    ConfigError,
    ContractsConfig,
    DataConfig,
    DatasetConfig,
    EvalConfig,
    GateConfig,
    GateMetric,
    IndexConfig,
    InputsConfig,
    ModelConfig,
    PerceiverConfig,
    Qwen2ShapeConfig,
    RegistryConfig,
    ServeConfig,
    Seq2ItemConfig,
    StageConfig,
    TeacherConfig,
    TrainConfig,
    VisionConfig,
    embedding_width,
    eval_metric_names,
)

__all__ = [
    "REPO_ROOT", "DEFAULT_PARAMS", "default_params", "params_path", "load_config", "dump_config",
    "profile_names", "exportable", "check_steps", "runnable_profiles", "stage_names", "mining_stage_names",
    "CRE_TASKS", "CreConfig", "CROSS_MODAL_TASKS", "ITEM_TASKS", "MINILM_WIDTH", "MODALITIES", "AudioConfig", "BalanceConfig", "ClapShapeConfig", "Config",
    "ConfigError", "ContractsConfig", "DataConfig", "DatasetConfig", "EvalConfig", "GateConfig", "GateMetric", "IndexConfig", "REC_METRICS", "REFERENCE_TASKS",
    "IndexConfig", "REFERENCE_TASKS",
    "InputsConfig", "ModelConfig", "PerceiverConfig", "Qwen2ShapeConfig", "RegistryConfig", "ServeConfig",
    "Seq2ItemConfig", "StageConfig", "TeacherConfig", "TrainConfig", "VisionConfig", "embedding_width", "eval_metric_names",
]
