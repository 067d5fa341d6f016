"""The one typed settings object: YAML config file, overridden by environment variables.

Precedence (highest first): explicit keyword arguments, environment variables
(``MEDIACHECK_<SECTION>__<FIELD>``; ``MONGO_URI`` and ``MLFLOW_TRACKING_URI`` also work
as-is), the YAML file named by ``MEDIACHECK_CONFIG`` (default ``configs/default.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import fsspec
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource
from upath import UPath

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"

ResizePolicy = Literal["squash", "letterbox", "center_crop"]
BalancePolicy = Literal["undersample", "oversample", "class_weight"]
AggregationRule = Literal["auto", "mean", "confident", "topk_mean"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _storage_location(value: object) -> UPath:
    """A local folder, or a URI of a file system fsspec opens (``file://`` URIs become plain local paths)."""
    if not isinstance(value, str | os.PathLike | UPath):
        raise ValueError("expected a folder or a URI such as s3://bucket/prefix")
    try:
        location = UPath(value)
        if location.protocol:
            fsspec.get_filesystem_class(location.protocol)  # imports its package: a missing one is named here
    except (ValueError, ImportError) as error:
        raise ValueError(f"fsspec cannot open {str(value)!r}: {error}") from None
    return UPath(location.path) if location.protocol in ("file", "local") else location


StorageLocation = Annotated[
    UPath, PlainValidator(_storage_location), PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string"})
]


def is_local(location: UPath) -> bool:
    """Whether a storage location is a folder of this host's file system (a shared mount counts)."""
    return not location.protocol


class StorageSettings(_Section):
    root: StorageLocation = Field(
        str(PROJECT_ROOT / ".data"),
        validate_default=True,
        description="What one task hands to another: frames (frames/), dataset manifests (datasets/) and "
        "prepare's work files (runs/). A folder every worker mounts, or any URI fsspec opens, such as "
        "s3://bucket/prefix (credentials and endpoint from the usual AWS_* variables); under a URI, training "
        "fetches a dataset's frames once into storage.local_root/cache/frames.",
    )
    local_root: Path = Field(
        None,
        validate_default=True,
        description="This host's own state, never read by another worker: the embedded MongoDB's data (mongo/), "
        "make up's state (stack/), the default MLflow store (mlflow.db, mlartifacts/), caches (cache/, which may "
        "be deleted at any time), spools (spool/), prepare's scratch and training's working folders (scratch/, "
        "runs/). Unset: storage.root when that is a folder, else .data.",
    )
    incoming_uri: str = Field(
        (PROJECT_ROOT / ".data" / "incoming").as_uri(),
        description="Watched bucket: a file:// folder or s3://bucket/prefix.",
    )

    @field_validator("local_root", mode="before")
    @classmethod
    def _local_root_default(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            return value
        root = info.data.get("root")  # absent when root itself is invalid
        return Path(root) if root is not None and is_local(root) else PROJECT_ROOT / ".data"


class MongoSettings(_Section):
    uri: str | None = Field(None, description="MongoDB URI; unset starts the embedded MongoDB-wire server.")
    database: str = Field("mediacheck", description="The MongoDB database that holds every collection.")
    airflow_conn_id: str = Field(
        "mongo_default",
        description="The Airflow connection through which the DAGs reach MongoDB (MongoHook); make demo, make up "
        "and make cluster define it from mongo.uri or the embedded server.",
    )
    retries: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries, with exponential backoff from 1 s, while MongoDB is unreachable; then an error naming "
        "the server (exit code 3 in the CLI).",
    )
    timeout_s: float = Field(5.0, gt=0, description="How long one attempt waits for a MongoDB server to answer.")


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="Unset: SQLite under storage.local_root.")
    experiment: str = Field("mediacheck", description="The MLflow experiment that training runs are logged to.")
    registered_model: str = Field(
        "mediacheck-detector",
        description="The registered model that training adds versions to; scoring uses its 'champion' alias.",
    )
    dagshub_repo: str | None = Field(
        None, description="owner/name; with DAGSHUB_USER_TOKEN set, log to DagsHub (opt-in only)."
    )
    ui_url: str | None = Field(
        "http://127.0.0.1:5000", description="Where people open the MLflow UI (links from the Detections view)."
    )


