import pytest

from pipeline.settings import SettingsError, load_settings, with_overrides


def test_yaml_then_environment_precedence(settings, monkeypatch):
    assert settings.model.backbone == "efficientnet_lite0"  # from tests/configs/tiny.yaml
    monkeypatch.setenv("MEDIACHECK_MODEL__IMAGE_SIZE", "96")
    monkeypatch.setenv("MONGO_URI", "mongodb://db.example:27017")
    loaded = load_settings()
    assert loaded.model.image_size == 96 and loaded.mongo.uri == "mongodb://db.example:27017"


def test_invalid_setting_is_named(settings, monkeypatch):
    monkeypatch.setenv("MEDIACHECK_PREPARE__RESIZE_POLICY", "stretch")
    with pytest.raises(SettingsError, match="prepare.resize_policy"):
        load_settings()


def test_unknown_keys_are_refused(tmp_path, monkeypatch, settings):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  backbon: efficientnet_b0\n")
    monkeypatch.setenv("MEDIACHECK_CONFIG", str(config))
    with pytest.raises(SettingsError, match="model.backbon"):
        load_settings()


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIACHECK_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsError, match="MEDIACHECK_CONFIG"):
        load_settings()


def test_overrides_validate_and_blank_values_keep_defaults(settings):
    changed = with_overrides(settings, "model", {"image_size": 128, "backbone": None, "batch_size": ""})
    assert changed.model.image_size == 128 and changed.model.backbone == settings.model.backbone
    assert changed.config_hash() != settings.config_hash()
    with pytest.raises(SettingsError, match="model.image_size"):
        with_overrides(settings, "model", {"image_size": 1})


def test_default_production_config_is_b0_imagenet(monkeypatch):
    monkeypatch.delenv("MEDIACHECK_CONFIG", raising=False)
    defaults = load_settings()
    assert (defaults.model.backbone, defaults.model.weights) == ("efficientnet_b0", "imagenet")


def test_trigger_form_comes_from_the_settings_schema(settings):
    from pipeline.settings import trigger_form

    form = trigger_form(settings, "prepare", ["frames_per_video", "resize_policy"])
    assert form["frames_per_video"] == {
        "default": settings.prepare.frames_per_video,
        "type": "integer",
        "minimum": 1,
        "maximum": 1024,
        "description": "Frames sampled uniformly from each video.",
    }
    assert form["resize_policy"]["enum"] == ["squash", "letterbox", "center_crop"]


def test_storage_root_may_be_a_uri_and_host_state_then_stays_local(settings, monkeypatch):
    from pipeline.settings import PROJECT_ROOT, is_local

    assert is_local(settings.storage.root) and settings.storage.local_root == settings.storage.root
    monkeypatch.setenv("MEDIACHECK_STORAGE__ROOT", "s3://media-bucket/mediacheck")
    shared = load_settings()
    assert str(shared.storage.root) == "s3://media-bucket/mediacheck" and not is_local(shared.storage.root)
    assert shared.storage.local_root == PROJECT_ROOT / ".data"
    assert shared.mlflow_uri == f"sqlite:///{PROJECT_ROOT / '.data' / 'mlflow.db'}"
    monkeypatch.setenv("MEDIACHECK_STORAGE__LOCAL_ROOT", "/var/lib/mediacheck")
    assert str(load_settings().storage.local_root) == "/var/lib/mediacheck"
    folder = load_settings(storage={"root": "file:///srv/shared/mediacheck"}).storage
    assert is_local(folder.root) and str(folder.root) == "/srv/shared/mediacheck"  # file:// is a folder


def test_a_storage_root_fsspec_cannot_open_is_named(settings, monkeypatch):
    monkeypatch.setenv("MEDIACHECK_STORAGE__ROOT", "nope://bucket/prefix")
    with pytest.raises(SettingsError, match=r"storage.root: .*fsspec cannot open 'nope://bucket/prefix'"):
        load_settings()
