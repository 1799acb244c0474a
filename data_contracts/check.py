"""Turn one table's GX outcomes into table-level failures and per-row failures.

* ``table`` level (``meta.level``): missing or unknown columns, an empty
  table, a column stored with the wrong type. These stop the run whatever the
  tolerance. A missing/unknown column or an empty table moves every row to
  quarantine; a wrongly typed column moves the rows whose value cannot be cast
  (GX's unexpected rows for a mixed column, else those the schema cast rejects).
* ``row`` level: GX's ``unexpected_index_list`` names the failing rows.
  A derived check column (``meta.reason_from_value``, e.g. the media checks
  of :mod:`data_contracts.media`) holds the reason itself; the failure is
  reported on the column it checks (``meta.derived_from``).
  For the referential checks (``value_set = {"$PARAMETER": "item_ids"}``) the
  reason says whether the id is absent from items or its item row was quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from data_contracts.runner import Outcome
from data_contracts.suites import ITEM_IDS_PARAM
from sail_core.data.cast import invalid_mask

OF_TYPE = "expect_column_values_to_be_of_type"
COLUMN_EXISTS = "expect_column_to_exist"
COLUMNS_MATCH = "expect_table_columns_to_match_set"


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    reason: str


@dataclass
class TableFailure:
    expectation: str
    column: str | None
    detail: str
    rows: int = 0              # rows moved to quarantine because of it
    all_rows: bool = False


@dataclass
class RowFailureCount:
    expectation: str
    column: str | None
    rows: int


@dataclass
class Findings:
    table: list[TableFailure] = field(default_factory=list)
    row_counts: list[RowFailureCount] = field(default_factory=list)
    rows: dict[int, list[Failure]] = field(default_factory=dict)

    def add(self, row: int, failure: Failure) -> None:
        self.rows.setdefault(int(row), []).append(failure)


def _is_item_ref(o: Outcome) -> bool:
    """A referential check against the items table (``meta.references``, or the raw suite parameter)."""
    return o.meta.get("references") == "items.item_id" or o.kwargs.get("value_set") == {"$PARAMETER": ITEM_IDS_PARAM}


def _short(value) -> str:
    """The value as a user wrote it (numpy scalars as plain numbers, strings quoted), cut at 60 characters."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # np.int64(-5) -> -5
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def evaluate(
    df: pd.DataFrame,
    outcomes: list[Outcome],
    columns: dict[str, str],
    known_item_ids: set[str] | None = None,
) -> Findings:
    """Classify ``outcomes`` of ``df`` into table failures and row failures."""
    found = Findings()
    missing = {o.column for o in outcomes if o.type == COLUMN_EXISTS and not o.success}
    type_failed = {o.column for o in outcomes if o.type == OF_TYPE and not o.success}
    for o in outcomes:
        if o.success and not o.exception:
            continue
        if o.column is not None and o.column in missing and o.type != COLUMN_EXISTS:
            continue  # a consequence of the missing column, reported once
        if o.exception:
            if o.column in type_failed:
                continue  # e.g. a range check on a text column: the type failure says it
            found.table.append(TableFailure(o.type, o.column, f"could not be evaluated: {o.exception}", all_rows=True))
            continue
        if o.level == "table":
            if o.type == OF_TYPE:
                _type_failure(df, o, columns, found)
            elif o.type == COLUMNS_MATCH:
                extra = sorted(set(df.columns) - set(o.kwargs.get("column_set") or []))
                if extra:  # missing columns are reported by expect_column_to_exist
                    found.table.append(TableFailure(o.type, None, f"unknown column(s) {extra}; allowed: {list(columns)}", all_rows=True))
            else:
                found.table.append(TableFailure(o.type, o.column, o.meta.get("reason", "table-level check failed"), all_rows=True))
            continue
        reason = o.meta.get("reason", o.type)
        values = df[o.column] if o.column in df.columns else None
        shown = o.meta.get("derived_from", o.column)
        for i in o.unexpected_index:
            text = reason
            if o.meta.get("reason_from_value") and values is not None:
                text = str(values.iloc[i])
            elif _is_item_ref(o) and values is not None:  # referential integrity
                v = values.iloc[i]
                where = "its item row was quarantined" if known_item_ids and str(v) in known_item_ids else "not found in items"
                text = f"dangling item id {_short(v)} in '{o.column}': {where}"
            elif values is not None and o.type not in ("expect_column_values_to_not_be_null",):
                text = f"{reason} (value {_short(values.iloc[i])})"
            found.add(i, Failure(o.type, shown, text))
        found.row_counts.append(RowFailureCount(o.type, shown, len(o.unexpected_index)))
    all_rows = [t for t in found.table if t.all_rows]
    if all_rows:
        first = all_rows[0]
        for i in range(len(df)):
            found.add(i, Failure(first.expectation, first.column, f"table-level breach: {first.detail}"))
        first.rows = len(df)
    return found


def _type_failure(df: pd.DataFrame, o: Outcome, columns: dict[str, str], found: Findings) -> None:
    dtype = o.meta.get("schema_dtype") or columns.get(o.column, "string")
    col = df[o.column]
    if o.unexpected_index:
        rows = list(o.unexpected_index)
        stored = "mixed values"
    else:
        rows = [int(i) for i in col.index[invalid_mask(col, dtype).to_numpy(dtype=bool)]]
        stored = str(o.observed_value or col.dtype)
    for i in rows:
        found.add(i, Failure(o.type, o.column, f"'{o.column}' value {_short(col.iloc[i])} is not {dtype}"))
    found.table.append(
        TableFailure(
            o.type,
            o.column,
            f"stored as {stored}, expected {o.kwargs.get('type_')} ({dtype}); {len(rows)} row(s) cannot be cast to {dtype}"
            + (f", first: row {rows[0]}: '{o.column}' value {_short(col.iloc[rows[0]])} is not {dtype}" if rows else ""),
            rows=len(rows),
        )
    )
