"""Why does CIFAKE validation score higher than CIFAKE test? Two checks (issue: Train).

The CIFAKE benchmark's validation split (carved by group from the official train folder)
reached 98.9% while the official test folder scored 97.9%. Two causes would show in the data:

1. Near-duplicate leakage: validation images closer to some training image than test images
   are. The product's prepare stage (same settings as bench/cifake_96.yaml) builds the
   splits; for every validation and test image this measures the Hamming distance from its
   pHash to the nearest training image's.
2. An encoding difference between folders: file format, size, colour mode, JPEG luma
   quantisation table and mean bytes per file for each of train/REAL, train/FAKE,
   test/REAL, test/FAKE.

Usage: .venv/bin/python bench/cifake_split_check.py   (writes bench/results/cifake_split_check.json)
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from prepare_bench import RAM_FOLDER, SHARED, extract_cifake

from pipeline.prepare.dataset import LABEL_NAMES
from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare
from pipeline.store import ResultStore

RESULTS = PROJECT_ROOT / "bench" / "results" / "cifake_split_check.json"
VAL_FRACTION = 0.085  # as in bench/cifake_96.yaml
RADII = (2, 4, 8)


def nearest_train_distance(queries: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Per query pHash (as uint64): bits to the nearest training pHash."""
    blocks = [np.bitwise_count(queries[i : i + 64, None] ^ train[None]).min(axis=1) for i in range(0, len(queries), 64)]
    return np.concatenate(blocks)


def leakage(manifest: pd.DataFrame) -> dict:
    hashes = manifest["phash"].map(lambda h: int(h, 16)).to_numpy(np.uint64)
    train = hashes[(manifest["split"] == "train").to_numpy()]
    report = {}
    for split in ("val", "test"):
        rows = (manifest["split"] == split).to_numpy()
        distances, labels = nearest_train_distance(hashes[rows], train), manifest["label"].to_numpy()[rows]
        report[split] = {
            LABEL_NAMES[label]: {
                "images": int((labels == label).sum()),
                **{f"within_{r}_bits": round(float((distances[labels == label] <= r).mean()), 4) for r in RADII},
                "median_bits": float(np.median(distances[labels == label])),
            }
            for label in (0, 1)
        }
    return report


def encodings(source: Path) -> dict:
    report = {}
    for folder in sorted(p for p in source.glob("*/*") if p.is_dir()):
        kinds, sizes = Counter(), []
        for path in folder.iterdir():
            with Image.open(path) as image:
                luma = tuple(image.quantization[0][:8]) if image.format == "JPEG" else None
                kinds[f"{image.format} {image.size[0]}x{image.size[1]} {image.mode} luma table {luma}"] += 1
            sizes.append(path.stat().st_size)
        mean_bytes = round(float(np.mean(sizes)), 1)
        report[f"{folder.parent.name}/{folder.name}"] = {"files": dict(kinds), "mean_bytes": mean_bytes}
    return report


def main() -> int:
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: this check needs the shared datasets", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cifake-split-", dir=RAM_FOLDER if RAM_FOLDER.is_dir() else None) as folder:
        work = Path(folder)
        extract_cifake(work / "cifake")
        settings = load_settings(
            storage={"root": work / "data", "incoming_uri": (work / "in").as_uri()},
            prepare={"val_fraction": VAL_FRACTION},
        )
        with embedded_mongo(":memory:") as uri:
            summary = prepare.run(settings, ResultStore.from_uri(uri, database="split_check"), str(work / "cifake"))
        result = {
            "command": "python bench/cifake_split_check.py",
            "val_fraction": VAL_FRACTION,
            "nearest_train_phash": leakage(pd.read_parquet(summary["manifest"])),
            "encodings": encodings(work / "cifake"),
        }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
