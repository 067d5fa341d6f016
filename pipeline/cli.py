"""Command line: the same stages as the DAGs, without Airflow.

Run as ``mediacheck ...`` or ``python -m pipeline ...``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.redact import RedactedStream, configured_secrets
from pipeline.settings import SettingsError, get_settings
from pipeline.store import StoreUnavailable

app = typer.Typer(
    help="Detect AI-generated images and videos: prepare, train, evaluate, score.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
verdicts_app = typer.Typer(help="Query stored verdicts.", no_args_is_help=True)
app.add_typer(verdicts_app, name="verdicts")
# Piped or captured output gets wide lines rather than file names cut short at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
notices = Console(stderr=True)  # progress and notes: stdout stays machine-readable with --format jsonl/csv


@contextmanager
def _store() -> Iterator:
    from pipeline.services import mongo_uri
    from pipeline.store import ResultStore

    settings = get_settings()
    with mongo_uri(settings.mongo.uri, settings.storage.local_root / "mongo") as uri:
        store = ResultStore.from_uri(
            uri, database=settings.mongo.database, retries=settings.mongo.retries, timeout_s=settings.mongo.timeout_s
        )
        try:
            yield store
        finally:
            store.client.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=notices
    )


def _fetch_progress() -> Callable[[int, int], None]:
    """``on_progress`` for frames fetched from a URI root: a bar shown while they come, gone once all are in."""
    progress = _progress()
    task = progress.add_task("fetching frames", total=None)

    def update(done: int, total: int) -> None:
        progress.start()
        progress.update(task, completed=done, total=total)
        if done == total:
            progress.stop()

    return update


@app.command()
def prepare(source: Annotated[str, typer.Argument(help="Folder or s3:// URI of labelled media.")]) -> None:
    """Ingest labelled media into a grouped, balanced, split dataset."""
    from pipeline.stages import prepare as stage

    settings = get_settings()
    with _store() as store, _progress() as progress:
        task = progress.add_task("processing media", total=None)
        summary = stage.run(
            settings, store, source, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    _print_json(summary)


@app.command()
def train(dataset_id: Annotated[str | None, typer.Option(help="Dataset version (default: latest).")] = None) -> None:
    """Two-phase training, calibration, evaluation and registration in MLflow."""
    from pipeline.stages import train as stage

    with _store() as store:
        document = stage.run(get_settings(), store, dataset_id=dataset_id, on_progress=_fetch_progress())
    _print_json(
        {k: document[k] for k in ("_id", "model", "dataset_id", "metrics", "calibration", "promoted", "promotion_rule")}
    )


@app.command()
def evaluate(dataset_id: Annotated[str | None, typer.Option(help="Dataset version (default: latest).")] = None) -> None:
    """Evaluate the champion model on a dataset's test split."""
    from pipeline.model.evaluate import binary_metrics
    from pipeline.stages.score import load_champion
    from pipeline.stages.train import dataset_manifest, resolve_dataset, split_logits

    settings = get_settings()
    with _store() as store:
        dataset = resolve_dataset(store, dataset_id)
    loaded = load_champion(settings)
    manifest = dataset_manifest(settings, dataset, on_progress=_fetch_progress())
    logits, labels = split_logits(loaded.bundle, manifest, "test", settings.model.batch_size)
    metrics = binary_metrics(labels, loaded.bundle.calibration.probability(logits), loaded.bundle.calibration.threshold)
    _print_json({"model_version": loaded.ref.version, "dataset_id": dataset["_id"], "metrics": metrics})


class OutputFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


RESULT_FIELDS = ("uri", "content_id", "status", "verdict", "probability", "ood_score", "reason")


@app.command()
def score(
    path: Annotated[Path | None, typer.Argument(help="File or folder; default: the watched bucket.")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, or one line per item: jsonl or csv (full URIs).")
    ] = OutputFormat.table,
) -> None:
    """Score media and store one verdict per item; what cannot be media is listed with why."""
    from pipeline.stages import score as stage

    settings = get_settings()
    with _store() as store:
        if path is not None and not path.is_dir():
            uris, found = [str(path)], None
        else:  # a folder given here is taken as it is now; the watched bucket waits for copies to settle
            source = None if path is None else "file://" + str(path.resolve())
            found = stage.survey(settings, store, source=source, settle_s=None if path is None else 0)
            uris = found.new
        if found and found.sidecars:
            names = ", ".join(Path(uri).name for uri in found.sidecars[:3]) + (
                ", ..." if len(found.sidecars) > 3 else ""
            )
            notices.print(f"not media, no verdict: {len(found.sidecars)} sidecar file(s) ({names})")
        if found and found.waiting:
            notices.print(f"{len(found.waiting)} file(s) still being written: a later run scores them")
        others = found.not_scored() if found else []
        if not uris:
            notices.print("nothing new to score")
            if others:
                _emit(others, output, title="not scored")
            return
        loaded = stage.load_champion(settings)
        results = []
        with _progress() as progress:
            task = progress.add_task("scoring", total=len(uris))
            for uri in uris:
                results.append(stage.score_uri(uri, loaded, settings, store, settle_s=None if path is None else 0))
                progress.advance(task)
    _emit(results + others, output, title=f"model {loaded.ref.name} v{loaded.ref.version}")


