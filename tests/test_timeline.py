"""`vivit predict --timeline`: predictions over sliding windows of a long video (vivit.predict.predict_timeline,
vivit.render.plot_timeline).

The model is the bundled `vivit_demo` (8 frames of 32x32, stride 1: one window is 8 frames, which way does
the disc move). The video is real H.264 written by the test: six clips of different directions one after
the other, 8 frames per second, so frame i is shown at i / 8 s and each second has its own right answer.
The references are computed apart from the code under test: frames decoded with PyAV directly, each
window's frames classified by `predict_views` as a video of their own.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image  # a matplotlib dependency (matplotlib is in the test extra)
from video_datasets import DIRECTIONS, disc_clips, write_video

import vivit
from vivit import render
from vivit.data.sampling import view_frame_indices
from vivit.data.video import VideoReader, VideoWarning
from vivit.predict import predict_timeline, predict_views

RATE = 8
SEGMENTS = 6


@pytest.fixture(scope="module")
def demo() -> torch.nn.Module:
    return vivit.create_model("vivit_demo", pretrained=True).eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A 6 s H.264 video: six 8-frame clips whose discs move in these directions, one after the other."""
    clips, labels = disc_clips(SEGMENTS, seed=3)
    path = write_video(tmp_path_factory.mktemp("timeline") / "six.mp4", np.concatenate(list(clips)), rate=RATE)
    assert len(set(labels)) >= 3  # the content really changes over time
    return path, labels


