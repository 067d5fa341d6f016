"""Helpers for the notebooks in ``notebooks/``: find the pipeline's records the way its commands do and
shape them into pandas tables and figures.

Read-only: nothing here records a dataset, a run or a verdict. MongoDB is reached only through
:class:`pipeline.store.ResultStore` and MLflow only through :mod:`pipeline.tracking`; what would
cost a TensorFlow or ONNX Runtime import is imported where it is used.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from upath import UPath

from pipeline import services
from pipeline.prepare.sources import LABEL_NAMES
from pipeline.redact import redact
from pipeline.settings import DEFAULT_CONFIG, Settings
from pipeline.store import ResultStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipeline.stages.score import LoadedModel

BANDS = ("real", "uncertain", "fake", "failed")  # a verdict's band; failed: no verdict (not media, unreadable)
BAND_COLOURS = {"real": "tab:green", "uncertain": "tab:orange", "fake": "tab:red", "failed": "tab:gray"}
TIME_BINS = ("1min", "10min", "1h", "6h", "1D", "7D", "30D")  # from finest: the first that gives <= MAX_BINS
MAX_BINS = 48


def open_store(settings: Settings) -> ResultStore:
    """The pipeline's MongoDB database, found as the ``mediacheck`` command finds it.

    ``mongo.uri`` (``MONGO_URI``) when set; else the embedded server that ``make up`` runs over
    ``storage.local_root/mongo``; else an embedded server started over that same folder, which
    stays up as long as this Python process: stopped at its exit, or, in a notebook, with the
    kernel's other child processes when the kernel shuts down (its URI file is then left behind,
    and the next command that looks for a running server finds it stale and starts one).
    """
    held = ExitStack()
    atexit.register(held.close)
    return held.enter_context(services.open_store(settings))


def where(settings: Settings, store: ResultStore) -> str:
    """Which configuration, MongoDB database and MLflow store a notebook reads (no credentials)."""
    dagshub = settings.mlflow.dagshub_repo
    mlflow = redact(settings.mlflow_uri) + (f" (DagsHub {dagshub} where DAGSHUB_USER_TOKEN is set)" if dagshub else "")
    return "\n".join(
        [
            f"config:  {os.environ.get('MEDIACHECK_CONFIG', DEFAULT_CONFIG)}",
            f"MongoDB: {store.server}, database {store.db.name!r}",
            f"MLflow:  {mlflow}, model {settings.mlflow.registered_model!r}",
        ]
    )


# -- datasets --------------------------------------------------------------------------
def read_manifest(dataset: dict[str, Any]) -> pd.DataFrame:
    """A recorded dataset's manifest (one row per frame), from a folder or a URI root, frames not fetched."""
    with UPath(dataset["manifest_path"]).open("rb") as handle:
        return pd.read_parquet(handle)


def source_of(uri: str, root: str) -> str:
    """The first folder of ``uri`` under the dataset's source ``root`` ("." for a file directly in it)."""
    uri, root = uri.removeprefix("file://"), root.removeprefix("file://").rstrip("/") + "/"
    if not uri.startswith(root):
        return uri.rsplit("/", 2)[-2] if uri.count("/") >= 2 else "."
    folder, _, _ = uri[len(root) :].rpartition("/")
    return folder.split("/", 1)[0] or "."


def media_items(manifest: pd.DataFrame, source_root: str) -> pd.DataFrame:
    """One row per media item of a manifest: its class name, split, kind, source folder, generator
    (``method``, where the labels name one), size, and how many distinct frames it gave."""
    frames = manifest.groupby("content_id")["frame_path"].nunique().rename("frames")
    items = manifest.drop_duplicates("content_id").set_index("content_id").join(frames).reset_index()
    items["class"] = items["label"].map(LABEL_NAMES)
    items["source"] = [source_of(uri, source_root) for uri in items["source_uri"]]
    method = items["method"] if "method" in items else pd.Series("", index=items.index)
    items["method"] = method.fillna("").replace("", "-")
    columns = ["content_id", "class", "split", "kind", "source", "method", "width", "height", "duration_s", "frames"]
    return items[columns]