class PrepareSettings(_Section):
    frame_sampling: Literal["uniform", "fps", "keyframes"] = Field(
        "uniform",
        description="uniform: frames_per_video evenly spaced; fps: sample_fps per second; keyframes only; all "
        "capped by max_frames_per_video.",
    )
    frames_per_video: int = Field(32, ge=1, le=1024, description="Frames sampled uniformly from each video.")
    sample_fps: float = Field(1.0, gt=0, le=60, description="Frames per second in 'fps' sampling.")
    max_frames_per_video: int = Field(256, ge=1, le=10_000, description="Cap on frames taken from one video.")
    frame_size: int = Field(256, ge=32, le=1024, description="Stored frames are square, this many pixels.")
    resize_policy: ResizePolicy = Field(
        "letterbox",
        description="How frames become square: letterbox (scale to fit, then pad; best in the resize-policy "
        "benchmark), center_crop (drop the edges) or squash (warp).",
    )
    crop: Literal["full", "face"] = Field(
        "full",
        description="full: the whole frame; face: the largest face (OpenCV's Haar detector) with a 30% margin, "
        "frames without a face staying whole. Recorded with the dataset and the model, and applied again when "
        "scoring.",
    )
    balance: BalancePolicy = Field(
        "class_weight", description="Class balancing of the training split; validation and test stay as they are."
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of groups' items for validation.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of groups' items for test.")
    seed: int = Field(1337, description="Seed of the grouped split and of training.")
    label_map: dict[str, int] = Field(
        default_factory=dict,
        description="More label words (folder names and labels.csv, any case) -> 0 = real, 1 = AI-generated; "
        "real/fake, 0/1, human/ai, authentic/ai-generated and the like are built in.",
    )
    ffmpeg_timeout_s: float = Field(
        120.0,
        gt=0,
        description="An FFmpeg run (probe or frame extraction) past this is stopped: the file is refused "
        "with the reason.",
    )
    max_decode_side: int = Field(
        1024,
        ge=32,
        le=16384,
        description="FFmpeg scales video frames down (aspect kept, never up) so their longer side is at most "
        "this before they reach Python: a 8192x8192 video costs what a 1024x1024 one does. Prepare and "
        "scoring both decode at this size.",
    )
    max_video_pixels: int = Field(
        8192 * 4320,
        ge=1,
        description="Videos whose frames have more pixels (width x height) are refused with this reason; "
        "default 8K (8192x4320, 35.4 MP).",
    )
    max_video_duration_s: float = Field(
        7200.0, gt=0, description="Longer videos are refused with this reason (default two hours)."
    )


class ModelSettings(_Section):
    backbone: Literal["efficientnet_b0", "efficientnet_lite0"] = Field(
        "efficientnet_b0", description="ImageNet backbone; efficientnet_lite0's weights work offline."
    )
    weights: Literal["imagenet", "none"] = Field("imagenet", description="Pretrained weights or none.")
    image_size: int = Field(
        224, ge=32, le=1024, description="Backbone input size; frames are resized inside the model."
    )
    batch_size: int = Field(
        32, ge=1, description="Training batch size; with several GPUs (MirroredStrategy) the global batch."
    )
    head_epochs: int = Field(5, ge=1, description="Phase 1 epochs: the head on a frozen backbone.")
    fine_tune_epochs: int = Field(10, ge=0, description="Phase 2 epochs: top blocks unfrozen.")
    head_learning_rate: float = Field(1e-3, gt=0, description="Phase 1 learning rate.")
    fine_tune_learning_rate: float = Field(1e-4, gt=0, description="Phase 2 learning rate (low).")
    unfreeze_blocks: int = Field(
        3,
        ge=0,
        description="Top backbone blocks trained in phase 2 (BatchNorm stays frozen); 99 = all, the stem included.",
    )
    fine_tune_schedule: Literal["plateau", "cosine"] = Field(
        "plateau", description="Phase 2 learning rate: cut on a val-AUC plateau, or cosine decay to zero."
    )
    augmentation: Literal["robust", "light", "none"] = Field(
        "robust",
        description="robust: flip, rotation, zoom, brightness, contrast, JPEG re-compression and blur; "
        "light: flip, brightness and contrast only; none.",
    )
    test_time_flip: bool = Field(
        False,
        description="Serve the mean logit of each frame and its mirror image: steadier scores, 2x compute. Built "
        "into the served model, so calibration, the ONNX export and scoring all include it.",
    )
    weight_averaging: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Momentum of an exponential moving average of the trained weights, which replaces them at "
        "every epoch end (so validation, checkpoints and serving all use it); 0: off.",
    )
    average_last_epochs: int = Field(
        0,
        ge=0,
        description="Phase 2 ends on the mean of the weights of its last N epochs when that mean scores better "
        "on validation (by checkpoint_metric) than the best single epoch; 0: off.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="Training targets become 1 - s/2 and s/2 instead of 1 and 0, so the loss stops rewarding "
        "ever more confident logits on frames already classified right; calibration on validation rescales the "
        "scores afterwards. 0: off.",
    )
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto",
        description="float16 compute with float32 weights; auto: on when TensorFlow sees a GPU, off on CPUs (where "
        "float16 measured 2.5-3x slower). What was used is in the run's accelerator.json.",
    )
    xla: Literal["auto", "on", "off"] = Field("auto", description="XLA-compiled training steps; auto: on with a GPU.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout rate on the embedding, before the logit.")
    early_stopping_patience: int = Field(
        3,
        ge=1,
        description="Epochs without improvement in checkpoint_metric before a phase stops (the best epoch's "
        "weights are restored); the plateau schedule cuts the learning rate one epoch sooner.",
    )
    checkpoint_metric: Literal["val_auc", "val_loss"] = Field(
        "val_auc",
        description="What the best-epoch checkpoint, early stopping and plateau cuts watch; val_loss keeps "
        "discriminating where validation AUC has saturated (around 0.998) and differs only by noise.",
    )
    queue: str = Field("default", description="Executor queue for training ('gpu' for GPU workers).")
    max_fpr_real: float = Field(
        0.01, ge=0, lt=0.5, description="Share of real validation media allowed in the 'fake' band."
    )
    max_fnr_fake: float = Field(
        0.01, ge=0, lt=0.5, description="Share of fake validation media allowed in the 'real' band."
    )
    ood_method: Literal["knn", "mahalanobis"] = Field(
        "knn",
        description="How far a frame's embedding lies from the training frames': cosine distance to the "
        "k-th nearest (knn) or class-conditional Mahalanobis distance.",
    )
    ood_accept: float = Field(
        0.95,
        gt=0.5,
        le=1,
        description="Share of in-distribution validation media the out-of-distribution threshold accepts; "
        "media scoring above it get 'uncertain' (outside the training distribution).",
    )
    ood_reference_frames: int = Field(
        2048, ge=16, description="Training frames (class-stratified sample) whose embeddings the bundle keeps."
    )


