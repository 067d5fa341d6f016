"""The notebooks run top to bottom, as a user's kernel runs them, on this package's world: its dataset and
champion, media it scored, then a second version trained on the same dataset that scores media of its own.

The kernel gets the world's settings through the variables the pipeline reads (nothing is passed to the
notebooks otherwise); every cell tagged ``figure`` must show a plot and every cell tagged ``table`` a table.
"""

import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pipeline import tracking
from pipeline.settings import PROJECT_ROOT, with_overrides
from pipeline.stages import score, train
from pipeline.synthetic import drop_incoming
from tests.conftest import TINY_CONFIG

pytestmark = pytest.mark.slow
NOTEBOOKS = PROJECT_ROOT / "notebooks"
EXPECTED_OUTPUT = {"figure": "image/png", "table": "text/html"}


def _kernel_environment(world, mongo_uri: str) -> dict[str, str]:
    """This process's environment with the pipeline's own variables replaced by the world's."""
    ours = ("MEDIACHECK_", "MONGO_URI", "MLFLOW_TRACKING_URI", "DAGSHUB_USER_TOKEN")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return env | {
        "MEDIACHECK_CONFIG": str(TINY_CONFIG),
        "MEDIACHECK_STORAGE__ROOT": str(world.settings.storage.root),
        "MEDIACHECK_STORAGE__LOCAL_ROOT": str(world.settings.storage.local_root),
        "MEDIACHECK_STORAGE__INCOMING_URI": world.settings.storage.incoming_uri,
        "MONGO_URI": mongo_uri,
        "MEDIACHECK_MONGO__DATABASE": world.store.db.name,
    }


def _execute(name: str, env: dict[str, str], seconds: dict[str, list[float]]) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel started in notebooks/ (as Jupyter starts it); check its outputs."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    started = time.perf_counter()
    in_folder = {"metadata": {"path": str(NOTEBOOKS)}}
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources=in_folder)
    client.execute(env=env)  # a cell that raises fails here, naming the cell
    seconds.setdefault(name, []).append(round(time.perf_counter() - started, 1))
    for cell in (c for c in notebook.cells if c.cell_type == "code"):
        shown = {mime for output in cell.outputs for mime in output.get("data", {})}
        for tag in cell.metadata.get("tags", []):
            assert EXPECTED_OUTPUT[tag] in shown, f"{name}: no {tag} from\n{cell.source}"
    return notebook


def _printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


def _score_new_media(world, folder: Path, seed: int) -> list[dict]:
    """Drop unseen media into a bucket of their own and score them with the current champion."""
    drop_incoming(folder, seed=seed)
    storage = world.settings.storage.model_copy(update={"incoming_uri": folder.as_uri()})
    return score.run(world.settings.model_copy(update={"storage": storage}), world.store)


def test_the_notebooks_run_top_to_bottom_with_one_then_two_model_versions(world, mongo_uri, tmp_path):
    env, seconds = _kernel_environment(world, mongo_uri), {}
    champion = tracking.champion(world.settings)
    first = _score_new_media(world, tmp_path / "first", seed=71)
    assert sum(r["status"] == "scored" for r in first) == 7  # all but a text file named .mp4

    printed = _printed(_execute("01_dataset", env, seconds))
    assert world.trained["dataset_id"] in printed and "nothing quarantined" in printed
    printed = _printed(_execute("02_model", env, seconds))
    assert f"v{champion.version}: MLflow run {champion.run_id}" in printed
    recomputed, recorded = map(float, re.search(r"ROC-AUC ([\d.]+) \(recorded ([\d.]+)\)", printed).groups())
    assert recomputed == pytest.approx(recorded, abs=0.05)  # the ONNX bundle scores as the trained Keras model did
    printed = _printed(_execute("03_verdicts", env, seconds))
    assert f"only one model version is registered (v{champion.version})" in printed

    second = train.run(with_overrides(world.settings, "model", {"head_epochs": 1, "fine_tune_epochs": 0}), world.store)
    challenger = tracking.ModelRef(second["model"]["name"], second["model"]["version"], second["_id"])
    try:  # the second version scores new media as champion, then the world's champion is back
        tracking.promote(challenger, reason="notebook test: a second version scores media")
        later = _score_new_media(world, tmp_path / "second", seed=72)
    finally:
        tracking.promote(champion, reason="notebook test: the world's champion back")
    assert sum(r["status"] == "scored" for r in later) == 7

    verdicts = _execute("03_verdicts", env, seconds)
    pair = rf"v{champion.version} \(champion\) and v{challenger.version}"
    compared = re.search(rf"{pair} on (\d+) media: (\d+) disagree", _printed(verdicts))
    assert compared and int(compared.group(1)) >= 14, _printed(verdicts)  # the media of both batches, rescored
    (scatter,) = [c for c in verdicts.cells if "ax.scatter" in c.source]
    assert any("image/png" in o.get("data", {}) for o in scatter.outputs)
    (by_version,) = [c for c in verdicts.cells if 'pd.crosstab(verdicts["model"]' in c.source]
    table = next(o["data"]["text/plain"] for o in by_version.outputs if o.output_type == "execute_result")
    assert f"v{champion.version}" in table and f"v{challenger.version}" in table  # verdicts of both versions
    print(f"notebook execution seconds: {seconds}")
