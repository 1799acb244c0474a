"""Split a table into clean rows and quarantined rows (nothing is dropped).

Quarantined rows keep their original columns, stored as text so that any
value can be written, plus ``_failed_expectation``, ``_column``, ``_reason``
(``; ``-joined when a row fails several expectations), ``_source_file`` and
``_row`` (0-based row position in the source file). Clean rows are cast to
the schema's dtypes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts.check import Failure
from sail_core.data.cast import SchemaError, cast_table

META_COLUMNS = ("_failed_expectation", "_column", "_reason", "_source_file", "_row")


def _join(values) -> str:
    return "; ".join(dict.fromkeys(str(v) for v in values))


def split_rows(
    df: pd.DataFrame, failures: dict[int, list[Failure]], columns: dict[str, str], source: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(clean, quarantined)``; ``len(clean) + len(quarantined) == len(df)``."""
    bad = sorted(failures)
    mask = pd.Series(False, index=df.index)
    mask.iloc[bad] = True
    q = df[mask.to_numpy()].astype("string")
    q["_failed_expectation"] = pd.Series([_join(f.expectation for f in failures[i]) for i in bad], index=q.index, dtype="string")
    q["_column"] = pd.Series([_join(f.column or "" for f in failures[i]) for i in bad], index=q.index, dtype="string")
    q["_reason"] = pd.Series([_join(f.reason for f in failures[i]) for i in bad], index=q.index, dtype="string")
    q["_source_file"] = pd.Series(str(source), index=q.index, dtype="string")
    q["_row"] = pd.Series(bad, index=q.index, dtype="Int64")
    keep = df[~mask.to_numpy()]
    try:
        clean = cast_table(keep, columns, str(source), allow_extra=True)[list(columns)]
    except SchemaError as err:  # should not happen: uncastable rows are quarantined
        raise SchemaError(f"{err}\n(the data contracts let this value through; please report it)") from err
    return clean.reset_index(drop=True), q.reset_index(drop=True)
