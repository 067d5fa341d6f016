import os

import pytest

from pipeline.prepare.sources import discover

LABELS = {"real": 0, "fake": 1, "ai": 1, "0": 0, "1": 1}


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_class_folders_with_split_folders(tmp_path):
    for rel in ("train/REAL/a.jpg", "train/FAKE/b.jpg", "test/REAL/c.jpg", "misc/d.jpg"):
        _touch(tmp_path / rel)
    items, rejected = discover(str(tmp_path), LABELS)
    found = {os.path.relpath(i.uri, tmp_path): (i.label, i.split) for i in items}
    assert found == {"train/REAL/a.jpg": (0, "train"), "train/FAKE/b.jpg": (1, "train"), "test/REAL/c.jpg": (0, "test")}
    assert [r.reason for r in rejected] == [
        "no label: no enclosing folder is in the label map ['0', '1', 'ai', 'fake', 'real']"
    ]


def test_unicode_and_spaced_names_are_found(tmp_path):
    _touch(tmp_path / "ai" / "façade été 01.png")
    items, _ = discover(str(tmp_path), LABELS)
    assert items[0].uri.endswith("façade été 01.png") and items[0].label == 1


def test_symlink_escaping_the_source_is_rejected(tmp_path):
    outside = _touch(tmp_path / "elsewhere" / "secret.jpg")
    source = tmp_path / "source"
    _touch(source / "real" / "ok.jpg")
    (source / "real" / "link.jpg").symlink_to(outside)
    items, rejected = discover(str(source), LABELS)
    assert [os.path.basename(i.uri) for i in items] == ["ok.jpg"]
    assert rejected[0].reason == "symlink points outside the source folder"


def test_linked_folders_are_followed_once_and_checked(tmp_path):
    _touch(tmp_path / "elsewhere" / "secret.jpg")
    source = tmp_path / "source"
    _touch(source / "real" / "ok.jpg")
    _touch(source / "shared" / "inside.jpg")
    (source / "fake").mkdir()
    (source / "fake" / "outside").symlink_to(tmp_path / "elsewhere")
    (source / "fake" / "inside").symlink_to(source / "shared")
    (source / "real" / "loop").symlink_to(source / "real")  # a cycle must not recurse forever
    items, rejected = discover(str(source), LABELS)
    assert sorted(os.path.relpath(i.uri, source) for i in items) == ["fake/inside/inside.jpg", "real/ok.jpg"]
    assert {os.path.relpath(r.uri, source): r.reason for r in rejected} == {
        "fake/outside/secret.jpg": "symlink points outside the source folder",
        "shared/inside.jpg": f"no label: no enclosing folder is in the label map {sorted(LABELS)}",
    }


def test_kaggle_csv_with_groups_and_bad_rows(tmp_path):
    _touch(tmp_path / "imgs" / "a.jpg")
    _touch(tmp_path / "imgs" / "b.jpg")
    (tmp_path / "labels.csv").write_text(
        "file_name,label,group\nimgs/a.jpg,0,g1\nimgs/b.jpg,1,g1\nimgs/missing.jpg,1,\nimgs/a.jpg,maybe,\n"
    )
    items, rejected = discover(str(tmp_path), LABELS)
    assert [(os.path.basename(i.uri), i.label, i.group) for i in items] == [("a.jpg", 0, "g1"), ("b.jpg", 1, "g1")]
    assert [r.reason for r in rejected] == [
        "labels.csv line 4: file does not exist",
        "labels.csv line 5: label 'maybe' is not 0 or 1",
    ]


def test_csv_without_required_columns_is_a_clear_error(tmp_path):
    (tmp_path / "labels.csv").write_text("path,class\n")
    with pytest.raises(ValueError, match="lacks column"):
        discover(str(tmp_path), LABELS)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        discover(str(tmp_path / "nope"), LABELS)
