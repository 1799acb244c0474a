"""The pipeline run's record in MLflow (real sqlite store): resolved configuration, git sha, dirty-tree tag."""

from __future__ import annotations

import subprocess

import yaml

from sail_core.config import load_config
from sail_core.pipeline import tracking


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_git_dirty_sees_uncommitted_changes_to_tracked_files(tmp_path):
    assert tracking.git_dirty(tmp_path) is None  # not a git checkout
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-qm", "a")
    assert tracking.git_dirty(tmp_path) is False
    (tmp_path / "untracked.txt").write_text("not code\n")
    assert tracking.git_dirty(tmp_path) is False
    (tmp_path / "a.txt").write_text("two\n")
    assert tracking.git_dirty(tmp_path) is True


def test_pipeline_run_records_its_resolved_configuration(tmp_path):
    from mlflow import MlflowClient

    cfg = load_config(profile="tiny", overrides={"train.seed": 7})
    run_id = tracking.start_pipeline_run(cfg, "manual__record", {"sail.airflow_run_id": "manual__record"})
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["sail.run_id"] == "manual__record"
    assert run.data.tags["sail.git_sha"] == tracking.git_sha()
    assert run.data.tags["sail.git_dirty"] in {"true", "false"}
    text = MlflowClient().download_artifacts(run_id, "record/config.resolved.yaml", str(tmp_path))
    recorded = yaml.safe_load(open(text).read())
    assert recorded == cfg.model_dump(mode="json") and recorded["train"]["seed"] == 7
    # later tasks find the run by its id, and `sail reproduce` loads the recorded configuration back
    assert tracking.find_run("manual__record") == run_id and tracking.find_run(run_id) == run_id
    assert tracking.find_run("manual__other") is None
    assert tracking.recorded_config(run_id) == cfg
