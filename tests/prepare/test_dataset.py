"""The whole prepare stage on real generated media, bad inputs included."""

import hashlib
import io
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.media.video import ffmpeg_exe
from pipeline.stages import prepare
from pipeline.store import DATASETS, MEDIA, QUARANTINE


def noise_jpeg(seed: int) -> bytes:
    """A small JPEG of seeded noise: distinct seeds give distinct content and perceptual hashes."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def messy_source(tmp_path, synthetic_source):
    """Class folders with good images, a video, duplicates, a label conflict and bad files."""
    root = tmp_path / "messy"
    real, fake = root / "REAL", root / "FAKE"
    real.mkdir(parents=True)
    fake.mkdir()
    for i in range(12):
        (real / f"r{i}.jpg").write_bytes(noise_jpeg(i))
        (fake / f"f{i}.jpg").write_bytes(noise_jpeg(100 + i))
    (real / "copy of r0.jpg").write_bytes(noise_jpeg(0))  # exact duplicate, same label
    (fake / "r1 again.jpg").write_bytes(noise_jpeg(1))  # same bytes as a REAL image
    shutil.copy(next(synthetic_source.root.glob("videos/*-real.mp4")), real / "clip.mp4")
    shutil.copy(next(synthetic_source.root.glob("videos/*-fake.mp4")), fake / "video named.jpg")
    (real / "empty.jpg").write_bytes(b"")
    (fake / "notes.mp4").write_text("text renamed to .mp4")
    (fake / "broken.mp4").write_bytes((real / "clip.mp4").read_bytes()[:500])
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:a",
            "aac",
            str(fake / "voice.mp4"),
        ],
        check=True,
    )
    os.mkfifo(fake / "pipe.jpg")  # reading it would block forever
    (real / "gone.jpg").symlink_to(real / "deleted.jpg")
    unreadable = real / "locked.jpg"
    unreadable.write_bytes(noise_jpeg(999))
    unreadable.chmod(0)
    return root


def test_counts_add_up_and_every_bad_file_has_a_reason(settings, store, messy_source):
    summary = prepare.run(settings, store, str(messy_source))
    reasons = {doc["uri"].rsplit("/", 1)[-1]: doc["reason"] for doc in store.db[QUARANTINE].find()}
    assert summary["input"] == 12 + 12 + 1 + 1 + 1 + 1 + 5 + 2
    assert summary["input"] == summary["kept"] + summary["duplicate"] + summary["quarantined"]
    assert summary["duplicate"] == 1
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.mp4"] == "not an image or video (unrecognised content)"
    assert "no video stream" in reasons["voice.mp4"]
    assert reasons["broken.mp4"]
    assert reasons["r1.jpg"] == reasons["r1 again.jpg"] == "same content under both labels (real and fake)"
    statuses = {doc["_id"]: doc["status"] for doc in store.db[MEDIA].find()}
    assert statuses.pop(hashlib.sha256(noise_jpeg(1)).hexdigest()) == "label_conflict"
    assert len(statuses) == summary["kept"] and set(statuses.values()) == {"kept"}
    assert reasons["pipe.jpg"] == "not a regular file (pipe, socket or device)"
    assert reasons["gone.jpg"] == "unreadable file: No such file or directory"  # a dangling symlink
    if reasons.get("locked.jpg") is None:  # root can read anything: then it is simply kept
        assert summary["quarantined"] == 8
    else:
        assert reasons["locked.jpg"].startswith("unreadable file")


def test_kinds_come_from_content_whatever_the_extension(settings, store, messy_source):
    work = prepare.plan(settings, str(messy_source))
    routed_as_image = {
        item["uri"].rsplit("/", 1)[-1] for chunk in work["image_chunks"] for item in prepare.load_chunk(chunk)
    }
    assert "video named.jpg" in routed_as_image  # the extension only picks the task that processes it
    assert {item["uri"].rsplit("/", 1)[-1] for item in work["videos"]} == {"clip.mp4", "broken.mp4", "voice.mp4"}
    prepare.run(settings, store, str(messy_source))
    disguised = store.db[MEDIA].find_one({"uri": {"$regex": "video named.jpg$"}})
    assert disguised["kind"] == "video" and disguised["frames_extracted"] == settings.prepare.frames_per_video


def test_media_are_recorded_as_each_batch_is_processed(settings, store, synthetic_source):
    work = prepare.plan(settings, str(synthetic_source.root))
    for video in work["videos"]:
        prepare.process_batch(settings, store, work["workdir"], [video])
    recorded = {doc["_id"]: doc for doc in store.db[MEDIA].find()}
    assert len(recorded) == len(work["videos"]) and {d["kind"] for d in recorded.values()} == {"video"}
    assert all(d["frames_extracted"] == settings.prepare.frames_per_video for d in recorded.values())
    assert all(0.05 < d["brightness"] < 0.95 for d in recorded.values())  # photographs: neither black nor white


def test_no_group_or_content_straddles_splits(settings, store, synthetic_source):
    summary = prepare.run(settings, store, str(synthetic_source.root))
    manifest = pd.read_parquet(summary["manifest"])
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert manifest.groupby("content_id")["split"].nunique().max() == 1
    assert set(manifest["split"]) == {"train", "val", "test"}
    video_rows = manifest[manifest["kind"] == "video"]
    assert video_rows.groupby("content_id").size().max() == settings.prepare.frames_per_video
    assert (manifest["frame_size"] == settings.prepare.frame_size).all()
    assert (manifest["resize_policy"] == settings.prepare.resize_policy).all()
    brightness = manifest.drop_duplicates("content_id")["brightness"]  # the drift reference's, for every medium
    assert brightness.between(0, 1).all() and brightness.nunique() > len(brightness) // 2


def test_rerun_is_idempotent(settings, store, synthetic_source):
    first = prepare.run(settings, store, str(synthetic_source.root))
    counts = {name: store.count(name) for name in (MEDIA, DATASETS, QUARANTINE)}
    second = prepare.run(settings, store, str(synthetic_source.root))
    assert second["dataset_id"] == first["dataset_id"]
    assert {name: store.count(name) for name in (MEDIA, DATASETS, QUARANTINE)} == counts
    assert counts[MEDIA] == first["kept"]


@pytest.mark.parametrize("policy", ["undersample", "oversample", "class_weight"])
def test_balancing_policies(settings, store, tmp_path, policy):
    from pipeline.settings import with_overrides

    root = tmp_path / "imbalanced"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    for i in range(30):
        (root / "real" / f"{i}.jpg").write_bytes(noise_jpeg(i))
    for i in range(10):
        (root / "fake" / f"{i}.jpg").write_bytes(noise_jpeg(500 + i))
    config = with_overrides(settings, "prepare", {"balance": policy})
    summary = prepare.run(config, store, str(root))
    train = summary["splits"]["train"]
    if policy == "class_weight":
        assert train["real_frames"] > train["fake_frames"]
        weights = summary["class_weight"]
        assert weights["1"] * train["fake_frames"] == pytest.approx(weights["0"] * train["real_frames"])
    else:
        assert train["real_frames"] == train["fake_frames"]


def test_near_duplicates_share_a_group_and_a_split(settings, store, tmp_path):
    """A re-encoded, slightly smaller copy has other bytes but the same perceptual hash."""
    from pipeline.synthetic import PHOTOS, photo

    root = tmp_path / "near"
    (root / "REAL").mkdir(parents=True)
    for name in PHOTOS:
        Image.fromarray(photo(name)).save(root / "REAL" / f"{name}.jpg", quality=95)
    Image.fromarray(photo("astronaut")).resize((460, 460)).save(root / "REAL" / "astronaut copy.jpg", quality=70)
    (root / "FAKE").mkdir()
    for i in range(3):  # the split needs both classes
        (root / "FAKE" / f"{i}.jpg").write_bytes(noise_jpeg(700 + i))
    summary = prepare.run(settings, store, str(root))
    manifest = pd.read_parquet(summary["manifest"])
    manifest.index = manifest["source_uri"].str.rsplit("/", n=1).str[-1]
    original, copy = manifest.loc["astronaut.jpg"], manifest.loc["astronaut copy.jpg"]
    assert original["content_id"] != copy["content_id"] and summary["duplicate"] == 0
    assert original["phash"] == copy["phash"]
    assert original["group"] == copy["group"] and original["split"] == copy["split"]
    assert manifest.loc[manifest["label"] == 0, "group"].nunique() == len(PHOTOS)  # nothing else was merged


def test_labels_csv_in_words_and_few_fake_groups_still_split_by_class(settings, store, tmp_path):
    """The shared clips' shape, in small images: three face pairs (2 real, 4 fake each) hold every fake,
    22 real groups hold one real each, and labels.csv says real/fake in words. Shares alone put no fake in test."""
    root = tmp_path / "clips"
    root.mkdir()
    rows = ["file_name,label,group"]
    for pair in range(3):
        for i, label in enumerate(["real"] * 2 + ["Fake"] * 4):
            (root / f"pair{pair}-{i}.jpg").write_bytes(noise_jpeg(10 * pair + i))
            rows.append(f"pair{pair}-{i}.jpg,{label},pair{pair}")
    for i in range(22):
        (root / f"camera{i}.jpg").write_bytes(noise_jpeg(100 + i))
        rows.append(f"camera{i}.jpg, REAL ,camera{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    summary = prepare.run(settings, store, str(root))
    assert summary["kept"] == 40 and summary["quarantined"] == 0
    for split in ("train", "val", "test"):
        assert summary["splits"][split]["real_items"] > 0 and summary["splits"][split]["fake_items"] == 4, split
    assert store.latest_dataset()["_id"] == summary["dataset_id"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_shared_clips_labelled_in_words_keep_every_class_in_every_split(settings, store, shared_datasets, tmp_path):
    """The report's case: the 40 shared clips, labels.csv from their MANIFEST (real/fake, groups)."""
    import csv

    manifest = list(csv.DictReader((shared_datasets / "videos" / "MANIFEST.tsv").open(), delimiter="\t"))
    source = tmp_path / "clips"
    for label in ("real", "fake"):
        shutil.copytree(shared_datasets / "videos" / label, source / label)  # links out of the source are refused
    rows = [f"{row['file']},{row['label']},{row['group']}" for row in manifest]
    (source / "labels.csv").write_text("file_name,label,group\n" + "\n".join(rows) + "\n")
    summary = prepare.run(settings, store, str(source))
    assert summary["kept"] == len(manifest) == 40
    assert all(summary["splits"][split]["fake_items"] > 0 for split in ("train", "val", "test"))


def test_a_labels_file_given_apart_is_used_and_kept_as_lineage(settings, store, synthetic_source, tmp_path):
    labels = tmp_path / "train.csv"  # the same rows, under another name and outside the source
    labels.write_text(synthetic_source.labels_csv.read_text())
    summary = prepare.run(settings, store, str(synthetic_source.root), labels_csv=str(labels))
    dataset = store.dataset(summary["dataset_id"])
    assert (
        dataset["labels_csv"] == str(labels)
        and dataset["totals"]["kept"] == synthetic_source.images + synthetic_source.videos
    )
