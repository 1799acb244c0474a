"""The catalogue index travels with its encoder: promotion and rollback switch both, on a real tritonserver.

One server (free loopback ports, temporary repository) is shared by the module; each
test uses its own model name on it, so the order does not matter. Two real exports
(variants 1 and 2, different models) each get a catalogue index of a dozen items whose
vectors that very export computed (onnxruntime in-process, item side). ``similar`` and
``search`` must answer from the version that serves, and ``search``'s query must be
encoded by that version (compared with PyTorch on the same text and instruction).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from exports import ITEM, QUERY, cached_export, torch_embed
from sail_core.config import load_config
from sail_core.index.catalogue import Catalogue, write_catalogue
from sail_core.index.vectors import write_vectors
from sail_core.preprocess.export_format import read_export_meta
from sail_core.preprocess.instructions import resolve_instruction
from serving import catalogue as served
from serving.backend.embedder import OnnxEmbedder, truncate_normalise
from serving.catalogue import CatalogueUnavailable, query_task, search, similar
from serving.ephemeral import ephemeral_server
from serving.promote import PromotionError, promote, rollback, serving_state
from serving.repository import CATALOGUE_DIR, CATALOGUE_FILES, model_dir, write_version

pytestmark = pytest.mark.triton

ITEMS = {
    "1": "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy",
    "2": "Jumanji (1995) | Adventure, Children, Fantasy",
    "6": "Heat (1995) | Action, Crime, Thriller",
    "10": "GoldenEye (1995) | Action, Adventure, Thriller",
    "32": "Twelve Monkeys (1995) | Mystery, Sci-Fi, Thriller",
    "34": "Babe (1995) | Children, Drama",
    "47": "Seven (1995) | Mystery, Thriller",
    "50": "The Usual Suspects (1995) | Crime, Mystery, Thriller",
    "110": "Braveheart (1995) | Action, Drama, War",
    "260": "Star Wars: Episode IV - A New Hope (1977) | Action, Adventure, Sci-Fi",
    "296": "Pulp Fiction (1994) | Comedy, Crime, Drama, Thriller",
    "318": "The Shawshank Redemption (1994) | Crime, Drama",
}
IDS = list(ITEMS)
QUERY_TEXT = "a funny cartoon about toys that come alive"
K = 5


def _catalogue(folder, vectors: np.ndarray, model: str):
    folder.mkdir(parents=True)
    write_vectors(folder / "vectors.npy", [vectors], len(vectors), vectors.shape[1])
    write_catalogue(folder, IDS, {"query_instruction": QUERY, "target_instruction": ITEM, "model": model})
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Exports v1, v2; each one's catalogue index (its own item vectors); a v2 index of the wrong dim (128)."""
    root = tmp_path_factory.mktemp("catalogues")
    out = {"dirs": {}, "vectors": {}, "index": {}, "model": {}}
    for variant in (1, 2):
        export_dir, model, _ = cached_export(variant)
        vectors = OnnxEmbedder(export_dir).embed(texts=list(ITEMS.values()), sides=["target"] * len(ITEMS))
        out["dirs"][variant], out["vectors"][variant], out["model"][variant] = export_dir, vectors, model
        out["index"][variant] = _catalogue(root / f"index-v{variant}", vectors, f"v{variant}")
    assert np.abs(out["vectors"][1] - out["vectors"][2]).max() > 1e-2, "v1 and v2 must be told apart"
    out["index"]["dim128"] = _catalogue(root / "index-dim128", truncate_normalise(out["vectors"][2], 128), "v2@128")
    out["query"] = {v: torch_embed(out["model"][v], [QUERY_TEXT], [None], [None], [None], [QUERY])[0] for v in (1, 2)}
    return out


