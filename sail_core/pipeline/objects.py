"""The object store: data and model folders, content-addressed in a DVC remote.

A step pushes each output folder here and gets back its DVC hash (``<md5>.dir``); a later
step, on any worker, pulls a folder by that hash. The layout is DVC's own (``files/md5/ab/cdef...``),
written with DVC's library (``dvc_data``), so ``dvc pull`` of a ``.dvc`` file that names the hash
fetches the same folder into any DVC project that has this remote. The remote is any URL that
fsspec understands; the local object cache (``<local_cache>/objects``) keeps what this machine
pushed or pulled, so a second pull of the same folder copies nothing over the network.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

HASH = "md5"


class ObjectStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stored:
    """One folder as stored: its DVC hash (``.dir`` suffix), total bytes and file count."""

    md5: str
    size: int
    nfiles: int


def _odb(url: str):
    """A dvc_data object database at ``<url>/files/md5``: a local folder (path or ``file://``), or any
    remote URL that DVC supports (``s3://...`` with dvc-s3 installed, ...), through DVC's own file systems."""
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return HashFileDB(LocalFileSystem(), str(path / "files" / HASH), hash_name=HASH)
    from dvc.fs import get_cloud_fs

    try:
        cls, conf, path = get_cloud_fs(None, url=url)
    except Exception as e:  # DVC's ConfigError: an unknown scheme, or its plugin is not installed
        raise ObjectStoreError(f"store.objects = {url!r} is not a DVC remote this installation can use ({e}); use a "
                               "local folder, or install the DVC plugin for that scheme (e.g. dvc-s3)") from e
    return HashFileDB(cls(**conf), f"{path.rstrip('/')}/files/{HASH}", hash_name=HASH)


class ObjectStore:
    """Push folders to, and pull them from, the remote ``url`` through the local cache ``cache_dir``."""

    def __init__(self, url: str, cache_dir: str | Path):
        self.url = url
        self.cache_dir = Path(cache_dir)

    @cached_property
    def remote(self):
        return _odb(self.url)

    @cached_property
    def cache(self):
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem

        path = self.cache_dir / "files" / HASH
        path.mkdir(parents=True, exist_ok=True)
        # copy, never link: a step may rewrite what it pulled, and the cache must not change with it
        return HashFileDB(LocalFileSystem(), str(path), type=["reflink", "copy"])

    def push(self, folder: Path) -> Stored:
        """Hash ``folder``, copy its files into the local cache and the remote; return its hash."""
        from dvc_data.hashfile.build import build
        from dvc_data.hashfile.transfer import transfer
        from dvc_objects.fs.local import LocalFileSystem

        folder = Path(folder)
        if not folder.is_dir():
            raise ObjectStoreError(f"cannot store {folder}: it is not a folder (the step that writes it did not run "
                                   "or failed)")
        staging, meta, obj = build(self.cache, str(folder), LocalFileSystem(), HASH)
        transfer(staging, self.cache, {obj.hash_info}, shallow=False)
        result = transfer(self.cache, self.remote, {obj.hash_info}, shallow=False)
        if result.failed:
            raise ObjectStoreError(f"could not copy {len(result.failed)} object(s) of {folder} to {self.url}")
        return Stored(obj.hash_info.value, int(meta.size or 0), int(meta.nfiles or 0))

    def pull(self, md5: str, dest: Path) -> Path:
        """Make ``dest`` hold exactly the folder stored as ``md5`` (fetching what the cache lacks)."""
        from dvc_data.hashfile import load
        from dvc_data.hashfile.checkout import checkout
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.transfer import transfer
        from dvc_objects.fs.local import LocalFileSystem

        info = HashInfo(HASH, md5)
        missing = ObjectStoreError(f"object {md5} is not in the object store {self.url} (removed by `sail gc`, or "
                                   "pushed to another store); re-run the step that makes it")
        try:
            result = transfer(self.remote, self.cache, {info}, shallow=False)
        except FileNotFoundError as e:
            raise missing from e
        if result.failed:
            raise missing
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        checkout(str(dest), LocalFileSystem(), load(self.cache, info), self.cache)
        return dest

    # ------------------------------------------------------------ retention
    def closure(self, md5s: Iterable[str]) -> set[str]:
        """Every object id that the folders ``md5s`` consist of (the ``.dir`` listings and their files)."""
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        ids: set[str] = set()
        for md5 in md5s:
            ids.add(md5)
            if not md5.endswith(".dir"):
                continue
            for odb in (self.cache, self.remote):
                try:
                    tree = Tree.load(odb, HashInfo(HASH, md5))
                except (FileNotFoundError, OSError, ValueError):
                    continue
                ids.update(info.value for _, _, info in tree)
                break
        return ids

    def unreferenced(self, keep: set[str], where: str = "remote") -> dict[str, int]:
        """Object id -> bytes for every object in the remote (or the local cache) that is not in ``keep``."""
        odb = self.remote if where == "remote" else self.cache
        out = {}
        for oid in odb.all():
            if oid not in keep:
                try:
                    out[oid] = int(odb.fs.size(odb.oid_to_path(oid)) or 0)
                except (FileNotFoundError, OSError):
                    out[oid] = 0
        return out

    def remove(self, oids: Iterable[str], where: str = "remote") -> int:
        odb = self.remote if where == "remote" else self.cache
        paths = [odb.oid_to_path(oid) for oid in oids]
        for path in paths:
            odb.fs.remove(path)
        return len(paths)
