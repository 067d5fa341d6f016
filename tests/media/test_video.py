import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.media.images import MediaError
from pipeline.media.stats import video_stats
from pipeline.media.video import (
    DecodeLimits,
    _Budget,
    _FFmpeg,
    extract_frames,
    extract_frames_from,
    ffmpeg_exe,
    output_size,
    probe,
)
from pipeline.settings import PROJECT_ROOT, PrepareSettings
from tests.media.conftest import ANIMATED, ANIMATION_FRAMES, PATTERN, save_animation


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
    cover = tmp_path / "cover.png"
    Image.new("RGB", (16, 16), (0, 200, 0)).save(cover)
    song = make_clip(
        "song.mp4", "-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1",
        "-c:v", "png", "-disposition:v", "attached_pic", "-c:a", "aac",
    )  # fmt: skip
    for path in (audio, song):  # cover art is a video stream to FFmpeg, an "attached pic"
        with pytest.raises(MediaError, match="no video stream"):
            extract_frames(str(path), timeout_s=30)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:600])
    with pytest.raises(MediaError):
        extract_frames(str(truncated), timeout_s=30)


def _faststart_clip(make_clip, name: str):
    """A 2 s, 25 fps H.264 clip with its index before the coded frames."""
    return make_clip(name, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-pix_fmt", "yuv420p",
                     "-movflags", "+faststart")  # fmt: skip


def test_a_video_whose_frames_cannot_be_decoded_gives_a_reason(make_clip, tmp_path):
    """Container and stream headers intact (probe succeeds), every coded frame zeroed."""
    intact = _faststart_clip(make_clip, "faststart.mp4")
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


@pytest.mark.parametrize(
    "name",
    ["mpeg-ps.mpg", "theora.ogv", "quicktime.mov", "old-quicktime.mov", "matroska.mkv", "vp9.webm", "mpeg4.avi",
     "mpeg-ts.ts", "flash.flv", "asf.wmv"],
)  # fmt: skip
def test_every_container_gives_uniform_frames(name, containers):
    info, frames = extract_frames(str(containers[name]), count=4, timeout_s=30)
    assert (info.width, info.height) == (64, 48)
    assert info.duration_s == pytest.approx(2.0, abs=0.25)  # MPEG-PS states it from its timestamps
    slice_s = info.duration_s / 4
    assert [f.time_s for f in frames] == pytest.approx([slice_s * (i + 0.5) for i in range(4)], abs=0.11)
    assert all(f.rgb.shape == (48, 64, 3) for f in frames)
    assert len({f.rgb.tobytes() for f in frames}) == 4  # the pattern moves: four distinct moments


@pytest.mark.parametrize("fmt", ANIMATED)
def test_animations_give_uniform_frames_like_videos(fmt, animations):
    info, frames = extract_frames(str(animations[fmt]), count=4, timeout_s=30)
    assert info.duration_s == pytest.approx(1.0)  # APNG and WebP state none: counted from their frames
    assert (info.width, info.height, len(frames)) == (60, 40, 4)
    levels = [int(f.rgb.mean()) for f in frames]  # frame i is grey 20 * i, on screen from 0.1 * i s
    assert [round(level / 20) for level in levels] == [1, 3, 6, 8]  # on screen at .125 .375 .625 .875
    _, all_frames = extract_frames(str(animations[fmt]), count=32, timeout_s=30)
    assert len(all_frames) == ANIMATION_FRAMES  # never more than the animation has


def test_uneven_frame_delays_stay_uniform_in_time(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), level, np.uint8)) for level in (0, 80, 160, 240)]
    gif = save_animation(tmp_path / "uneven.gif", frames, "GIF", durations=[1000, 300, 300, 400])  # 2 s
    _, sampled = extract_frames(str(gif), count=4, timeout_s=30)
    assert [f.time_s for f in sampled] == [0.25, 0.75, 1.25, 1.75]
    assert [int(f.rgb.mean()) for f in sampled] == [0, 0, 80, 240]  # what is on screen at each moment