def decode_with_pyav(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames (T, H, W, 3) and their presentation times in seconds, straight from PyAV."""
    import av

    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    first = decoded[0].time
    return np.stack([f.to_ndarray(format="rgb24") for f in decoded]), np.array([f.time - first for f in decoded])


# ---------------------------------------------------------------- the job
def test_window_spans_are_frames_over_fps(demo, video, one_thread):
    path, _ = video
    frames, times = decode_with_pyav(path)
    assert len(frames) == 48 and np.array_equal(times, np.arange(48) / RATE)
    timeline = predict_timeline(demo, path, window=12, stride=9)
    assert timeline.window_frames.tolist() == [[0, 12], [9, 21], [18, 30], [27, 39], [36, 48]]
    assert timeline.window_frames.dtype == np.int64 and timeline.window_seconds.dtype == np.float64
    assert np.array_equal(timeline.window_seconds, timeline.window_frames / RATE)  # exactly, end = next frame's time
    assert (timeline.video_frames, timeline.video_fps, timeline.window, timeline.stride) == (48, 8.0, 12, 9)
    # the default window is one clip of the model: 8 frames x stride 1, no overlap
    default = predict_timeline(demo, path)
    assert default.window_frames.tolist() == [[i, i + 8] for i in range(0, 48, 8)]
    assert default.window_seconds.tolist() == [[i, i + 1.0] for i in range(6)]


@pytest.mark.parametrize(
    ("window", "stride", "views", "batch_size"),
    [(8, 8, (1, 1), 4), (12, 5, (2, 3), 5)],  # batches of 5 views cut across windows of 6 views
)
def test_window_probabilities_equal_predict_views_on_the_windows_frames(
    demo, video, one_thread, window, stride, views, batch_size
):
    path, _ = video
    frames, _ = decode_with_pyav(path)
    timeline = predict_timeline(demo, path, window, stride, views=views, batch_size=batch_size, top_k=2)
    assert timeline.logits.shape == timeline.probabilities.shape == (len(timeline), 4)
    for i, (first, last) in enumerate(timeline.window_frames.tolist()):
        reference = predict_views(demo, frames[first:last], *views)  # the window as a video of its own
        torch.testing.assert_close(timeline.logits[i], reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(timeline.probabilities[i], reference.softmax(-1), rtol=0, atol=1e-6)
        best = reference.softmax(-1).topk(2)
        assert [p["index"] for p in timeline.predictions[i]] == best.indices.tolist()
        assert [p["label"] for p in timeline.predictions[i]] == [DIRECTIONS[k] for k in best.indices.tolist()]


def test_each_window_gets_its_own_answer(demo, video, one_thread):
    """Windows aligned with the six clips: the demo names each clip's direction (99% on its test set)."""
    path, labels = video
    timeline = predict_timeline(demo, path, top_k=1)
    assert [p[0]["label"] for p in timeline.predictions] == [DIRECTIONS[k] for k in labels]
    assert timeline.labels == list(DIRECTIONS)


def test_only_each_windows_clip_frames_are_decoded(demo, video, one_thread):
    path, _ = video
    calls: list[list[int]] = []
    with VideoReader(path) as reader:
        decode = reader.get_frames_at

        def spy(indices):
            calls.append(np.asarray(indices).tolist())
            return decode(indices)

        reader.get_frames_at = spy  # type: ignore[method-assign]
        timeline = predict_timeline(demo, reader, window=16, stride=10, views=(2, 1))
    assert len(calls) == len(timeline) == 5  # window by window: memory does not grow with the video
    for call, (first, last) in zip(calls, timeline.window_frames.tolist(), strict=True):
        assert call == view_frame_indices(48, 8, 1, 2, first=first, last=last).reshape(-1).tolist()
        assert len(call) == 2 * 8


def test_frame_arrays_and_short_videos(demo, one_thread, tmp_path):
    clips, labels = disc_clips(2, seed=5)
    frames = np.concatenate(list(clips))  # (16, 32, 32, 3), no frame rate
    timeline = predict_timeline(demo, frames)
    assert timeline.window_frames.tolist() == [[0, 8], [8, 16]] and np.isnan(timeline.window_seconds).all()
    assert timeline.video_fps is None
    assert [p[0]["label"] for p in timeline.predictions] == [DIRECTIONS[k] for k in labels]
    np.savez(tmp_path / "clip.npz", frames=frames, fps=np.float64(4.0))
    with (
        VideoReader(tmp_path / "clip.npz") as reader,
        pytest.warns(VideoWarning, match=r"^windows of 4 frames of .*clip\.npz are shorter"),
    ):
        assert predict_timeline(demo, reader, window=4, stride=4).window_seconds.tolist() == [
            [0, 1],
            [1, 2],
            [2, 3],
            [3, 4],
        ]
    with pytest.warns(VideoWarning) as caught:
        short = predict_timeline(demo, frames[:5], window=8)
    assert short.window_frames.tolist() == [[0, 5]]
    messages = [str(w.message) for w in caught]
    assert messages[0] == "the video has 5 frames, fewer than one window (8): the timeline is one window, frames [0, 5)"
    assert messages[1].startswith(
        "the window of the video is shorter than one clip spans (8 frames every 1 = 8): the frames of a window"
    )
    with pytest.warns(VideoWarning, match=r"^windows of 4 frames of the video are shorter than one clip spans"):
        predict_timeline(demo, frames, window=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windows of a clip's span: nothing to say
        predict_timeline(demo, frames, window=8, stride=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window must be a positive integer or None, got 0"),
        ({"stride": -2}, "stride must be a positive integer or None, got -2"),
        ({"window": True}, "window must be a positive integer or None, got True"),
        ({"window": 8.0}, "window must be a positive integer or None, got 8.0"),
        ({"views": (1, 2)}, "crops must be 1 (centre) or 3"),
        ({"views": (0, 1)}, "clips must be a positive integer, got 0"),
        ({"top_k": 0}, "top_k must be a positive integer, got 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ],
)
def test_bad_arguments(demo, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predict_timeline(demo, np.zeros((8, 32, 32, 3), np.uint8), **kwargs)


def test_windows_and_strides_longer_than_any_video(demo):
    """A window or stride past int64 (a user's "whole video, whatever its length") is one window / no
    second window, as any value past the video's length is, not an OverflowError from numpy."""
    from vivit.data.sampling import sliding_windows

    huge = 10**20
    assert sliding_windows(16, huge, 8).tolist() == [[0, 16]]
    assert sliding_windows(16, 4, huge).tolist() == [[0, 4]]
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    with pytest.warns(VideoWarning, match="fewer than one window"):
        assert predict_timeline(demo, frames, window=huge, stride=huge).window_frames.tolist() == [[0, 16]]


def test_timeline_classes_show_every_winner_then_the_highest_peaks():
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.45, 0.15, 0.0]])
    assert render.timeline_classes(probs, 1) == [0, 1, 3]  # winners: peaks 0.5, 0.45, 0.4
    assert render.timeline_classes(probs, 4) == [0, 1, 3, 2]
    assert render.timeline_classes(probs, 1, max_classes=2) == [0, 1]


# ---------------------------------------------------------------- the command
def test_cli_prints_each_windows_span_and_labels(video, one_thread, run_cli):
    path, labels = video
    code, out, err = run_cli("predict", path, "--timeline", "--top-k", "1")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0] == f"{path} (vivit_demo, 6 windows of 8 frames every 8, 1x1 views each)"
    assert (
        lines[1] == "  note: vivit_demo was trained on synthetic clips only; on a real video this answer means nothing"
    )
    assert len(lines) == 2 + SEGMENTS
    for i, (line, label) in enumerate(zip(lines[2:], labels, strict=True)):
        span = f"{i:.2f}-{i + 1:.2f} s  frames [{8 * i}, {8 * i + 8})"
        assert line.startswith(f"  {span}") and line.split()[-2] == DIRECTIONS[label], line


