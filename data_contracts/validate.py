"""Apply the data contracts to a data folder: clean tables, quarantine, report.

``validate_dir(src, out, quarantine, cfg)`` runs the suite of every table
(items, interactions, item_splits, each ``pairs/<dataset>``) with Great Expectations,
writes the clean rows to ``out`` (same layout, schema dtypes), the failing
rows to ``quarantine/<table>.parquet`` with their reason, and
``out/validation_report.{json,md}``. Items are checked first; the other
tables are checked against the ids of the *clean* items, so a row that
points at a quarantined item is quarantined too and ``out`` is referentially
consistent. Items also get media checks (:mod:`data_contracts.media`): a
row whose cover, keyframes or audio file is missing or does not decode is
quarantined with the reason, and ``out/media`` receives the media of the
clean rows only (hard links where possible). On a breach it raises
:class:`ContractBreach` after writing everything.
"""

from __future__ import annotations

import os
import time

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from data_contracts.breach import ContractBreach, breach_lines
from data_contracts.check import evaluate
from data_contracts.media import DERIVED, media_errors, publish_media
from data_contracts.quarantine import split_rows
from data_contracts.report import write_report
from data_contracts.runner import run_suite
from data_contracts.suites import ITEM_IDS_PARAM, NOW_PARAM, SUITE_NAMES, load_suite
from data_contracts.tables import discover, read_for_validation
from sail_core.config import ContractsConfig
from sail_core.data import schema
from sail_core.data.io import write_table
from sail_core.data.tables import write_data_dir

_console = Console(stderr=True, soft_wrap=True)


@dataclass
class TableResult:
    name: str
    source: str
    rows: int
    clean: int
    quarantined: int
    quarantine_path: str
    expectations: list[dict]
    breaches: list[str]

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class ValidationResult:
    """What :func:`validate_dir` found; ``passed`` is False when any breach was recorded."""

    source: str
    out: str
    quarantine: str
    tolerance: float
    tables: dict[str, TableResult] = field(default_factory=dict)
    report_path: str = ""
    media: dict = field(default_factory=dict)

    @property
    def breaches(self) -> list[str]:
        return [b for t in self.tables.values() for b in t.breaches]

    @property
    def passed(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "source": self.source,
            "out": self.out,
            "quarantine": self.quarantine,
            "tolerance": self.tolerance,
            "tables": {k: v.to_dict() for k, v in self.tables.items()},
            "breaches": self.breaches,
            "media": self.media,
        }


def _expectation_rows(outcomes) -> list[dict]:
    return [
        {
            "expectation": o.type,
            "column": o.column,
            "level": o.level,
            "success": o.success,
            "element_count": o.element_count,
            "unexpected_count": o.unexpected_count,
            "observed_value": o.observed_value,
            "exception": o.exception,
        }
        for o in outcomes
    ]


def validate_dir(
    src: Path,
    out: Path,
    quarantine: Path,
    cfg: ContractsConfig,
    quarantine_display: Path | None = None,
    workers: int | None = None,
    out_display: Path | None = None,
) -> ValidationResult:
    """Validate the data folder ``src``; see the module docstring. Raises :class:`ContractBreach`.

    ``quarantine_display`` and ``out_display`` are the folders that messages and the report
    name, for a caller that writes into temporary folders and moves them there. The report written into
    ``out`` names paths relative to the folder the three share, so that the same data validated in
    another place gives byte-identical output (and the same DVC hash). ``workers``: threads
    that check media files (``data.media_workers``; None = the CPUs available).
    """
    src, out, quarantine = Path(src), Path(out), Path(quarantine)
    shown_q = Path(quarantine_display) if quarantine_display is not None else quarantine
    shown_out = Path(out_display) if out_display is not None else out
    for target in (out, quarantine):
        if target.resolve() == src.resolve():
            raise ValueError(f"validation would overwrite its source: {target} is the source folder {src}; use another folder")
    tables = discover(src)
    suites = {name: load_suite(name) for name in SUITE_NAMES}
    result = ValidationResult(str(src), str(shown_out), str(shown_q), cfg.max_quarantine_fraction)
    clean_tables = {}
    raw_item_ids: set[str] = set()
    clean_item_ids: list[str] = []
    for table in tables:
        _console.print(f"[dim]validating {table.name} ({table.path})", soft_wrap=True)
        df = read_for_validation(table)
        params = {} if table.suite == "items" else {ITEM_IDS_PARAM: clean_item_ids, NOW_PARAM: int(time.time())}
        checked = df
        if table.suite == "items":  # derived media-check columns, expected null by the suite
            clash = {c: f"{c} (in the file)" for c in DERIVED if c in df.columns}  # stays an unknown column
            checked = df.rename(columns=clash).join(media_errors(df, src, workers))
        outcomes = run_suite(checked, suites[table.suite], params)
        found = evaluate(checked, outcomes, table.columns, raw_item_ids)
        clean, quarantined = split_rows(df, found.rows, table.columns, table.path)
        write_table(quarantined, quarantine / f"{table.name}.parquet")
        qpath = shown_q / f"{table.name}.parquet"
        if table.suite == "items":
            if "item_id" in df.columns:
                raw_item_ids = set(df["item_id"].dropna().astype(str))
            clean_item_ids = sorted(clean["item_id"].dropna().astype(str))
        clean_tables[table.name] = clean
        result.tables[table.name] = TableResult(
            name=table.name,
            source=str(table.path),
            rows=len(df),
            clean=len(clean),
            quarantined=len(quarantined),
            quarantine_path=str(qpath),
            expectations=_expectation_rows(outcomes),
            breaches=breach_lines(table.name, len(df), len(quarantined), cfg.max_quarantine_fraction, found, qpath),
        )
    _remove_stale_quarantine(quarantine, {t.name for t in tables})
    pairs = {n.split("/", 1)[1]: df for n, df in clean_tables.items() if n.startswith(schema.PAIRS_DIR + "/")}
    write_data_dir(out, clean_tables[schema.ITEMS], clean_tables[schema.INTERACTIONS], pairs)
    write_table(clean_tables[schema.ITEM_SPLITS], out / f"{schema.ITEM_SPLITS}.parquet")
    result.media = publish_media(clean_tables[schema.ITEMS], src, out)
    base = os.path.commonpath([str(src.resolve()), str(shown_out.resolve()), str(shown_q.resolve())])
    result.report_path = str(write_report(out, _relative_to(result.to_dict(), base)))
    if not result.passed:
        raise ContractBreach(result.breaches, result)
    return result


def _relative_to(tree, base: str):
    """``tree`` with every string path under ``base`` written relative to it."""
    if isinstance(tree, dict):
        return {k: _relative_to(v, base) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_relative_to(v, base) for v in tree]
    if isinstance(tree, str) and tree.startswith(base + os.sep):
        return tree[len(base) + 1:]
    return tree


def _remove_stale_quarantine(quarantine: Path, names: set[str]) -> None:
    pairs = quarantine / schema.PAIRS_DIR
    if pairs.is_dir():
        for path in pairs.glob("*.parquet"):
            if f"{schema.PAIRS_DIR}/{path.stem}" not in names:
                path.unlink()
