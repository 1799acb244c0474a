"""The contract-breach error and its message lines."""

from __future__ import annotations

from pathlib import Path

from data_contracts.check import Findings


class ContractBreach(ValueError):
    """A data contract is breached: a table-level rule failed or too many rows were quarantined.

    ``breaches`` holds one line per failed rule; ``result`` is the
    :class:`data_contracts.validate.ValidationResult` (report and quarantine are written).
    """

    def __init__(self, breaches: list[str], result=None):
        self.breaches = breaches
        self.result = result
        hint = (
            "Fix the source data (or raise contracts.max_quarantine_fraction to accept row losses) and run again."
        )
        super().__init__("data contract breached:\n  " + "\n  ".join(breaches) + "\n" + hint)


def _col(column: str | None) -> str:
    return f"column '{column}': " if column else ""


def breach_lines(table: str, n: int, quarantined: int, tolerance: float, found: Findings, qpath: Path) -> list[str]:
    """Message lines for one table (empty when it meets its contract)."""
    lines = []
    for t in found.table:
        if t.all_rows and n == 0:
            moved = "no rows to move"
        elif t.all_rows:
            moved = f"all {n} rows moved to {qpath}"
        else:
            moved = f"{t.rows} of {n} rows moved to {qpath}"
        lines.append(f"{table}: {_col(t.column)}{t.expectation} failed (table-level: {t.detail}); {moved}")
    frac = quarantined / n if n else 0.0
    if frac > tolerance:
        failed = [r for r in found.row_counts if r.rows]
        for r in failed:
            share = r.rows / n
            cmp = f"{share:.1%} > tolerance {tolerance:.1%}" if len(failed) == 1 else f"{share:.1%}"
            lines.append(f"{table}: {_col(r.column)}{r.expectation} failed for {r.rows} of {n} rows ({cmp}); "
                         f"{_first_row(found, r)}rows moved to {qpath}")
        if len(failed) != 1 and not found.table:
            lines.append(
                f"{table}: {quarantined} of {n} rows quarantined ({frac:.1%} > tolerance {tolerance:.1%}); rows moved to {qpath}"
            )
    return lines


def _first_row(found: Findings, count) -> str:
    """``first: row 3: <its reason>; `` for the first row that failed ``count``'s rule (rows counted from 0)."""
    for row, failures in sorted(found.rows.items()):
        for f in failures:
            if f.expectation == count.expectation and f.column == count.column:
                return f"first: row {row}: {f.reason}; "
    return ""


def derived_table_lines(found: Findings, where: str, row_name=None, shown: int = 5) -> list[str]:
    """Message lines for a table derived by code (mined negatives, teacher tables): every table-level failure,
    else the first ``shown`` failing rows (``row_name(row)`` adds e.g. the row's item) and how many more."""
    lines = [f"{where}: {_col(t.column)}{t.detail}" for t in found.table]
    if not lines:
        for row, failures in sorted(found.rows.items())[:shown]:
            label = f"row {row}" + (f" ({row_name(row)})" if row_name else "")
            lines += [f"{where} {label}: {_col(f.column)}{f.reason}" for f in failures]
        if len(found.rows) > shown:
            lines.append(f"{where}: ... {len(found.rows) - shown} more failing row(s)")
    return lines
