"""Semantic IDs: the numpy encoder Triton runs, the residual k-means the library fits, and their folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sail_core.index.semantic_ids import (
    CODEBOOKS,
    CODES,
    META,
    fit_codebooks,
    prefix_stats,
    read_semantic_ids,
    save_semantic_ids,
)
from sail_core.preprocess.semantic_ids import encode, load_codebooks


def _random(n=400, dim=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_encode_a_two_level_case_by_hand():
    level0 = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    level1 = np.array([[0, 0], [0.5, 0], [0, -0.5], [0, 0.5]], dtype=np.float32)
    vectors = np.array([[3, 4], [-2, 0], [1, 1], [0, -5]], dtype=np.float32)
    # (3,4)  -> (.6,.8):  level 0 d = .8, .4, 3.2 -> 1; residual (.6,-.2): d = .40, .05, .45, .85 -> 1
    # (-2,0) -> (-1,0):   level 0 d = 4, 2, 0 -> 2;      residual (0,0):    d = 0, .25, .25, .25 -> 0
    # (1,1)  -> (s,s), s = .7071: level 0 d = .586, .586, 3.41 -> tie, lowest index 0;
    #                     residual (-.293,.707): d = .586, 1.12, 1.54, .129 -> 3
    # (0,-5) -> (0,-1):   level 0 d = 2, 4, 2 -> tie, 0; residual (-1,-1): d = 2, 3.25, 1.25, 3.25 -> 2
    codes = encode(vectors, [level0, level1])
    assert codes.dtype == np.int32 and codes.shape == (4, 2)
    assert codes.tolist() == [[1, 1], [2, 0], [0, 3], [0, 2]]
    with pytest.raises(ValueError, match="dim 3 but the codebooks have dim"):
        encode(np.ones((1, 3)), [level0])


def _reconstruction_errors(x, codebooks):
    codes = encode(x, codebooks)
    residual = _unit(x)
    errors = []
    for level, codebook in enumerate(codebooks):
        residual = residual - codebook.astype(np.float64)[codes[:, level]]
        errors.append(float((residual ** 2).sum(axis=1).mean()))
    return errors


def test_each_level_lowers_the_reconstruction_error():
    x = _random()
    codebooks = fit_codebooks(x, [16, 16, 16], seed=3)
    assert [c.shape for c in codebooks] == [(16, 16)] * 3 and all(c.dtype == np.float32 for c in codebooks)
    errors = _reconstruction_errors(x, codebooks)
    assert 1.0 > errors[0] > errors[1] > errors[2], errors
    assert [np.array_equal(a, b) for a, b in zip(codebooks, fit_codebooks(x, [16, 16, 16], seed=3))] == [True] * 3


def test_more_levels_collide_less_on_random_data():
    x = _random(120)
    codes = encode(x, fit_codebooks(x, [8, 8, 8], seed=1))
    rates, distinct = prefix_stats(codes)
    assert rates[0] == 1.0 and rates[0] > rates[1] > rates[2], rates
    assert distinct[0] <= 8 and distinct[0] < distinct[1] < distinct[2] <= len(codes)
    # by hand: items a and b share the first code, c alone; all three differ at two levels
    assert prefix_stats(np.array([[0, 1], [0, 2], [1, 1]])) == ([round(2 / 3, 6), 0.0], [2, 3])


def test_save_and_read_round_trip_and_parity_with_the_triton_encoder(tmp_path):
    x = _random(300, 12, seed=7) * 3.0  # not unit norm: both sides normalise
    ids = [f"item{i}" for i in range(len(x))]
    meta = save_semantic_ids(tmp_path, ids, x, [8, 4, 4], seed=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CODEBOOKS, CODES, META])
    assert meta == json.loads((tmp_path / META).read_text())
    assert (meta["sizes"], meta["effective_sizes"], meta["dim"], meta["seed"], meta["items"]) == \
        ([8, 4, 4], [8, 4, 4], 12, 5, 300)
    assert meta["clamped"] == [] and len(meta["collision_rate"]) == len(meta["distinct_prefixes"]) == 3

    codebooks, codes, again = read_semantic_ids(tmp_path)
    assert again == meta
    served = load_codebooks(tmp_path / CODEBOOKS)  # what the Triton backend loads
    assert all(np.array_equal(a, b) for a, b in zip(codebooks, served)) and len(served) == 3
    assert list(codes.columns) == ["item_id", "sid_0", "sid_1", "sid_2", "sid"]
    assert codes["item_id"].tolist() == ids and pd.api.types.is_string_dtype(codes["item_id"])
    assert all(codes[f"sid_{i}"].dtype == np.int32 for i in range(3))
    table = codes[["sid_0", "sid_1", "sid_2"]].to_numpy()
    np.testing.assert_array_equal(table, encode(x, served))  # the library's codes == the backend's encoder
    assert codes["sid"].tolist() == ["-".join(map(str, r)) for r in table.tolist()]
    assert prefix_stats(table) == (meta["collision_rate"], meta["distinct_prefixes"])


def test_few_vectors_clamp_the_codebooks_and_say_so(tmp_path):
    x = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [0, 5, 0]], dtype=np.float32)  # 3 distinct directions
    meta = save_semantic_ids(tmp_path, ["a", "b", "c", "d"], x, [8, 4], seed=0)
    assert meta["effective_sizes"] == [3, 1]  # the level-1 residuals are all zero: one distinct row
    assert len(meta["clamped"]) == 2 and "level 0: 3 distinct residual rows" in meta["clamped"][0]
    codebooks, codes, _ = read_semantic_ids(tmp_path)
    assert codes["sid_0"].nunique() == 3 and codes["sid"].iloc[1] == codes["sid"].iloc[3]
    np.testing.assert_array_equal(codes[["sid_0", "sid_1"]].to_numpy(), encode(x, codebooks))
    assert meta["collision_rate"] == [0.5, 0.5]
    assert [c.shape for c in fit_codebooks(x[:1], [4, 4, 4])] == [(1, 3)] * 3


def test_missing_files_name_themselves_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; rebuild it with"):
        read_semantic_ids(tmp_path / "nowhere")
    save_semantic_ids(tmp_path, ["a", "b"], _random(2, 4), [2])
    (tmp_path / CODES).unlink()
    with pytest.raises(FileNotFoundError, match=f"lacks {CODES}; rebuild it with .*save_semantic_ids"):
        read_semantic_ids(tmp_path)
    with pytest.raises(FileNotFoundError, match="codebooks .* not found"):
        load_codebooks(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", level1=np.zeros((2, 4), dtype=np.float32), dim=4)
    with pytest.raises(ValueError, match="not a semantic-ID codebook file"):
        load_codebooks(tmp_path / "bad.npz")
