"""The catalogue index served with the encoder: items similar to an item, items matching a text.

Each Triton version folder carries the catalogue index its own encoder built
(``<repo>/<name>/<N>/catalogue/``, see :mod:`serving.repository`), and
``serving_state.json`` names the version that serves (``current``). So promotion
and rollback switch the encoder and its index together, and:

    from serving.catalogue import similar, search
    answer = similar("1", 10, cfg.serve)             # from the served version's vectors (no Triton call)
    answer = search("a funny cartoon", 10, cfg.serve)  # the text embedded by that same version through Triton
    answer.version, [(h.item_id, h.score) for h in answer.hits], answer.to_dict()

``search`` sends the text with ``TASK``/``SIDE`` chosen so that the server wraps it in
the index's ``query_instruction`` (index.json), through the function the model side
uses (:func:`sail_core.preprocess.instructions.resolve_instruction`), and pins the
request to the catalogue's version: the vectors searched and the query always come
from one model version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sail_core.config import ServeConfig
from sail_core.index.catalogue import Catalogue, Hit
from sail_core.paths import home
from sail_core.preprocess.export_format import ExportMeta, read_export_meta
from sail_core.preprocess.instructions import resolve_instruction
from serving import repository
from serving.client import Protocol, ServingRequestError, infer, make_client
from serving.state import read_state


class CatalogueUnavailable(RuntimeError):
    """No catalogue index serves (nothing promoted, or the served version has none), or it cannot answer."""


@dataclass
class Answer:
    """What a catalogue query returns: the model version that answered and its hits, best first."""

    version: int
    hits: list[Hit]
    item_id: str | None = None      # similar(): the item asked about
    text: str | None = None         # search(): the query text
    instruction: str | None = None  # search(): the instruction the server wrapped the text in
    meta: dict = field(default_factory=dict)  # the catalogue's index.json

    def to_dict(self) -> dict:
        return asdict(self)


def _repo(repo_dir: str | Path | None) -> Path:
    return Path(repo_dir or home().triton_repo).resolve()


def served_version(cfg: ServeConfig, repo_dir: str | Path | None = None) -> int:
    """The version ``serving_state.json`` records as serving; ``CatalogueUnavailable`` if none was promoted."""
    folder = repository.model_dir(_repo(repo_dir), cfg)
    current = read_state(folder).get("current")
    if current is None:
        raise CatalogueUnavailable(f"no version of {cfg.triton_model!r} has been promoted under {folder.parent} "
                                   "(no current version in serving_state.json); run `sail promote` first")
    return int(current)


def catalogue_dir(cfg: ServeConfig, version: int, repo_dir: str | Path | None = None) -> Path:
    """``<repo>/<name>/<version>/catalogue/`` (which may not exist)."""
    return repository.model_dir(_repo(repo_dir), cfg) / str(int(version)) / repository.CATALOGUE_DIR


def load_catalogue(cfg: ServeConfig, version: int, repo_dir: str | Path | None = None) -> Catalogue:
    """The catalogue index of model version ``version``; ``CatalogueUnavailable`` saying why there is none."""
    folder = catalogue_dir(cfg, version, repo_dir)
    if not folder.parent.is_dir():
        raise CatalogueUnavailable(f"version {version} of {cfg.triton_model!r} is recorded as serving but its folder "
                                   f"{folder.parent} is missing; promote again with `sail promote`")
    if not folder.is_dir():
        raise CatalogueUnavailable(
            f"version {version} of {cfg.triton_model!r} serves without a catalogue index ({folder} is missing): it was "
            "promoted before catalogue indexes existed. Promote a version built with the index step "
            "(`sail run` or `sail promote` after the pipeline's index step) to answer similar/search.")
    try:
        return Catalogue(folder)
    except FileNotFoundError as err:
        raise CatalogueUnavailable(f"the catalogue index of version {version} is incomplete: {err}") from None


def served_catalogue(cfg: ServeConfig, repo_dir: str | Path | None = None) -> tuple[int, Catalogue]:
    """``(version, Catalogue)`` of the version that serves now (``serving_state.json``'s ``current``)."""
    version = served_version(cfg, repo_dir)
    return version, load_catalogue(cfg, version, repo_dir)


def query_task(meta: ExportMeta, instruction: str | None) -> str | None:
    """The ``TASK`` to send (with ``SIDE=query``) so that the served model wraps a text-only row in
    ``instruction``: ``None`` when it is the model's default query instruction (or ``instruction`` is
    empty/None), else the first dataset of ``export.json`` whose query instruction it is.

    Decided with :func:`resolve_instruction`, the function the server itself applies. Raises
    ``CatalogueUnavailable`` when no dataset of the model has that query instruction (the index
    was built for another model's tasks).
    """
    table, defaults = meta.instructions, meta.instruction_defaults
    if not instruction:
        return None
    for task in [None, *table]:
        if resolve_instruction(table, defaults, task, "query", False) == instruction:
            return task
    known = sorted({row["query"] for row in table.values()})
    raise CatalogueUnavailable(f"the catalogue's query instruction {instruction!r} is not a query instruction of "
                               f"the served model (it knows {known}); rebuild the index with this model")


def _k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k={k}: ask for at least one item")
    return int(k)


def similar(item_id: str, k: int = 10, cfg: ServeConfig | None = None, repo_dir: str | Path | None = None) -> Answer:
    """The ``k`` items nearest ``item_id`` in the served version's catalogue (the item itself left out).

    Answers from the vectors alone (no Triton request). ``KeyError`` if the item is not in the
    catalogue, ``CatalogueUnavailable`` if no catalogue serves.
    """
    cfg, k = cfg or ServeConfig(), _k(k)
    version, catalogue = served_catalogue(cfg, repo_dir)
    return Answer(version=version, hits=catalogue.similar(str(item_id), k), item_id=str(item_id),
                  meta=dict(catalogue.meta))


def _embed_query(cfg: ServeConfig, repo_dir, version: int, text: str, instruction: str | None,
                 protocol: Protocol, timeout: float):
    """The full-dim embedding of ``text`` by version ``version`` (pinned) and the instruction it got."""
    meta = read_export_meta(repository.model_dir(_repo(repo_dir), cfg) / str(version))
    task = query_task(meta, instruction)
    used = resolve_instruction(meta.instructions, meta.instruction_defaults, task, "query", False)
    client = make_client(cfg, protocol, timeout)
    try:
        z, served = infer(client, cfg, protocol, str(version), texts=[text], task=task, side="query")
    finally:
        client.close()
    if served != str(version):
        raise CatalogueUnavailable(f"Triton answered the query with version {served!r} of {cfg.triton_model!r}, "
                                   f"but the catalogue searched is version {version}'s; refusing to mix them")
    return z[0], used


def search(text: str, k: int = 10, cfg: ServeConfig | None = None, repo_dir: str | Path | None = None,
           protocol: Protocol = "http", timeout: float = 60.0) -> Answer:
    """The ``k`` catalogue items nearest ``text``, embedded through the running Triton server.

    The text is embedded at full dim by the served version (the request pins it) with the
    catalogue's ``query_instruction``, and searched in that version's catalogue index.
    Raises ``ValueError`` for an empty text, ``CatalogueUnavailable`` (nothing promoted, no
    catalogue, or Triton does not serve the recorded version), ``ServingUnavailable`` (no server).
    """
    cfg, k = cfg or ServeConfig(), _k(k)
    if not (text and str(text).strip()):
        raise ValueError("nothing to search for: give a non-empty text")
    for attempt in (1, 2):
        version, catalogue = served_catalogue(cfg, repo_dir)
        try:
            vector, used = _embed_query(cfg, repo_dir, version, str(text), catalogue.meta.get("query_instruction"),
                                        protocol, timeout)
            break
        except ServingRequestError as err:
            # A promotion or rollback may have switched versions between reading the state and the request.
            if attempt == 1 and served_version(cfg, repo_dir) != version:
                continue
            raise CatalogueUnavailable(f"version {version} of {cfg.triton_model!r} is recorded as serving "
                                       f"(serving_state.json) but Triton could not embed the query with it: {err}. "
                                       "Check `sail serve status`; `sail promote` or `sail rollback` "
                                       "makes Triton and the recorded state agree again.") from None
    return Answer(version=version, hits=catalogue.nearest(vector, k), text=str(text), instruction=used,
                  meta=dict(catalogue.meta))
