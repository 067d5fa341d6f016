import pytest

from pipeline.media.images import MediaError
from pipeline.media.video import extract_uniform_frames, probe


def test_probe_reads_duration_rate_and_size(clip):
    info = probe(str(clip), timeout_s=30)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(10)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)


def test_uniform_frames_are_spread_over_the_clip(clip):
    _, frames = extract_uniform_frames(str(clip), 4, timeout_s=30)
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0, 1.5]
    assert all(f.rgb.shape == (48, 64, 3) for f in frames)
    assert frames[0].rgb.tobytes() != frames[-1].rgb.tobytes()  # testsrc moves: distinct frames


def test_short_clip_yields_no_more_frames_than_it_has(make_clip):
    one = make_clip(
        "one.mp4", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=25", "-frames:v", "1", "-pix_fmt", "yuv420p"
    )
    _, frames = extract_uniform_frames(str(one), 32, timeout_s=30)
    assert len(frames) == 1


def test_rotation_metadata_is_honoured(clip, make_clip):
    rotated = make_clip("rotated.mp4", "-display_rotation", "90", "-i", str(clip), "-c", "copy")
    info, frames = extract_uniform_frames(str(rotated), 2, timeout_s=30)
    assert info.rotation in (90, 270)
    assert frames[0].rgb.shape == (64, 48, 3)  # displayed upright: width and height swapped


def test_audio_only_and_corrupt_files_give_reasons(clip, make_clip, tmp_path):
    audio = make_clip("audio.mp4", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac")
    with pytest.raises(MediaError, match="no video stream"):
        extract_uniform_frames(str(audio), 4, timeout_s=30)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:600])
    with pytest.raises(MediaError):
        extract_uniform_frames(str(truncated), 4, timeout_s=30)
