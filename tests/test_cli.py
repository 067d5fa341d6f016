"""The command line over real stored verdicts: machine-readable listings and option checks."""

import csv
import io
import json
import re

import pytest
from typer.testing import CliRunner

from pipeline.cli import VERDICT_FIELDS, app
from pipeline.prepare.sources import PrepareError
from pipeline.settings import get_settings
from pipeline.store import VERDICTS


@pytest.fixture
def cli(settings, scored_verdicts, mongo_uri, monkeypatch):
    """The CLI on the session's scored verdicts; returns a runner of ``mediacheck ARGS``."""
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("MEDIACHECK_MONGO__DATABASE", scored_verdicts.database)
    get_settings.cache_clear()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def said(result) -> str:
    """An error as one line: the message without the box typer draws around it, nor its line breaks."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())


def stored(scored_verdicts) -> dict[str, dict]:
    return {d["_id"]: d for d in scored_verdicts.store.db[VERDICTS].find({}, {"frames": 0, "evidence": 0})}


def test_verdicts_list_as_json_lines_gives_full_uris_and_stored_probabilities(cli, scored_verdicts):
    result = cli("verdicts", "list", "--format", "jsonl", "--limit", "100")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    documents = stored(scored_verdicts)
    assert len(lines) == len(documents) == len(scored_verdicts.dropped)
    assert {line["uri"] for line in lines} == {path.as_uri() for path in scored_verdicts.dropped}  # folders kept
    for line in lines:
        assert list(line) == list(VERDICT_FIELDS)
        document = documents[line["content_id"]]
        assert line["probability"] == document.get("probability") and line["verdict"] == document["verdict"]
        assert (line["status"], line["reason"], line["model_version"]) == (
            document["status"],
            document.get("reason"),
            "1",
        )
    assert any(line["status"] == "failed" and line["probability"] is None for line in lines)  # notes.mp4


def test_verdicts_list_as_csv_has_a_header_and_one_row_per_verdict(cli, scored_verdicts):
    result = cli("verdicts", "list", "--format", "csv", "--limit", "100")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == ",".join(VERDICT_FIELDS)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    documents = stored(scored_verdicts)
    assert {row["content_id"] for row in rows} == set(documents)
    for row in rows:
        document = documents[row["content_id"]]
        assert row["uri"] == document["source_uri"] and row["uri"].startswith("file:///")
        if document["status"] == "scored":
            assert float(row["probability"]) == document["probability"]  # written in full, not rounded


def test_verdicts_list_filters_by_band_and_limit(cli, scored_verdicts):
    band = next(d["verdict"] for d in stored(scored_verdicts).values() if d["status"] == "scored")
    result = cli("verdicts", "list", "--band", band, "--format", "jsonl", "--model-version", "1")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and {line["verdict"] for line in lines} == {band}
    limited = cli("verdicts", "list", "--format", "jsonl", "--limit", "2")
    assert len(limited.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--band", "Fake"),
            "Invalid value for '--band': Value error, 'Fake' is not one of 'real', 'uncertain', 'fake'",
        ),
        (("--model-version", "99"), "no verdicts by model version 99; versions with verdicts: 1"),
        (("--limit", "0"), "Invalid value for '--limit'"),
        (("--format", "xml"), "'xml' is not one of 'table', 'jsonl', 'csv'"),
    ],
)
def test_verdicts_list_refuses_wrong_options_and_names_the_choices(cli, args, message):
    result = cli("verdicts", "list", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert message in said(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{folder}", "--dataset-id", "ds-1"), "give a FOLDER of labelled media or --dataset-id, not both"),
        (("--labels", "{labels}"), "Invalid value for '--labels': needs a FOLDER"),
        (("{folder}/absent",), "is not a folder"),
        (("{folder}", "--labels", "{folder}/absent.csv"), "does not exist"),
        (("{folder}",), "no labelled media in"),  # files, but no class folder nor labels.csv names their label
    ],
)
def test_evaluate_refuses_what_it_cannot_evaluate_before_scoring(settings, tmp_path, args, message):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"\xff\xd8")
    labels = tmp_path / "labels.csv"
    labels.write_text("file_name,label\nphoto.jpg,real\n")
    result = CliRunner().invoke(app, ["evaluate", *(a.format(folder=folder, labels=labels) for a in args)])
    assert result.exit_code == 2 and message in said(result), result.output


def test_evaluate_csv_outside_the_folder_with_an_unknown_label_names_the_accepted_ones(settings, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    labels = tmp_path.parent / f"{tmp_path.name}-labels.csv"
    labels.write_text("file_name,label\nphoto.jpg,maybe\n")
    with pytest.raises(PrepareError, match="label 'maybe' is not a known label.*real: 0"):
        CliRunner().invoke(app, ["evaluate", str(tmp_path), "--labels", str(labels)], catch_exceptions=False)


def test_evaluate_without_a_champion_says_to_train_one(settings, tmp_path):
    (tmp_path / "REAL").mkdir()
    (tmp_path / "REAL" / "photo.jpg").write_bytes(b"\xff\xd8")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "train a model first" in said(result)
