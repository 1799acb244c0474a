"""Data-folder io: atomic writes, typed readers, clear errors; schema casting."""

from __future__ import annotations

import pandas as pd
import pytest

from sail_core.data import io, schema
from sail_core.data.cast import SchemaError, cast_column, invalid_mask, lenient_column


def test_write_table_is_atomic_and_round_trips(tmp_path, demo_data):
    items = io.read_items(demo_data)
    path = io.write_table(items, tmp_path / "x" / "items.parquet")
    assert sorted(p.name for p in path.parent.iterdir()) == ["items.parquet"]  # no temporary file left
    pd.testing.assert_frame_equal(io.read_items(path.parent), items)
    assert dict(items.dtypes.astype(str)) == schema.ITEM_COLUMNS


def test_write_table_failure_leaves_the_old_file(tmp_path):
    path = io.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    before = path.read_bytes()
    with pytest.raises(Exception):
        io.write_table(pd.DataFrame({"a": [object()]}), path)  # pyarrow cannot store an object
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_missing_tables_and_odd_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"items\.parquet"):
        io.read_items(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"pairs folder .*pairs not found"):
        io.read_pairs(tmp_path)
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "q2i.xlsx").write_text("")
    with pytest.raises(SchemaError, match=r"q2i\.xlsx: unsupported file type"):
        io.read_pairs(tmp_path)


def test_csv_tables_are_read_and_typed(tmp_path, demo_data):
    io.read_interactions(demo_data).to_csv(tmp_path / "interactions.csv", index=False)
    got = io.read_interactions(tmp_path)
    pd.testing.assert_frame_equal(got, io.read_interactions(demo_data))


def test_cast_column_against_hand_values():
    col = pd.Series(["1", " 2 ", "", None, "3.0"])
    assert cast_column(col, "Int64", "f", "c").tolist() == [1, 2, pd.NA, pd.NA, 3]
    assert cast_column(pd.Series([12.0, None]), "string", "f", "id").tolist() == ["12", pd.NA]
    assert invalid_mask(pd.Series(["1", "x", "2.5", None]), "Int64").tolist() == [False, True, True, False]
    assert invalid_mask(pd.Series(["1", "x", "2.5", None]), "Float64").tolist() == [False, True, False, False]
    mixed = lenient_column(pd.Series(["4", "five", None]), "Float64")
    assert mixed.dtype == object and mixed.iloc[1] == "five" and mixed.iloc[0] == 4.0 and mixed.iloc[2] is None
    with pytest.raises(SchemaError, match=r"f\.csv: column 'r': cannot cast 'x' \(row 1\) to Float64"):
        cast_column(pd.Series(["1", "x"]), "Float64", "f.csv", "r")
