"""MLflow model registry: versions and the ``challenger`` / ``champion`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sail_core.pipeline.tracking import check_store, configure

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous-champion"


@dataclass(frozen=True)
class ModelRef:
    version: int
    run_id: str


def client(write: bool = False):
    from mlflow import MlflowClient

    configure()
    if write:
        check_store()  # a missing or read-only store: a clear error before anything is written
    return MlflowClient()


def by_alias(model_name: str, alias: str) -> ModelRef | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return ModelRef(int(mv.version), mv.run_id)


def require_version(model_name: str, version: int) -> ModelRef:
    """The registered ``version`` of ``model_name``; LookupError naming the versions there are when it is not one."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        mv = c.get_model_version(model_name, str(version))
    except MlflowException:
        try:
            known = sorted(int(v.version) for v in c.search_model_versions(f"name = '{model_name}'"))
        except MlflowException:
            known = []
        have = f"registered versions: {known}" if known else "no version is registered yet (run the pipeline first)"
        raise LookupError(f"model {model_name!r} has no version {version} in the MLflow registry; {have}. "
                          "`sail promote --version N` takes one of them") from None
    return ModelRef(int(mv.version), mv.run_id)


def register_onnx(run_id: str, onnx_dir: Path, model_name: str, tags: dict[str, str]) -> int:
    """Log the exported ONNX model in ``run_id``, register a version, alias it ``challenger``.

    Raises :class:`~sail_core.pipeline.tracking.StoreUnavailable` before writing anything when the MLflow store
    is missing or read-only; running it again once the store is back registers one version."""
    import mlflow
    import onnx

    configure()
    check_store()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_dir / "model.onnx")),
            name="model",
            pip_requirements=["onnxruntime", "numpy", "tokenizers"],
            extra_files=[str(onnx_dir / "tokenizer.json"), str(onnx_dir / "export.json")],
            save_as_external_data=False,
        )
        mlflow.log_artifacts(str(onnx_dir), artifact_path="onnx")
    mv = mlflow.register_model(info.model_uri, model_name, tags=tags)
    c = client(write=True)
    c.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    return int(mv.version)


def download_onnx(model_name: str, version: int, dest: Path) -> Path:
    """Fetch a version's exported ONNX folder (model.onnx, tokenizer.json, export.json)."""
    import mlflow

    mv = client().get_model_version(model_name, str(version))
    dest.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="onnx", dst_path=str(dest)))


def has_artifact(run_id: str, path: str) -> bool:
    """Whether MLflow run ``run_id`` has a top-level artifact (file or folder) named ``path``."""
    return any(a.path == path for a in client().list_artifacts(run_id))


def download_artifact_dir(model_name: str, version: int, artifact: str, dest: Path) -> Path | None:
    """Fetch the folder ``artifact`` of the version's run (``index``, ``sid``); None when it has none."""
    import mlflow

    mv = client().get_model_version(model_name, str(version))
    if not has_artifact(mv.run_id, artifact):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=artifact, dst_path=str(dest)))


def download_index(model_name: str, version: int, dest: Path) -> Path | None:
    """Fetch the catalogue index (``index/`` of the version's run, written by the index step); None when the
    version was registered before indexes existed."""
    return download_artifact_dir(model_name, version, "index", dest)


def set_champion(model_name: str, version: int) -> int | None:
    """Alias ``version`` as champion; the old champion becomes ``previous-champion``. Returns the old one."""
    c = client(write=True)
    old = by_alias(model_name, CHAMPION)
    if old is not None and old.version != version:
        c.set_registered_model_alias(model_name, PREVIOUS, str(old.version))
    c.set_registered_model_alias(model_name, CHAMPION, str(version))
    return old.version if old else None
