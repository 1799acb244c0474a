"""Importing user CSV/parquet tables: casting, clear errors, derived pairs, same layout as the demo."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from sail_core.data import io
from sail_core.data.cast import SchemaError
from sail_core.data.importer import import_tables
from sail_core.data.media import MEDIA_COLUMNS, split_frames
from sail_core.data.splits import item_splits


@pytest.fixture()
def user_csvs(tmp_path, demo_data):
    """The tiny demo written as a user would: CSV, optional item columns left out."""
    items = io.read_items(demo_data)[["item_id", "title", "year", "tags"]]
    inter = io.read_interactions(demo_data)
    items.to_csv(tmp_path / "items.csv", index=False)
    inter.to_csv(tmp_path / "interactions.csv", index=False)
    return tmp_path / "items.csv", tmp_path / "interactions.csv"


def test_import_csv_derives_the_same_pairs_as_the_demo(tmp_path, user_csvs, demo_data, tiny_data_cfg):
    summary = import_tables(*user_csvs, None, tmp_path / "out", tiny_data_cfg)
    assert summary["items"] == 120 and set(summary["pairs"]) == {"copair_i2i", "q2i", "cls", "xmodal"}
    for name, split in summary["pairs"].items():
        assert split["train"] > 0 and split["test"] > 0, name
    no_media = io.read_items(demo_data).assign(**{c: pd.NA for c in MEDIA_COLUMNS}).astype({c: "string" for c in MEDIA_COLUMNS})
    pd.testing.assert_frame_equal(io.read_items(tmp_path / "out"), no_media)
    assert summary["media"]["copied"] == 0 and not any((tmp_path / "out" / "media").rglob("*.*"))
    pd.testing.assert_frame_equal(io.read_interactions(tmp_path / "out"), io.read_interactions(demo_data))
    for name, df in io.read_pairs(demo_data).items():
        pd.testing.assert_frame_equal(io.read_pairs(tmp_path / "out")[name], df, obj=name)
    assert item_splits(tmp_path / "out") == item_splits(demo_data)


def test_import_parquet_with_given_pairs(tmp_path, demo_data, tiny_data_cfg):
    pairs_dir = tmp_path / "my_pairs"
    pairs_dir.mkdir()
    q2i = io.read_pairs(demo_data)["q2i"]
    q2i.drop(columns=["query_item", "target_text", "score"]).to_csv(pairs_dir / "search.csv", index=False)
    out = tmp_path / "out"
    summary = import_tables(demo_data / "items.parquet", demo_data / "interactions.parquet", pairs_dir, out, tiny_data_cfg)
    assert set(summary["pairs"]) == {"search"}
    pd.testing.assert_frame_equal(io.read_pairs(out)["search"], q2i)


def test_ids_keep_leading_zeros_and_blank_optional_cells_are_null(tmp_path, tiny_data_cfg):
    (tmp_path / "items.csv").write_text("item_id,title,year,tags\n007,Bond,,Action\n008,Heat,1995,Crime\n")
    (tmp_path / "inter.csv").write_text(
        "user_id,item_id,timestamp,rating\n" + "".join(f"u{u},00{7 + (k % 2)},{1000 + k},5\n" for u in range(3) for k in range(2))
    )
    cfg = tiny_data_cfg.model_copy(update={"holdout_fraction": 0.5})
    import_tables(tmp_path / "items.csv", tmp_path / "inter.csv", None, tmp_path / "out", cfg)
    items = io.read_items(tmp_path / "out")
    assert list(items["item_id"]) == ["007", "008"]
    assert pd.isna(items["year"].iloc[0]) and items["year"].iloc[1] == 1995
    cop = io.read_pairs(tmp_path / "out")["copair_i2i"]
    assert len(cop) == 1 and cop["score"].iloc[0] == 3.0


def test_a_value_that_cannot_be_cast_names_file_column_and_row(tmp_path, user_csvs, tiny_data_cfg):
    items_csv, inter_csv = user_csvs
    df = pd.read_csv(inter_csv, dtype=str)
    df.loc[17, "rating"] = "five"
    df.to_csv(inter_csv, index=False)
    with pytest.raises(SchemaError, match=r"interactions\.csv: column 'rating': cannot cast 'five' \(row 17\) to Float64"):
        import_tables(items_csv, inter_csv, None, tmp_path / "out", tiny_data_cfg)
    assert not (tmp_path / "out").exists()


def test_fractional_year_is_rejected(tmp_path, user_csvs, tiny_data_cfg):
    items_csv, inter_csv = user_csvs
    df = pd.read_csv(items_csv, dtype=str)
    df.loc[3, "year"] = "1995.5"
    df.to_csv(items_csv, index=False)
    with pytest.raises(SchemaError, match=r"column 'year': cannot cast '1995.5' \(row 3\) to Int64: not a whole number"):
        import_tables(items_csv, inter_csv, None, tmp_path / "out", tiny_data_cfg)


def test_unknown_and_missing_columns_are_errors(tmp_path, user_csvs, tiny_data_cfg):
    items_csv, inter_csv = user_csvs
    df = pd.read_csv(items_csv, dtype=str)
    df.assign(budget="1").to_csv(tmp_path / "extra.csv", index=False)
    with pytest.raises(SchemaError, match=r"unknown column\(s\) \['budget'\]; allowed columns: \['item_id', 'title'"):
        import_tables(tmp_path / "extra.csv", inter_csv, None, tmp_path / "out", tiny_data_cfg)
    df.drop(columns=["title"]).to_csv(tmp_path / "notitle.csv", index=False)
    with pytest.raises(SchemaError, match=r"required column\(s\) \['title'\] missing"):
        import_tables(tmp_path / "notitle.csv", inter_csv, None, tmp_path / "out", tiny_data_cfg)


def test_bad_paths_are_named(tmp_path, user_csvs, tiny_data_cfg):
    items_csv, inter_csv = user_csvs
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        import_tables(tmp_path / "nope.csv", inter_csv, None, tmp_path / "out", tiny_data_cfg)
    (tmp_path / "items.json").write_text("{}")
    with pytest.raises(SchemaError, match=r"items.json: unsupported type '.json'"):
        import_tables(tmp_path / "items.json", inter_csv, None, tmp_path / "out", tiny_data_cfg)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match=r"broken.parquet: cannot read as parquet"):
        import_tables(tmp_path / "broken.parquet", inter_csv, None, tmp_path / "out", tiny_data_cfg)


def test_bad_split_value_in_given_pairs(tmp_path, user_csvs, tiny_data_cfg):
    pd.DataFrame({"query_text": ["x"], "target_item": ["1"], "split": ["dev"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(SchemaError, match=r"p.csv: column 'split': value 'dev' \(row 0\) is not one of \['train', 'val', 'test'\]"):
        import_tables(*user_csvs, tmp_path / "p.csv", tmp_path / "out", tiny_data_cfg)


def _pairs(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_item", "target_item", "split"])


def test_given_pairs_record_their_item_split(tmp_path, user_csvs, tiny_data_cfg):
    """An item is held out exactly when no train pair touches it; the other side of a test pair stays train."""
    ids = list(pd.read_csv(user_csvs[0], dtype=str)["item_id"][:5])
    a, b, c, d, e = ids
    _pairs([(a, b, "train"), (a, c, "test"), (d, b, "val")]).to_csv(tmp_path / "cop.csv", index=False)
    summary = import_tables(*user_csvs, tmp_path / "cop.csv", tmp_path / "out", tiny_data_cfg)
    splits = item_splits(tmp_path / "out")
    assert (splits[a], splits[b], splits[c], splits[d], splits[e]) == ("train", "train", "test", "val", "train")
    assert summary["item_splits"] == {"train": 118, "val": 1, "test": 1}


@pytest.mark.parametrize("rows, says", [
    ([("A", "B", "train"), ("A", "B", "test")], "row 1 says 'test' but its items make it 'train'"),
    ([("A", "B", "train"), ("C", "D", "val"), ("C", "A", "test")], "row 2 says 'test' but its items make it 'val'"),
])
def test_given_pairs_whose_split_their_items_contradict_are_refused(tmp_path, user_csvs, tiny_data_cfg, rows, says):
    ids = dict(zip("ABCD", pd.read_csv(user_csvs[0], dtype=str)["item_id"]))
    _pairs([(ids[q], ids[t], s) for q, t, s in rows]).to_csv(tmp_path / "cop.csv", index=False)
    with pytest.raises(SchemaError, match=rf"pairs/cop: 1 row\(s\) have a split that their items contradict; {says}"):
        import_tables(*user_csvs, tmp_path / "cop.csv", tmp_path / "out", tiny_data_cfg)
    assert not (tmp_path / "out").exists()


def _copy(src, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def test_import_copies_media_and_rewrites_paths(tmp_path, demo_data, tiny_data_cfg):
    """Media named relative to the items file (or absolute) land in out/media; a missing file is kept for the contracts."""
    demo = io.read_items(demo_data).head(6)
    user = tmp_path / "user"
    rows = []
    for n, row in enumerate(demo.itertuples(index=False)):
        cover = f"photos/{row.item_id}.JPG"
        _copy(demo_data / row.cover_path, user / cover)
        frames = [f"clips/{row.item_id}/f{k}.jpg" for k in range(2)]
        for rel, dest in zip(split_frames(row.frame_paths), frames):
            _copy(demo_data / rel, user / dest)
        audio = str(demo_data / row.audio_path) if n == 0 else f"speech/{row.item_id}.wav"  # row 0: an absolute path
        if n not in (0, 5):  # row 5's audio file is missing
            _copy(demo_data / row.audio_path, user / audio)
        rows.append({"item_id": row.item_id, "title": row.title, "cover_path": cover, "frame_paths": "|".join(frames), "audio_path": audio})
    pd.DataFrame(rows).to_csv(user / "items.csv", index=False)
    io.read_interactions(demo_data).to_csv(user / "inter.csv", index=False)
    out = tmp_path / "out"
    summary = import_tables(user / "items.csv", user / "inter.csv", demo_data / "pairs", out, tiny_data_cfg)
    missing = f"speech/{rows[5]['item_id']}.wav"
    assert summary["media"] == {"copied": 6 + 12 + 5, "missing": 1, "missing_first": [f"audio_path {missing} (row 5)"]}
    items = io.read_items(out)
    for n, (got, want) in enumerate(zip(items.itertuples(index=False), demo.itertuples(index=False))):
        assert got.cover_path == want.cover_path == f"media/covers/{want.item_id}.jpg"  # suffix lower-cased
        assert split_frames(got.frame_paths) == split_frames(want.frame_paths)[:2]
        assert (out / got.cover_path).read_bytes() == (demo_data / want.cover_path).read_bytes()
        for rel, src in zip(split_frames(got.frame_paths), split_frames(want.frame_paths)):
            assert (out / rel).read_bytes() == (demo_data / src).read_bytes()
        if n != 5:
            assert got.audio_path == want.audio_path and (out / got.audio_path).read_bytes() == (demo_data / want.audio_path).read_bytes()
    assert items.audio_path.iloc[5] == missing  # kept as written: `sail validate` quarantines the row
    files = sorted(p.relative_to(out).as_posix() for p in (out / "media").rglob("*") if p.is_file())
    assert len(files) == 6 + 12 + 5 and not [p for p in out.iterdir() if p.name.startswith(".")]
    # importing into the folder that holds the sources: same table, same files, nothing stale
    import_tables(out / "items.parquet", user / "inter.csv", demo_data / "pairs", out, tiny_data_cfg)
    pd.testing.assert_frame_equal(io.read_items(out), items)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "media").rglob("*") if p.is_file()) == files