def test_a_long_animation_is_sampled_not_held(tmp_path):
    frames = [Image.fromarray(np.full((16, 16, 3), i, np.uint8)) for i in range(240)]
    webp = save_animation(tmp_path / "long.webp", frames, "WEBP", durations=40)
    info, sampled = extract_frames(str(webp), count=3, timeout_s=60)
    assert info.duration_s == pytest.approx(9.6) and len(sampled) == 3
    assert [int(f.rgb.mean()) for f in sampled] == pytest.approx([40, 120, 200], abs=2)


@pytest.mark.parametrize("fmt", ANIMATED)
def test_transparent_animations_are_composited_on_white_like_still_images(fmt, tmp_path):
    frames = []
    for i in range(3):
        rgba = np.zeros((20, 20, 4), np.uint8)  # transparent, with one opaque red square that moves
        rgba[5:10, 5 * i : 5 * i + 5] = (200, 0, 0, 255)
        frames.append(Image.fromarray(rgba, "RGBA"))
    path = save_animation(tmp_path / f"sticker.{ANIMATED[fmt]}", frames, fmt)
    _, decoded = extract_frames(str(path), count=3, timeout_s=30)
    assert decoded[0].rgb[15, 15].tolist() == [255, 255, 255]
    assert decoded[0].rgb[7, 2].tolist() == pytest.approx([200, 0, 0], abs=3)


def test_output_size_caps_the_longer_side_and_never_enlarges():
    assert output_size(8192, 8192, 1024) == (1024, 1024)
    assert output_size(3840, 2160, 1024) == (1024, 576)
    assert output_size(1080, 1920, 1024) == (576, 1024)
    assert output_size(64, 48, 1024) == (64, 48)
    assert output_size(20000, 3, 1024) == (1024, 1)


