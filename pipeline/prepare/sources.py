"""Find labelled media under a source URI: class folders or a Kaggle-style CSV."""

from __future__ import annotations

import csv
import io
import os
import re
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
    "dev": "val",
    "test": "test",
    "testing": "test",
}
LABELS_CSV = "labels.csv"
REAL, FAKE = 0, 1
LABEL_NAMES = {REAL: "real", FAKE: "fake"}
# The words people label with, in labels.csv and as folder names; prepare.label_map adds more.
LABEL_WORDS: dict[str, int] = {
    **dict.fromkeys(("real", "0", "human", "authentic", "genuine", "original", "camera", "natural", "pristine"), REAL),
    **dict.fromkeys(
        ("fake", "1", "ai", "ai-generated", "generated", "synthetic", "deepfake", "deepfakes", "manipulated"), FAKE
    ),
}


class PrepareError(ValueError):
    """The source cannot make a usable dataset; the message says what to change."""


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


def discover(
    source_uri: str, label_map: dict[str, int], *, labels_csv: str | None = None
) -> tuple[list[SourceItem], list[Rejected]]:
    """List every labelled file under ``source_uri`` and every file that cannot be labelled.

    ``labels_csv`` (a path or URI anywhere, such as Kaggle's ``train.csv``) labels the files, its
    ``file_name`` column relative to ``source_uri``. Without it, a ``labels.csv`` at the root
    (``file_name,label[,group][,split][,method]``) wins; otherwise the
    label is the nearest enclosing folder that names a class and a ``train``/``val``/``test``
    folder above it fixes the split. Labels are the words of :data:`LABEL_WORDS` and
    ``label_map``, in any case, with ``-``, ``_`` and spaces alike; a ``labels.csv`` row with
    any other label is a :class:`PrepareError`.
    """
    vocabulary = label_vocabulary(label_map)
    fs, root = fsspec.core.url_to_fs(source_uri)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"source {source_uri} is not a folder")
    if labels_csv is not None:
        csv_fs, csv_path = fsspec.core.url_to_fs(labels_csv)
        if not csv_fs.isfile(csv_path):
            raise FileNotFoundError(f"labels file {labels_csv} does not exist")
        return _from_csv(fs, root, csv_fs.cat_file(csv_path).decode("utf-8-sig"), vocabulary, labels_csv)
    csv_path = f"{root}/{LABELS_CSV}"
    if fs.isfile(csv_path):
        return _from_csv(fs, root, fs.cat_file(csv_path).decode("utf-8-sig"), vocabulary, _uri(fs, csv_path))
    return _from_folders(fs, root, vocabulary)


def label_key(word: str) -> str:
    """How a label word is compared: lower case, no surrounding space, ``-``/``_``/spaces alike."""
    return re.sub(r"[\s_-]+", "-", word.strip().lower())


def label_vocabulary(label_map: dict[str, int]) -> dict[str, int]:
    """The built-in label words with the configured ones added (a configured word wins)."""
    extra = {label_key(word): label for word, label in label_map.items()}
    wrong = sorted(word for word, label in extra.items() if label not in LABEL_NAMES)
    if wrong:
        raise PrepareError(f"prepare.label_map: {wrong} map to other labels than 0 (real) or 1 (fake)")
    return LABEL_WORDS | extra


def accepted_labels(vocabulary: dict[str, int]) -> str:
    """``real: 0, authentic, ...; fake: 1, ai, ...``, for messages."""
    return "; ".join(
        f"{name}: {', '.join(sorted(w for w, label in vocabulary.items() if label == value))}"
        for value, name in LABEL_NAMES.items()
    )


def _from_folders(fs, root: str, vocabulary: dict[str, int]) -> tuple[list[SourceItem], list[Rejected]]:
    items, rejected = [], []
    unlabelled = f"no label: no enclosing folder names a class (any case): {accepted_labels(vocabulary)}"
    for folder, files in _files_by_folder(fs, root):
        parts = PurePosixPath(folder[len(root) :].lstrip("/")).parts
        label = next((vocabulary[label_key(p)] for p in reversed(parts) if label_key(p) in vocabulary), None)
        split = next((_SPLIT_FOLDERS[p.lower()] for p in parts if p.lower() in _SPLIT_FOLDERS), None)
        for path, outside in files:
            uri = _uri(fs, path)
            if outside:
                rejected.append(Rejected(uri, "symlink points outside the source folder"))
            elif label is None:
                rejected.append(Rejected(uri, unlabelled))
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


def _from_csv(
    fs, root: str, text: str, vocabulary: dict[str, int], csv_uri: str
) -> tuple[list[SourceItem], list[Rejected]]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or ()]
    missing = {"file_name", "label"} - set(reader.fieldnames)
    if missing:
        raise PrepareError(
            f"{csv_uri} lacks column(s) {sorted(missing)} (its header is {reader.fieldnames}); "
            "expected file_name,label[,group][,split][,method]"
        )
    rows, problems = [], []
    for row in reader:
        line = reader.line_num  # physical lines read: right after blank lines and quoted line breaks too
        name, label, split = ((row.get(column) or "").strip() for column in ("file_name", "label", "split"))
        if not name:
            problems.append(f"line {line}: no file_name")
        if label_key(label) not in vocabulary:
            problems.append(f"line {line}: label {label!r} is not a known label")
        if split and split.lower() not in _SPLIT_FOLDERS:
            problems.append(f"line {line}: split {split!r} is not one of {sorted(_SPLIT_FOLDERS)}")
        rows.append((line, name, vocabulary.get(label_key(label)), _SPLIT_FOLDERS.get(split.lower()), row))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PrepareError(
            f"{csv_uri}: {shown}. Labels may be (any case): {accepted_labels(vocabulary)}; "
            "add other words to prepare.label_map"
        )
    items, rejected = [], []
    real_root = os.path.realpath(root) if isinstance(fs, LocalFileSystem) else None  # remote stores have no symlinks
    for line, name, label, split, row in rows:
        path = f"{root}/{name.lstrip('/')}"
        uri = _uri(fs, path)
        if not fs.exists(path):
            rejected.append(Rejected(uri, f"{os.path.basename(csv_uri)} line {line}: file does not exist"))
        elif real_root and not _within(os.path.realpath(path), real_root):
            rejected.append(Rejected(uri, "symlink points outside the source folder"))
        else:
            group, method = ((row.get(column) or "").strip() or None for column in ("group", "method"))
            items.append(SourceItem(uri, label, group, split, method))
    return items, rejected


def _uri(fs, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
