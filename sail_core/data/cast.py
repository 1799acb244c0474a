"""Cast a user's table to the schema's pandas dtypes, naming the bad cell on failure.

Used by the importer (user CSV/parquet files) and by :mod:`sail_core.data.io`
readers. A value that cannot be cast raises :class:`SchemaError` with the
file, the column, the row and the value, so it can be fixed at the source.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class SchemaError(ValueError):
    """A table does not match ``sail_core/data/schema.py`` (column or value)."""


def _fail(source: str, column: str, rows: pd.Index, values: pd.Series, dtype: str, why: str) -> SchemaError:
    first = rows[0]
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return SchemaError(
        f"{source}: column {column!r}: cannot cast {values.loc[first]!r} (row {first}) to {dtype}: {why}; "
        f"{len(rows)} bad row(s): {shown}. Rows are 0-based data rows (CSV line = row + 2). "
        "Fix the value(s) in the file and run again."
    )


def _blank_to_na(col: pd.Series) -> pd.Series:
    if col.dtype == object or pd.api.types.is_string_dtype(col):
        stripped = col.astype("string").str.strip()
        return stripped.mask(stripped == "")
    return col


def _parse_numeric(col: pd.Series, dtype: str) -> tuple[pd.Series, pd.Series, str]:
    """``(parsed Float64 values, mask of values that cannot be cast, why)`` for a numeric dtype."""
    clean = _blank_to_na(col)
    if pd.api.types.is_bool_dtype(clean):
        return pd.Series(pd.NA, index=col.index, dtype="Float64"), clean.notna(), "booleans are not numbers"
    num = pd.to_numeric(clean, errors="coerce").astype("Float64")
    bad = (num.isna() & clean.notna()).astype(bool)
    why = "not a number"
    if dtype == "Int64":
        frac = (num.notna() & (num != num.round())).fillna(False).astype(bool)
        if bool(frac.any()):
            why = "not a number or not a whole number" if bool(bad.any()) else "not a whole number"
        bad = bad | frac
    return num, bad, why


def invalid_mask(col: pd.Series, dtype: str) -> pd.Series:
    """True for the values of ``col`` that cannot be cast to the schema ``dtype`` (nulls are valid)."""
    if dtype == "string":
        return pd.Series(False, index=col.index)
    return _parse_numeric(col, dtype)[1]


def lenient_column(col: pd.Series, dtype: str) -> pd.Series:
    """Cast what can be cast; keep the other values as they are (object column).

    Used on CSV text before the data contracts run, so that Great Expectations
    sees a typed column when the file is clean and can point at the exact rows
    (values of the wrong Python type) when it is not.
    """
    if dtype == "string":
        return col
    num, bad, _ = _parse_numeric(col, dtype)
    if not bool(bad.any()):
        return num.round().astype("Int64") if dtype == "Int64" else num
    scalar = np.int64 if dtype == "Int64" else np.float64
    values = [
        col.iloc[i] if bad.iloc[i] else (None if pd.isna(num.iloc[i]) else scalar(num.iloc[i]))
        for i in range(len(col))
    ]
    return pd.Series(values, index=col.index, dtype=object)


def cast_column(col: pd.Series, dtype: str, source: str, column: str) -> pd.Series:
    """Cast one column to a schema dtype (``string``, ``Int64`` or ``Float64``)."""
    if dtype == "string":
        if pd.api.types.is_float_dtype(col):
            # ids written as floats by spreadsheets: 12.0 -> "12"
            integral = col.dropna() == col.dropna().round()
            if bool(integral.all()):
                col = col.astype("Int64")
        if pd.api.types.is_bool_dtype(col) and col.dtype != object:
            raise _fail(source, column, col.index, col, dtype, "booleans are not text")
        out = col.astype("string").str.strip()
        return out.mask(out == "")
    if dtype in ("Int64", "Float64"):
        num, bad, why = _parse_numeric(col, dtype)
        if bool(bad.any()):
            raise _fail(source, column, col.index[bad.to_numpy()], col, dtype, why)
        return num.round().astype("Int64") if dtype == "Int64" else num
    raise SchemaError(f"unsupported schema dtype {dtype!r} for column {column!r}")


def cast_table(
    df: pd.DataFrame,
    columns: dict[str, str],
    source: str,
    required: list[str] | tuple[str, ...] = (),
    allow_extra: bool = False,
) -> pd.DataFrame:
    """Return ``df`` with exactly the schema ``columns``, in schema order and dtypes.

    Missing optional columns are added as nulls; a missing ``required`` column
    or (unless ``allow_extra``) an unknown column raises :class:`SchemaError`.
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{source}: required column(s) {missing} missing; found {list(df.columns)}; "
            f"expected columns: {list(columns)} (see the README, 'Data schema')"
        )
    extra = [c for c in df.columns if c not in columns]
    if extra and not allow_extra:
        raise SchemaError(
            f"{source}: unknown column(s) {extra}; allowed columns: {list(columns)}. "
            "Rename them to schema columns or drop them (see the README, 'Data schema')."
        )
    df = df.reset_index(drop=True)
    out = {}
    for name, dtype in columns.items():
        if name in df.columns:
            out[name] = cast_column(df[name], dtype, source, name)
        else:
            out[name] = pd.Series(pd.NA, index=df.index, dtype=dtype)
    return pd.DataFrame(out, index=df.index)
