"""`sample_fps` in the jobs and the command line: frames chosen by presentation time, so a clip spans the same
seconds whatever the file's frame rate.

The videos are the same 4 seconds of content (a grey level that rises with time) encoded by the test as H.264 at
25, 30 and 60 frames per second. Which frames a job reads is observed by recording every
`VideoReader.get_frames_at` call, and turned into seconds by the file's own timestamps; the expectation is the
arithmetic of sampling at 10 frames per second (sample i of a clip starting at s is at s + i / 10), which each
file meets to within half of its frame period (ties go to the earlier frame).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from video_datasets import write_video

import vivit
from vivit.data.video import VideoReader
from vivit.features import FeatureSettings, extract_features, read_features

pytestmark = [pytest.mark.video, pytest.mark.usefixtures("one_thread")]

RATES = (25, 30, 60)
SECONDS = 4.0
F = 10.0  # samples per second
CFG = {
    "input_size": (3, 8, 32, 32),
    "frame_stride": 2,
    "resize_size": 36,
    "crop_size": 32,
    "label_names": ["a", "b", "c", "d", "e"],
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("rates")
    out = {}
    for rate in RATES:
        t = np.arange(int(SECONDS * rate)) / rate
        frames = np.zeros((len(t), 32, 32, 3), np.uint8)
        frames[:] = (40 + 200 * t / SECONDS).astype(np.uint8)[:, None, None, None]
        out[rate] = write_video(root / f"same_{rate}fps.mp4", frames, rate=rate)
    return out


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, np.ndarray]]:
    """Every `get_frames_at(indices)` call: (file, indices)."""
    calls: list[tuple[str, np.ndarray]] = []
    original = VideoReader.get_frames_at

    def spy(self, indices):
        calls.append((str(self.path), np.asarray(indices).copy()))
        return original(self, indices)

    monkeypatch.setattr(VideoReader, "get_frames_at", spy)
    return calls


def times_of(path: Path, indices: np.ndarray) -> np.ndarray:
    with VideoReader(path) as reader:
        return reader.timestamps[indices]


def tiny(cls: type = vivit.FactorizedEncoderViViT) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4)
    if cls is vivit.FactorizedEncoderViViT:
        args["temporal_depth"] = 2
    model = cls(**args, num_classes=5).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    model.pretrained_cfg = dict(CFG)
    return model


def assert_clip_at(times: np.ndarray, start: float, rate: int) -> None:
    """A clip of 8 samples at F from `start`, read from a file at `rate` (nearest frame, ties earlier)."""
    np.testing.assert_allclose(times, start + np.arange(8) / F, atol=0.5 / rate + 1e-9)


# ---------------------------------------------------------------- the job API
def test_predict_views_clips_span_the_same_seconds(videos, reads):
    model = tiny()
    for rate, path in videos.items():
        reads.clear()
        vivit.predict_views(model, path, 2, 1, sample_fps=F)
        rows = [indices for _, indices in reads]
        assert len(rows) == 2  # one read per clip
        # two clips of 0.8 s spread over 4 s: they start at 0 and at 4 - 0.8 = 3.2 s
        assert_clip_at(times_of(path, rows[0]), 0.0, rate)
        assert_clip_at(times_of(path, rows[1]), 3.2, rate)
    # index sampling (the default) spans 8 x 2 frames: 0.53 s at 30 fps, 0.27 s at 60 fps
    reads.clear()
    vivit.predict_views(model, videos[60], 1, 1)
    (indices,) = [i for _, i in reads]
    assert np.diff(times_of(videos[60], indices)).max() == pytest.approx(2 / 60)


@pytest.mark.parametrize("cls", [vivit.FactorizedEncoderViViT, vivit.SpatioTemporalViViT], ids=["model2", "model1"])
def test_timeline_windows_and_clips_span_the_same_seconds(videos, reads, cls):
    model = tiny(cls)
    spans = []
    for rate, path in videos.items():
        reads.clear()
        timeline = vivit.predict_timeline(model, path, 16, 8, sample_fps=F)  # windows of 1.6 s every 0.8 s
        assert timeline.sample_fps == F and (timeline.window, timeline.stride) == (16, 8)
        spans.append(timeline.window_seconds)
        np.testing.assert_allclose(timeline.window_seconds[:, 0], 0.8 * np.arange(len(timeline)), atol=1e-9)
        read = np.unique(np.concatenate([indices for _, indices in reads]))
        # each window's centred clip: 0.4 s into the window, samples 0.1 s apart
        expected = np.unique(np.concatenate([0.8 * k + 0.4 + np.arange(8) / F for k in range(len(timeline))]))
        np.testing.assert_allclose(times_of(path, read), expected, atol=0.5 / rate + 1e-9)
        # reuse (Model 2) equals every window from its pixels, sampled by time too
        whole = vivit.predict_timeline(model, path, 16, 8, sample_fps=F, reuse=False)
        torch.testing.assert_close(timeline.logits, whole.logits, rtol=0, atol=1e-5)
    assert all(np.allclose(s, spans[0], atol=1e-9) for s in spans)
    assert len(spans[0]) == 4  # [0, 1.6), [0.8, 2.4), [1.6, 3.2), [2.4, 4.0)


def test_features_windows_span_the_same_seconds(videos, tmp_path):
    model = tiny()
    settings = FeatureSettings(model="tiny", window=16, stride=8, sample_fps=F)
    summary = extract_features(list(videos.values()), tmp_path / "f", model, settings, workers=0)
    assert summary.ok and len(summary.written) == 3
    results = [read_features(tmp_path / "f" / f"{path.name}.safetensors") for path in videos.values()]
    for tensors, meta in results:
        np.testing.assert_allclose(tensors["window_seconds"], results[0][0]["window_seconds"], atol=1e-9)
        assert meta["sample_fps"] == "10.0" and json.loads(meta["settings"])["sample_fps"] == F
    # the workers' path (no reuse) samples the same frames
    whole = extract_features(list(videos.values()), tmp_path / "w", model, settings, workers=1, reuse=False)
    assert whole.ok
    for path, (tensors, _) in zip(videos.values(), results, strict=True):
        other, _ = read_features(tmp_path / "w" / f"{path.name}.safetensors")
        torch.testing.assert_close(other["features"], tensors["features"], rtol=0, atol=1e-5)
    # index sampling keeps its settings key: files written before sample_fps existed stay up to date
    assert "sample_fps" not in json.loads(FeatureSettings(model="tiny").key())


def test_bad_sample_fps_in_python(videos):
    model = tiny()
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sample_fps must be a positive number of frames per second"):
            vivit.predict_views(model, videos[25], sample_fps=bad)
    frames = np.zeros((40, 32, 32, 3), np.uint8)  # frames carry no times
    with pytest.raises(ValueError, match="the video has no timestamps"):
        vivit.predict_views(model, frames, sample_fps=F)
    with pytest.raises(ValueError, match="the video has no timestamps"):
        vivit.predict_timeline(model, frames, 16, 8, sample_fps=F)


# ---------------------------------------------------------------- the command line
def test_cli_predict_and_timeline_by_time(videos, reads, run_cli):
    spans = []
    for rate, path in videos.items():
        reads.clear()
        code, out, err = run_cli(
            "predict", path, "--model", "vivit_demo", "--sample-fps", F, "--views", "1x1", "--json"
        )
        assert code == 0, err
        (indices,) = [i for p, i in reads if p == str(path)]
        assert_clip_at(times_of(path, indices), 1.6, rate)  # the centred clip of 0.8 s: (4 - 0.8) / 2
        code, out, err = run_cli(
            "predict", path, "--model", "vivit_demo", "--timeline", "--sample-fps", F, "--stride", "4", "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["sample_fps"] == F and result["window"] == 8  # default window: one clip, 8 frames at F
        spans.append([(w["start_seconds"], w["end_seconds"]) for w in result["windows"]])
    assert all(np.allclose(s, spans[0], atol=1e-9) for s in spans)
    assert spans[0][:2] == [(0.0, pytest.approx(0.8)), (pytest.approx(0.4), pytest.approx(1.2))]
    code, out, _ = run_cli("predict", videos[30], "--model", "vivit_demo", "--timeline", "--sample-fps", F)
    assert code == 0 and "windows of 8 frames every 8 at 10 per second" in out


def test_cli_features_evaluate_by_time(videos, reads, tmp_path, run_cli):
    code, _, err = run_cli(
        "features", *videos.values(), "--model", "vivit_demo", "--out", tmp_path / "f", "--sample-fps", F, "-q"
    )
    assert code == 0, err
    seconds = [read_features(tmp_path / "f" / f"{p.name}.safetensors")[0]["window_seconds"] for p in videos.values()]
    assert all(torch.allclose(s, seconds[0], atol=1e-9) for s in seconds) and len(seconds[0]) == 5
    listing = tmp_path / "val.csv"
    listing.write_text("".join(f"{p},0\n" for p in videos.values()))
    reads.clear()
    code, _, err = run_cli(
        "evaluate", listing, "--model", "vivit_demo", "--sample-fps", F, "--views", "1x1", "--workers", "0", "-q"
    )
    assert code == 0, err
    for rate, path in videos.items():
        (indices,) = [i for p, i in reads if p == str(path)]
        assert_clip_at(times_of(path, indices), 1.6, rate)


def test_cli_bad_sample_fps(videos, tmp_path, run_cli):
    for bad in ("0", "-2", "nan", "ten"):
        code, _, err = run_cli("predict", videos[25], "--model", "vivit_demo", "--sample-fps", bad)
        assert code == 2 and "--sample-fps: expected a positive number of frames per second" in err, err
    arr = tmp_path / "frames.npy"
    np.save(arr, np.zeros((20, 32, 32, 3), np.uint8))
    code, _, err = run_cli("predict", arr, "--model", "vivit_demo", "--sample-fps", F)
    assert code == 1 and "the video has no timestamps" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("predict", "-", "--live", "--model", "vivit_demo", "--sample-fps", F)
    assert code == 2 and "--sample-fps does not apply to --live" in err


def test_info_says_how_frames_are_sampled(run_cli):
    code, out, _ = run_cli("info", "vivit_b_fe_k400")
    assert code == 0
    assert (
        "sampling       by frame index, every 2nd frame (as Scenic trained and evaluated the released Kinetics" in out
    )