def test_cli_json_has_the_records(demo, video, one_thread, run_cli):
    path, _ = video
    code, out, _ = run_cli("predict", path, "--timeline", "--window", "12", "--stride", "9", "--json", "--top-k", "2")
    assert code == 0
    (line,) = out.splitlines()
    result = json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert {k: result[k] for k in ("video", "model", "views", "window", "stride", "video_frames", "video_fps")} == {
        "video": str(path),
        "model": "vivit_demo",
        "views": [1, 1],
        "window": 12,
        "stride": 9,
        "video_frames": 48,
        "video_fps": 8.0,
    }
    frames, _ = decode_with_pyav(path)
    assert [(w["start_frame"], w["end_frame"]) for w in result["windows"]] == [
        (0, 12),
        (9, 21),
        (18, 30),
        (27, 39),
        (36, 48),
    ]
    for i, record in enumerate(result["windows"]):
        assert record["window"] == i
        assert (record["start_seconds"], record["end_seconds"]) == (
            record["start_frame"] / RATE,
            record["end_frame"] / RATE,
        )
        reference = predict_views(demo, frames[record["start_frame"] : record["end_frame"]], 1, 1).softmax(-1)
        assert [p["index"] for p in record["predictions"]] == reference.topk(2).indices.tolist()
        np.testing.assert_allclose(
            [p["probability"] for p in record["predictions"]], reference.topk(2).values, atol=1e-6
        )


def test_cli_sample_clip_has_no_times_and_is_one_window(one_thread, run_cli):
    """The bundled clip is a frame array without a frame rate: frames only, `null` seconds in JSON."""
    code, out, err = run_cli("predict", "--timeline", "--json", "--window", "20")
    assert code == 0
    (window,) = json.loads(out)["windows"]
    assert (window["start_frame"], window["end_frame"], window["start_seconds"], window["end_seconds"]) == (
        0,
        8,
        None,
        None,
    )
    assert window["predictions"][0]["label"] == "left"
    assert "has 8 frames, fewer than one window (20): the timeline is one window, frames [0, 8)" in err
    code, out, _ = run_cli("predict", "--timeline", "-q")
    assert out.splitlines()[1].startswith("  frames [0, 8)  left ")


def test_cli_plot_writes_the_picture(video, one_thread, tmp_path, run_cli):
    path, labels = video
    out = tmp_path / "timeline.png"
    code, stdout, err = run_cli("predict", path, "--timeline", "--plot", out, "--json")
    assert code == 0 and err == f"vivit: wrote {out}\n"
    json.loads(stdout)  # stdout stays JSON
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == render.TIMELINE_SIZE == (1000, 400)
        pixels = np.asarray(im.convert("RGB")).astype(int)
    assert (pixels != 255).any(axis=-1).mean() > 0.03  # not blank
    # Every class that wins a window has its colour in the band and its line: hundreds of pixels each.
    import matplotlib

    shown = render.timeline_classes(np.eye(4)[labels], 3)
    assert sorted(shown) == sorted(set(labels))
    for slot, _ in enumerate(shown):
        colour = np.round(np.array(matplotlib.colormaps["tab10"](slot)[:3]) * 255)
        assert (np.abs(pixels - colour).max(axis=-1) <= 2).sum() > 500, slot
    grey = np.abs(pixels - 191).max(axis=-1) <= 1  # a band segment of a class not drawn (2000 px): none here
    assert grey.sum() < 200


def band_columns(path: Path, colour_slots: list[int]) -> list[np.ndarray]:
    """Per colour slot (tab10), the picture's columns where the band above the plot shows it."""
    import matplotlib

    with Image.open(path) as im:
        band = np.asarray(im.convert("RGB")).astype(int)[:70]  # the band: above the plot and its legend
    return [
        np.flatnonzero(
            (np.abs(band - np.round(np.array(matplotlib.colormaps["tab10"](s)[:3]) * 255)).max(-1) <= 2).any(0)
        )
        for s in colour_slots
    ]


