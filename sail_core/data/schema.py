"""Table schemas: the single source for column names and types.

A data folder (raw or validated) holds::

    items.parquet          one row per content item
    interactions.parquet   user-item events with timestamps
    item_splits.parquet    the split of every item: train, val or test (sail_core.data.splits)
    pairs/<dataset>.parquet  query -> target pairs, one file per dataset (name = config key)
    media/                 cover, keyframe and audio files named by the items' *_path columns

Each side of a pair is either an item (``*_item``) or free text (``*_text``):
exactly one of the two is set. A pair's ``split`` is ``train``, ``val`` or
``test``, given by its items' splits (:mod:`sail_core.data.splits`): a test pair
touches a test item, a val pair a val item and no test item, a train pair train
items only. ``val`` serves balancing, mining and early checks; only ``test`` is
reported.
"""

from __future__ import annotations

ITEMS = "items"
ITEM_SPLITS = "item_splits"
INTERACTIONS = "interactions"
PAIRS_DIR = "pairs"

# column -> pandas dtype. "required" columns may not be null.
ITEM_COLUMNS: dict[str, str] = {
    "item_id": "string",     # unique, required
    "title": "string",       # required
    "year": "Int64",         # 1870..2100, nullable
    "tags": "string",        # genres / tags, comma separated, nullable
    "ocr": "string",         # nullable
    "asr": "string",         # nullable
    "author": "string",      # nullable
    "cover_path": "string",  # nullable; cover image, relative to the data folder (media/covers/<id>.jpg)
    "frame_paths": "string", # nullable; keyframes in time order, relative paths joined by "|"
    "audio_path": "string",  # nullable; spoken track (WAV), relative to the data folder
}
ITEM_REQUIRED = ["item_id", "title"]

INTERACTION_COLUMNS: dict[str, str] = {
    "user_id": "string",     # required
    "item_id": "string",     # required, must exist in items
    "timestamp": "Int64",    # unix seconds, required, > 0
    "rating": "Float64",     # 0..5, required
}
INTERACTION_REQUIRED = list(INTERACTION_COLUMNS)

PAIR_COLUMNS: dict[str, str] = {
    "query_item": "string",
    "query_text": "string",
    "target_item": "string",
    "target_text": "string",
    "score": "Float64",      # optional graded relevance
    "split": "string",       # train | val | test
}
SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")

ITEM_SPLIT_COLUMNS: dict[str, str] = {
    "item_id": "string",     # unique, required, must exist in items
    "split": "string",       # train | val | test, required
}
ITEM_SPLIT_REQUIRED = list(ITEM_SPLIT_COLUMNS)

