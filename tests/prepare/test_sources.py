import os

import pytest

from pipeline.prepare.sources import LABEL_WORDS, PrepareError, accepted_labels, discover

LABELS = {"real": 0, "fake": 1, "ai": 1, "0": 0, "1": 1}
UNLABELLED = f"no label: no enclosing folder names a class (any case): {accepted_labels(LABEL_WORDS)}"


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
    assert [r.reason for r in rejected] == [UNLABELLED]


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
        "shared/inside.jpg": UNLABELLED,
    }


def test_kaggle_csv_with_groups_and_missing_files(tmp_path):
    _touch(tmp_path / "imgs" / "a.jpg")
    _touch(tmp_path / "imgs" / "b.jpg")
    (tmp_path / "labels.csv").write_text("file_name,label,group\nimgs/a.jpg,0,g1\nimgs/b.jpg,1,g1\nimgs/gone.jpg,1,\n")
    items, rejected = discover(str(tmp_path), LABELS)
    assert [(os.path.basename(i.uri), i.label, i.group) for i in items] == [("a.jpg", 0, "g1"), ("b.jpg", 1, "g1")]
    assert [r.reason for r in rejected] == ["labels.csv line 4: file does not exist"]


def test_a_labels_file_named_on_the_command_line_labels_the_source(tmp_path):
    """Kaggle's "AI vs human generated images": train.csv (an unnamed index column, file_name, label) beside
    train_data/, and unlabelled test_data_v2/ that must not be taken for training data."""
    for name in ("a.jpg", "b.jpg"):
        _touch(tmp_path / "train_data" / name)
    _touch(tmp_path / "test_data_v2" / "unknown.jpg")
    rows = ["", "0,train_data/a.jpg,1", "1,train_data/b.jpg,0", "2,train_data/c.jpg,1"]
    (tmp_path / "train.csv").write_text(",file_name,label" + "\n".join(rows) + "\n")
    items, rejected = discover(str(tmp_path), LABELS, labels_csv=str(tmp_path / "train.csv"))
    assert [(os.path.basename(i.uri), i.label) for i in items] == [("a.jpg", 1), ("b.jpg", 0)]
    assert [r.reason for r in rejected] == ["train.csv line 4: file does not exist"]
    with pytest.raises(FileNotFoundError, match="labels file .*nowhere.csv does not exist"):
        discover(str(tmp_path), LABELS, labels_csv=str(tmp_path / "nowhere.csv"))
    (tmp_path / "bad.csv").write_text("file_name,label\ntrain_data/a.jpg,maybe\n")
    with pytest.raises(PrepareError, match=r"bad.csv: line 2: label 'maybe'"):
        discover(str(tmp_path), LABELS, labels_csv=str(tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    ("words", "label"),
    [
        (["real", "REAL", " Real ", "0", "human", "Authentic", "camera"], 0),
        (["fake", "FAKE ", "1", "AI", "ai-generated", "AI_Generated", "ai generated", "Synthetic", "deepfake"], 1),
    ],
)
def test_labels_are_read_as_people_write_them_in_csv_and_folders(tmp_path, words, label):
    rows = []
    for index, word in enumerate(words):
        rows.append(f"csv/{index}.jpg,{word}")
        _touch(tmp_path / "csv" / f"{index}.jpg")
    (tmp_path / "labels.csv").write_text("File_Name, Label\n" + "\n".join(rows) + "\n")
    items, rejected = discover(str(tmp_path), {})
    assert [i.label for i in items] == [label] * len(words) and rejected == []
    folders = tmp_path / "folders"
    for index, word in enumerate(words):
        _touch(folders / f"{index}" / word.strip() / "x.jpg")  # the digit folders above carry no label of their own
    items, rejected = discover(str(folders), {})
    assert sorted(i.label for i in items) == [label] * len(words) and rejected == []


def test_label_map_adds_words_for_csv_and_folders(tmp_path):
    _touch(tmp_path / "Midjourney Output" / "a.jpg")
    items, _ = discover(str(tmp_path), {"midjourney-output": 1})
    assert [i.label for i in items] == [1]
    (tmp_path / "labels.csv").write_text("file_name,label\nMidjourney Output/a.jpg,midjourney_output\n")
    assert [i.label for i in discover(str(tmp_path), {"midjourney-output": 1})[0]] == [1]
    with pytest.raises(PrepareError, match=r"prepare.label_map: \['sketch'\] map to other labels"):
        discover(str(tmp_path), {"sketch": 2})


def test_unknown_csv_labels_are_an_error_naming_file_and_line(tmp_path):
    _touch(tmp_path / "a.jpg")
    lines = ["file_name,label,split", "a.jpg,fake,", "", "a.jpg,maybe,", '"a\nb.jpg",real,', "a.jpg,,", "a.jpg,0,dev"]
    (tmp_path / "labels.csv").write_text("\n".join(lines + ["a.jpg,1,later", " ,fake,"]) + "\n")
    with pytest.raises(PrepareError) as error:
        discover(str(tmp_path), {})
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'labels.csv'}: line 4: label 'maybe' is not a known label; ")
    assert "line 7: label '' is not a known label" in message  # 1-based, past a blank line and a quoted line break
    assert "line 9: split 'later' is not one of [" in message and "line 8" not in message
    assert "line 10: no file_name" in message
    assert f"Labels may be (any case): {accepted_labels(LABEL_WORDS)}; add other words to prepare.label_map" in message


def test_csv_without_required_columns_is_a_clear_error(tmp_path):
    (tmp_path / "labels.csv").write_text("path,class\n")
    with pytest.raises(PrepareError, match=r"labels.csv lacks column\(s\) \['file_name', 'label'\] \(its header"):
        discover(str(tmp_path), LABELS)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        discover(str(tmp_path / "nope"), LABELS)
