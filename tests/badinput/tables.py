"""Runner for ``tables/`` and ``media/`` cases: break a copy of the tiny demo folder, run `sail validate`.

Fields of a case:

``edits``
    applied in order to the copy (``{item:ID}`` in a path or value is the id's position, see below):
    ``{table: T, row: N, set: {column: value}}`` sets cells of row N (``astype`` first changes a
    column's dtype, e.g. to ``string`` so that a text can go into a number column);
    ``{table: T, append_copy_of: N, set: {...}}`` appends a copy of row N (with changes);
    ``{table: T, keep_rows: 0}`` empties the table, keeping its columns;
    ``pad_to: {column: N}`` repeats the row's text up to N characters; ``{table: T, add_column: {name: value}}``; ``{file: P, bytes: TEXT}`` replaces a file's content;
    ``{file: P, truncate: N}`` keeps its first N bytes; ``{file: P, png_header: [W, H]}`` writes a PNG
    that declares W x H pixels; ``{file: P, wav: {frames: N, format: pcm|float}}``;
    ``{file: P, symlink_to_outside: true}`` replaces it with a link to a valid copy outside the folder.
``quarantine``
    table -> the rows (positions in the edited table) that are bad, or ``all``. The runner adds the
    rows that depend on them (rows of the other tables that name a quarantined item) and checks the
    quarantine holds exactly those rows: nothing good is dropped, nothing bad gets through.
``exit``
    the expected exit code (default 1: a breach stops the run; 0 for input that must be accepted).
"""

from __future__ import annotations

import shutil
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.badinput.common import Case, expect_failure, sail

TABLES = ["items", "interactions", "item_splits", "pairs/cls", "pairs/copair_i2i", "pairs/q2i", "pairs/xmodal"]
ITEM_REFS = {"interactions": ["item_id"], "item_splits": ["item_id"]} | {
    t: ["query_item", "target_item"] for t in TABLES if t.startswith("pairs/")}


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds one tiny compressed row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _wav(path: Path, frames: int, fmt: str) -> None:
    if fmt == "pcm":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes(b"\0\0" * frames)
        return
    data = np.zeros(frames, dtype="<f4").tobytes()  # IEEE float (format tag 3): not PCM
    fmt_chunk = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{table}.parquet")


def _edit(folder: Path, edit: dict, outside: Path) -> None:
    if "file" in edit:
        path = folder / edit["file"]
        if "bytes" in edit:
            path.write_bytes(str(edit["bytes"]).encode())
        elif "truncate" in edit:
            path.write_bytes(path.read_bytes()[: int(edit["truncate"])])
        elif "png_header" in edit:
            path.write_bytes(_png_header(*edit["png_header"]))
        elif "wav" in edit:
            _wav(path, int(edit["wav"]["frames"]), edit["wav"].get("format", "pcm"))
        elif edit.get("symlink_to_outside"):
            target = outside / path.name
            shutil.copy2(path, target)
            path.unlink()
            path.symlink_to(target)
        else:
            raise ValueError(f"unknown file edit {edit}")
        return
    table = edit["table"]
    df = _read(folder, table)
    for column, dtype in (edit.get("astype") or {}).items():
        df[column] = df[column].astype(dtype)
    if "append_copy_of" in edit:
        df = pd.concat([df, df.iloc[[int(edit["append_copy_of"])]]], ignore_index=True)
        row = len(df) - 1
    else:
        row = edit.get("row")
    for column, value in (edit.get("set") or {}).items():
        if column not in df.columns:
            df[column] = pd.Series(pd.NA, index=df.index, dtype="string")
        df.loc[row, column] = value
    for column, chars in (edit.get("pad_to") or {}).items():  # repeat the cell's text up to `chars` characters
        text = str(df.loc[row, column])
        df.loc[row, column] = (text * (chars // len(text) + 1))[:chars]
    if "keep_rows" in edit:
        df = df.iloc[: int(edit["keep_rows"])]
    for column, value in (edit.get("add_column") or {}).items():
        df[column] = value
    df.to_parquet(folder / f"{table}.parquet", index=False)


def _expected(raw: Path, bad: dict) -> dict[str, set[int]]:
    """Per table, the rows the quarantine must hold: the case's bad rows plus the rows that name a bad item."""
    frames = {t: _read(raw, t) for t in TABLES if (raw / f"{t}.parquet").stat().st_size}  # an emptied file has no rows
    rows = {t: set(range(len(frames[t]))) if bad.get(t) == "all" else {int(r) for r in bad.get(t) or []} for t in TABLES}
    for t in set(TABLES) - set(frames):
        rows[t] = set()
    items = frames["items"]
    ids = items["item_id"].astype("string")
    good = ids.drop(index=list(rows["items"]))
    dropped = (set(ids.iloc[sorted(rows["items"])].dropna()) - set(good.dropna())) | \
        set(good[good.duplicated(keep=False)])  # an id that is duplicated loses every row that has it
    for t, columns in ITEM_REFS.items():
        if t not in frames:
            continue
        df = frames[t]
        for c in columns:
            rows[t] |= set(np.flatnonzero(df[c].astype("string").isin(dropped).fillna(False).to_numpy()))
    return rows


def run(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    raw = Path(shutil.copytree(request.getfixturevalue("demo_data"), tmp_path / "raw", symlinks=True))
    outside = tmp_path / "outside"
    outside.mkdir()
    for edit in case.spec.get("edits") or []:
        _edit(raw, edit, outside)
    outcome = sail(["validate", "--data", raw])
    message = expect_failure(outcome, case)
    quarantine = tmp_path / "raw.quarantine"
    want = _expected(raw, case.spec.get("quarantine") or {})
    for table in TABLES:
        path = quarantine / f"{table}.parquet"
        got = set(pd.read_parquet(path)["_row"].astype(int)) if path.exists() else set()
        assert got == want[table], (f"{case.id}: quarantine of {table} holds rows {sorted(got)[:20]}, expected "
                                    f"{sorted(want[table])[:20]} (missing {sorted(want[table] - got)[:10]}, "
                                    f"extra {sorted(got - want[table])[:10]})")
    return message
