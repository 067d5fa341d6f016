import pytest

from pipeline.media.images import MediaError
from pipeline.media.stats import video_stats
from pipeline.media.video import extract_frames, extract_frames_from, probe


def test_probe_reads_duration_rate_size_codec_and_bitrate(clip, make_clip):
    info = probe(str(clip), timeout_s=30)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(10)
    assert (info.width, info.height, info.rotation, info.codec) == (64, 48, 0, "h264")
    assert info.bitrate_kbps == pytest.approx(clip.stat().st_size * 8 / 1000 / info.duration_s, rel=0.2)
    assert video_stats(info).bits_per_pixel == pytest.approx(info.bitrate_kbps * 1000 / (64 * 48 * 10), rel=1e-3)
    assert probe(str(make_clip("x.avi", "-i", str(clip), "-c:v", "mpeg4")), timeout_s=30).codec == "mpeg4"


def test_uniform_frames_sit_at_slice_centres(clip):
    _, frames = extract_frames(str(clip), count=4, timeout_s=30)
    assert [f.time_s for f in frames] == pytest.approx([0.25, 0.75, 1.25, 1.75], abs=0.051)
    assert all(f.rgb.shape == (48, 64, 3) for f in frames)
    assert len({f.rgb.tobytes() for f in frames}) == 4  # testsrc moves: distinct frames


def test_fps_mode_and_cap(clip):
    _, frames = extract_frames(str(clip), mode="fps", fps=2, timeout_s=30)
    assert len(frames) == 4 and [f.time_s for f in frames] == pytest.approx([0, 0.5, 1, 1.5], abs=0.051)
    _, capped = extract_frames(str(clip), mode="fps", fps=10, max_frames=3, timeout_s=30)
    assert len(capped) == 3


def test_keyframes_mode_decodes_only_intra_frames(make_clip, clip):
    gop5 = make_clip(
        "gop5.mp4", "-i", str(clip), "-g", "5", "-keyint_min", "5", "-sc_threshold", "0", "-pix_fmt", "yuv420p"
    )
    _, frames = extract_frames(str(gop5), mode="keyframes", timeout_s=30)
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.051)


def test_short_clip_yields_no_more_frames_than_it_has(make_clip):
    one = make_clip(
        "one.mp4", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=25", "-frames:v", "1", "-pix_fmt", "yuv420p"
    )
    _, frames = extract_frames(str(one), count=32, timeout_s=30)
    assert len(frames) == 1


def test_variable_frame_rate_stays_uniform_in_time(make_clip):
    vfr = make_clip(
        "vfr.mkv",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x32:rate=30:duration=4",
        "-vf",
        "select='if(lt(t,2),1,not(mod(n,6)))'",
        "-fps_mode",
        "vfr",
    )
    _, frames = extract_frames(str(vfr), count=4, timeout_s=30)
    assert [f.time_s for f in frames] == pytest.approx([0.5, 1.5, 2.5, 3.5], abs=0.21)


def test_rotation_metadata_is_honoured(clip, make_clip):
    rotated = make_clip("rotated.mp4", "-display_rotation", "90", "-i", str(clip), "-c", "copy")
    info, frames = extract_frames(str(rotated), count=2, timeout_s=30)
    assert info.rotation in (90, 270)
    assert frames[0].rgb.shape == (64, 48, 3)  # displayed upright: width and height swapped


def test_audio_only_and_corrupt_files_give_reasons(clip, make_clip, tmp_path):
    audio = make_clip("audio.mp4", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac")
    with pytest.raises(MediaError, match="no video stream"):
        extract_frames(str(audio), timeout_s=30)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:600])
    with pytest.raises(MediaError):
        extract_frames(str(truncated), timeout_s=30)


def test_a_video_whose_frames_cannot_be_decoded_gives_a_reason(make_clip, tmp_path):
    """Container and stream headers intact (probe succeeds), every coded frame zeroed."""
    intact = make_clip(
        "faststart.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
    )  # fmt: skip
    data = intact.read_bytes()
    payload = data.index(b"mdat") + 4
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(data[:payload] + bytes(len(data) - payload))
    assert probe(str(zeroed), timeout_s=30).width == 64
    with pytest.raises(MediaError, match="no decodable video frames"):
        extract_frames(str(zeroed), count=8, timeout_s=30)


def test_remote_bytes_go_through_a_temporary_file(clip):
    info, frames = extract_frames_from("s3://bucket/clip.mp4", clip.read_bytes(), count=2, timeout_s=30)
    assert info.width == 64 and len(frames) == 2
