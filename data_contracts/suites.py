"""The expectation suites, kept as GX JSON in ``data_contracts/suites/``.

One suite per table kind: ``items``, ``interactions``, ``item_splits`` (the
split of each item), ``pairs`` (applied to every ``pairs/<dataset>`` file), ``hard_negatives`` (the mine step's
``hard_negatives/<dataset>`` tables; item ids there are the train items only). Each expectation's ``meta`` says whether a
failure is ``table``-level (schema, types, empty table: the run stops) or
``row``-level (the failing rows are quarantined), and gives the human
``reason`` written next to quarantined rows. ``{"$PARAMETER": "item_ids"}``
is filled at validation time with the ids of the clean items, which makes
the referential-integrity checks; ``{"$PARAMETER": "now"}`` with the time of validation.
"""

from __future__ import annotations

import json
from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_NAMES = ("items", "interactions", "item_splits", "pairs", "hard_negatives", "id_embeddings")
ITEM_IDS_PARAM = "item_ids"
NOW_PARAM = "now"  # unix seconds at validation time: no event may come from the future


def suite_path(name: str) -> Path:
    if name not in SUITE_NAMES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(SUITE_NAMES)}")
    return SUITES_DIR / f"{name}.json"


def load_suite_dict(name: str) -> dict:
    """The suite's JSON as a dict (no GX import)."""
    path = suite_path(name)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"expectation suite {path} is missing; restore it from git") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"expectation suite {path} is not valid JSON: {err}") from None


def load_suite(name: str):
    """The suite as a ``great_expectations.ExpectationSuite`` (imports GX: about 3 s the first time).

    GX needs an active data context to build a suite; :func:`data_contracts.runner.gx_context`
    provides one.
    """
    import great_expectations as gx

    from data_contracts.runner import gx_context

    gx_context()
    return gx.ExpectationSuite(**load_suite_dict(name))