class ScoreSettings(_Section):
    aggregation: AggregationRule = Field(
        "auto",
        description="Frame scores -> media score; auto: the rule the model chose by media-level ROC-AUC on "
        "validation media (MLflow metrics val_media_auc_*); or force mean, topk_mean or confident (the DFDC "
        "winner's rule).",
    )
    after_scoring: Literal["keep", "move"] = Field(
        "keep",
        description="keep: originals stay where they are (recorded in MongoDB); "
        "move: into .processed/ or .failed/ inside the bucket. Nothing is ever deleted.",
    )
    batch_size: int = Field(32, ge=1, description="Frames per inference batch when scoring.")
    max_upload_mb: int = Field(512, ge=1, description="Largest file the Detections view accepts for upload.")
    max_object_mb: int = Field(
        2048, ge=1, description="Largest object scored; larger ones get a 'failed' verdict (hashed, never decoded)."
    )
    settle_s: float = Field(
        10.0,
        ge=0,
        description="An object is scored once unchanged (size and modification time) for this long, so a copy "
        "or upload in progress is never scored half-written.",
    )
    watch_interval_s: float = Field(
        2.0,
        gt=0,
        description="How often Airflow's triggerer lists the bucket for new media (names, sizes and times only), "
        "so that scoring starts without waiting for the minute poll.",
    )
    objects_per_task: int = Field(
        20,
        ge=1,
        description="Objects one mapped Airflow task scores: they share its process start and model load; "
        "one that fails still fails only itself.",
    )
    claim_ttl_s: float = Field(
        900.0,
        gt=0,
        description="How long a scorer's claim on an object lasts: another run skips it meanwhile, then may "
        "take it over (at once when the claimer is a dead process on the same host). Claims live in MongoDB "
        "'claims'.",
    )


