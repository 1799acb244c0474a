"""sail_core.index against naive numpy references: search, exclusion, recall, vector files, the catalogue folder."""

from __future__ import annotations

import numpy as np
import pytest

from sail_core.index.catalogue import IDS, INDEX, META, VECTORS, Catalogue, write_catalogue
from sail_core.index.search import build_index, load_index, recall_from_ranked, save_index, search
from sail_core.index.vectors import VectorWriter, open_vectors, release_pages, write_vectors


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_topk(queries, corpus, k, exclude=None):
    """Naive top-k by inner product: the full score matrix, the excluded row at -inf, argsort."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    if exclude is not None:
        for q, own in enumerate(exclude):
            if own >= 0:
                scores[q, own] = -np.inf
    if k > scores.shape[1]:  # fewer rows than k: pad with nothing found
        scores = np.hstack([scores, np.full((len(scores), k - scores.shape[1]), -np.inf)])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, 1)
    return np.where(np.isfinite(top), order, -1), top


@pytest.fixture(scope="module")
def corpus():
    return unit_rows(300, 24, seed=0)


# --- exact search ---------------------------------------------------------------------------

@pytest.mark.parametrize("block", [7, 2048])  # several query blocks, and one
def test_flat_search_equals_argsort_of_dot_products(corpus, block):
    queries = unit_rows(40, 24, seed=1)
    scores, ids = search(build_index(corpus, "flat"), queries, 10, block=block)
    ref_ids, ref_scores = reference_topk(queries, corpus, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_flat_search_with_exclude(corpus):
    queries = corpus[:30].copy()                # item queries: each one's own row is its top hit
    queries[5] = -corpus[5]                     # ... but query 5's own row is ranked last, far outside top-k+1
    exclude = np.arange(30)
    exclude[7] = -1                             # query 7 excludes nothing: its own row stays at rank 1
    scores, ids = search(build_index(corpus, "flat"), queries, 10, exclude=exclude, block=8)
    ref_ids, ref_scores = reference_topk(queries, corpus, 10, exclude)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    for q in range(30):
        assert (q not in ids[q]) == (q != 7)
    assert ids[7, 0] == 7
    # query 5: nothing was removed from its ranking, so it is the plain top-10
    np.testing.assert_array_equal(ids[5], reference_topk(queries[5:6], corpus, 10)[0][0])


def test_k_larger_than_the_corpus_pads_with_minus_one():
    small = unit_rows(6, 8, seed=2)
    index = build_index(small, "flat")
    queries = small[:3]
    scores, ids = search(index, queries, 9)
    ref_ids, _ = reference_topk(queries, small, 9)
    np.testing.assert_array_equal(ids, ref_ids)
    assert (ids[:, 6:] == -1).all() and np.isneginf(scores[:, 6:]).all()
    assert sorted(ids[0, :6]) == list(range(6))
    # with the own row excluded: 5 real hits, then padding
    scores, ids = search(index, queries, 9, exclude=np.arange(3))
    ref_ids, _ = reference_topk(queries, small, 9, np.arange(3))
    np.testing.assert_array_equal(ids, ref_ids)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    for q in range(3):
        assert sorted(ids[q, :5]) == [r for r in range(6) if r != q]


def test_unknown_index_kind(corpus):
    with pytest.raises(ValueError, match="not one of"):
        build_index(corpus, "lsh")


def test_index_saved_and_loaded_searches_the_same(corpus, tmp_path):
    index = build_index(corpus, "ivf", nlist=4, nprobe=2)
    save_index(index, tmp_path / "i.faiss")
    loaded = load_index(tmp_path / "i.faiss", nprobe=4)
    assert loaded.nprobe == 4 and loaded.ntotal == len(corpus)
    with pytest.raises(FileNotFoundError, match="nope.faiss"):
        load_index(tmp_path / "nope.faiss")


# --- approximate indexes --------------------------------------------------------------------

@pytest.fixture(scope="module")
def clustered():
    """3,000 rows around 30 centres in 32 dims, and 200 noisy copies of rows as queries."""
    rng = np.random.default_rng(3)
    centres = unit_rows(30, 32, seed=4)
    x = centres[rng.integers(30, size=3000)] + 0.3 / np.sqrt(32) * rng.standard_normal((3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(3000, 200, replace=False)] + 0.3 / np.sqrt(32) * rng.standard_normal((200, 32))
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind, args", [("ivf", {"nlist": 32, "nprobe": 8}), ("hnsw", {"hnsw_m": 16, "ef_search": 64})])
def test_approximate_recall_against_exact_is_high(clustered, kind, args):
    x, q = clustered
    exact = search(build_index(x, "flat"), q, 10)[1]
    approx = search(build_index(x, kind, **args), q, 10)[1]
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert overlap >= 0.9, f"{kind} recall@10 against exact {overlap:.3f}"


def test_ivf_nlist_is_capped_by_the_training_rows(clustered):
    x, _ = clustered
    index = build_index(x[:390], "ivf", nlist=1024, nprobe=64)
    assert index.nlist == 10 and index.nprobe == 10 and index.ntotal == 390


# --- recall --------------------------------------------------------------------------------

def test_recall_from_ranked_hand_computed():
    ids = np.array([[3, 1, 2, 7],
                    [0, 4, 5, 9],
                    [2, -1, -1, -1]])
    relevant = [1, {4, 5, 9}, [2, 8]]
    got = recall_from_ranked(ids, relevant, [1, 2, 3, 4])
    # q0: 1 at rank 2; q1: 4, 5, 9 at ranks 2, 3, 4 (of 3 relevant); q2: 2 at rank 1, 8 never (of 2)
    np.testing.assert_allclose(got[1], [0, 0, 1 / 2])
    np.testing.assert_allclose(got[2], [1, 1 / 3, 1 / 2])
    np.testing.assert_allclose(got[3], [1, 2 / 3, 1 / 2])
    np.testing.assert_allclose(got[4], [1, 1, 1 / 2])
    with pytest.raises(ValueError, match="query 1 has no relevant"):
        recall_from_ranked(ids[:2], [1, set()], [1])


def test_recall_from_ranked_matches_the_reference_on_search_results(corpus):
    queries = unit_rows(25, 24, seed=5)
    relevant = np.random.default_rng(6).integers(len(corpus), size=25)
    ids = search(build_index(corpus, "flat"), queries, 20)[1]
    scores = queries @ corpus.T
    rank = (scores > scores[np.arange(25), relevant][:, None]).sum(axis=1)  # 0-based rank of the relevant row
    got = recall_from_ranked(ids, relevant.tolist(), [1, 5, 20])
    for k in (1, 5, 20):
        np.testing.assert_array_equal(got[k], (rank < k).astype(float))


# --- vector files --------------------------------------------------------------------------

def test_vector_writer_round_trip(tmp_path):
    x = unit_rows(100, 12, seed=7)
    v = write_vectors(tmp_path / "v.npy", (x[s : s + 33] for s in range(0, 100, 33)), 100, 12)
    assert isinstance(v, np.memmap) and v.dtype == np.float32 and v.shape == (100, 12) and not v.flags.writeable
    np.testing.assert_array_equal(np.asarray(v), x)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), x)  # a plain .npy file
    # float64 batches are stored as float32
    w = write_vectors(tmp_path / "w.npy", [x.astype(np.float64)], 100, 12)
    np.testing.assert_array_equal(np.asarray(w), x)


def test_vector_writer_refuses_wrong_shapes_and_too_many_rows(tmp_path):
    writer = VectorWriter(tmp_path / "v.npy", 10, 4)
    with pytest.raises(ValueError, match="does not fit rows of dim 4"):
        writer.append(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="does not fit rows of dim 4"):
        writer.append(np.zeros(4))  # one row, not a batch
    writer.append(np.zeros((8, 4)))
    with pytest.raises(ValueError, match="11 rows written into a file of 10"):
        writer.append(np.zeros((3, 4)))
    writer.append(np.ones((2, 4)))
    np.testing.assert_array_equal(writer.close()[8:], np.ones((2, 4)))


def test_vector_writer_close_refuses_too_few_rows(tmp_path):
    writer = VectorWriter(tmp_path / "v.npy", 10, 4)
    writer.append(np.zeros((9, 4)))
    with pytest.raises(ValueError, match="9 of 10 rows were written"):
        writer.close()
    assert not (tmp_path / "v.npy").exists()  # no half-written file left to be read as complete


def test_open_vectors_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        open_vectors(tmp_path / "absent.npy")


def test_release_pages_keeps_the_data(tmp_path, corpus):
    v = write_vectors(tmp_path / "v.npy", [corpus], *corpus.shape)
    release_pages(v[10:200])
    release_pages(v)
    release_pages(corpus)  # an array in memory: nothing to do
    np.testing.assert_array_equal(np.asarray(v), corpus)
    # an index built from the memory-mapped file (its pages released block by block) is the same
    a = search(build_index(v, "flat"), corpus[:5], 5)
    b = search(build_index(corpus, "flat"), corpus[:5], 5)
    np.testing.assert_array_equal(a[1], b[1])


# --- the catalogue folder ------------------------------------------------------------------

@pytest.fixture()
def catalogue_dir(tmp_path, corpus):
    folder = tmp_path / "catalogue"
    write_vectors(folder / VECTORS, [corpus], *corpus.shape)
    ids = [f"item-{r}" for r in range(len(corpus))]
    meta = write_catalogue(folder, ids, {"model": "test"}, kind="flat")
    assert meta["kind"] == "flat" and meta["dim"] == 24 and meta["count"] == 300 and meta["model"] == "test"
    return folder


def test_catalogue_round_trip(catalogue_dir, corpus):
    cat = Catalogue(catalogue_dir)
    assert cat.meta["count"] == 300 and cat.item_ids[:2] == ["item-0", "item-1"]
    np.testing.assert_array_equal(cat.vector("item-17"), corpus[17])
    hits = cat.similar("item-17", k=5)
    ref_ids, ref_scores = reference_topk(corpus[17:18], corpus, 5, exclude=[17])
    assert [h.item_id for h in hits] == [f"item-{r}" for r in ref_ids[0]]
    assert "item-17" not in [h.item_id for h in hits]
    np.testing.assert_allclose([h.score for h in hits], ref_scores[0], atol=1e-5)
    nearest = cat.nearest(corpus[17], k=3)
    assert nearest[0].item_id == "item-17" and nearest[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.item_id for h in cat.nearest(corpus[17], k=3, exclude_item="item-17")] == [h.item_id for h in hits[:3]]


def test_catalogue_unknown_item(catalogue_dir):
    with pytest.raises(KeyError, match="'item-999' is not in the catalogue index"):
        Catalogue(catalogue_dir).similar("item-999")


def test_catalogue_wrong_dim_query(catalogue_dir):
    with pytest.raises(ValueError, match="dim 12.*dim 24"):
        Catalogue(catalogue_dir).nearest(np.ones(12, dtype=np.float32))


@pytest.mark.parametrize("name", [META, IDS, VECTORS, INDEX])
def test_catalogue_missing_file_is_named(catalogue_dir, name):
    (catalogue_dir / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        Catalogue(catalogue_dir)


def test_write_catalogue_refuses_a_count_mismatch(tmp_path, corpus):
    write_vectors(tmp_path / VECTORS, [corpus], *corpus.shape)
    with pytest.raises(ValueError, match="300 rows for 299 item ids"):
        write_catalogue(tmp_path, [str(r) for r in range(299)], {})
