"""Promote a new model version into the running Triton server, or roll back.

``promote`` (1) writes ``<repo>/<name>/<N>/``; (2) rewrites ``config.pbtxt`` to
serve only version N (``version_policy: { specific }``) and asks Triton to load
it — Triton swaps atomically: the old version answers until N is ready, and a
failed load leaves the old version loaded; (3) checks N through tritonclient: text,
an image, audio and all modalities together, at every Matryoshka dim (served
version number, shape, unit norm, and parity with onnxruntime run in-process
on the same files and inputs) and, when the version carries a catalogue index
(``index_dir``, copied to ``<N>/catalogue/``), that the served full dim is the
index's dim and the index answers a query embedded by N; when the version
carries semantic IDs (``sid_dir``, copied to ``<N>/sid/``), that the ``SID`` output
equals :func:`sail_core.preprocess.semantic_ids.encode` of the served full-dim
embeddings under those codebooks; (4) records N as current in
``serving_state.json``. The encoder, its catalogue index and its semantic IDs are
one version folder, so promotion and rollback switch them together.

On any failure the previous version policy is restored and reloaded (so the
previous version keeps serving), the failed folder is moved to
``<repo>/<name>/failed/`` (Triton ignores non-numeric folders), the failure is
recorded in the history, and :class:`PromotionError` is raised.

A promotion whose process died (killed with the server, machine lost) leaves
``promote_started`` as the last event of the history, its version folder in the
repository and maybe ``config.pbtxt`` pinning it. :func:`reconcile` (run by
``sail serve up`` before loading, and by the next promotion) puts the model folder back
to the recorded current version: the folder goes to ``failed/``, the config pins the
current version again, and ``promote_abandoned`` is recorded.

These functions do not touch MLflow: the pipeline sets registry aliases after
they return.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from sail_core.config import ServeConfig
from sail_core.paths import home
from sail_core.preprocess import samples
from sail_core.preprocess.export_format import ExportMeta
from serving import repository
from serving.catalogue import query_task
from serving.client import ServingUnavailable, make_client
from serving.state import now, read_state, record, write_state

SMOKE_TEXTS = [
    "Toy Story (1995)",
    "Instruct: Represent this movie for retrieval.\nInput: GoldenEye (1995) | Action, Adventure, Thriller",
    "A quiet drama about a lighthouse keeper and the letters he never sends, set on a small island in winter.",
    "Amélie (2001)",
]
PARITY_TOLERANCE = 1e-4
NORM_TOLERANCE = 1e-3


class PromotionError(RuntimeError):
    """A promotion or rollback failed; the message says which version serves now."""


# Test hook (tests/test_fault_promotion.py): a callable ``hook(phase, version_dir)`` run between the phases of
# ``promote`` ("written": the version folder exists and promote_started is recorded; "loaded": Triton was asked
# to serve it, the checks have not run), to kill the server or alter files at that exact moment. None otherwise.
_test_hook = None


def _phase(name: str, version_dir: Path) -> None:
    if _test_hook is not None:
        _test_hook(name, version_dir)


def _connect(cfg: ServeConfig):
    client = make_client(cfg, "http", timeout=300.0)
    try:
        if client.is_server_ready():
            return client
        reason = "the server is not ready"
    except Exception as err:  # noqa: BLE001
        reason = str(err)
    client.close()
    raise ServingUnavailable(f"no ready Triton server on http {cfg.host}:{cfg.http_port} ({reason}); "
                             "run `sail serve up` first")


def _ready_versions(client, name: str) -> list[int]:
    return sorted(int(m["version"]) for m in client.get_model_repository_index()
                  if m.get("name") == name and m.get("state") == "READY" and m.get("version"))


def smoke_requests(meta: ExportMeta, texts: list[str] | None = None) -> dict[str, dict]:
    """The smoke requests for an export: text, image, audio and everything together.
    Media are synthetic PNG/JPEG/WAV bytes (:mod:`sail_core.preprocess.samples`)."""
    texts = texts or SMOKE_TEXTS

    images = [samples.image_bytes(1, (200, 150), "PNG"), samples.image_bytes(2, (120, 180), "JPEG")]
    frames = [[samples.image_bytes(10 + j, (160, 90), "JPEG") for j in range(3)],
              [samples.image_bytes(20 + j, (160, 90), "PNG") for j in range(int(meta.keyframes) + 1)]]
    audios = [samples.wav_bytes(1, seconds=1.5), samples.wav_bytes(2, seconds=11.0, rate=16000)]
    return {
        "text": {"texts": texts},
        "image": {"images": images},
        "audio": {"audios": audios[:1]},
        "all": {"texts": texts[:2], "images": images, "frames": frames, "audios": audios},
    }


def smoke_check(client, cfg: ServeConfig, version_dir: Path, version: int, texts: list[str] | None = None,
                tolerance: float = PARITY_TOLERANCE) -> dict:
    """Send text, an image, audio and all of them together through Triton (no version pinned) at every
    dim, and compare with onnxruntime run in-process on the same files and the same inputs.

    Checks: the answer comes from ``version``; shapes are (n, dim); rows have unit
    norm; max abs diff to the in-process reference is within ``tolerance``; and, when the
    version folder has a ``catalogue/`` index, :func:`catalogue_check`.
    Returns the figures; raises ``PromotionError`` on the first failed check.
    """
    from serving.backend.embedder import truncate_normalise
    from serving.client import infer

    from serving.backend.embedder import OnnxEmbedder

    reference = OnnxEmbedder(version_dir, limits=cfg.limit_values())  # the limits the served version enforces
    meta = reference.meta
    deadline = time.monotonic() + 15.0
    ready = _ready_versions(client, cfg.triton_model)
    while ready != [version] and time.monotonic() < deadline:  # the old version may still be unloading
        time.sleep(0.1)
        ready = _ready_versions(client, cfg.triton_model)
    if ready != [version]:
        raise PromotionError(f"Triton reports versions {ready} of {cfg.triton_model!r} ready, expected only [{version}]")
    worst, per_request = 0.0, {}
    for name, rows in smoke_requests(meta, texts).items():
        full = reference.embed(**rows)
        for dim in [None, *reference.dims]:
            got, served = infer(client, cfg, "http", dim=dim, **rows)
            label = dim or reference.hidden_size
            want = full if label == reference.hidden_size else truncate_normalise(full, label)
            where = f"the {name} request at dim {label}"
            if served != str(version):
                raise PromotionError(f"{where} was served by version {served}, expected {version}")
            if got.shape != want.shape:
                raise PromotionError(f"Triton returned shape {got.shape} for {where}, expected {want.shape}")
            norms = np.linalg.norm(got, axis=1)
            if not np.all(np.abs(norms - 1.0) <= NORM_TOLERANCE):
                raise PromotionError(f"embeddings of {where} are not unit-norm: norms {norms.round(4).tolist()}")
            diff = float(np.abs(got - want).max())
            per_request[name] = max(per_request.get(name, 0.0), diff)
            worst = max(worst, diff)
            if diff > tolerance:
                raise PromotionError(f"Triton and onnxruntime differ by {diff:.3g} for {where} (tolerance {tolerance:g})")
    return {"max_abs_diff": worst, "per_request": per_request,
            "dims": sorted({reference.hidden_size, *reference.dims}, reverse=True),
            "texts": len(texts or SMOKE_TEXTS), "catalogue": catalogue_check(client, cfg, version_dir, version),
            "sid": sid_check(client, cfg, version_dir, version, texts)}


def sid_check(client, cfg: ServeConfig, version_dir: Path, version: int, texts: list[str] | None = None) -> dict | None:
    """The check of a version's semantic IDs (``None`` if the version has none): the smoke texts' ``SID``
    output, pinned to ``version``, has one code per level, each within its codebook, and equals
    :func:`~sail_core.preprocess.semantic_ids.encode` of the full-dim embeddings of the same response.
    Raises ``PromotionError``."""
    from sail_core.preprocess.semantic_ids import encode, load_codebooks
    from serving.client import infer

    path = Path(version_dir) / repository.SID_DIR / "codebooks.npz"
    if not path.exists():
        return None
    try:
        codebooks = load_codebooks(path)
        z, codes, served = infer(client, cfg, "http", str(version), sid=True, texts=texts or SMOKE_TEXTS)
    except Exception as err:  # noqa: BLE001
        raise PromotionError(f"the semantic IDs of version {version} cannot be served: {err}") from None
    sizes = [len(c) for c in codebooks]
    if codes.shape != (len(z), len(sizes)) or not all(0 <= codes[:, i].min() and codes[:, i].max() < k
                                                      for i, k in enumerate(sizes)):
        raise PromotionError(f"version {version} returned SID of shape {codes.shape} with codes "
                             f"{codes.tolist()}, expected ({len(z)}, {len(sizes)}) within codebook sizes {sizes}")
    want = encode(z, codebooks)
    if served != str(version) or not np.array_equal(codes, want):
        raise PromotionError(f"version {served} returned SID {codes.tolist()} but its codebooks give "
                             f"{want.tolist()} for the same embeddings (version {version} expected)")
    return {"levels": len(sizes), "sizes": sizes, "codes": ["-".join(map(str, r)) for r in codes.tolist()]}


def catalogue_check(client, cfg: ServeConfig, version_dir: Path, version: int, k: int = 5) -> dict | None:
    """The cheap check of a version's catalogue index (``None`` if the version has none).

    The index is complete and consistent (ids, vectors, FAISS rows), its query instruction is one
    the served model knows, a smoke text embedded by ``version`` (pinned, full dim, with that
    instruction) has the index's dim, and ``Catalogue.nearest`` answers it. Raises ``PromotionError``.
    """
    from sail_core.index.catalogue import Catalogue
    from sail_core.preprocess.export_format import read_export_meta
    from serving.client import infer

    folder = Path(version_dir) / repository.CATALOGUE_DIR
    if not folder.is_dir():
        return None
    try:
        catalogue = Catalogue(folder)
    except Exception as err:  # noqa: BLE001
        raise PromotionError(f"the catalogue index of version {version} cannot be read: {err}") from None
    dim, count = int(catalogue.meta.get("dim", -1)), len(catalogue.item_ids)
    shape, rows = tuple(catalogue.vectors.shape), int(catalogue.index.ntotal)
    if shape != (count, dim) or rows != count or catalogue.index.d != dim or not count:
        raise PromotionError(f"the catalogue index of version {version} is inconsistent: {count} item ids, vectors "
                             f"{shape}, FAISS index of {rows} rows of dim {catalogue.index.d}, index.json dim {dim}")
    try:
        task = query_task(read_export_meta(version_dir), catalogue.meta.get("query_instruction"))
    except Exception as err:  # noqa: BLE001
        raise PromotionError(f"version {version}: {err}") from None
    z, served = infer(client, cfg, "http", str(version), texts=SMOKE_TEXTS[:1], task=task, side="query")
    if served != str(version):
        raise PromotionError(f"the catalogue smoke query was served by version {served}, expected {version}")
    if z.shape[1] != dim:
        raise PromotionError(f"the catalogue index holds vectors of dim {dim} but version {version} embeds at full dim "
                             f"{z.shape[1]}: the index was not built by this encoder; rebuild it with the index step")
    hits = catalogue.nearest(z[0], min(k, count))
    if len(hits) != min(k, count):
        raise PromotionError(f"the catalogue index of version {version} answered {len(hits)} hits for "
                             f"{min(k, count)} asked")
    return {"dim": dim, "count": count, "kind": catalogue.meta.get("kind"), "top_score": round(hits[0].score, 6)}


def _switch(client, cfg: ServeConfig, repo_dir: Path, version: int) -> float:
    """Serve exactly ``version``: rewrite the version policy and (re)load; returns seconds."""
    repository.write_configs(repo_dir, cfg, [version])
    started = time.perf_counter()
    client.load_model(cfg.triton_model)
    return time.perf_counter() - started


def _quarantine(version_dir: Path) -> Path | None:
    if not version_dir.exists():
        return None
    target = version_dir.parent / "failed" / f"{version_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    n = 1
    while target.exists():  # two failures of the same version within a second
        target, n = target.with_name(f"{version_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}-{n}"), n + 1
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(version_dir), str(target))
    return target


def _restore(client, cfg: ServeConfig, repo_dir: Path, previous: int | None) -> str:
    """Put the previous version back; returns a sentence saying what serves now."""
    folder = repository.model_dir(repo_dir, cfg)
    try:
        if previous is None:
            client.unload_model(cfg.triton_model)
            for name in (repository.CONFIG, repository.GPU_CONFIG):
                (folder / name).unlink(missing_ok=True)
            return f"no version of {cfg.triton_model!r} serves (there was none before)"
        _switch(client, cfg, repo_dir, previous)
        return f"version {previous} keeps serving"
    except Exception as err:  # noqa: BLE001
        return (f"restoring version {previous} ALSO failed ({err}); serving_state.json still records version "
                f"{previous} as current, so `sail serve up` serves it again if the server went down (see "
                "`sail serve status` and the server log)")


def _alive(pid) -> bool:
    """Whether another live process has id ``pid`` (a promotion still running there)."""
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie is dead
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def reconcile(folder: Path, cfg: ServeConfig) -> dict | None:
    """Put a model folder back to its recorded current version after a promotion that died half-way.

    When the last event of ``serving_state.json`` is ``promote_started`` and the promoting process is gone,
    that version's folder is moved to ``failed/`` and ``promote_abandoned`` is recorded. Leftover staging
    folders (``.N.partial``) are removed, and ``config.pbtxt`` is made to pin the current version (or removed
    when nothing was ever promoted). Does not talk to Triton: run it before loading. Returns what was done,
    or None when the folder was already consistent.
    """
    folder = Path(folder)
    state = read_state(folder)
    current, done = state.get("current"), {}
    for staging in folder.glob(".*.partial"):
        shutil.rmtree(staging, ignore_errors=True)
        done.setdefault("removed", []).append(staging.name)
    last = state["history"][-1] if state.get("history") else {}
    if last.get("event") == "promote_started" and not _alive(last.get("pid")):
        version = last.get("version")
        moved = _quarantine(folder / str(version)) if version is not None and version != current else None
        record(folder, "promote_abandoned", version=version, current=current, moved_to=str(moved) if moved else None)
        done.update(abandoned=version, moved_to=str(moved) if moved else None)
    config = folder / repository.CONFIG
    cfg = cfg.model_copy(update={"triton_model": folder.name})
    if current is None:
        if config.exists() and not state.get("history"):
            return done or None  # not a promoted model folder (written by hand): leave it alone
        for name in (repository.CONFIG, repository.GPU_CONFIG):
            if (folder / name).exists():
                (folder / name).unlink()
                done.setdefault("removed", []).append(name)
    else:
        try:
            pinned = list(repository.read_config(config).version_policy.specific.versions)
        except Exception:  # noqa: BLE001  (missing or unreadable: write it again)
            pinned = None
        if pinned != [current]:
            repository.write_configs(folder.parent, cfg, [current])
            done["config"] = f"pins version {current} (was {pinned})"
    return done or None


def promote(onnx_dir: str | Path, version: int, cfg: ServeConfig, repo_dir: str | Path | None = None,
            texts: list[str] | None = None, tolerance: float = PARITY_TOLERANCE,
            index_dir: str | Path | None = None, sid_dir: str | Path | None = None) -> dict:
    """Write, load and check version ``version`` from an export folder (and the catalogue index its model
    built, ``index_dir``, and the semantic IDs fitted on that catalogue, ``sid_dir``, served with it);
    make it the one that serves.

    Returns ``{"model", "version", "previous", "max_abs_diff", "load_seconds", "check_seconds", "version_dir",
    "catalogue", "sid"}`` (``catalogue``: ``{"dim", "count", "kind", "top_score"}`` or ``None`` without an index;
    ``sid``: ``{"levels", "sizes", "codes"}`` or ``None`` without semantic IDs).
    Raises :class:`PromotionError` (previous version, encoder and index, still serving), ``ServingUnavailable``,
    or, before anything changes, ``FileNotFoundError`` for an incomplete index or semantic-ID folder.
    """
    version = int(version)
    repo_dir = Path(repo_dir or home().triton_repo).resolve()
    folder = repository.model_dir(repo_dir, cfg)
    client = _connect(cfg)
    try:
        if folder.is_dir():
            reconcile(folder, cfg)  # a promotion that died earlier: its folder to failed/, config to current
        state = read_state(folder)
        previous = state.get("current")
        if previous == version:
            return {"model": cfg.triton_model, "version": version, "previous": previous, "already_serving": True,
                    "version_dir": str(folder / str(version))}
        version_dir = repository.write_version(repo_dir, cfg, onnx_dir, version, index_dir=index_dir, sid_dir=sid_dir)
        index = str(index_dir) if index_dir is not None else None
        sid = str(sid_dir) if sid_dir is not None else None
        record(folder, "promote_started", version=version, previous=previous, source=str(onnx_dir), index=index,
               sid=sid, pid=os.getpid())
        try:
            _phase("written", version_dir)
            try:
                load_seconds = _switch(client, cfg, repo_dir, version)
            except Exception as err:  # noqa: BLE001
                raise PromotionError(f"Triton could not load version {version}: {err}") from None
            _phase("loaded", version_dir)
            started = time.perf_counter()
            check = smoke_check(client, cfg, version_dir, version, texts, tolerance)
            check_seconds = time.perf_counter() - started
        except Exception as err:  # noqa: BLE001  (any failure: restore, quarantine, report)
            serving_now = _restore(client, cfg, repo_dir, previous)
            moved = _quarantine(version_dir)
            record(folder, "promote_failed", version=version, previous=previous, error=str(err),
                   moved_to=str(moved) if moved else None)
            raise PromotionError(f"promotion of {cfg.triton_model!r} version {version} failed: {err}\n"
                                 f"Rolled back: {serving_now}. The failed files were moved to {moved}.") from None
        state = read_state(folder)
        state["current"] = version
        state["stack"] = [v for v in state.get("stack", []) if v != version] + [version]
        state["history"].append({"event": "promote", "at": now(), "version": version, "previous": previous,
                                 "max_abs_diff": check["max_abs_diff"], "source": str(onnx_dir), "index": index,
                                 "sid": sid})
        write_state(folder, state)
        return {"model": cfg.triton_model, "version": version, "previous": previous,
                "max_abs_diff": check["max_abs_diff"], "smoke": check["per_request"], "dims": check["dims"],
                "load_seconds": round(load_seconds, 3), "check_seconds": round(check_seconds, 3),
                "version_dir": str(version_dir), "catalogue": check["catalogue"], "sid": check["sid"]}
    finally:
        client.close()


def rollback(cfg: ServeConfig, repo_dir: str | Path | None = None) -> dict:
    """Serve the previously promoted version again, with the catalogue index in its folder (smoke-checked);
    returns which version now serves."""
    repo_dir = Path(repo_dir or home().triton_repo).resolve()
    folder = repository.model_dir(repo_dir, cfg)
    state = read_state(folder)
    stack = state.get("stack", [])
    if len(stack) < 2:
        raise PromotionError(f"nothing to roll back to for {cfg.triton_model!r}: promoted versions {stack} "
                             f"(see {folder / 'serving_state.json'}); rollback returns to the version served before "
                             "the current one, so it needs two promotions; use `sail promote --version N` instead")
    current, previous = stack[-1], stack[-2]
    previous_dir = folder / str(previous)
    if not previous_dir.exists():
        raise PromotionError(f"cannot roll back to version {previous}: {previous_dir} is missing")
    client = _connect(cfg)
    try:
        try:
            load_seconds = _switch(client, cfg, repo_dir, previous)
            check = smoke_check(client, cfg, previous_dir, previous)
        except Exception as err:  # noqa: BLE001
            serving_now = _restore(client, cfg, repo_dir, current)
            record(folder, "rollback_failed", version=previous, current=current, error=str(err))
            raise PromotionError(f"rollback of {cfg.triton_model!r} to version {previous} failed: {err}\n"
                                 f"Restored: {serving_now}.") from None
        state["current"] = previous
        state["stack"] = stack[:-1]
        state["history"].append({"event": "rollback", "at": now(), "version": previous, "from": current,
                                 "max_abs_diff": check["max_abs_diff"]})
        write_state(folder, state)
        return {"model": cfg.triton_model, "version": previous, "rolled_back_from": current,
                "max_abs_diff": check["max_abs_diff"], "load_seconds": round(load_seconds, 3),
                "catalogue": check["catalogue"]}
    finally:
        client.close()


def serving_state(cfg: ServeConfig, repo_dir: str | Path | None = None) -> dict:
    """The recorded state (current version, stack, history) of ``cfg.triton_model``."""
    repo_dir = Path(repo_dir or home().triton_repo).resolve()
    return json.loads(json.dumps(read_state(repository.model_dir(repo_dir, cfg))))
