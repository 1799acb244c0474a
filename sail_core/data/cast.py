"""Cast a user's table to the schema's pandas dtypes, naming the bad cell on failure.

Used by the importer (user CSV/parquet files) and by :mod:`sail_core.data.io`
readers. A value that cannot be cast raises :class:`SchemaError` with the
file, the column, the row and the value, so it can be fixed at the source.
"""

from __future__ import annotations

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
        out = col.astype("string")
        return out.str.strip().mask(out.str.strip() == "") if len(out) else out
    if dtype in ("Int64", "Float64"):
        clean = _blank_to_na(col)
        if pd.api.types.is_bool_dtype(clean):
            raise _fail(source, column, col.index, col, dtype, "booleans are not numbers")
        num = pd.to_numeric(clean, errors="coerce")
        bad = num.isna() & clean.notna()
        if bool(bad.any()):
            raise _fail(source, column, col.index[bad.to_numpy()], col, dtype, "not a number")
        num = num.astype("Float64")
        if dtype == "Int64":
            frac = num.notna() & (num != num.round())
            if bool(frac.any()):
                raise _fail(source, column, col.index[frac.to_numpy()], col, dtype, "not a whole number")
            return num.round().astype("Int64")
        return num
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
            f"expected columns: {list(columns)} (see sail_core/data/SCHEMA.md)"
        )
    extra = [c for c in df.columns if c not in columns]
    if extra and not allow_extra:
        raise SchemaError(
            f"{source}: unknown column(s) {extra}; allowed columns: {list(columns)}. "
            "Rename them to schema columns or drop them (see sail_core/data/SCHEMA.md)."
        )
    df = df.reset_index(drop=True)
    out = {}
    for name, dtype in columns.items():
        if name in df.columns:
            out[name] = cast_column(df[name], dtype, source, name)
        else:
            out[name] = pd.Series(pd.NA, index=df.index, dtype=dtype)
    return pd.DataFrame(out, index=df.index)