def frame_samples(manifest: pd.DataFrame, *, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` frames of each class, each from a different media item where possible."""
    firsts = manifest.drop_duplicates("content_id")
    picked = [
        group.sample(min(per_class, len(group)), random_state=seed) for _, group in firsts.groupby("label", sort=True)
    ]
    return pd.concat(picked, ignore_index=True) if picked else firsts.head(0)


def image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str], *, columns: int = 6, title: str = "", size: float = 1.9
) -> Figure:
    """Images in rows of ``columns``, each with a small title (a pyplot figure: a notebook shows it)."""
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, (size + 0.3) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_frames(settings: Settings, paths: Sequence[str]) -> list[np.ndarray]:
    """Stored frames as RGB arrays; frames under a URI root are fetched once into the local cache."""
    from pipeline import storage
    from pipeline.media.images import decode_jpeg

    local = storage.local_copies(list(paths), settings.storage.local_root / "cache" / "frames")
    return [decode_jpeg(Path(path).read_bytes()) for path in local]


# -- models ----------------------------------------------------------------------------
def worst_errors(labels: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` most confident mistakes (probability more than 0.5 away from the label)."""
    error = np.abs(np.asarray(labels, np.float64) - np.asarray(probs, np.float64))
    order = np.argsort(-error, kind="stable")
    return order[error[order] > 0.5][:count]


# -- verdicts --------------------------------------------------------------------------
def verdict_table(verdicts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Stored verdicts (as ``ResultStore.list_verdicts`` returns them) as a table, one row each."""
    rows = [
        {
            "scored_at": v.get("scored_at") or v.get("created_at"),
            "file": v["source_uri"].rsplit("/", 1)[-1],
            "kind": v.get("kind"),
            "band": v.get("verdict") or "failed",
            "probability": v.get("probability"),
            "model_verdict": v.get("model_verdict"),
            "reason": v.get("reason"),
            "model": f"v{v['model']['version']}" if v.get("model") else None,
            "content_id": v["_id"],
        }
        for v in verdicts
    ]
    columns = ["scored_at", "file", "kind", "band", "probability", "model_verdict", "reason", "model", "content_id"]
    table = pd.DataFrame(rows, columns=columns)
    table["scored_at"] = pd.to_datetime(table["scored_at"], utc=True)
    return table.sort_values("scored_at", ascending=False, ignore_index=True)


def time_bin(first: pd.Timestamp, last: pd.Timestamp) -> str:
    """The finest of ``TIME_BINS`` that covers ``first`` to ``last`` in at most ``MAX_BINS`` bins."""
    span = last - first
    return next((freq for freq in TIME_BINS if span <= MAX_BINS * pd.Timedelta(freq)), TIME_BINS[-1])


def counts_over_time(table: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Verdicts per time bin (rows, every bin from the first verdict's to the last's) and band (columns,
    every band), from :func:`verdict_table`; ``freq`` defaults to :func:`time_bin`'s choice."""
    if table.empty:
        return pd.DataFrame(columns=list(BANDS), dtype=int)
    first, last = table["scored_at"].min(), table["scored_at"].max()
    freq = freq or time_bin(first, last)
    counts = pd.crosstab(table["scored_at"].dt.floor(freq), table["band"])
    every_bin = pd.date_range(first.floor(freq), last.floor(freq), freq=freq)  # quiet bins too, as zeros
    counts = counts.reindex(index=every_bin, columns=list(BANDS), fill_value=0)
    return counts.rename_axis(index=f"scored ({freq} bins)", columns=None)


def rescore(verdicts: Sequence[dict[str, Any]], loaded: LoadedModel, settings: Settings) -> pd.DataFrame:
    """Score the media behind stored verdicts again with ``loaded``'s model, storing nothing.

    Each item is read from the first of its recorded locations that still holds the same content;
    items found nowhere (moved, deleted, or in a bucket this process has no credentials for), or that
    failed to score before, are left out.
    """
    from pipeline import bucket
    from pipeline.media.images import MediaError
    from pipeline.stages.score import score_content

    rows = []
    for verdict in verdicts:
        if verdict.get("status") != "scored":
            continue
        for uri in dict.fromkeys([verdict["source_uri"], *verdict.get("sources", [])]):
            try:
                obj = bucket.stat_object(uri)
            except Exception:  # noqa: BLE001  (unreachable here: no credentials, no network; try the next location)
                continue
            if obj is None:
                continue
            try:
                with bucket.materialised(
                    obj, max_bytes=settings.score.max_object_mb * 2**20, spool_dir=settings.storage.local_root / "spool"
                ) as item:
                    if item.path is None or item.content_id != verdict["_id"]:
                        continue
                    fields, _ = score_content(item.path, verdict["kind"], loaded.bundle, settings, {})
            except (bucket.ObjectError, MediaError):
                continue
            rows.append(
                {
                    "content_id": verdict["_id"],
                    "file": uri.rsplit("/", 1)[-1],
                    "model": f"v{loaded.ref.version}",
                    "probability": fields["probability"],
                    "verdict": fields["verdict"],
                }
            )
            break
    return pd.DataFrame(rows, columns=["content_id", "file", "model", "probability", "verdict"])


def frame_timeline(verdict: dict[str, Any]) -> Figure:
    """A scored video's P(fake) frame by frame (a full verdict, ``ResultStore.find_verdict``) over its verdict
    bands, with the video's own score as a dashed line (a pyplot figure: a notebook shows it)."""
    import matplotlib.pyplot as plt

    bands, frames = verdict["bands"], verdict["frames"]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    edges = {"real": (0, bands["real_below"]), "uncertain": (bands["real_below"], bands["fake_from"]),
             "fake": (bands["fake_from"], 1)}  # fmt: skip
    for band, (low, high) in edges.items():
        ax.axhspan(low, high, color=BAND_COLOURS[band], alpha=0.15, label=f"{band} band")
    times, probabilities = [f["time_s"] for f in frames], [f["probability"] for f in frames]
    ax.plot(times, probabilities, "o-", color="black", label="frame P(fake)")
    ax.axhline(verdict["probability"], linestyle="--", color="black", linewidth=1,
               label=f"video ({verdict.get('aggregation', 'score')})")  # fmt: skip
    name = verdict["source_uri"].rsplit("/", 1)[-1]
    ax.set(xlabel="time (s)", ylabel="P(fake)", ylim=(0, 1),
           title=f"{name}: {verdict['verdict']} (model v{verdict['model']['version']})")  # fmt: skip
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def evidence_images(verdict: dict[str, Any]) -> tuple[list[np.ndarray], list[str]]:
    """The evidence frames a full verdict (``ResultStore.find_verdict``) keeps, each followed by its
    Grad-CAM overlay where there is one, with captions."""
    from pipeline.media.images import decode_jpeg

    images, titles = [], []
    for evidence in verdict.get("evidence", []):
        images.append(decode_jpeg(evidence["jpeg"]))
        titles.append(f"{evidence['time_s']:.1f} s: P(fake) {evidence['probability']:.2f}")
        if evidence.get("gradcam_jpeg"):
            images.append(decode_jpeg(evidence["gradcam_jpeg"]))
            titles.append("Grad-CAM")
    return images, titles


def side_by_side(scores: pd.DataFrame) -> pd.DataFrame:
    """Rescored media (:func:`rescore` of several versions, concatenated) one row each: every version's
    verdict and probability, and whether the verdicts differ; disagreements first."""
    wide = scores.pivot(index=["content_id", "file"], columns="model", values=["verdict", "probability"])
    wide.columns = [f"{value} {model}" for value, model in wide.columns]
    verdicts = wide[[c for c in wide.columns if c.startswith("verdict ")]]
    wide["disagree"] = verdicts.nunique(axis=1) > 1
    return wide.reset_index().sort_values(["disagree", "file"], ascending=[False, True], ignore_index=True)
