"""``params.resolved.yaml``: the params file that ``dvc.yaml`` reads.

DVC's templating cannot deep-merge a profile over ``base``, so DVC reads one
profile's configuration already resolved (every key, defaults included, as
``sail config show --resolved`` prints it), followed by a ``dvc`` section that
``dvc.yaml`` generates its per-stage training stages from: for each entry of
``train.stages``, its index (so that a stage can track ``train.stages.<i>`` as
its params) and what it starts from (the model code for the first stage, the
previous stage's output after that), and the final model that ``evaluate``
and ``export`` read.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from sail_core.config import CRE_TASKS, Config, dump_config

RESOLVED_PARAMS = "params.resolved.yaml"
MODEL_CODE = "sail_core/model"

_HEADER = (
    "# Generated: the resolved configuration of profile {profile!r}, which dvc.yaml tracks as params.\n"
    "# Do not edit; change params.yaml and run `sail --profile {profile} config resolve`.\n"
)


def train_stage_names(cfg: Config) -> list[str]:
    """The DVC stage names of ``cfg``'s training stages (``train@<name>``), in order."""
    return [f"train@{stage.name}" for stage in cfg.train.stages]


def model_stages(cfg: Config) -> list[str]:
    """The DVC stages that produce the model outputs: the teacher, every mining and training stage, index, sid,
    evaluate, export."""
    mining = [f"mine@{s.name}" for s in cfg.train.stages if s.hard_negatives]
    return ["teacher", *mining, *train_stage_names(cfg), "index", "sid", "evaluate", "export"]


NO_NEGATIVES = "sail_core/train/hard_negatives.py"  # the dep of a stage without mined negatives: the pool's code
NO_TEACHER = "sail_core/train/cre.py"  # the dep of a stage without CRE tasks: the CRE code


def dvc_section(cfg: Config) -> dict:
    """The part of the file that only ``dvc.yaml`` reads: the profile, the training-stage chain (each stage's
    index, the model it starts from, its mined negatives), the mining stages, the final model."""
    chain, mining, starts_from = {}, {}, MODEL_CODE
    for i, stage in enumerate(cfg.train.stages):
        negatives = f"data/mined/{stage.name}" if stage.hard_negatives else NO_NEGATIVES
        cre = any(n in CRE_TASKS for n in stage.datasets)
        chain[stage.name] = {"index": i, "starts_from": starts_from, "negatives": negatives,
                             "teacher": "data/teacher" if cre else NO_TEACHER}
        if stage.hard_negatives:
            mining[stage.name] = {"index": i, "starts_from": starts_from}
        starts_from = f"models/{stage.name}"
    return {"profile": cfg.profile, "train_stages": chain, "mine_stages": mining, "final_model": starts_from}


def resolved_params(cfg: Config) -> str:
    """The text of ``params.resolved.yaml`` for ``cfg``."""
    section = yaml.safe_dump({"dvc": dvc_section(cfg)}, sort_keys=False, default_flow_style=False)
    return (_HEADER.format(profile=cfg.profile) + dump_config(cfg, resolved=True)
            + "# Read by dvc.yaml only (not configuration keys): the training-stage chain.\n" + section)


def is_current(cfg: Config, root: str | os.PathLike) -> bool:
    """True when ``root/params.resolved.yaml`` is exactly what ``cfg`` resolves to."""
    path = Path(root) / RESOLVED_PARAMS
    return path.exists() and path.read_text() == resolved_params(cfg)


def write_resolved(cfg: Config, root: str | os.PathLike) -> Path:
    """Write ``root/params.resolved.yaml`` for ``cfg`` (atomically; untouched when already up to date)."""
    path = Path(root) / RESOLVED_PARAMS
    if is_current(cfg, root):
        return path
    text = resolved_params(cfg)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def resolved_profile(root: str | os.PathLike) -> str | None:
    """The profile that ``root/params.resolved.yaml`` was written for, or None when there is no such file."""
    path = Path(root) / RESOLVED_PARAMS
    if not path.exists():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("profile")