def test_plot_draws_each_window_over_its_own_span(tmp_path):
    """Window boundaries are where the windows meet, even when the last window is cut short (not halfway
    between centres), and the gaps between windows (stride > window) stay empty, not painted over."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    render.plot_timeline(tmp_path / "short.png", np.array([[0, 8], [8, 10]]), probs, ["a", "b"], unit="frames")
    first, second = band_columns(tmp_path / "short.png", [0, 1])
    start, end = first.min(), second.max() + 1
    assert abs((second.min() - start) / (end - start) - 0.8) < 0.01  # frame 8 of 10, not 6.5
    render.plot_timeline(tmp_path / "gap.png", np.array([[0, 2], [6, 8]]), probs, ["a", "b"], unit="frames")
    first, second = band_columns(tmp_path / "gap.png", [0, 1])
    start, end = first.min(), second.max() + 1
    assert (
        abs((first.max() + 1 - start) / (end - start) - 0.25) < 0.01
        and abs((second.min() - start) / (end - start) - 0.75) < 0.01
    )


def test_plot_fits_a_long_title_and_kinetics_length_labels_inside_the_picture(tmp_path):
    """A long file name in the title and long class names in the legend ran off the picture's edges."""
    from PIL import Image

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    labels = ["passing American football (not in game)", "exercising with an exercise ball", "pushing wheelchair"]
    title = "a_rather_long_video_file_name_from_a_camera_2024-06-01_14-33-12_highlights.mp4: vivit_b_fe_k400, " * 2
    render.plot_timeline(tmp_path / "t.png", np.array([[0, 2.0], [2, 4], [4, 6]]), probs, labels, title=title)
    picture = np.asarray(Image.open(tmp_path / "t.png").convert("RGB"))
    assert picture.shape == (400, 1000, 3)  # the size asked for, whatever the text
    edges = np.concatenate([picture[:, :3], picture[:, -3:]], axis=1)
    assert (edges > 240).all(), "text runs off the left or right edge"


def test_plot_shows_labels_and_titles_as_text_not_tex(tmp_path):
    """Dollar signs in label names or a file name are text: matplotlib would otherwise read `$...$` as
    TeX math, silently (`costs $5 or $6`) or failing after the whole video was classified (`$\\frac$`)."""
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    labels = ["$\\frac$", "costs $5 or $6"]
    render.plot_timeline(tmp_path / "t.png", np.array([[0, 1], [1, 2]]), probs, labels, title="$\\sqrt$.mp4")
    assert (tmp_path / "t.png").stat().st_size > 0
    # the explain pictures' titles and captions too (PNG contact sheet and GIF frames)
    frames, heat = np.zeros((2, 16, 16, 3), np.uint8), np.ones((2, 16, 16), np.float32)
    for name in ("o.png", "o.gif"):
        drawn = render.write_heat_overlay(tmp_path / name, frames, heat, title="$\\frac$ 90%", caption="$\\sqrt$ clip")
        assert drawn == 2 and (tmp_path / name).stat().st_size > 0


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_cli_plot_into_a_folder_that_takes_no_files_is_refused_first(tmp_path, run_cli):
    """/proc exists and is a folder, but nothing can be created there: refused before the model runs,
    not after the whole video with the name of our temporary file."""
    code, out, err = run_cli("predict", "--timeline", "--plot", "/proc/timeline.png")
    assert (code, out) == (2, "")
    assert (
        err
        == "vivit: error: --plot: cannot write /proc/timeline.png: the folder /proc does not take new files (No such file or directory)\n"
    ), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plot", "t.png"], "--plot belongs to a timeline: add --timeline"),
        (["--window", "8"], "--window belongs to a timeline: add --timeline"),
        (["--stride", "4"], "--stride belongs to a timeline: add --timeline"),
        (["--timeline", "--window", "0"], "argument --window: expected a positive integer, got '0'"),
        (["--timeline", "--stride", "-3"], "argument --stride: expected a positive integer, got '-3'"),
        (["--timeline", "--window", "eight"], "argument --window: expected a positive integer, got 'eight'"),
        (["--timeline", "--plot", "t.jpg"], "--plot: cannot write 't.jpg': the file name must end in .png"),
        (["--timeline", "--plot", "missing/t.png"], "--plot missing/t.png: the folder missing does not exist"),
        (["--timeline", "--plot", "folder.png"], "--plot folder.png is a folder; give a file name ending in .png"),
        (
            ["a.mp4", "b.mp4", "--timeline", "--plot", "t.png"],
            "--plot draws one video's timeline; give one VIDEO, not 2",
        ),
        (["--timeline", "--override", "num_classes=7"], "the classifier head is untrained"),
    ],
)
def test_cli_usage_errors(tmp_path, monkeypatch, argv, message, run_cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.png").mkdir()
    code, out, err = run_cli("predict", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vivit: error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png"]  # nothing written


def test_cli_missing_video_and_untrained_message(tmp_path, run_cli):
    code, out, err = run_cli("predict", tmp_path / "nope.mp4", "--timeline")
    assert (code, out) == (1, "") and err == f"vivit: error: video {tmp_path / 'nope.mp4'} does not exist\n"


def test_cli_without_matplotlib_says_how_to_install(tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out, err = run_cli("predict", "--timeline", "--plot", tmp_path / "t.png")
    assert code == 1 and out == "" and not list(tmp_path.iterdir())
    assert (
        err.startswith("vivit: error: drawing pictures needs matplotlib: pip install matplotlib")
        and err.count("\n") == 1
    )
    code, out, _ = run_cli("predict", "--timeline", "-q")  # no --plot: no matplotlib needed
    assert code == 0 and "left" in out
