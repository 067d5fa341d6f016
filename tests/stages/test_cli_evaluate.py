"""``mediacheck evaluate``: the champion on a user's own labelled folder, and on a prepared dataset."""

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.settings import get_settings
from pipeline.store import VERDICTS
from pipeline.synthetic import drop_incoming

pytestmark = pytest.mark.slow


@pytest.fixture
def mediacheck(world, mongo_uri, monkeypatch):
    """``mediacheck(*args, database=...)``: the CLI with the trained world's settings and champion, on that database.

    Verdicts go to the test's own database (the ``store`` fixture's), so that the package's other
    tests find only their own in the world's.
    """
    runner = CliRunner()

    def run(*args, database: str):
        monkeypatch.setenv("MONGO_URI", mongo_uri)
        monkeypatch.setenv("MEDIACHECK_MONGO__DATABASE", database)
        get_settings.cache_clear()
        return runner.invoke(app, [str(a) for a in args])

    yield run
    get_settings.cache_clear()


@pytest.fixture
def unseen(tmp_path):
    """Unseen media by name: real and fake videos and images, a chart, and a text file named .mp4."""
    return {path.name: path for path in drop_incoming(tmp_path / "unseen", seed=5)}


def test_a_labelled_folder_is_scored_stored_and_judged(mediacheck, world, store, unseen, tmp_path):
    folder = tmp_path / "mine"
    for name, path in unseen.items():  # class folders as people name them; the chart has no label
        label = "REAL" if "-real." in name else "Fake" if name != "chart.jpg" else ""
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / label / name)
    (folder / "REAL" / "README.txt").write_text("where these came from\n")
    result = mediacheck("evaluate", folder, "--json", tmp_path / "figures.json", database=store.db.name)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "figures.json").read_text())
    assert report["model"]["version"] == world.trained["model"]["version"] and report["source"] == str(folder)
    summary = report["summary"]
    assert summary["media"] == 6 and summary["labels"] == {"real": 3, "fake": 3}
    assert sum(sum(row.values()) for row in summary["confusion"].values()) == 6
    assert 0 <= summary["roc_auc"] <= 1 and summary["roc_auc_note"] is None
    uncertain = summary["confusion"]["real"]["uncertain"] + summary["confusion"]["fake"]["uncertain"]
    assert sum(summary["abstentions"].values()) == uncertain
    assert summary["not_evaluated"] == {"rejected": 1, "not media": 1, "failed": 1}
    fates = {row["uri"]: (row["label"], row["status"]) for row in report["not_evaluated"]}
    assert fates == {
        str(folder / "chart.jpg"): (None, "rejected"),
        str(folder / "REAL" / "README.txt"): ("real", "not media"),
        str(folder / "Fake" / "notes.mp4"): ("fake", "failed"),
    }
    for item in report["items"]:  # full paths, labels from the folders, figures as stored in MongoDB
        stored = store.find_verdict(item["content_id"])
        assert item["uri"] == str(folder / ("REAL" if item["label"] == "real" else "Fake") / stored_name(item))
        assert (item["verdict"], item["probability"], item["reason"], item["model_version"]) == (
            stored["verdict"],
            stored["probability"],
            stored.get("reason"),
            stored["model"]["version"],
        )
    assert "ROC-AUC on P(AI)" in result.stdout and "true label \\ verdict" in result.stdout
    assert "chart.jpg" in result.stdout and "not an image or video" in result.stdout
    assert f"scoring 7 labelled media in {folder}" in result.stderr and "ROC-AUC" not in result.stderr

    # The same media, flat, labelled by a CSV kept elsewhere: no second verdict, the stored ones are judged.
    flat = tmp_path / "flat"
    flat.mkdir()
    labels = tmp_path / "my labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label"])
        for item in report["items"]:
            shutil.copy(item["uri"], flat / stored_name(item))
            writer.writerow([stored_name(item), "AI-generated" if item["label"] == "fake" else "authentic"])
        writer.writerow(["gone.jpg", "real"])
    verdicts = store.count(VERDICTS)
    again = mediacheck("evaluate", flat, "--labels", labels, "--json", tmp_path / "again.json", database=store.db.name)
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "again.json").read_text())
    assert store.count(VERDICTS) == verdicts
    assert second["summary"] | {"not_evaluated": None} == summary | {"not_evaluated": None}
    assert [row["status"] for row in second["not_evaluated"]] == ["rejected"]
    assert "file does not exist" in second["not_evaluated"][0]["reason"]
    by_name = {stored_name(row): row["probability"] for row in report["items"]}
    assert {stored_name(row): row["probability"] for row in second["items"]} == by_name


def stored_name(item: dict) -> str:
    return item["uri"].rsplit("/", 1)[-1]


def test_a_folder_of_one_class_has_no_roc_auc_and_says_why(mediacheck, store, unseen, tmp_path):
    folder = tmp_path / "mine"
    (folder / "real").mkdir(parents=True)
    shutil.copy(unseen["chelsea-real.jpg"], folder / "real")
    result = mediacheck("evaluate", folder, "--json", tmp_path / "figures.json", database=store.db.name)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "figures.json").read_text())["summary"]
    assert summary["roc_auc"] is None and summary["roc_auc_note"] == "only real media: ROC-AUC needs both real and fake"
    assert "only real media" in result.stdout


def test_a_prepared_dataset_is_still_evaluated_on_its_test_split(mediacheck, world, tmp_path):
    dataset_id = world.trained["dataset_id"]
    result = mediacheck(
        "evaluate", "--dataset-id", dataset_id, "--json", tmp_path / "dataset.json", database=world.store.db.name
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "dataset.json").read_text())
    assert report["dataset_id"] == dataset_id
    assert report["model_version"] == world.trained["model"]["version"]
    assert report["metrics"]["n"] > 0 and 0 <= report["metrics"]["accuracy"] <= 1
    assert json.loads(result.stdout) == report
