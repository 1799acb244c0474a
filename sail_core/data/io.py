"""Read and write the data folder's tables (parquet; CSV accepted on read).

Layout (see :mod:`sail_core.data.schema`)::

    DIR/items.parquet  DIR/interactions.parquet  DIR/pairs/<dataset>.parquet

Readers return frames in the schema's dtypes; :func:`read_raw` returns a file
as stored, for the data contracts. Writes are atomic (:func:`atomic_file`: a temporary file
in the same folder, fsync, then rename), so a failed write (a full disk) leaves the previous file as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from sail_core.data import schema
from sail_core.data.cast import SchemaError, cast_table

TABLE_SUFFIXES = (".parquet", ".csv")


def find_table(folder: Path, name: str) -> Path:
    """The file holding table ``name`` in ``folder``: ``name.parquet`` or ``name.csv``."""
    folder = Path(folder)
    for suffix in TABLE_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"table {name!r} not found: expected {folder / (name + '.parquet')} (or .csv). "
        "Build the data first (`sail data demo --out DIR` or `sail data import ...`)."
    )


def _not_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size == 0:
        raise SchemaError(f"{path} is empty (0 bytes): write the table again, with its header row "
                          "(see the README, 'Data schema'); a table with no rows still needs its columns")


def read_raw(path: Path) -> pd.DataFrame:
    """A parquet or CSV file as stored (CSV: values typed by pandas' inference)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    _not_empty(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except Exception as err:  # pyarrow/pandas raise many types for a corrupt file
        raise SchemaError(f"{path}: cannot read as {suffix[1:]}: {err}") from err
    raise SchemaError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


def read_text_table(path: Path) -> pd.DataFrame:
    """Like :func:`read_raw`, but a CSV's cells stay text (ids such as ``007`` keep their zeros)."""
    path = Path(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        _not_empty(path)
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=True)
        except Exception as err:
            raise SchemaError(f"{path}: cannot read as csv: {err}") from err
    return read_raw(path)


def _read_typed(path: Path, columns: dict[str, str], required: list[str]) -> pd.DataFrame:
    return cast_table(read_text_table(path), columns, str(path), required=required)


def read_items(folder: Path) -> pd.DataFrame:
    """``items`` in schema dtypes."""
    return _read_typed(find_table(folder, schema.ITEMS), schema.ITEM_COLUMNS, schema.ITEM_REQUIRED)


def read_interactions(folder: Path) -> pd.DataFrame:
    """``interactions`` in schema dtypes."""
    return _read_typed(
        find_table(folder, schema.INTERACTIONS), schema.INTERACTION_COLUMNS, schema.INTERACTION_REQUIRED
    )


def pair_files(folder: Path) -> dict[str, Path]:
    """``{dataset name: file}`` for every parquet/CSV file in ``folder/pairs``."""
    pairs = Path(folder) / schema.PAIRS_DIR
    if not pairs.is_dir():
        raise FileNotFoundError(f"pairs folder {pairs} not found; expected one file per dataset in it")
    files: dict[str, Path] = {}
    for path in sorted(pairs.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise SchemaError(f"{path}: unsupported file type {path.suffix!r} in {pairs}; use .parquet or .csv")
        if path.stem in files:
            raise SchemaError(f"dataset {path.stem!r} appears twice in {pairs}: {files[path.stem].name} and {path.name}")
        files[path.stem] = path
    if not files:
        raise FileNotFoundError(f"pairs folder {pairs} holds no .parquet/.csv files")
    return files


def read_pairs(folder: Path) -> dict[str, pd.DataFrame]:
    """``{dataset name: pairs}`` in schema dtypes, one entry per file in ``folder/pairs``."""
    return {
        name: _read_typed(path, schema.PAIR_COLUMNS, ["split"])
        for name, path in pair_files(folder).items()
    }


class DiskFullError(OSError):
    """A write failed for lack of space (ENOSPC, EDQUOT); the message says where and what to do."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an exception it was raised from or during, is ENOSPC / EDQUOT."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def atomic_file(path: Path, what: str) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder, fsynced and renamed over
    ``path`` when the block ends without error. On any error the temporary file is removed and ``path`` keeps
    its previous content; a full disk raises :class:`DiskFullError` naming the folder. ``what`` names the file
    in messages ("table", "checkpoint")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _disk_full(err):
            try:
                free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free now"
            except OSError:
                free = "free space unknown"
            raise DiskFullError(
                f"disk full: no space left on the disk holding {path.parent} while writing the {what} {path.name} "
                f"({free}); {path.name} was not changed (its previous version, if any, is intact). Free space on "
                "that disk (or move the folder to a larger one), then run the step again.") from err
        raise
    try:  # the rename itself survives a crash once the folder is synced
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as parquet at ``path`` atomically (:func:`atomic_file`); a full disk leaves the previous file
    and raises :class:`DiskFullError`."""
    path = Path(path)
    with atomic_file(path, "table") as handle:
        df.to_parquet(handle, index=False)
    return path
