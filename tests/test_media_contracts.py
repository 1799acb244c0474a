"""Media in the data contracts (real Great Expectations): missing or corrupt files quarantine their row."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from data_contracts import ContractBreach, validate_dir
from data_contracts.media import DERIVED, audio_error, image_error
from sail_core.config import ContractsConfig
from sail_core.data import io
from sail_core.data.media import split_frames

TOLERANT = ContractsConfig(max_quarantine_fraction=0.2)


@pytest.fixture()
def data(tmp_path, demo_data):
    return shutil.copytree(demo_data, tmp_path / "raw")


def _media_files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in (folder / "media").rglob("*") if p.is_file()}


def _named(items) -> set[str]:
    return {*items["cover_path"].dropna(), *items["audio_path"].dropna(), *(f for v in items["frame_paths"].dropna() for f in split_frames(v))}


def test_clean_output_holds_the_media_of_every_row(data, tmp_path):
    result = validate_dir(data, tmp_path / "v", tmp_path / "q", ContractsConfig())
    items = io.read_items(tmp_path / "v")
    assert _media_files(tmp_path / "v") == _named(items) == _media_files(data)
    assert result.media == {"files": 6 * 120, "linked": 6 * 120, "copied": 0}
    rel = items["cover_path"].iloc[0]
    assert (tmp_path / "v" / rel).read_bytes() == (data / rel).read_bytes()
    assert not set(DERIVED) & set(pd.read_parquet(tmp_path / "v" / "items.parquet").columns)
    assert json.loads((tmp_path / "v" / "validation_report.json").read_text())["media"]["files"] == 720


def test_corrupt_jpeg_and_missing_wav_quarantine_their_rows(data, tmp_path):
    items = io.read_items(data)
    bad_cover = items.loc[3, "cover_path"]
    (data / bad_cover).write_bytes(b"not a jpeg at all")
    gone_audio = items.loc[7, "audio_path"]
    (data / gone_audio).unlink()
    frame = split_frames(items.loc[11, "frame_paths"])[2]
    (data / frame).write_bytes((data / frame).read_bytes()[:600])  # truncated keyframe
    result = validate_dir(data, tmp_path / "v", tmp_path / "q", TOLERANT)
    assert result.passed and result.tables["items"].quarantined == 3

    q = pd.read_parquet(tmp_path / "q" / "items.parquet").set_index("_row")
    assert sorted(q.index) == [3, 7, 11]
    assert q.loc[3, "_reason"] == f"cover {bad_cover} does not decode: cannot identify image file"
    assert q.loc[7, "_reason"] == f"audio {gone_audio} is missing"
    assert q.loc[11, "_reason"].startswith(f"keyframe 2 {frame} does not decode: ") and "runcated" in q.loc[11, "_reason"]
    assert q.loc[[3, 7, 11], "_column"].tolist() == ["cover_path", "audio_path", "frame_paths"]
    assert not set(DERIVED) & set(q.columns), "the check columns must not leak into the quarantine"

    clean = io.read_items(tmp_path / "v")
    assert len(clean) + len(q) == len(items) and set(clean["item_id"]) == set(items["item_id"]) - set(q["item_id"])
    assert list(pd.read_parquet(tmp_path / "v" / "items.parquet").columns) == list(items.columns)
    assert _media_files(tmp_path / "v") == _named(clean), "exactly the clean rows' media"
    assert bad_cover not in _media_files(tmp_path / "v")
    # the bad items' self-pairs and interactions follow them to quarantine, as dangling ids
    xq = pd.read_parquet(tmp_path / "q" / "pairs" / "xmodal.parquet")
    assert set(xq["query_item"]) == set(q["item_id"])
    assert xq["_reason"].str.endswith("its item row was quarantined").all()
    for name in ["interactions", "pairs/cls", "pairs/q2i", "pairs/copair_i2i", "pairs/xmodal"]:
        raw, kept = pd.read_parquet(data / f"{name}.parquet"), pd.read_parquet(tmp_path / "v" / f"{name}.parquet")
        assert len(kept) + len(pd.read_parquet(tmp_path / "q" / f"{name}.parquet")) == len(raw), name


def test_a_media_failure_breaches_the_strict_contract(data, tmp_path):
    items = io.read_items(data)
    (data / items.loc[0, "audio_path"]).write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ContractBreach) as info:
        validate_dir(data, tmp_path / "v", tmp_path / "q", ContractsConfig())
    assert info.value.breaches[0].startswith(
        "items: column 'audio_path': expect_column_values_to_be_null failed for 1 of 120 rows")


def test_paths_outside_the_data_folder_are_refused(data, tmp_path):
    items = pd.read_parquet(data / "items.parquet")
    items.loc[0, "cover_path"] = str((data / items.loc[0, "cover_path"]).resolve())
    items.loc[1, "audio_path"] = "../elsewhere.wav"
    items.loc[2, "frame_paths"] = None  # nullable: an item without keyframes is fine
    items.to_parquet(data / "items.parquet")
    validate_dir(data, tmp_path / "v", tmp_path / "q", TOLERANT)
    q = pd.read_parquet(tmp_path / "q" / "items.parquet").set_index("_row")
    assert sorted(q.index) == [0, 1]
    assert q.loc[1, "_reason"].startswith("audio ../elsewhere.wav is not inside the data folder")
    assert q.loc[0, "_reason"].startswith(f"cover {items.loc[0, 'cover_path']} is not inside the data folder")


def test_file_checks_against_hand_made_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (5, 4), (1, 2, 3)).save(tmp_path / "ok.png")
    assert image_error(tmp_path / "ok.png") is None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_error(tmp_path / "empty.jpg") == "does not decode: cannot identify image file"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert audio_error(tmp_path / "empty.wav") == "does not decode as a PCM WAV: the file ends early (truncated or empty)"
    from sail_core.data.speech import write_wav
    import numpy as np

    write_wav(tmp_path / "silent.wav", np.zeros(0))
    assert audio_error(tmp_path / "silent.wav") == "has no samples"
    write_wav(tmp_path / "beep.wav", np.sin(np.arange(1600) / 5.0) * 0.5)
    assert audio_error(tmp_path / "beep.wav") is None
