"""Data contracts with real Great Expectations: suites, quarantine, breaches, report.

Needs ``data_contracts`` importable as a regular package (an editable install
made after ``data_contracts/__init__.py`` existed, or the repository root on
``sys.path``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from data_contracts import ContractBreach, validate_dir
from data_contracts.quarantine import META_COLUMNS
from data_contracts.suites import SUITE_NAMES, load_suite, load_suite_dict
from sail_core.config import ContractsConfig
from sail_core.data import io, schema
from sail_core.data.splits import item_splits

STRICT = ContractsConfig()
TABLES = ["items", "interactions", "item_splits", "pairs/cls", "pairs/copair_i2i", "pairs/q2i", "pairs/xmodal"]


@pytest.fixture()
def data(tmp_path, demo_data):
    """A private copy of the tiny demo folder, to break."""
    return shutil.copytree(demo_data, tmp_path / "raw")


def _run(src, tmp_path, cfg=STRICT):
    return validate_dir(src, tmp_path / "validated", tmp_path / "quarantine", cfg)


def _breach(src, tmp_path, cfg=STRICT) -> ContractBreach:
    with pytest.raises(ContractBreach) as info:
        _run(src, tmp_path, cfg)
    return info.value


def _table(src, name):
    return pd.read_parquet(src / f"{name}.parquet")


def _assert_nothing_dropped(src, tmp_path):
    """clean + quarantined == input, per table, and the quarantine says where each row came from."""
    for name in TABLES:
        raw = _table(src, name)
        clean = _table(tmp_path / "validated", name)
        quar = _table(tmp_path / "quarantine", name)
        assert len(clean) + len(quar) == len(raw), name
        assert list(quar.columns[-len(META_COLUMNS):]) == list(META_COLUMNS), name
        assert quar["_row"].is_unique and set(quar["_row"]) <= set(range(len(raw))), name


def _assert_referentially_consistent(out):
    ids = set(io.read_items(out)["item_id"])
    assert set(io.read_interactions(out)["item_id"]) <= ids
    for name, df in io.read_pairs(out).items():
        for col in ("query_item", "target_item"):
            assert set(df[col].dropna()) <= ids, name


def test_suites_round_trip_through_gx():
    for name in SUITE_NAMES:
        raw = load_suite_dict(name)
        back = load_suite(name).to_json_dict()
        for e in back["expectations"]:
            e.pop("id", None)
        back.pop("id", None)
        assert back == raw, name


def test_suites_cover_the_schema():
    """Every schema column has an existence and a type expectation; required columns a null check."""
    for name, columns, required in [
        ("items", schema.ITEM_COLUMNS, schema.ITEM_REQUIRED),
        ("interactions", schema.INTERACTION_COLUMNS, schema.INTERACTION_REQUIRED),
        ("item_splits", schema.ITEM_SPLIT_COLUMNS, schema.ITEM_SPLIT_REQUIRED),
        ("pairs", schema.PAIR_COLUMNS, ["split"]),
    ]:
        exps = load_suite_dict(name)["expectations"]
        by_type: dict[str, set] = {}
        for e in exps:
            by_type.setdefault(e["type"], set()).add(e["kwargs"].get("column"))
            assert e["meta"]["level"] in ("table", "row") and e["meta"]["reason"], e
        assert by_type["expect_column_to_exist"] == set(columns), name
        assert by_type["expect_column_values_to_be_of_type"] == set(columns), name
        unconditional_not_null = {
            e["kwargs"]["column"] for e in exps if e["type"] == "expect_column_values_to_not_be_null" and "row_condition" not in e["kwargs"]
        }
        assert unconditional_not_null == set(required), name


def test_clean_data_passes_and_is_reported(data, tmp_path):
    result = _run(data, tmp_path)
    assert result.passed and not result.breaches
    assert set(result.tables) == set(TABLES)
    _assert_nothing_dropped(data, tmp_path)
    for name in TABLES:
        assert len(_table(tmp_path / "quarantine", name)) == 0
        pd.testing.assert_frame_equal(_table(tmp_path / "validated", name), _table(data, name), obj=name)
    report = json.loads((tmp_path / "validated" / "validation_report.json").read_text())
    assert report["passed"] is True
    items = report["tables"]["items"]
    assert items["rows"] == items["clean"] == 120
    unique = [e for e in items["expectations"] if e["expectation"] == "expect_column_values_to_be_unique"]
    assert unique == [dict(unique[0], success=True, unexpected_count=0, element_count=120)]
    assert "PASSED" in (tmp_path / "validated" / "validation_report.md").read_text()


def test_missing_column_is_a_table_level_breach(data, tmp_path):
    _table(data, "items").drop(columns=["title"]).to_parquet(data / "items.parquet")
    err = _breach(data, tmp_path)
    assert f"items: column 'title': expect_column_to_exist failed (table-level: column 'title' is missing); all 120 rows moved to {tmp_path / 'quarantine' / 'items.parquet'}" in str(err)
    quar = _table(tmp_path / "quarantine", "items")
    assert len(quar) == 120 and set(quar["_failed_expectation"]) == {"expect_column_to_exist"}
    _assert_nothing_dropped(data, tmp_path)
    report = json.loads((tmp_path / "validated" / "validation_report.json").read_text())
    assert report["passed"] is False and report["breaches"] == err.breaches


def test_null_item_id_is_quarantined_and_cascades(data, tmp_path):
    items = _table(data, "items")
    lost = items.loc[5, "item_id"]
    items.loc[5, "item_id"] = None
    items.to_parquet(data / "items.parquet")
    err = _breach(data, tmp_path)
    assert err.breaches[0] == (
        "items: column 'item_id': expect_column_values_to_not_be_null failed for 1 of 120 rows "
        "(0.8% > tolerance 0.0%); first: row 5: 'item_id' is required but null; "
        f"rows moved to {tmp_path / 'quarantine' / 'items.parquet'}"
    )
    quar = _table(tmp_path / "quarantine", "items")
    assert quar[["_row", "_column", "_failed_expectation"]].values.tolist() == [[5, "item_id", "expect_column_values_to_not_be_null"]]
    assert quar["_source_file"].iloc[0] == str(data / "items.parquet") and quar["title"].iloc[0] == items.loc[5, "title"]
    # the rows that pointed at the lost item are quarantined too, as dangling ids
    inter = _table(data, "interactions")
    q_inter = _table(tmp_path / "quarantine", "interactions")
    assert sorted(q_inter["_row"]) == sorted(inter.index[inter["item_id"] == lost])
    assert q_inter["_reason"].str.contains(f"dangling item id '{lost}'").all()
    _assert_nothing_dropped(data, tmp_path)
    _assert_referentially_consistent(tmp_path / "validated")


def test_dangling_pair_id_and_quarantine_item_cascade(data, tmp_path):
    q2i = _table(data, "pairs/q2i")
    q2i.loc[2, "target_item"] = "no-such-item"
    q2i.to_parquet(data / "pairs" / "q2i.parquet")
    items = _table(data, "items")
    dup = items.loc[0, "item_id"]
    items.loc[1, "item_id"] = dup  # a duplicate id: both rows are quarantined
    items.to_parquet(data / "items.parquet")
    err = _breach(data, tmp_path)
    assert any(b.startswith("pairs/q2i: column 'target_item': expect_column_values_to_be_in_set failed for") for b in err.breaches)
    assert any(b.startswith("items: column 'item_id': expect_column_values_to_be_unique failed for 2 of 120 rows") for b in err.breaches)
    q = _table(tmp_path / "quarantine", "pairs/q2i").set_index("_row")
    assert q.loc[2, "_reason"] == "dangling item id 'no-such-item' in 'target_item': not found in items"
    quarantined_item_rows = q[q["target_item"] == dup]
    assert len(quarantined_item_rows) and quarantined_item_rows["_reason"].str.endswith("its item row was quarantined").all()
    _assert_nothing_dropped(data, tmp_path)
    _assert_referentially_consistent(tmp_path / "validated")


def test_string_in_rating_is_a_type_breach(data, tmp_path):
    inter = _table(data, "interactions")
    inter["rating"] = inter["rating"].astype(str)
    inter.loc[7, "rating"] = "five"
    inter.to_parquet(data / "interactions.parquet")
    err = _breach(data, tmp_path)
    assert err.breaches == [
        "interactions: column 'rating': expect_column_values_to_be_of_type failed (table-level: stored as str, "
        "expected float64 (Float64); 1 row(s) cannot be cast to Float64, first: row 7: 'rating' value 'five' "
            "is not Float64); "
        f"1 of {len(inter)} rows moved to {tmp_path / 'quarantine' / 'interactions.parquet'}"
    ]
    quar = _table(tmp_path / "quarantine", "interactions")
    assert quar[["_row", "rating", "_reason"]].values.tolist() == [[7, "five", "'rating' value 'five' is not Float64"]]
    clean = io.read_interactions(tmp_path / "validated")
    assert len(clean) == len(inter) - 1 and str(clean["rating"].dtype) == "Float64"


def test_csv_source_with_a_wrong_value_type(data, tmp_path):
    inter = io.read_interactions(data).astype({"rating": object})
    inter.loc[[3, 9], "rating"] = ["4.5", "four"]
    inter.to_csv(data / "interactions.csv", index=False)
    (data / "interactions.parquet").unlink()
    err = _breach(data, tmp_path)
    assert "interactions: column 'rating': expect_column_values_to_be_of_type failed (table-level: stored as mixed values" in str(err)
    quar = _table(tmp_path / "quarantine", "interactions")
    assert quar["_row"].tolist() == [9]  # found by GX's unexpected_index_list; "4.5" is a fine rating
    assert quar["_source_file"].iloc[0].endswith("interactions.csv")


def test_exactly_one_side_of_a_pair_is_set(data, tmp_path):
    cls = _table(data, "pairs/cls")
    cls.loc[0, "query_text"] = "a text as well"
    cls.loc[1, "query_item"] = None
    cls.to_parquet(data / "pairs" / "cls.parquet")
    err = _breach(data, tmp_path)
    assert "pairs/cls: 2 of 291 rows quarantined (0.7% > tolerance 0.0%)" in str(err)
    q = _table(tmp_path / "quarantine", "pairs/cls").set_index("_row")
    assert q.loc[0, "_reason"].startswith("both query_item and query_text are set")
    assert q.loc[1, "_reason"] == "neither query_item nor query_text is set (exactly one must be)"


def test_tolerance_lets_a_few_rows_go_to_quarantine(data, tmp_path):
    inter = _table(data, "interactions")
    inter.loc[[0, 1], "rating"] = [7.0, -1.0]
    inter.loc[2, "timestamp"] = 0
    inter.to_parquet(data / "interactions.parquet")
    result = _run(data, tmp_path, ContractsConfig(max_quarantine_fraction=0.01))
    assert result.passed
    assert result.tables["interactions"].quarantined == 3
    assert sorted(_table(tmp_path / "quarantine", "interactions")["_row"]) == [0, 1, 2]
    _assert_nothing_dropped(data, tmp_path)


def test_empty_table_and_unknown_column_breach(data, tmp_path):
    _table(data, "pairs/cls").iloc[:0].to_parquet(data / "pairs" / "cls.parquet")
    _table(data, "items").assign(budget=1).to_parquet(data / "items.parquet")
    err = _breach(data, tmp_path)
    assert "pairs/cls: expect_table_row_count_to_be_between failed (table-level: the table is empty)" in str(err)
    assert "items: expect_table_columns_to_match_set failed (table-level: unknown column(s) ['budget']" in str(err)


def test_missing_or_unreadable_files_are_named(data, tmp_path):
    (data / "pairs" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"pairs/notes\.txt: unsupported file type '.txt'"):
        _run(data, tmp_path)
    (data / "pairs" / "notes.txt").unlink()
    (data / "interactions.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"interactions\.parquet: cannot read as parquet"):
        _run(data, tmp_path)
    (data / "interactions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"interactions\.parquet"):
        _run(data, tmp_path)


@pytest.mark.slow
def test_full_demo_profile_builds_and_validates(tmp_path):
    """The demo profile's catalogue with media validates cleanly (timings are printed, not asserted)."""
    from sail_core.config import load_config
    from sail_core.data.demo import build_demo

    cfg = load_config(profile="demo").data
    summary = build_demo(tmp_path / "raw", cfg)
    n = summary["items"]
    assert n == (cfg.max_items or 1681)  # all 1,682 MovieLens items but item 267 (no title, no year)
    assert summary["media"] == dict(summary["media"], covers=n, keyframes=cfg.render_keyframes * n, audio=n)
    t0 = time.perf_counter()
    result = _run(tmp_path / "raw", tmp_path)
    print(f"demo media {summary['media']['seconds']:.1f} s, validation {time.perf_counter() - t0:.1f} s")
    assert result.passed and result.tables["interactions"].clean == summary["interactions"]
    assert result.media["files"] == (2 + cfg.render_keyframes) * n
    # the cross-modal tasks evaluate every test item with media: at least 500 of them
    splits = item_splits(tmp_path / "validated")
    media = io.read_items(tmp_path / "validated").dropna(subset=["cover_path", "frame_paths", "audio_path"])
    assert sum(splits[i] == "test" for i in media["item_id"]) == summary["item_splits"]["test"] >= 500


def test_messages_can_name_the_final_quarantine_folder(data, tmp_path):
    items = _table(data, "items")
    items.loc[0, "item_id"] = None
    items.to_parquet(data / "items.parquet")
    with pytest.raises(ContractBreach) as info:
        validate_dir(data, tmp_path / "v", tmp_path / "q", STRICT, quarantine_display=Path("data/quarantine"))
    assert info.value.breaches[0] == (
        "items: column 'item_id': expect_column_values_to_not_be_null failed for 1 of 120 rows "
        "(0.8% > tolerance 0.0%); first: row 0: 'item_id' is required but null; rows moved to data/quarantine/items.parquet"
    )
    assert len(_table(tmp_path / "q", "items")) == 1  # written where asked
