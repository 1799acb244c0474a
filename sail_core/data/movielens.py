"""MovieLens-100k, read from the installed ``recbole`` package (never copied).

RecBole ships the data set as atomic files under
``recbole/dataset_example/ml-100k/``:

* ``ml-100k.item``  item_id, movie_title, release_year, class (genres, space separated)
* ``ml-100k.inter`` user_id, item_id, rating, timestamp

The folder is located with :func:`importlib.util.find_spec`, without importing
recbole (its import pulls torch and takes seconds). The data licence allows
research use only and no redistribution, so it is read in place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ITEM_FILE = "ml-100k.item"
INTER_FILE = "ml-100k.inter"
# MovieLens item 267 has neither title nor year ("unkonwn" in both fields).
_UNKNOWN_TITLES = {"unknown", "unkonwn"}


class MovieLensNotFound(FileNotFoundError):
    """recbole (and so MovieLens-100k) is not installed here."""


def ml100k_dir() -> Path:
    """The folder holding ``ml-100k.item`` and ``ml-100k.inter`` inside the recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise MovieLensNotFound(
            "MovieLens-100k is read from the 'recbole' package, which is not installed in this "
            "environment. Install it (pip install recbole) or import your own tables with "
            "`sail data import`."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    for name in (ITEM_FILE, INTER_FILE):
        if not (folder / name).is_file():
            raise MovieLensNotFound(
                f"{folder / name} is missing: this recbole installation does not ship the "
                "ml-100k example data set. Reinstall recbole or import your own tables."
            )
    return folder


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file; headers look like ``name:type``, keep only the name."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8")
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def read_movies(folder: Path | None = None) -> pd.DataFrame:
    """MovieLens items: ``item_id`` (str), ``title`` (str), ``year`` (Int64), ``genres`` (list[str]).

    Items without a title (MovieLens item 267) are dropped; the genre ``unknown`` is removed.
    """
    raw = _read_atomic((folder or ml100k_dir()) / ITEM_FILE)
    out = pd.DataFrame(
        {
            "item_id": raw["item_id"].str.strip().astype("string"),
            "title": raw["movie_title"].str.strip().astype("string"),
            "year": pd.to_numeric(raw["release_year"], errors="coerce").astype("Int64"),
            "genres": [
                [g for g in cls.split() if g and g != "unknown"] for cls in raw["class"]
            ],
        }
    )
    keep = ~out["title"].str.lower().isin(_UNKNOWN_TITLES) & (out["title"] != "")
    return out[keep].reset_index(drop=True)


def read_ratings(folder: Path | None = None) -> pd.DataFrame:
    """MovieLens ratings: ``user_id`` (str), ``item_id`` (str), ``rating`` (Float64), ``timestamp`` (Int64)."""
    raw = _read_atomic((folder or ml100k_dir()) / INTER_FILE)
    return pd.DataFrame(
        {
            "user_id": raw["user_id"].astype("string"),
            "item_id": raw["item_id"].astype("string"),
            "timestamp": pd.to_numeric(raw["timestamp"]).round().astype("Int64"),
            "rating": pd.to_numeric(raw["rating"]).astype("Float64"),
        }
    )