def test_frames_are_scaled_down_by_ffmpeg_keeping_aspect(make_clip):
    wide = make_clip("wide.mp4", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10:duration=1", "-pix_fmt", "yuv420p")
    info, frames = extract_frames(str(wide), count=2, timeout_s=30, limits=DecodeLimits(max_side=100))
    assert (info.width, info.height) == (320, 240)  # the video's own size stays on record
    assert all(f.rgb.shape == (75, 100, 3) for f in frames)
    rotated = make_clip("tall.mp4", "-display_rotation", "90", "-i", str(wide), "-c", "copy")
    _, frames = extract_frames(str(rotated), count=2, timeout_s=30, limits=DecodeLimits(max_side=100))
    assert frames[0].rgb.shape == (100, 75, 3)  # upright first, then scaled
    _, frames = extract_frames(str(wide), count=2, timeout_s=30, limits=DecodeLimits(max_side=1000))
    assert frames[0].rgb.shape == (240, 320, 3)  # never enlarged


def test_decode_limits_default_to_the_settings_and_follow_them():
    prepare = PrepareSettings()
    assert DecodeLimits() == DecodeLimits.from_settings(prepare)
    assert (DecodeLimits().max_side, DecodeLimits().max_pixels) == (1024, 8192 * 4320)
    custom = PrepareSettings(max_decode_side=512, max_video_pixels=10, max_video_duration_s=5)
    assert DecodeLimits.from_settings(custom) == DecodeLimits(512, 10, 5)


def test_videos_over_a_limit_are_refused_naming_the_setting(clip, animations, make_clip):
    with pytest.raises(MediaError, match=r"64x48 .* over prepare\.max_video_pixels"):
        extract_frames(str(clip), timeout_s=30, limits=DecodeLimits(max_pixels=64 * 48 - 1))
    with pytest.raises(MediaError, match=r"lasts 2 s, over prepare\.max_video_duration_s \(1 s\)"):
        extract_frames(str(clip), timeout_s=30, limits=DecodeLimits(max_duration_s=1))
    with pytest.raises(MediaError, match=r"over prepare\.max_video_duration_s \(0\.5 s\)"):  # counted, not stated
        extract_frames(str(animations["PNG"]), timeout_s=30, limits=DecodeLimits(max_duration_s=0.5))
    huge = make_clip("8k-square.mp4", "-f", "lavfi", "-i", "color=size=8192x8192:rate=1", "-frames:v", "1",
                     "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")  # fmt: skip
    with pytest.raises(MediaError, match=r"8192x8192 \(67\.1 MP\), over prepare\.max_video_pixels \(35\.4 MP\)"):
        extract_frames(str(huge), timeout_s=60)
    with pytest.raises(MediaError, match=r"FFmpeg probe ran past prepare\.ffmpeg_timeout_s"):
        extract_frames(str(clip), timeout_s=1e-4)


def test_ffmpeg_is_killed_when_the_time_budget_runs_out():
    endless = [ffmpeg_exe(), "-re", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=10", "-f", "rawvideo", "pipe:"]
    started = time.monotonic()
    budget = _Budget(0.5, started + 0.5)
    with (
        pytest.raises(MediaError, match=r"ran past prepare\.ffmpeg_timeout_s \(0\.5 s\) while decoding"),
        _FFmpeg(endless, budget, "decoding frames") as run,
    ):
        while run.stdout.read(768):  # in real time: FFmpeg would write for ever
            pass
    assert time.monotonic() - started < 5


_PEAK_RSS = """
import resource, sys
from pipeline.media.video import DecodeLimits, extract_frames
_, frames = extract_frames(sys.argv[1], count=4, timeout_s=120, limits=DecodeLimits(max_pixels=8192 * 8192))
print(max(frames[0].rgb.shape), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_huge_video_costs_the_python_process_what_a_720p_one_does(make_clip):
    """Probe 3: a 8192x8192 H.264 video (allowed here) against a 720p clip, each in a fresh process."""
    peaks = {}
    for size in ("8192x8192", "1280x720"):
        video = make_clip(f"{size}.mp4", "-f", "lavfi", "-i", f"color=c=gray:size={size}:rate=2:duration=2",
                          "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(video)], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
        )
        longer_side, peaks[size] = map(int, result.stdout.split())
        assert longer_side == 1024  # both decoded at prepare.max_decode_side
    # Unscaled, the four 8192x8192 frames alone would be 805 MB.
    assert peaks["8192x8192"] < 1.3 * peaks["1280x720"]


def test_a_truncated_copy_is_refused_before_decoding(make_clip, tmp_path):
    """Probe 4: a faststart mp4 cut short decoded its first frames and scored them; so did AVI and Matroska."""
    pattern = ("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-pix_fmt", "yuv420p")
    made = {
        "faststart.mp4": make_clip("whole-faststart.mp4", *pattern, "-movflags", "+faststart"),
        "clip.avi": make_clip("whole.avi", *pattern, "-c:v", "mpeg4"),
        "clip.mkv": make_clip("whole.mkv", *pattern),
    }
    for name, whole in made.items():
        data = whole.read_bytes()
        assert len(extract_frames(str(whole), count=8, timeout_s=30)[1]) == 8
        for kept in (0.5, 0.9):
            cut = tmp_path / f"{kept}-{name}"
            cut.write_bytes(data[: int(len(data) * kept)])
            with pytest.raises(MediaError, match=r"truncated file: .* declares \d+ bytes but the file has \d+"):
                extract_frames(str(cut), count=8, timeout_s=30)


def test_a_streamed_matroska_of_unknown_size_is_not_taken_for_truncated(tmp_path):
    streamed = tmp_path / "live.mkv"
    with streamed.open("wb") as out:  # a pipe is not seekable: the muxer leaves sizes unknown
        subprocess.run(
            [ffmpeg_exe(), "-loglevel", "error", *PATTERN, "-f", "matroska", "pipe:"], stdout=out, check=True
        )
    assert len(extract_frames(str(streamed), count=4, timeout_s=30)[1]) == 4


def test_decoding_that_stops_early_with_errors_is_refused(make_clip, tmp_path):
    """Sizes intact, the second half of the coded frames overwritten: FFmpeg gives the first frames only."""
    intact = _faststart_clip(make_clip, "faststart-whole.mp4")
    data = intact.read_bytes()
    half = data.index(b"mdat") + (len(data) - data.index(b"mdat")) // 2
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data[:half] + np.random.default_rng(0).bytes(len(data) - half))
    with pytest.raises(MediaError, match=r"corrupt or truncated video: decoded [1-7] of 8 frames \(.*Invalid data"):
        extract_frames(str(damaged), count=8, timeout_s=30)
