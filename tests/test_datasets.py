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
    sliding_windows,
    view_frame_indices,
)
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

    for body, fragment in [
        ("a.mp4,x,1,2,extra\n", "5 fields, expected at most 4"),
        ("a.mp4,x,soon\n", "start must be a non-negative number of seconds, got 'soon'"),
        ("a.mp4,x,3,2\n", "end (2.0 s) must be after start (3.0 s)"),
        ("path,label,label\n", "names a column twice"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text("ok.mp4,x\n" + body if not body.startswith("path") else body, encoding="utf-8")
        with pytest.raises(ValueError, match="bad.csv:") as err:
            read_video_list(bad)
        assert fragment in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video_list(tmp_path / "none.csv")


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
