"""One set of defaults: every value ``params.yaml``'s ``base`` sets equals the pydantic default.

The per-entry collections (``datasets.<name>``, ``train.stages``) are definitions, not defaults,
and are not compared.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from sail_core.config import Config, DataConfig, ModelConfig, ServeConfig, params_path
from sail_core.config.load import _unwrap

NO_DEFAULT = object()


def default_tree(model: type[BaseModel]) -> dict[str, Any]:
    """Each field's default as plain data; a required section recurses into its own field defaults."""
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            value = field.get_default(call_default_factory=True)
            tree[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else (
                [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
                if isinstance(value, list) else value)
        else:
            kind, inner = _unwrap(field.annotation)
            tree[name] = default_tree(inner) if kind == "model" else NO_DEFAULT
    return tree


def disagreements(base: Any, defaults: Any, where: str = "base") -> list[str]:
    """``where.key: base X, pydantic Y`` for every value ``base`` sets that differs from its default."""
    if defaults is NO_DEFAULT:
        return []
    if isinstance(base, dict) and isinstance(defaults, dict):
        out = []
        for key, value in base.items():
            if key not in defaults:
                out.append(f"{where}.{key}: not a field of the configuration")
            else:
                out += disagreements(value, defaults[key], f"{where}.{key}")
        return out
    return [] if base == defaults else [f"{where}: base {base!r}, pydantic default {defaults!r}"]


def test_base_equals_pydantic_defaults():
    base = yaml.safe_load(params_path().read_text())["base"]
    assert disagreements(base, default_tree(Config)) == []


def test_the_walk_finds_a_disagreement():
    base = yaml.safe_load(params_path().read_text())["base"]
    base["model"]["audio"]["chunk_seconds"] = 10.0
    base["gate"]["metrics"][0]["min_delta"] = 0.5
    found = disagreements(base, default_tree(Config))
    assert any(f.startswith("base.model.audio.chunk_seconds: base 10.0") for f in found), found
    assert any(f.startswith("base.gate.metrics: base [") for f in found), found


def test_sections_built_in_code_match_the_demo_profile():
    from sail_core.config import load_config

    demo = load_config(profile="demo")
    assert DataConfig() == demo.data
    assert ModelConfig() == demo.model
    assert ServeConfig() == demo.serve
