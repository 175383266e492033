"""Tests for vivit.predict.predict_views (Scenic's clips x crops protocol, averaged logits)."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
import torch
from torch import nn

import vivit
from vivit.data.sampling import multiview_clip_starts, sample_frame_indices
from vivit.data.video import VideoWarning
from vivit.predict import inference_model, iter_views, predict_views

# Small enough to be fast: 6 frames per clip every 2nd frame, short side 32, crop 24.
CFG = {
    "input_size": (3, 6, 24, 24),
    "frame_stride": 2,
    "resize_size": 32,
    "crop_size": 24,
    "test_views": (3, 3),
}


class Log(list):
    """A record kept by a test model; an eval-mode copy of the model (see `inference_model`) shares it."""

    def __deepcopy__(self, memo: dict) -> Log:
        return self


class MeanLinear(nn.Module):
    """Logits that are an affine function of each view's mean pixel: easy to average by hand."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-2.0, 3.0, num_classes))
        self.bias = nn.Parameter(torch.arange(num_classes, dtype=torch.float32))
        self.seen: list[tuple[int, ...]] = Log()
        self.modes: list[bool] = Log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        self.modes.append(self.training)
        return x.mean(dim=(1, 2, 3, 4))[:, None] * self.weight + self.bias


def _video(t: int = 20, h: int = 32, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _manual_view_means(frames: np.ndarray, clips: int, crops: int) -> list[float]:
    """View means computed independently: frames already at short side 32, so crops are slices."""
    length, h, w = frames.shape[:3]
    if crops == 3:  # landscape: left / centre (ceil) / right along the width
        lefts = [0, -(-(w - 24) // 2), w - 24]
    else:  # DMVR central crop (floor)
        lefts = [(w - 24) // 2]
    top = (h - 24) // 2
    means = []
    for start in multiview_clip_starts(length, 6, 2, clips):
        clip = frames[sample_frame_indices(length, 6, 2, start=start)].astype(np.float64)
        for left in lefts:
            crop = clip[:, top : top + 24, left : left + 24]
            means.append(float((crop * 2 / 255 - 1).mean()))
    return means


@pytest.mark.parametrize("clips, crops", [(3, 3), (2, 1), (1, 3), (1, 1)])
def test_matches_manual_average(clips: int, crops: int) -> None:
    frames = _video()
    model = MeanLinear()
    model.pretrained_cfg = CFG
    means = _manual_view_means(frames, clips, crops)
    expected = torch.tensor(float(np.mean(means))) * model.weight.detach() + model.bias.detach()
    out = predict_views(model, frames, clips, crops, batch_size=2)
    assert out.shape == (5,) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert sum(shape[0] for shape in model.seen) == clips * crops
    assert all(shape[1:] == (3, 6, 24, 24) for shape in model.seen)


def test_equals_loop_over_iter_views_and_defaults_from_cfg() -> None:
    frames = _video(t=9, h=40, w=33, seed=1)  # portrait after resize, shorter than a clip's span
    model = MeanLinear()
    model.pretrained_cfg = CFG
    with pytest.warns(VideoWarning, match=r"has 9 frames, fewer than one clip spans \(6 frames every 2 = 11\).*looped"):
        views = list(iter_views(frames, 3, 3, CFG))
    assert len(views) == 9 and all(v.shape == (3, 6, 24, 24) for v in views)
    manual = torch.stack([model(v[None])[0] for v in views]).mean(0)
    with pytest.warns(VideoWarning, match="looped"):
        out = predict_views(model, frames)  # clips, crops from test_views = (3, 3)
    torch.testing.assert_close(out, manual.detach(), rtol=0, atol=1e-6)


def test_batch_size_does_not_change_result() -> None:
    frames = _video(seed=2)
    model = MeanLinear()
    model.pretrained_cfg = CFG
    one = predict_views(model, frames, batch_size=1)
    model.seen.clear()
    many = predict_views(model, frames, batch_size=12)
    assert model.seen == [(9, 3, 6, 24, 24)]
    torch.testing.assert_close(one, many, rtol=0, atol=1e-6)
    model.seen.clear()
    predict_views(model, frames, batch_size=4)
    assert [s[0] for s in model.seen] == [4, 4, 1]


def test_views_are_built_lazily() -> None:
    frames = _video(seed=3)
    views = iter_views(frames, 3, 3, CFG)
    first = next(views)  # only the first clip has been resized so far
    assert first.shape == (3, 6, 24, 24)
    assert len(list(views)) == 8


def test_runs_in_eval_mode_without_touching_the_model() -> None:
    model = MeanLinear()
    model.pretrained_cfg = CFG
    model.train()
    seen_by_forward: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen_by_forward.append(model.training))
    predict_views(model, _video())
    # The forward ran in eval mode, while the caller's model stayed in training mode throughout.
    assert model.modes and not any(model.modes)
    assert seen_by_forward and all(seen_by_forward) and model.training
    model.eval()
    predict_views(model, _video())
    assert not model.training


def test_training_mode_kept_after_error() -> None:
    class Broken(MeanLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Broken()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        predict_views(model, _video(), pretrained_cfg=CFG)
    assert model.training


def test_inference_model_shares_parameters_and_buffers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4)).train()
    twin = inference_model(model)
    assert twin is not model and not twin.training and all(m.training for m in model.modules())
    assert all(a is b for a, b in zip(twin.parameters(), model.parameters(), strict=True))
    assert all(a is b for a, b in zip(twin.buffers(), model.buffers(), strict=True))
    x = torch.randn(3, 4)
    torch.testing.assert_close(twin(x), model.eval()(x), rtol=0, atol=0)  # eval() is what it computes
    assert inference_model(model) is model  # already in eval mode: used as it is


def test_uncopyable_model_in_training_mode_is_refused_clearly() -> None:
    model = MeanLinear()
    model.lock = threading.Lock()  # cannot be deep-copied
    with pytest.raises(ValueError, match=r"training mode and could not be copied.*call model.eval\(\)"):
        predict_views(model, _video(), pretrained_cfg=CFG)
    assert model.training


def test_many_threads_on_one_model_in_training_mode() -> None:
    """Threads share one model (dropout on, training mode): every result is the eval-mode one."""
    torch.manual_seed(0)
    model = vivit.create_model(
        "vivit_ti_st",
        img_size=24,
        num_frames=6,
        patch_size=8,
        depth=1,
        num_classes=5,
        drop_rate=0.5,
        drop_path_rate=0.5,
    )
    model.pretrained_cfg = CFG
    videos = [_video(seed=i) for i in range(4)]
    expected = [predict_views(model.eval(), v, 1, 1) for v in videos]
    model.train()
    flags: list[bool] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        poll = pool.submit(lambda: [flags.append(model.training) for _ in range(2000)])
        results = list(pool.map(lambda v: predict_views(model, v, 1, 1), videos * 3))
        poll.result()
    assert model.training and all(flags)  # never flipped to eval, not even for a moment
    for got, want in zip(results, expected * 3, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_uses_model_dtype_and_returns_float32() -> None:
    model = MeanLinear().to(torch.float64)
    out = predict_views(model, _video(), pretrained_cfg=CFG)
    assert model.seen and out.dtype == torch.float32
    ref = predict_views(MeanLinear(), _video(), pretrained_cfg=CFG)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_model_without_cfg_uses_defaults() -> None:
    # Defaults: 32 frames stride 2, short side 256, crop 224, 4 x 3 views; keep it cheap with 1 x 1.
    model = MeanLinear()
    frames = np.full((10, 256, 300, 3), 255, dtype=np.uint8)
    with pytest.warns(VideoWarning, match="looped"):
        out = predict_views(model, frames, 1, 1)
    torch.testing.assert_close(out, model.weight.detach() + model.bias.detach())
    assert model.seen == [(1, 3, 32, 224, 224)]


def test_explicit_cfg_wins_and_torch_input() -> None:
    model = MeanLinear()
    model.pretrained_cfg = {"input_size": (3, 4, 16, 16)}  # ignored: an explicit cfg is given
    frames = torch.from_numpy(_video())
    out_t = predict_views(model, frames, pretrained_cfg=CFG)
    out_n = predict_views(model, frames.numpy(), pretrained_cfg=CFG)
    torch.testing.assert_close(out_t, out_n, rtol=0, atol=0)
    assert model.seen[-1][1:] == (3, 6, 24, 24)


@pytest.mark.parametrize(
    "frames, kwargs, match",
    [
        (
            np.zeros((2, 20, 32, 50, 3), np.uint8),
            {},
            r"expected uint8 frames of shape \(T, H, W, C\).*5 dimensions",
        ),
        (np.zeros((20, 32, 50, 3), np.float32), {}, r"expected uint8 frames.*float32"),
        (np.zeros((20, 3, 32, 50), np.uint8), {}, r"channels last.*\(T, C, H, W\) is accepted as a torch tensor"),
        (torch.zeros((20, 3, 50, 3), dtype=torch.uint8), {}, r"ambiguous frame layout"),
        (np.zeros((20, 32, 50, 3), np.uint8), {"crops": 2}, r"crops must be 1 \(centre\) or 3"),
        (np.zeros((20, 32, 50, 3), np.uint8), {"clips": 0}, r"clips must be a positive integer"),
        (
            np.zeros((20, 32, 50, 3), np.uint8),
            {"batch_size": 0},
            r"batch_size must be a positive integer",
        ),
    ],
)
def test_bad_input_raises(frames: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predict_views(MeanLinear(), frames, pretrained_cfg=CFG, **kwargs)


def test_bad_model_output_raises() -> None:
    class Flat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean()

    with pytest.raises(ValueError, match=r"logits of shape \(4, num_classes\)"):
        predict_views(Flat(), _video(), pretrained_cfg=CFG)


def test_progress_goes_to_a_callback_not_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int]] = []
    predict_views(MeanLinear(), _video(), pretrained_cfg=CFG, batch_size=4, progress=lambda *a: calls.append(a))
    assert calls == [(4, 9), (8, 9), (9, 9)]  # the 9 views, batch after batch
    predict_views(MeanLinear(), _video(), pretrained_cfg=CFG)
    assert capsys.readouterr() == ("", "")