def _emit(rows: list[dict], output: OutputFormat, *, title: str) -> None:
    """Results as a table for people, or as JSON lines / CSV with full URIs for joining with labels."""
    if output == OutputFormat.table:
        _verdict_table(rows, title=title)
    elif output == OutputFormat.jsonl:
        for row in rows:
            sys.stdout.write(json.dumps({k: row.get(k) for k in RESULT_FIELDS}, default=str) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class Band(StrEnum):
    real = "real"
    uncertain = "uncertain"
    fake = "fake"


@verdicts_app.command("list")
def list_verdicts(
    band: Annotated[Band | None, typer.Option(help="Only this verdict band.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Only this model version.")] = None,
    outside: Annotated[
        bool, typer.Option("--outside", help="Only verdicts that abstained: outside the training distribution.")
    ] = False,
    limit: int = 20,
) -> None:
    """Most recent verdicts first."""
    from pipeline.verdicts import OUTSIDE

    with _store() as store:
        rows = store.list_verdicts(
            limit=limit,
            verdict=band.value if band else None,
            model_version=model_version,
            reason=OUTSIDE if outside else None,
        )
    _verdict_table(
        [{**r, "uri": r["source_uri"], "model_version": r["model"]["version"]} for r in rows], title="stored verdicts"
    )


@verdicts_app.command("show")
def show_verdict(
    content_id: Annotated[str, typer.Argument(help="sha256 of the media (a unique prefix works).")],
) -> None:
    """One verdict with its per-frame scores and lineage."""
    with _store() as store:
        document = store.find_verdict_by_prefix(content_id)
    if document is None:
        raise typer.BadParameter(f"no verdict for {content_id}")
    _print_json(document)


@app.command()
def card(
    version: Annotated[str | None, typer.Option(help="Model version (default: the champion).")] = None,
) -> None:
    """Print a registered model's card: training data, test results, abstention, known limits."""
    from pipeline import tracking
    from pipeline.model.card import render_card

    settings = get_settings()
    if version is None:
        champion = tracking.champion(settings)
        if champion is None:
            raise typer.BadParameter("no champion model yet: train one, or give --version")
        version = champion.version
    with _store() as store:
        run = store.training_run_of(name=settings.mlflow.registered_model, version=version)
    if run is None or not run.get("card"):
        raise typer.BadParameter(f"no model card for {settings.mlflow.registered_model} v{version}")
    console.print(render_card(run["card"]), markup=False, highlight=False)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder for the labelled synthetic set.")],
    incoming: Annotated[Path | None, typer.Option(help="Also drop unseen media here.")] = None,
) -> None:
    """Generate the small synthetic labelled set used by the demo."""
    from pipeline.synthetic import drop_incoming, make_labelled_set

    made = make_labelled_set(out)
    console.print(f"wrote {made.images} images and {made.videos} videos with {made.labels_csv}")
    if incoming:
        console.print(f"dropped {len(drop_incoming(incoming))} files into {incoming}")


def _verdict_table(rows: list[dict], *, title: str) -> None:
    table = Table(title=title)
    for column in ("file", "verdict", "p(fake)", "why", "ood score", "content id"):
        table.add_column(column)
    colours = {"fake": "red", "real": "green", "uncertain": "yellow"}
    for row in rows:
        verdict = row.get("verdict") or "-"
        probability, ood = row.get("probability"), row.get("ood_score")
        why = row.get("reason") or row.get("status", "")
        table.add_row(
            Path(str(row["uri"])).name,
            f"[{colours.get(verdict, 'white')}]{verdict}[/]",
            "-" if probability is None else f"{probability:.3f}",
            f"provenance: {why}" if row.get("basis") == "provenance" else why,
            "-" if ood is None else f"{ood:.3g}",
            (row.get("content_id") or "-")[:12],
        )
    console.print(table)


def _print_json(data: dict) -> None:
    console.print_json(json.dumps(data, default=str))


def main() -> None:
    from pipeline.prepare.sources import PrepareError

    try:
        hidden = configured_secrets(get_settings())  # MLflow, for one, prints its tracking URI as given
        sys.stdout, sys.stderr = RedactedStream(sys.stdout, hidden), RedactedStream(sys.stderr, hidden)
        app()
    except (SettingsError, PrepareError) as error:  # the message says what to change: no traceback
        notices.print(f"[red]{error}[/]")
        raise SystemExit(2) from None
    except StoreUnavailable as error:
        notices.print(f"[red]{error}[/]")
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
