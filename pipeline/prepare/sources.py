"""Find labelled media under a source URI: class folders or a Kaggle-style CSV."""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

Split = Literal["train", "val", "test"]
_SPLIT_FOLDERS: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class SourceItem:
    uri: str
    label: int
    group: str | None = None
    split: Split | None = None
    method: str | None = None  # the generator or manipulation, where the labels name it


@dataclass(frozen=True)
class Rejected:
    uri: str
    reason: str


def discover(source_uri: str, label_map: dict[str, int]) -> tuple[list[SourceItem], list[Rejected]]:
    """List every labelled file under ``source_uri`` and every file that cannot be labelled.

    A ``labels.csv`` at the root (``file_name,label[,group][,split][,method]``) wins; otherwise the
    label is the nearest enclosing folder found in ``label_map`` and a ``train``/``val``/
    ``test`` folder above it fixes the split.
    """
    fs, root = fsspec.core.url_to_fs(source_uri)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"source {source_uri} is not a folder")
    csv_path = f"{root}/{LABELS_CSV}"
    if fs.isfile(csv_path):
        return _from_csv(fs, root, fs.cat_file(csv_path).decode("utf-8-sig"))
    return _from_folders(fs, root, {k.lower(): v for k, v in label_map.items()})


def _from_folders(fs, root: str, label_map: dict[str, int]) -> tuple[list[SourceItem], list[Rejected]]:
    items, rejected = [], []
    for folder, files in _files_by_folder(fs, root):
        parts = PurePosixPath(folder[len(root) :].lstrip("/")).parts
        label = next((label_map[p.lower()] for p in reversed(parts) if p.lower() in label_map), None)
        split = next((_SPLIT_FOLDERS[p.lower()] for p in parts if p.lower() in _SPLIT_FOLDERS), None)
        for path, outside in files:
            uri = _uri(fs, path)
            if outside:
                rejected.append(Rejected(uri, "symlink points outside the source folder"))
            elif label is None:
                rejected.append(Rejected(uri, f"no label: no enclosing folder is in the label map {sorted(label_map)}"))
            else:
                items.append(SourceItem(uri, label, None, split))
    items.sort(key=lambda item: item.uri)
    rejected.sort(key=lambda item: item.uri)
    return items, rejected


def _files_by_folder(fs, root: str) -> Iterator[tuple[str, list[tuple[str, bool]]]]:
    """Each folder under ``root`` with its files and whether each resolves outside ``root``."""
    if not isinstance(fs, LocalFileSystem):
        by_folder: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        for path in fs.find(root):
            by_folder[path.rsplit("/", 1)[0]].append((path, False))  # remote stores have no symlinks
        yield from by_folder.items()
        return
    real_root = os.path.realpath(root)
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while pending:
        folder, ancestors = pending.pop()
        real_folder = os.path.realpath(folder)
        if real_folder in ancestors:  # a link back up the tree: a cycle
            continue
        ancestors |= {real_folder}
        folder_outside = not _within(real_folder, real_root)
        files = []
        with os.scandir(folder) as entries:  # one scan per folder: realpath per file cost more than the rest
            for entry in entries:
                if entry.is_dir():  # linked folders are followed, as fsspec's find does
                    pending.append((entry.path, ancestors))
                elif entry.is_symlink():
                    files.append((entry.path, not _within(os.path.realpath(entry.path), real_root)))
                else:
                    files.append((entry.path, folder_outside))
        yield folder, files


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _from_csv(fs, root: str, text: str) -> tuple[list[SourceItem], list[Rejected]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"file_name", "label"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(
            f"{LABELS_CSV} lacks column(s) {sorted(missing)}; expected file_name,label[,group][,split][,method]"
        )
    items, rejected = [], []
    real_root = os.path.realpath(root) if isinstance(fs, LocalFileSystem) else None  # remote stores have no symlinks
    for line, row in enumerate(reader, start=2):
        path = f"{root}/{row['file_name'].lstrip('/')}"
        uri = _uri(fs, path)
        if row["label"].strip() not in ("0", "1"):
            rejected.append(Rejected(uri, f"{LABELS_CSV} line {line}: label {row['label']!r} is not 0 or 1"))
        elif not fs.exists(path):
            rejected.append(Rejected(uri, f"{LABELS_CSV} line {line}: file does not exist"))
        elif real_root and not _within(os.path.realpath(path), real_root):
            rejected.append(Rejected(uri, "symlink points outside the source folder"))
        else:
            split = _SPLIT_FOLDERS.get((row.get("split") or "").strip().lower())
            group, method = ((row.get(column) or "").strip() or None for column in ("group", "method"))
            items.append(SourceItem(uri, int(row["label"]), group, split, method))
    return items, rejected


def _uri(fs, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
