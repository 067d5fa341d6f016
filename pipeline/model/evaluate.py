"""Metrics and plots for a binary real/fake detector on a held-out split, and for verdicts on labelled media."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402

from pipeline.media.images import decode_jpeg  # noqa: E402
from pipeline.prepare.sources import LABEL_NAMES  # noqa: E402
from pipeline.verdicts import BETWEEN, OUTSIDE, selective_metrics  # noqa: E402

VERDICT_BANDS = ("real", "uncertain", "fake")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, ROC-AUC, AP, log loss, TPR at 5% FPR, confusion counts."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, np.float64)
    predicted = (probs >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    result = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted, zero_division=0),
        "recall": skm.recall_score(labels, predicted, zero_division=0),
        "f1": skm.f1_score(labels, predicted, zero_division=0),
        "log_loss": skm.log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1]),
        "threshold": threshold,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "n": len(labels),
    }
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = skm.roc_curve(labels, probs)
        result |= {
            "roc_auc": skm.roc_auc_score(labels, probs),
            "average_precision": skm.average_precision_score(labels, probs),
            "tpr_at_5pct_fpr": float(np.interp(0.05, fpr, tpr)),
        }
    return {k: float(v) for k, v in result.items()}


def verdict_metrics(
    labels: Sequence[int], probabilities: Sequence[float], verdicts: Sequence[str], reasons: Sequence[str | None]
) -> dict:
    """How stored verdicts fared on labelled media: the figures ``mediacheck evaluate`` reports.

    One entry per scored media item: its label (0 real, 1 fake), P(AI), verdict (real, uncertain
    or fake) and the verdict's reason (why it is uncertain). Returns the media count, per label too,
    ROC-AUC on P(AI) (None with ``roc_auc_note`` saying why when it cannot be computed), the
    confusion matrix true label x verdict, coverage (share of confident verdicts), accuracy of
    those and confidently wrong verdicts as a share of all media (None when there is nothing to
    divide by), and the abstentions counted by reason. Plain numbers and None only: it goes to JSON as is.
    """
    labels, probabilities = np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=np.float64)
    verdicts = np.asarray(verdicts, dtype=object)
    if not len(labels) == len(probabilities) == len(verdicts) == len(reasons):
        raise ValueError("labels, probabilities, verdicts and reasons must have one entry per media item")
    if set(labels.tolist()) - set(LABEL_NAMES) or set(verdicts) - set(VERDICT_BANDS):
        raise ValueError(f"labels must be 0 (real) or 1 (fake) and verdicts one of {VERDICT_BANDS}")
    roc_auc, roc_auc_note = _roc_auc(labels, probabilities)
    # Both reasons the product abstains for are always present, so a zero reads as "none", not "not counted".
    abstentions = dict.fromkeys((OUTSIDE, BETWEEN), 0) | Counter(
        reason for verdict, reason in zip(verdicts, reasons, strict=True) if verdict == "uncertain"
    )
    selective = selective_metrics(labels, verdicts)
    return {
        "media": len(labels),
        "labels": {name: int((labels == value).sum()) for value, name in LABEL_NAMES.items()},
        "roc_auc": roc_auc,
        "roc_auc_note": roc_auc_note,
        "confusion": {
            name: {band: int(((labels == value) & (verdicts == band)).sum()) for band in VERDICT_BANDS}
            for value, name in LABEL_NAMES.items()
        },
        **{
            key: None if math.isnan(selective[key]) else selective[key]
            for key in ("coverage", "confident_accuracy", "confident_wrong_rate")
        },
        "abstentions": abstentions,
    }


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float | None, str | None]:
    """ROC-AUC of P(AI) against the labels, or None and why."""
    if not len(labels):
        return None, "no media was scored"
    present = np.unique(labels)
    if len(present) < 2:
        return None, f"only {LABEL_NAMES[int(present[0])]} media: ROC-AUC needs both real and fake"
    return float(skm.roc_auc_score(labels, probabilities)), None


def save_plots(
    labels: np.ndarray, probs: np.ndarray, threshold: float, frame_paths: list[str], out_dir: Path
) -> list[Path]:
    """ROC curve, reliability diagram, confusion matrix and a grid of the worst errors (PNG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, np.float64)
    written = [
        _confusion_plot(labels, probs >= threshold, out_dir / "confusion_matrix.png"),
        _worst_errors(labels, probs, frame_paths, out_dir / "worst_errors.png"),
    ]
    if len(np.unique(labels)) == 2:
        written += [
            _roc_plot(labels, probs, out_dir / "roc_curve.png"),
            _reliability_plot(labels, probs, out_dir / "reliability.png"),
        ]
    return written


def _roc_plot(labels, probs, path: Path) -> Path:
    fpr, tpr, _ = skm.roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(labels, probs):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.axvline(0.05, color="red", linewidth=0.8, label="5% FPR")
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _reliability_plot(labels, probs, path: Path) -> Path:
    observed, predicted = calibration_curve(labels, probs, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(predicted, observed, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="predicted probability of fake", ylabel="observed share of fakes", title="Reliability")
    ax.legend(loc="upper left")
    return _save(fig, path)


def _confusion_plot(labels, predicted, path: Path) -> Path:
    matrix = skm.confusion_matrix(labels, predicted.astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix",
    )
    return _save(fig, path)


def _worst_errors(labels, probs, frame_paths: list[str], path: Path, count: int = 16) -> Path:
    error = np.abs(labels - probs)
    order = [i for i in np.argsort(-error) if error[i] > 0.5][:count]
    columns = 4
    rows = max(1, -(-len(order) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, order, strict=False):
        ax.imshow(decode_jpeg(Path(frame_paths[index]).read_bytes()))
        ax.set_title(f"{'fake' if labels[index] else 'real'} scored {probs[index]:.2f}", fontsize=8)
    fig.suptitle("Worst errors" if order else "No errors above 0.5")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def media_level(manifest: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Mean frame probability per media item (videos have many frames, images one)."""
    scored = manifest.assign(prob=probs)
    return scored.groupby("content_id").agg(label=("label", "first"), prob=("prob", "mean")).reset_index()