class DriftSettings(_Section):
    window_media: int = Field(
        200,
        ge=2,
        description="Each scoring run compares the media most recently scored by the champion, up to this many, "
        "with the media it was trained on.",
    )
    min_media: int = Field(
        30,
        ge=2,
        description="A statistic is compared only when the window and the training data each have at least this "
        "many values of it (fewer: reported as too few, never as drift).",
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="Population stability index above which a statistic has drifted (0.1-0.25 is usually read as "
        "a moderate shift, above 0.25 as a major one), provided its test is also significant.",
    )
    significance: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="p-value below which the shift is significant: a two-sample Kolmogorov-Smirnov test for numbers, "
        "a chi-squared test for formats. Both this and the PSI must agree, so small windows do not raise alarms.",
    )
    reference_media: int = Field(
        2000,
        ge=10,
        description="Training media (a seeded sample) whose statistics the model bundle keeps as drift reference.",
    )


class Settings(BaseSettings):
    """Every setting of the pipeline. Construct with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="MEDIACHECK_", env_nested_delimiter="__", extra="forbid", frozen=True)

    storage: StorageSettings = StorageSettings()
    mongo: MongoSettings = MongoSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prepare: PrepareSettings = PrepareSettings()
    model: ModelSettings = ModelSettings()
    score: ScoreSettings = ScoreSettings()
    drift: DriftSettings = DriftSettings()
    mongo_uri: str | None = Field(
        None, validation_alias=AliasChoices("MONGO_URI", "MEDIACHECK_MONGO_URI"), exclude=True
    )
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MEDIACHECK_MLFLOW_TRACKING_URI"), exclude=True
    )

    @model_validator(mode="after")
    def _apply_conventional_env(self) -> Settings:
        # MONGO_URI / MLFLOW_TRACKING_URI are the names users already know; fold them in.
        if self.mongo_uri:
            object.__setattr__(self, "mongo", self.mongo.model_copy(update={"uri": self.mongo_uri}))
        if self.mlflow_tracking_uri:
            object.__setattr__(
                self, "mlflow", self.mlflow.model_copy(update={"tracking_uri": self.mlflow_tracking_uri})
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("MEDIACHECK_CONFIG", DEFAULT_CONFIG))
        if not config.is_file():
            raise SettingsError(f"MEDIACHECK_CONFIG: config file {config} does not exist")
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config)

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.storage.local_root / 'mlflow.db'}"

    def config_hash(self) -> str:
        """Short sha256 of every setting that shapes results (stored as lineage)."""
        relevant = self.model_dump(mode="json", include={"prepare", "model", "score"})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class SettingsError(ValueError):
    """Settings are invalid; the message names each offending setting."""


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into one message naming each setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
            for e in error.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


def with_overrides(settings: Settings, section: str, values: dict[str, object]) -> Settings:
    """A copy of ``settings`` with some fields of one section replaced (validated).

    Empty values (``None`` or ``""``) mean "keep the configured value", which is how an
    Airflow trigger form leaves a field alone.
    """
    current = getattr(settings, section)
    changes = {k: v for k, v in values.items() if v not in (None, "")}
    try:
        updated = type(current).model_validate({**current.model_dump(), **changes})
    except ValidationError as error:
        problems = "; ".join(f"{section}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
    return settings.model_copy(update={section: updated})


def trigger_form(settings: Settings, section: str, fields: list[str]) -> dict[str, dict]:
    """JSON-schema keywords for a trigger form over some settings of one section.

    Types, enums, bounds and descriptions come from the settings model itself; each
    default is the currently configured value.
    """
    current = getattr(settings, section)
    properties = type(current).model_json_schema()["properties"]
    form = {}
    for name in fields:
        schema = {k: v for k, v in properties[name].items() if k in _FORM_KEYWORDS}
        schema["description"] = properties[name].get("description", name.replace("_", " ").capitalize() + ".")
        form[name] = {"default": getattr(current, name), **schema}
    return form


_FORM_KEYWORDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return load_settings()
