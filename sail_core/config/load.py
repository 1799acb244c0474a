"""Reading ``params.yaml``: merge a profile over ``base``, apply overrides, validate, explain errors."""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sail_core.config.schema import Config, ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"


def default_params() -> Path:
    """``params.yaml`` of the current DVC project (cwd) if there is one, else the repository's."""
    local = Path.cwd() / "params.yaml"
    return local if local.exists() and (Path.cwd() / "dvc.yaml").exists() else DEFAULT_PARAMS


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
    """A restated stage (same ``name``) overrides only the keys it gives; a new name is appended whole;
    ``{name: N, drop: true}`` removes base's stage N."""
    out = copy.deepcopy(base)
    index = {s.get("name"): n for n, s in enumerate(out) if isinstance(s, dict)}
    dropped = set()
    for i, stage in enumerate(over):
        if not isinstance(stage, dict) or "name" not in stage:
            raise ConfigError(f"{STAGES_KEY}.{i}: a profile's stage needs a `name` (stages merge with base's by "
                              f"name); got {stage!r}")
        if stage.get("drop"):
            if stage["name"] not in index or set(stage) - {"name", "drop"}:
                raise ConfigError(f"{STAGES_KEY}.{i}: `drop: true` removes a stage of base and takes no other key; "
                                  f"base's stages: {', '.join(map(str, index))}; got {stage!r}")
            dropped.add(stage["name"])
            continue
        if stage["name"] in index:
            out[index[stage["name"]]] = _merge(out[index[stage["name"]]], stage)
        else:
            index[stage["name"]] = len(out)
            out.append(copy.deepcopy(stage))
    return [s for s in out if not (isinstance(s, dict) and s.get("name") in dropped)]


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
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}; fix the syntax "
                          "(indent with spaces, not tabs; close every bracket and quote) and run again") from None
    if not isinstance(raw, dict) or "base" not in raw or "profiles" not in raw:
        raise ConfigError(f"{path} must have top-level keys 'base' and 'profiles'")
    return raw


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
