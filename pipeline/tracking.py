"""The one module that talks to MLflow: runs, metrics, artifacts, registry and aliases.

Without configuration it uses SQLite and an artifact folder under ``storage.local_root``.
DagsHub is strictly opt-in: only with ``mlflow.dagshub_repo`` set and a
``DAGSHUB_USER_TOKEN`` in the environment does anything DagsHub-related run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from pipeline.settings import Settings

CHAMPION = "champion"
BUNDLE_PATH = "bundle"
BUNDLE_CACHE_VERSIONS = 3  # model versions whose bundles stay on local disk
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str


def dagshub_enabled(settings: Settings) -> bool:
    return bool(settings.mlflow.dagshub_repo and os.environ.get("DAGSHUB_USER_TOKEN"))


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store (DagsHub when opted in); return the tracking URI."""
    if dagshub_enabled(settings):
        import dagshub

        owner, name = settings.mlflow.dagshub_repo.split("/", 1)
        dagshub.init(repo_owner=owner, repo_name=name, mlflow=True)
    else:
        settings.storage.local_root.mkdir(parents=True, exist_ok=True)
        _set_tracking_uri(settings.mlflow_uri)
    experiment = settings.mlflow.experiment
    if mlflow.get_experiment_by_name(experiment) is None and mlflow.get_tracking_uri().startswith("sqlite"):
        # keep artifacts beside the database, not in the current directory
        mlflow.create_experiment(experiment, artifact_location=(settings.storage.local_root / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    return mlflow.get_tracking_uri()


def _set_tracking_uri(uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect on the environment.

    MLflow also exports the URI as ``MLFLOW_TRACKING_URI``, which every later Settings would
    take for the user's own choice: a second configuration in the same process (another
    storage root) would then log and register into the first one's store.
    """
    before = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop(TRACKING_URI_ENV, None)
    else:
        os.environ[TRACKING_URI_ENV] = before


@contextmanager
def training_run(settings: Settings, *, dataset: dict[str, Any], run_name: str) -> Iterator[str]:
    """Start a run with every setting as a param and the dataset lineage as tags; yield its id."""
    configure(settings)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(_flatten(settings.model_dump(mode="json", include={"prepare", "model", "score"})))
        mlflow.set_tags(
            {
                "dataset_id": dataset["_id"],
                "manifest_hash": dataset["manifest_hash"],
                "split_seed": str(settings.prepare.seed),
                "config_hash": settings.config_hash(),
            }
        )
        yield run.info.run_id


def log_metrics(metrics: dict[str, float], *, step: int | None = None, prefix: str = "") -> None:
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path)


def log_dict(data: dict, file_name: str) -> None:
    mlflow.log_dict(data, file_name)


def log_card(card: dict, markdown: str) -> None:
    """The model card, as the run's ``model_card.json`` and ``model_card.md``."""
    mlflow.log_dict(card, "model_card.json")
    mlflow.log_text(markdown, "model_card.md")


def register_bundle(settings: Settings, model: Any, bundle_dir: Path) -> ModelRef:
    """Log the Keras model and the calibrated bundle, and register a new model version."""
    mlflow.log_artifacts(str(bundle_dir), BUNDLE_PATH)
    info = mlflow.keras.log_model(
        model,
        name="model",
        registered_model_name=settings.mlflow.registered_model,
        pip_requirements=[f"keras=={_version('keras')}", f"tensorflow-cpu=={_version('tensorflow')}"],
    )
    return ModelRef(
        settings.mlflow.registered_model, str(info.registered_model_version), mlflow.active_run().info.run_id
    )


def champion(settings: Settings) -> ModelRef | None:
    """The registered version that currently holds the ``champion`` alias, if any."""
    configure(settings)
    try:
        version = MlflowClient().get_model_version_by_alias(settings.mlflow.registered_model, CHAMPION)
    except MlflowException:
        return None
    return ModelRef(version.name, str(version.version), version.run_id)


def promote(ref: ModelRef, *, reason: str) -> None:
    """Move the ``champion`` alias to ``ref`` and record why."""
    client = MlflowClient()
    client.set_registered_model_alias(ref.name, CHAMPION, ref.version)
    client.set_model_version_tag(ref.name, ref.version, "promotion_reason", reason)


def bundle_folder(settings: Settings, ref: ModelRef) -> Path:
    """A version's calibrated bundle, downloaded once into ``storage.local_root/cache/bundles`` and reused.

    Every task and run of one model version shares the folder. A download lands in a staging
    folder and is renamed into place, so a process killed mid-download, or two downloading at
    once, leave only whole bundles; the ``BUNDLE_CACHE_VERSIONS`` most recently used stay.
    """
    cache = settings.storage.local_root / "cache" / "bundles"
    target = cache / f"{ref.name}-v{ref.version}-{ref.run_id[:12]}"
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                run_id=ref.run_id, artifact_path=BUNDLE_PATH, dst_path=str(staging)
            )
            try:
                Path(downloaded).rename(target)
            except OSError:  # another process put the same version in place first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    os.utime(target)  # most recently used
    _evict(cache)
    return target


def _evict(cache: Path) -> None:
    """Drop all but the most recently used bundles, and staging folders abandoned over an hour ago."""
    bundles = sorted((p for p in cache.iterdir() if not p.name.startswith(".")), key=lambda p: -p.stat().st_mtime)
    abandoned = [p for p in cache.glob(".download-*") if time.time() - p.stat().st_mtime > 3600]
    for folder in bundles[BUNDLE_CACHE_VERSIONS:] + abandoned:
        shutil.rmtree(folder, ignore_errors=True)


def run_url(settings: Settings, run_id: str) -> str | None:
    """Link to a run in the MLflow UI, or None when no UI is configured or the run is unknown."""
    if not settings.mlflow.ui_url:
        return None
    configure(settings)
    try:
        experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    except MlflowException:
        return None
    return f"{settings.mlflow.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_metric(run_id: str, key: str) -> float | None:
    return MlflowClient().get_run(run_id).data.metrics.get(key)


def log_run_metrics(run_id: str, metrics: dict[str, float], *, step: int) -> None:
    """Add metrics to an existing (usually finished) run, e.g. the drift checks of the model it trained."""
    timestamp = int(time.time() * 1000)
    MlflowClient().log_batch(
        run_id, metrics=[Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
    )


def _flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "label_map":
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package if package != "tensorflow" else "tensorflow-cpu")


# -- read-only views for the notebooks ------------------------------------------------------
def model_versions(settings: Settings) -> list[ModelRef]:
    """Every registered version of the detector, newest first."""
    configure(settings)
    name = settings.mlflow.registered_model
    found = MlflowClient().search_model_versions(f"name = '{name}'")
    return sorted((ModelRef(v.name, str(v.version), v.run_id) for v in found), key=lambda r: -int(r.version))


def run_record(run_id: str) -> dict[str, dict[str, Any]]:
    """A run's ``metrics`` (the last value of each), ``params`` and ``tags``."""
    data = MlflowClient().get_run(run_id).data
    return {"metrics": dict(data.metrics), "params": dict(data.params), "tags": dict(data.tags)}


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """Every value logged for one metric of a run, as (step, value) in step order."""
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))
