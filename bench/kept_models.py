"""Where a training benchmark's models are once the run is over (``--keep``), shared by the benchmarks.

A benchmark trains with the product's own stages into a storage root inside its work folder, so
each model is the champion of the MLflow store there (SQLite and artifacts under that root,
unless MLFLOW_TRACKING_URI names another store), with its calibrated bundle cached beside it.
The CLI scores or evaluates with it when pointed at that root (``MEDIACHECK_STORAGE__ROOT``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import tracking
from pipeline.redact import redact
from pipeline.settings import Settings


def add_keep_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work folder with the trained model(s): where they are is printed and recorded in the JSON",
    )


def model_location(settings: Settings) -> dict:
    """The champion trained under ``settings``: storage root, MLflow store, registered name and version, bundle."""
    ref = tracking.champion(settings)
    return {
        "storage_root": str(settings.storage.root),
        "tracking_uri": redact(settings.mlflow_uri),  # the results JSON is committed: no credentials in it
        "registered_model": ref.name,
        "version": ref.version,
        "run_id": ref.run_id,
        "bundle": str(tracking.bundle_folder(settings, ref)),
    }


def print_kept(work: Path, models: dict[str, dict]) -> None:
    """Say where the work folder and each named model (a :func:`model_location`) are, and how to use one."""
    print(f"kept the work folder {work}")
    for name, model in models.items():
        print(
            f"{name}: {model['registered_model']} v{model['version']} in MLflow at {model['tracking_uri']}, "
            f"bundle {model['bundle']}\n"
            f"  use it: MEDIACHECK_STORAGE__ROOT={model['storage_root']} .venv/bin/mediacheck evaluate FOLDER"
        )
