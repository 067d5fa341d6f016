"""The per-frame score plot of one verdict (PNG)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def frame_score_plot(document: dict) -> bytes:
    """Frame probabilities over time, with the verdict bands and the frames kept as evidence."""
    frames = document.get("frames") or []
    bands = document.get("bands") or {}
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    times = [f["time_s"] for f in frames]
    probs = [f["probability"] for f in frames]
    real_below, fake_from = bands.get("real_below", 0.5), bands.get("fake_from", 0.5)
    ax.axhspan(0, real_below, color="#2e7d32", alpha=0.08, label="real band")
    ax.axhspan(fake_from, 1, color="#c62828", alpha=0.08, label="fake band")
    ax.plot(times, probs, marker="o", markersize=3, color="#37474f", label="frame P(AI)")
    evidence = {e["index"] for e in document.get("evidence") or []}
    marked = [f for f in frames if f["index"] in evidence]
    ax.scatter([f["time_s"] for f in marked], [f["probability"] for f in marked], s=60, facecolors="none",
               edgecolors="#c62828", label="evidence frames", zorder=3)  # fmt: skip
    if document.get("probability") is not None:
        ax.axhline(document["probability"], color="#1565c0", linestyle="--", linewidth=1,
                   label=f"{document.get('aggregation', '')} = {document['probability']:.2f}")  # fmt: skip
    ax.set(ylim=(0, 1), xlabel="time (s)", ylabel="P(AI-generated)")
    ax.legend(loc="upper left", fontsize=7, ncols=3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
