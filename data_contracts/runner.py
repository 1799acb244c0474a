"""Run a Great Expectations suite on a pandas frame and return plain outcomes.

One ephemeral GX context per process, progress bars off. Results are read
with ``result_format="COMPLETE"`` so each row-level failure carries GX's
``unexpected_index_list`` (positions in the frame, which has a RangeIndex).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

_CONTEXT = None
_ASSETS = itertools.count()


@dataclass
class Outcome:
    """One expectation's result, in plain Python types."""

    type: str
    column: str | None
    kwargs: dict
    meta: dict
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_index: list[int] = field(default_factory=list)
    observed_value: Any = None
    exception: str | None = None

    @property
    def level(self) -> str:
        return self.meta.get("level", "row")


def gx_context():
    """The process's ephemeral GX data context (created once, progress bars off)."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return _CONTEXT


def _jsonable(value):
    try:
        import json

        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def run_suite(df: pd.DataFrame, suite, parameters: dict | None = None) -> list[Outcome]:
    """Validate ``df`` (its index is reset to 0..n-1) against ``suite``; one :class:`Outcome` per expectation."""
    ctx = gx_context()
    try:
        source = ctx.data_sources.get("sail")
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas("sail")
    asset = source.add_dataframe_asset(f"table_{next(_ASSETS)}")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    batch = batch_def.get_batch(batch_parameters={"dataframe": df.reset_index(drop=True)})
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": 0},
        expectation_parameters=parameters or {},
    )
    source.delete_asset(asset.name)
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        exc = r.exception_info or {}
        if exc and not isinstance(exc.get("raised_exception"), bool):  # several exceptions, keyed by metric
            exc = next(iter(exc.values()), {})
        outcomes.append(
            Outcome(
                type=cfg.type,
                column=cfg.kwargs.get("column"),
                kwargs=dict(cfg.kwargs),
                meta=dict(cfg.meta or {}),
                success=bool(r.success),
                element_count=res.get("element_count"),
                unexpected_count=res.get("unexpected_count"),
                unexpected_index=[int(i) for i in res.get("unexpected_index_list") or []],
                observed_value=_jsonable(res.get("observed_value")),
                exception=exc.get("exception_message") if exc.get("raised_exception") else None,
            )
        )
    return outcomes