@pytest.fixture(scope="module")
def triton(runtime, built, tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    with ephemeral_server(base / "repo", load_config(profile="demo").serve, base / "state") as (serve_cfg, info):
        yield {"cfg": serve_cfg, "repo": base / "repo", "state": base / "state"}


def _named(triton, name):
    return triton["cfg"].model_copy(update={"triton_model": name})


def _want_similar(vectors: np.ndarray, item: str, k: int = K) -> list[tuple[str, float]]:
    """Exact top-k by dot product from the given vectors, the item itself left out."""
    own = IDS.index(item)
    scores = vectors @ vectors[own]
    order = [r for r in np.argsort(-scores, kind="stable") if r != own][:k]
    return [(IDS[r], float(scores[r])) for r in order]


def _want_search(vectors: np.ndarray, query: np.ndarray, k: int = K) -> list[tuple[str, float]]:
    scores = vectors @ query
    return [(IDS[r], float(scores[r])) for r in np.argsort(-scores, kind="stable")[:k]]


def _check(hits, want, atol=1e-5):
    """Same scores as the reference (order may differ only between near-ties)."""
    got_scores = np.array([h.score for h in hits])
    np.testing.assert_allclose(got_scores, [s for _, s in want], atol=atol)
    for h, (item, score) in zip(hits, want):
        assert h.item_id == item or abs(h.score - score) < atol


def _answers_from(cfg, repo, built, version: int):
    """similar() and search() answer with ``version`` and ``version``'s vectors, and not the other's."""
    other = 3 - version
    answer = similar("1", K, cfg, repo)
    assert answer.version == version and answer.item_id == "1"
    _check(answer.hits, _want_similar(built["vectors"][version], "1"))
    theirs = [s for _, s in _want_similar(built["vectors"][other], "1")]
    assert np.abs(np.array([h.score for h in answer.hits]) - theirs).max() > 1e-3

    found = search(QUERY_TEXT, K, cfg, repo)
    assert found.version == version and found.instruction == QUERY and found.text == QUERY_TEXT
    _check(found.hits, _want_search(built["vectors"][version], built["query"][version]), atol=1e-4)
    mixed = _want_search(built["vectors"][version], built["query"][other])  # the other encoder's query
    assert np.abs(np.array([h.score for h in found.hits]) - [s for _, s in mixed]).max() > 1e-3
    assert found.to_dict()["version"] == version and found.meta["model"] == f"v{version}"


def test_version_folder_carries_its_catalogue_atomically(built, tmp_path):
    cfg = load_config(profile="demo").serve
    target = write_version(tmp_path, cfg, built["dirs"][1], 1, index_dir=built["index"][1])
    for name in CATALOGUE_FILES:
        assert (target / CATALOGUE_DIR / name).read_bytes() == (built["index"][1] / name).read_bytes()
    assert Catalogue(target / CATALOGUE_DIR).meta["dim"] == 384
    # an incomplete index folder: no version folder and no staging left behind
    broken = tmp_path / "broken-index"
    shutil.copytree(built["index"][1], broken)
    (broken / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="lacks index.faiss"):
        write_version(tmp_path, cfg, built["dirs"][1], 2, index_dir=broken)
    assert sorted(p.name for p in model_dir(tmp_path, cfg).iterdir()) == ["1"]


def test_query_task_picks_the_instruction_the_server_applies(built):
    meta = read_export_meta(built["dirs"][1])
    cfg = load_config(profile="demo")
    for instruction in (QUERY, cfg.datasets["cls"].query_instruction, cfg.datasets["copair_i2i"].query_instruction):
        task = query_task(meta, instruction)
        assert resolve_instruction(meta.instructions, meta.instruction_defaults, task, "query", False) == instruction
    assert query_task(meta, QUERY) is None  # the model's default query instruction: no TASK needed
    with pytest.raises(CatalogueUnavailable, match="not a query instruction of the served model"):
        query_task(meta, "Represent this podcast.")


def test_promotion_and_rollback_switch_encoder_and_catalogue_together(triton, built):
    cfg, repo = _named(triton, "catalogue_life"), triton["repo"]
    with pytest.raises(CatalogueUnavailable, match="run `sail promote`"):
        similar("1", K, cfg, repo)

    first = promote(built["dirs"][1], 1, cfg, repo, index_dir=built["index"][1])
    assert first["catalogue"]["dim"] == 384 and first["catalogue"]["count"] == len(ITEMS)
    assert (repo / "catalogue_life" / "1" / CATALOGUE_DIR / "index.faiss").is_file()
    _answers_from(cfg, repo, built, 1)

    second = promote(built["dirs"][2], 2, cfg, repo, index_dir=built["index"][2])
    assert second["version"] == 2 and second["previous"] == 1 and second["catalogue"]["dim"] == 384
    _answers_from(cfg, repo, built, 2)

    # an index of the wrong dim: refused, v2 (encoder + catalogue) keeps serving
    with pytest.raises(PromotionError, match=r"(?s)dim 128.*full dim 384.*version 2 keeps serving"):
        promote(built["dirs"][2], 3, cfg, repo, index_dir=built["index"]["dim128"])
    folder = repo / "catalogue_life"
    assert not (folder / "3").exists()
    [failed] = [p for p in (folder / "failed").iterdir() if p.name.startswith("3-")]
    assert (failed / CATALOGUE_DIR / "vectors.npy").is_file()
    state = serving_state(cfg, repo)
    assert state["current"] == 2 and state["stack"] == [1, 2] and state["history"][-1]["event"] == "promote_failed"
    _answers_from(cfg, repo, built, 2)

    back = rollback(cfg, repo)
    assert back["version"] == 1 and back["catalogue"]["dim"] == 384
    _answers_from(cfg, repo, built, 1)


def test_a_version_without_catalogue_says_how_to_get_one(triton, built):
    cfg, repo = _named(triton, "catalogue_none"), triton["repo"]
    assert promote(built["dirs"][1], 1, cfg, repo)["catalogue"] is None
    for ask in (lambda: similar("1", K, cfg, repo), lambda: search("heist movie", K, cfg, repo)):
        with pytest.raises(CatalogueUnavailable, match="promoted before catalogue indexes existed.*index step"):
            ask()


def test_search_refuses_a_query_from_another_version(triton, built, monkeypatch):
    """If Triton ever answered with a version other than the catalogue's, search raises instead of mixing them."""
    cfg, repo = _named(triton, "catalogue_pin"), triton["repo"]
    promote(built["dirs"][1], 1, cfg, repo, index_dir=built["index"][1])
    asked = []
    real = served.infer

    def other_version(client, cfg, protocol, model_version, **rows):
        asked.append(model_version)
        return real(client, cfg, protocol, model_version, **rows)[0], "7"

    monkeypatch.setattr(served, "infer", other_version)
    with pytest.raises(CatalogueUnavailable, match="version '7'.*version 1's"):
        search(QUERY_TEXT, K, cfg, repo)
    assert asked == ["1"]  # the request pinned the catalogue's version
    monkeypatch.undo()
    assert search(QUERY_TEXT, K, cfg, repo).version == 1
    with pytest.raises(KeyError, match="not in the catalogue index"):
        similar("no-such-item", K, cfg, repo)
    with pytest.raises(ValueError, match="nothing to search for"):
        search("  ", K, cfg, repo)
