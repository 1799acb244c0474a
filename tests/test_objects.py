"""The object store (DVC's content-addressed layout, written with dvc_data) and the run workspace's files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sail_core.pipeline.objects import ObjectStore, ObjectStoreError
from sail_core.pipeline.workspace import Stores, Workspace, new_run_id, run_key
from sail_core.paths import Workdir


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    return root


def test_push_then_pull_on_another_cache_gives_the_same_folder(tmp_path):
    src = _folder(tmp_path / "src")
    remote = tmp_path / "remote"
    stored = ObjectStore(str(remote), tmp_path / "cache-a").push(src)
    assert stored.md5.endswith(".dir") and stored.nfiles == 2 and stored.size == 6 + 256
    # DVC's layout: each file under files/md5/<2>/<30> by its own md5, the listing as <hash>.dir
    a_md5 = hashlib.md5(b"hello\n").hexdigest()
    assert (remote / "files" / "md5" / a_md5[:2] / a_md5[2:]).read_bytes() == b"hello\n"
    listing = json.loads((remote / "files" / "md5" / stored.md5[:2] / stored.md5[2:]).read_text())
    assert sorted(e["relpath"] for e in listing) == ["a.txt", "sub/b.bin"]

    other = ObjectStore(f"file://{remote}", tmp_path / "cache-b")  # a second machine: empty cache, file:// URL
    dest = other.pull(stored.md5, tmp_path / "out" / "data")
    assert (dest / "a.txt").read_text() == "hello\n" and (dest / "sub" / "b.bin").read_bytes() == bytes(range(256))
    # pulling replaces what was there, and the pulled copy is not linked to the cache
    (dest / "a.txt").write_text("changed\n")
    other.pull(stored.md5, dest)
    assert (dest / "a.txt").read_text() == "hello\n"


def test_the_same_content_has_the_same_hash_wherever_it_is(tmp_path):
    one = ObjectStore(str(tmp_path / "remote"), tmp_path / "c1").push(_folder(tmp_path / "x"))
    two = ObjectStore(str(tmp_path / "remote"), tmp_path / "c2").push(_folder(tmp_path / "elsewhere" / "y"))
    assert one == two


def test_missing_objects_and_unusable_remotes_are_named(tmp_path):
    store = ObjectStore(str(tmp_path / "remote"), tmp_path / "cache")
    with pytest.raises(ObjectStoreError, match="not in the object store .*sail gc"):
        store.pull("0" * 32 + ".dir", tmp_path / "out")
    with pytest.raises(ObjectStoreError, match="it is not a folder"):
        store.push(tmp_path / "nothing-here")
    with pytest.raises(ObjectStoreError, match="not a DVC remote this installation can use.*dvc-s3"):
        ObjectStore("memory://bucket", tmp_path / "cache").remote


def test_closure_and_unreferenced_objects(tmp_path):
    store = ObjectStore(str(tmp_path / "remote"), tmp_path / "cache")
    kept = store.push(_folder(tmp_path / "kept"))
    other_root = tmp_path / "other"
    other_root.mkdir()
    (other_root / "c.txt").write_text("only here\n")
    dropped = store.push(other_root)
    keep = store.closure([kept.md5])
    assert len(keep) == 3  # the listing and its two files
    unused = store.unreferenced(keep)
    assert set(unused) == {dropped.md5, hashlib.md5(b"only here\n").hexdigest()}
    store.remove(unused)
    assert store.unreferenced(keep) == {}
    ObjectStore(str(tmp_path / "remote"), tmp_path / "fresh-cache").pull(kept.md5, tmp_path / "back")


def test_run_ids_become_folder_names():
    assert run_key("manual__2026-11-30T21:30:00.123+00:00") == "manual__2026-11-30T21_30_00.123_00_00"
    rid = new_run_id("cli")
    assert rid.startswith("cli__") and run_key(rid) == rid and new_run_id("cli") != rid


def test_checkpoints_travel_through_any_fsspec_url(tmp_path):
    """The workspace store is an fsspec URL: here fsspec's in-memory file system, as an object store would be."""
    stores = Stores(workspaces="memory://sail-test/runs", objects=str(tmp_path / "remote"), local_cache=tmp_path)
    ws = Workspace("cli__ckpt", Workdir(tmp_path / "local"), stores, tmp_path / "objects")
    ckpt = tmp_path / "local" / "models" / "stage1" / "checkpoints"
    (ckpt / "step-2").mkdir(parents=True)
    (ckpt / "step-2" / "state.pt").write_bytes(b"weights")
    ws.save_checkpoints("stage1", ckpt)
    restored = tmp_path / "worker2" / "checkpoints"
    assert ws.restore_checkpoints("stage1", restored)
    assert (restored / "step-2" / "state.pt").read_bytes() == b"weights"
    ws.drop_checkpoints("stage1")
    assert not ws.restore_checkpoints("stage1", tmp_path / "worker3" / "checkpoints")
    ws.write_note({"run_id": "cli__ckpt"})
    import fsspec

    with fsspec.open("memory://sail-test/runs/cli__ckpt/run.json") as f:
        assert json.load(f)["run_id"] == "cli__ckpt"


def test_store_settings_resolve_against_sail_home(monkeypatch, tmp_path):
    from sail_core.config import load_config

    monkeypatch.setenv("SAIL_HOME", str(tmp_path))
    stores = Stores.of(load_config(profile="tiny"))
    assert stores.workspaces == str(tmp_path / "runs") and stores.objects == str(tmp_path / "dvc-remote")
    assert stores.local_cache == tmp_path / "cache"
    per_task = Stores.of(load_config(profile="tiny", overrides={"store.local_cache": "per-task",
                                                               "store.workspaces": "s3://bucket/runs/"}))
    assert per_task.local_cache is None and per_task.workspaces == "s3://bucket/runs"


def test_a_save_killed_halfway_still_leaves_a_checkpoint_to_resume_from(tmp_path, monkeypatch):
    """Killed after the old copy was moved aside and before the new one was moved in: the old one is restored."""
    import fsspec

    stores = Stores(workspaces=str(tmp_path / "store"), objects=str(tmp_path / "remote"), local_cache=tmp_path)
    ws = Workspace("cli__half", Workdir(tmp_path / "local"), stores, tmp_path / "objects")
    ckpt = tmp_path / "local" / "models" / "stage1" / "checkpoints"
    (ckpt / "step-2").mkdir(parents=True)
    (ckpt / "step-2" / "state.pt").write_bytes(b"step 2")
    ws.save_checkpoints("stage1", ckpt)
    (ckpt / "step-4").mkdir()
    (ckpt / "step-4" / "state.pt").write_bytes(b"step 4")
    fs_class = type(fsspec.core.url_to_fs(str(tmp_path))[0])
    real_mv = fs_class.mv

    def mv_then_die(self, src, dst, **kw):
        real_mv(self, src, dst, **kw)
        if str(dst).endswith(".old"):
            raise KeyboardInterrupt("killed")  # stands in for SIGKILL between the two moves

    monkeypatch.setattr(fs_class, "mv", mv_then_die)
    with pytest.raises(KeyboardInterrupt):
        ws.save_checkpoints("stage1", ckpt)
    monkeypatch.undo()
    restored = tmp_path / "worker2" / "checkpoints"
    assert ws.restore_checkpoints("stage1", restored)
    assert (restored / "step-2" / "state.pt").read_bytes() == b"step 2"
    ws.save_checkpoints("stage1", ckpt)  # the retry saves again cleanly
    assert ws.restore_checkpoints("stage1", restored)
    assert (restored / "step-4" / "state.pt").read_bytes() == b"step 4"
