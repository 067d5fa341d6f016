"""The model card every registered model gets: what it was trained on, how it did, where it abstains,
and what it cannot do (Mitchell et al., 2019, cut to what this pipeline knows for certain)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from pipeline.model.calibration import Calibration
from pipeline.model.ood import TrainingDistribution

if TYPE_CHECKING:
    from pipeline import tracking
    from pipeline.settings import Settings

LABEL_NAMES = {0: "real", 1: "fake"}
FRAME_METRICS = ("accuracy", "roc_auc", "average_precision", "tpr_at_5pct_fpr", "log_loss", "n")
SMALL_TEST = 30  # fewer test media than this make every figure imprecise; the card says so


def model_card(
    ref: tracking.ModelRef,
    dataset: dict,
    manifest: pd.DataFrame,
    metrics: dict[str, float],
    trust: dict[str, float],
    calibration: Calibration,
    distribution: TrainingDistribution,
    aggregation: str,
    settings: Settings,
) -> dict:
    """The card as a JSON-ready dict (``render_card`` writes it as markdown)."""
    media = manifest.drop_duplicates(["split", "content_id"])
    card = {
        "model": {
            "name": ref.name,
            "version": ref.version,
            "run_id": ref.run_id,
            "backbone": settings.model.backbone,
            "image_size": settings.model.image_size,
        },  # fmt: skip
        "training_data": {
            "dataset_id": dataset["_id"],
            "source_uri": dataset.get("source_uri"),
            "frames": {
                "crop": dataset.get("crop", "full"),
                "resize_policy": dataset["resize_policy"],
                "frame_size": dataset["frame_size"],
                "frames_per_video": dataset["frames_per_video"],
            },  # fmt: skip
            "media": _counts(media),
            "methods": _methods(media[media["split"] == "train"]),
            "input_profile": distribution.profile.kinds,
        },
        "evaluation": {
            "test_frames": {k: metrics[k] for k in FRAME_METRICS if k in metrics},
            "test_media": trust,
        },
        "verdicts": {
            "aggregation": aggregation,
            "threshold": calibration.threshold,
            "real_below": calibration.real_below,
            "fake_from": calibration.fake_from,
            "max_fpr_real": settings.model.max_fpr_real,
            "max_fnr_fake": settings.model.max_fnr_fake,
            "band_note": calibration.band_note,
        },
        "abstention": {
            "method": distribution.detector.name,
            "threshold": distribution.threshold,
            "validation_accepted": distribution.accept,
            "test_coverage": trust.get("coverage"),
            "test_outside_rate": trust.get("ood_rate"),
        },
    }
    card["limits"] = _limits(card, media)
    return card


def _counts(media: pd.DataFrame) -> dict:
    """Media per split, class and kind."""
    counts: dict = {}
    for (split, label, kind), group in media.groupby(["split", "label", "kind"]):
        counts.setdefault(split, {}).setdefault(LABEL_NAMES[int(label)], {})[kind] = len(group)
    return counts


def _methods(train_media: pd.DataFrame) -> dict[str, list[dict]]:
    """Training media per generator or manipulation method, where the labels name one.

    Lists rather than mappings: method names come from users' labels and may hold dots,
    which MongoDB field names must not.
    """
    if "method" not in train_media:
        return {}
    named = train_media[train_media["method"].fillna("") != ""]
    return {
        LABEL_NAMES[int(label)]: [
            {"method": name, "media": int(n)} for name, n in group["method"].value_counts().items()
        ]
        for label, group in named.groupby("label")
    }


def _limits(card: dict, media: pd.DataFrame) -> list[str]:
    profile = card["training_data"]["input_profile"]
    limits = [
        "Detecting media from generators or manipulations unlike the training data is not solved: on such media "
        "a detector like this one scores near chance. The out-of-distribution check abstains on media far from "
        "the training data; a new generator whose output looks like the training data can still be missed.",
        f"Trained on {' and '.join(f'{kind}s' for kind in profile) or 'nothing'} only; "
        + "; ".join(
            f"{kind}s {seen['short_side'][0]}-{seen['short_side'][1]} px on the short side, "
            f"coded as {', '.join(seen['codecs']) or 'unknown'}"
            for kind, seen in profile.items()
        )
        + ". Other kinds, resolutions far outside these and other codecs get `uncertain`.",
        "Provenance decides a verdict only when a file's own metadata declares AI generation; its absence "
        "proves nothing, since metadata is easily stripped.",
    ]
    fake_methods = [entry["method"] for entry in card["training_data"]["methods"].get("fake", [])]
    limits.append(
        f"The fake training media come from: {', '.join(fake_methods)}; other methods are unseen."
        if fake_methods
        else "The labels do not name the generators or manipulations behind the fake training media, so which "
        "ones this model has seen is unknown (add a `method` column to labels.csv)."
    )
    test = media[media["split"] == "test"]
    if len(test) < SMALL_TEST:
        limits.append(f"The test split holds only {len(test)} media: every test figure here is imprecise.")
    missing = [name for label, name in LABEL_NAMES.items() if not (test["label"] == label).any()]
    if missing:
        limits.append(f"The test split has no {' or '.join(missing)} media: ROC-AUC and accuracy are not meaningful.")
    return limits


def render_card(card: dict) -> str:
    """The card as markdown (the MLflow artifact ``model_card.md``)."""
    model, data, evaluation = card["model"], card["training_data"], card["evaluation"]
    verdicts, abstention = card["verdicts"], card["abstention"]
    lines = [
        f"# Model card: {model['name']} v{model['version']}",
        "",
        f"{model['backbone']} at {model['image_size']} px, MLflow run `{model['run_id']}`.",
        "",
        "## Training data",
        "",
        f"Dataset `{data['dataset_id']}` from `{data['source_uri']}`; frames: {data['frames']['crop']} crop, "
        f"{data['frames']['resize_policy']}, {data['frames']['frame_size']} px, up to "
        f"{data['frames']['frames_per_video']} per video.",
        "",
        "| split | class | kind | media |",
        "|---|---|---|---|",
        *(
            f"| {split} | {label} | {kind} | {count} |"
            for split, by_label in data["media"].items()
            for label, by_kind in by_label.items()
            for kind, count in by_kind.items()
        ),
        "",
        *(
            f"- {kind}s: short side {seen['short_side'][0]}-{seen['short_side'][1]} px, most common "
            f"{', '.join(seen['resolutions'])}; codecs {', '.join(seen['codecs']) or 'unknown'}; "
            f"{seen['media']} training media"
            for kind, seen in data["input_profile"].items()
        ),
        *(f"- {label} methods: {_listed(methods)}" for label, methods in data["methods"].items()),
        "",
        "## Test results",
        "",
        "| frames | value |",
        "|---|---|",
        *(f"| {name} | {_number(value)} |" for name, value in evaluation["test_frames"].items()),
        "",
        "| whole media | value |",
        "|---|---|",
        *(f"| {name} | {_number(value)} |" for name, value in evaluation["test_media"].items()),
        "",
        "## Verdicts and abstention",
        "",
        f"Frame scores are combined by `{verdicts['aggregation']}`. `real` below {verdicts['real_below']:.3f} "
        f"(at most {verdicts['max_fnr_fake']:.1%} of fake validation media), `fake` from "
        f"{verdicts['fake_from']:.3f} (at most {verdicts['max_fpr_real']:.1%} of real validation media), "
        "`uncertain` between."
        + (f" {verdicts['band_note'][0].upper()}{verdicts['band_note'][1:]}." if verdicts["band_note"] else ""),
        "",
        f"Out of distribution: `{abstention['method']}` score above {abstention['threshold']:.4g} (accepting "
        f"{abstention['validation_accepted']:.0%} of validation media), or a kind, resolution or codec unlike the "
        f"training media, gives `uncertain` (outside the training distribution). Test coverage: "
        f"{_number(abstention['test_coverage'])}; test media outside: {_number(abstention['test_outside_rate'])}.",
        "",
        "## Known limits",
        "",
        *(f"- {limit}" for limit in card["limits"]),
        "",
    ]
    return "\n".join(lines)


def _listed(methods: list[dict]) -> str:
    return ", ".join(f"{entry['method']} ({entry['media']})" for entry in methods)


def _number(value) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value)
