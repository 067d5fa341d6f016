"""Command line: the same stages as the DAGs, without Airflow.

Run as ``mediacheck ...`` or ``python -m pipeline ...``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.redact import RedactedStream, configured_secrets
from pipeline.settings import SettingsError, get_settings
from pipeline.store import ResultStore, StoreUnavailable

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


def _store() -> AbstractContextManager[ResultStore]:
    from pipeline.services import open_store

    return open_store(get_settings())


def _note(text: str) -> None:
    """A note on stderr; the paths in it stay whole (one line, never read as markup) for copying."""
    notices.print(text, markup=False, soft_wrap=True)


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
def prepare(
    source: Annotated[str, typer.Argument(help="Folder or s3:// URI of labelled media.")],
    labels: Annotated[
        str | None,
        typer.Option(
            help="CSV of file_name,label[,group][,split][,method] (path or URI; names relative to SOURCE), such "
            "as Kaggle's train.csv; default: a labels.csv inside SOURCE, else its class folders."
        ),
    ] = None,
) -> None:
    """Ingest labelled media into a grouped, balanced, split dataset."""
    from pipeline.stages import prepare as stage

    settings = get_settings()
    with _store() as store, _progress() as progress:
        task = progress.add_task("processing media", total=None)
        summary = stage.run(
            settings,
            store,
            source,
            labels_csv=labels,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
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
def evaluate(
    folder: Annotated[
        str | None,
        typer.Argument(
            help="Folder or s3:// URI of your labelled media: class folders (REAL/, FAKE/, ...) or a labels.csv, "
            "as prepare reads them. Scored with the champion; verdicts are stored as by score.",
            metavar="FOLDER",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV of file_name,label for FOLDER (file names relative to it); default: FOLDER's own layout.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    dataset_id: Annotated[
        str | None, typer.Option(help="Instead of FOLDER: a prepared dataset's test split (default: the latest).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here as JSON (for FOLDER: one row per item).")
    ] = None,
) -> None:
    """How the champion does on labelled media: your own FOLDER, or a prepared dataset's test split."""
    if folder is not None and dataset_id is not None:
        raise typer.BadParameter("give a FOLDER of labelled media or --dataset-id, not both", param_hint="FOLDER")
    if labels is not None and folder is None:
        raise typer.BadParameter("needs a FOLDER: the CSV's file names are relative to it", param_hint="'--labels'")
    if folder is None:
        report = _evaluate_dataset(dataset_id)
        _print_json(report)
    else:
        report = _evaluate_folder(folder, labels)
        _print_evaluation(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        _note(f"figures written to {json_path}")


def _evaluate_dataset(dataset_id: str | None) -> dict:
    """The champion on a prepared dataset's test split, frame by frame at the decision threshold."""
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
    return {"model_version": loaded.ref.version, "dataset_id": dataset["_id"], "metrics": metrics}


def _evaluate_folder(folder: str, labels_csv: Path | None) -> dict:
    """Score every labelled item of ``folder`` with the champion and judge the stored verdicts against the labels.

    What cannot be judged (no label, not media, failed or skipped by scoring) is listed with why.
    """
    from pipeline.bucket import SIDECAR_SUFFIXES
    from pipeline.model.evaluate import verdict_metrics
    from pipeline.prepare.sources import LABEL_NAMES
    from pipeline.settings import with_overrides
    from pipeline.stages import score as stage

    # Evaluation reads the user's folder: its files never move, whatever score.after_scoring says for the bucket.
    settings = with_overrides(get_settings(), "score", {"after_scoring": "keep"})
    items, rejected = _labelled_media(folder, labels_csv, settings.prepare.label_map)
    not_evaluated = [{"uri": r.uri, "label": None, "status": "rejected", "reason": r.reason} for r in rejected]
    media = []
    for item in items:
        if Path(item.uri).suffix.lower() in SIDECAR_SUFFIXES:  # as score does: notes and manifests get no verdict
            not_evaluated.append(
                {"uri": item.uri, "label": LABEL_NAMES[item.label], "status": "not media", "reason": "sidecar file"}
            )
        else:
            media.append(item)
    if not media:
        raise typer.BadParameter(
            f"no labelled media in {folder}: name class folders (real/, fake/, ...), put a labels.csv "
            "(file_name,label) in it, or give --labels",
            param_hint="FOLDER",
        )
    try:
        loaded = stage.load_champion(settings)
    except stage.NoModelError as error:
        notices.print(f"[red]{error}[/]")
        raise typer.Exit(1) from None
    _note(f"scoring {len(media)} labelled media in {folder} with {loaded.ref.name} v{loaded.ref.version}")
    results = []
    with _store() as store, _progress() as progress:
        task = progress.add_task("scoring", total=len(media))
        for item in media:
            results.append(stage.score_uri(item.uri, loaded, settings, store, settle_s=0))
            progress.advance(task)
        # Verdicts are kept by content: media scored before (by this or an earlier model) keep their verdict.
        verdicts = store.verdicts_by_id([r["content_id"] for r in results if r.get("content_id")])
    judged = []
    for item, result in zip(media, results, strict=True):
        stored = verdicts.get(result.get("content_id"))
        if stored is not None and stored["status"] == "scored":
            judged.append((item, stored))
        else:
            fate = stored or result
            not_evaluated.append(
                {
                    "uri": item.uri,
                    "label": LABEL_NAMES[item.label],
                    "status": fate["status"],
                    "reason": fate.get("reason"),
                }
            )
    rows = [
        {
            "uri": item.uri,
            "content_id": stored["_id"],
            "label": LABEL_NAMES[item.label],
            "verdict": stored["verdict"],
            "probability": stored["probability"],
            "reason": stored.get("reason"),
            "basis": stored.get("basis"),
            "model_version": stored["model"]["version"],
        }
        for item, stored in judged
    ]
    summary = verdict_metrics(
        [item.label for item, _ in judged],
        [row["probability"] for row in rows],
        [row["verdict"] for row in rows],
        [row["reason"] for row in rows],
    )
    return {
        "model": {"name": loaded.ref.name, "version": loaded.ref.version},
        "source": folder,
        "labels_csv": None if labels_csv is None else str(labels_csv),
        "summary": summary
        | {
            "model_versions": dict(Counter(r["model_version"] for r in rows)),
            "not_evaluated": dict(Counter(r["status"] for r in not_evaluated)),
        },
        "not_evaluated": not_evaluated,
        "items": rows,
    }


def _print_evaluation(report: dict) -> None:
    """The summary and the confusion matrix as tables; what was not evaluated, and why, below them."""
    from pipeline.model.evaluate import VERDICT_BANDS

    summary, model = report["summary"], report["model"]
    table = Table(title=f"{model['name']} v{model['version']} on labelled media")
    table.add_column("figure")
    table.add_column("value", justify="right")
    labels = summary["labels"]
    table.add_row("media evaluated", f"{summary['media']} ({labels['real']} real, {labels['fake']} fake)")
    roc_auc = summary["roc_auc"]
    table.add_row("ROC-AUC on P(AI)", f"- ({summary['roc_auc_note']})" if roc_auc is None else f"{roc_auc:.4f}")
    for name, key in (
        ("coverage: confident verdicts", "coverage"),
        ("accuracy on covered media", "confident_accuracy"),
        ("confidently wrong, of all media", "confident_wrong_rate"),
    ):
        table.add_row(name, "-" if summary[key] is None else f"{summary[key]:.1%}")
    for reason, count in summary["abstentions"].items():
        table.add_row(f"uncertain: {reason}", str(count))
    by_status = ", ".join(f"{status} {count}" for status, count in summary["not_evaluated"].items())
    table.add_row("not evaluated", f"{len(report['not_evaluated'])} ({by_status})" if by_status else "0")
    console.print(table)
    confusion = Table(title="confusion matrix")
    confusion.add_column("true label \\ verdict")
    for band in VERDICT_BANDS:
        confusion.add_column(band, justify="right")
    for label, counts in summary["confusion"].items():
        confusion.add_row(label, *(str(counts[band]) for band in VERDICT_BANDS))
    console.print(confusion)
    if report["not_evaluated"]:
        skipped = Table(title="not evaluated")
        skipped.add_column("file", overflow="fold")  # the whole path: the user finds the file by it
        for column in ("label", "status", "why"):
            skipped.add_column(column)
        for row in report["not_evaluated"]:
            skipped.add_row(row["uri"], row["label"] or "-", row["status"], row["reason"] or "")
        console.print(skipped)
    others = {v: n for v, n in summary["model_versions"].items() if v != model["version"]}
    if others:
        given = ", ".join(f"{n} by v{v}" for v, n in others.items())
        _note(f"verdicts are kept by content: {given} (scored before, not again by v{model['version']})")


def _labelled_media(folder: str, labels_csv: Path | None, label_map: dict[str, int]) -> tuple[list, list]:
    """FOLDER's labelled files and those it cannot label, read by prepare's own code."""
    from pipeline.prepare import sources

    try:
        return sources.discover(folder, label_map, labels_csv=None if labels_csv is None else str(labels_csv))
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error), param_hint="FOLDER") from None


class OutputFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


RESULT_FIELDS = ("uri", "content_id", "status", "verdict", "probability", "ood_score", "reason")
VERDICT_FIELDS = (*RESULT_FIELDS, "model_version")  # stored verdicts also say which model gave them


@app.command()
def score(
    path: Annotated[Path | None, typer.Argument(help="File or folder; default: the watched bucket.")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, or one line per item: jsonl or csv (full URIs).")
    ] = OutputFormat.table,
) -> None:
    """Score media and store one verdict per item; what cannot be media is listed with why.

    Then the media the champion scored most recently are checked for drift from its training data (a note
    on stderr when they have drifted)."""
    from pipeline.stages import drift as drift_stage
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
        checked = drift_stage.check(settings, store, loaded=loaded)
    _emit(results + others, output, title=f"model {loaded.ref.name} v{loaded.ref.version}")
    if checked and checked.drifted:
        notices.print(f"[yellow]{checked.summary()}[/]\n(details: mediacheck drift)", highlight=False)


def _emit(rows: list[dict], output: OutputFormat, *, title: str, fields: tuple[str, ...] = RESULT_FIELDS) -> None:
    """Results as a table for people, or as JSON lines / CSV with full URIs for joining with labels."""
    if output == OutputFormat.table:
        _verdict_table(rows, title=title)
    elif output == OutputFormat.jsonl:
        for row in rows:
            sys.stdout.write(json.dumps({k: row.get(k) for k in fields}, default=str) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class Band(StrEnum):
    real = "real"
    uncertain = "uncertain"
    fake = "fake"


@verdicts_app.command("list")
def list_verdicts(
    band: Annotated[Band | None, typer.Option(help="Only this verdict band.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Only this model version (one that has verdicts).")] = None,
    outside: Annotated[
        bool, typer.Option("--outside", help="Only verdicts that abstained: outside the training distribution.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many verdicts.")] = 20,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, or one line per verdict: jsonl or csv (full URIs).")
    ] = OutputFormat.table,
) -> None:
    """Most recent verdicts first."""
    from pipeline.verdicts import OUTSIDE

    with _store() as store:
        if model_version is not None:
            versions = store.model_versions()
            if model_version not in versions:  # a filter matching nothing would print an empty list, not an error
                raise typer.BadParameter(
                    f"no verdicts by model version {model_version}; versions with verdicts: "
                    + (", ".join(versions) or "none yet"),
                    param_hint="'--model-version'",
                )
        rows = store.list_verdicts(
            limit=limit,
            verdict=band.value if band else None,
            model_version=model_version,
            reason=OUTSIDE if outside else None,
        )
    _emit(
        [{**r, "uri": r["source_uri"], "model_version": r["model"]["version"]} for r in rows],
        output,
        title="stored verdicts",
        fields=VERDICT_FIELDS,
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


class DriftFormat(StrEnum):
    table = "table"
    json = "json"


@app.command()
def drift(
    output: Annotated[DriftFormat, typer.Option("--format", help="table, or the stored check as JSON.")] = (
        DriftFormat.table
    ),
) -> None:
    """Compare the media the champion scored most recently with its training data; exit code 1 when drifted."""
    from pipeline.stages import drift as stage

    settings = get_settings()
    with _store() as store:
        found = stage.check(settings, store)
    if found is None:
        _note("nothing to compare: no champion yet, a model from before drift monitoring, or nothing scored by it")
        return
    if output == DriftFormat.json:
        document = found.document(settings)
        document["window"].pop("content_ids")
        sys.stdout.write(json.dumps(document, default=str) + "\n")
    else:
        table = Table(title=found.summary())
        for column in ("statistic", "PSI", "test p", "drifted", "training -> recent"):
            table.add_column(column)
        for s in found.statistics:
            if s.note:
                table.add_row(s.statistic, "-", "-", "-", s.note)
            else:
                flag = "[red]drifted[/]" if s.drifted else "no"
                table.add_row(s.statistic, f"{s.psi:.2f}", f"{s.p_value:.2g} ({s.test})", flag, s.movement())
        console.print(table)
    if found.drifted:
        raise typer.Exit(1)


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
