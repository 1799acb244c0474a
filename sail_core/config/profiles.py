"""What the profiles of ``params.yaml`` can do: their names, their stages, the steps they can run."""

from __future__ import annotations

import os

from sail_core.config.load import _read_params, load_config, params_path
from sail_core.config.schema import Config, ConfigError, ModelConfig


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


def mining_stage_names(params: str | os.PathLike | None = None) -> list[str]:
    """The training stages that have hard negatives (so a ``mine`` step before them) in any profile."""
    names: list[str] = []
    for name in profile_names(params):
        for stage in load_config(params, name).train.stages:
            if stage.hard_negatives and stage.name not in names:
                names.append(stage.name)
    return names
