"""Tests for vivit.data.augment (DMVR colour augmentation, Scenic's video RandAugment) and their use
in the training transform.

References: the `_np_*` functions below are numpy transcriptions, written for these tests, of the
formulas of TensorFlow's image kernels (`adjust_saturation_op.cc`, `adjust_hue_op.cc`,
`adjust_contrast`, `rgb_to_grayscale`) and of tf-models' `official/vision/image_classification/
augment.py` ops as Scenic's `video_ops.distort_image_with_randaugment` runs them (on the clip
reshaped to one tall image). They were checked once against TF 2.21 itself; the values marked
"TF 2.21" were produced by running `tf.image.*` and are hard-coded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vivit.data import VideoDataset, create_transform
from vivit.data.augment import (
    GRAYSCALE_WEIGHTS,
    RANDAUGMENT_OPS,
    ColorAugment,
    RandAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    randaugment_op,
    rgb_to_grayscale,
)

# ---------------------------------------------------------------- numpy references: colour (TF kernels)


def _np_saturation(pixels: np.ndarray, factor: float) -> np.ndarray:
    """adjust_saturation_op.cc, pixel by pixel (float64): rgb_to_hsv, scale s, hsv_to_rgb."""
    out = np.empty_like(pixels, dtype=np.float64)
    for index, (r, g, b) in enumerate(pixels.reshape(-1, 3).astype(np.float64)):
        vv = max(r, g, b)
        rng = vv - min(r, g, b)
        s = rng / vv if vv > 0 else 0.0
        if rng <= 0:
            h = 0.0
        elif r == vv:
            h = (g - b) / (6 * rng)
        elif g == vv:
            h = (b - r) / (6 * rng) + 2 / 6
        else:
            h = (r - g) / (6 * rng) + 4 / 6
        h = h + 1 if h < 0 else h
        s = min(1.0, max(0.0, s * factor))
        c = s * vv
        m = vv - c
        dh = h * 6
        fmodu = dh
        while fmodu <= 0:
            fmodu += 2
        while fmodu >= 2:
            fmodu -= 2
        x = c * (1 - abs(fmodu - 1))
        rgb = {0: (c, x, 0), 1: (x, c, 0), 2: (0, c, x), 3: (0, x, c), 4: (x, 0, c), 5: (c, 0, x)}.get(
            int(dh), (0, 0, 0)
        )
        out.reshape(-1, 3)[index] = np.array(rgb) + m
    return out


def _np_hue(pixels: np.ndarray, delta: float) -> np.ndarray:
    """adjust_hue_op.cc, pixel by pixel (float64): rgb_to_hv_range, rotate, hv_range_to_rgb."""
    out = np.empty_like(pixels, dtype=np.float64)
    for index, (r, g, b) in enumerate(pixels.reshape(-1, 3).astype(np.float64)):
        if r < g:
            if b < r:
                hi, mid, lo, cat = g, r, b, 1
            elif b > g:
                hi, mid, lo, cat = b, g, r, 3
            else:
                hi, mid, lo, cat = g, b, r, 2
        elif b < g:
            hi, mid, lo, cat = r, g, b, 0
        elif b > r:
            hi, mid, lo, cat = b, r, g, 4
        else:
            hi, mid, lo, cat = r, b, g, 5
        if hi == lo:
            h = 0.0
        else:
            ratio = (mid - lo) / (hi - lo)
            h = cat + (ratio if cat % 2 == 0 else 1 - ratio)
        h += delta * 6
        while h < 0:
            h += 6
        while h >= 6:
            h -= 6
        cat = int(h)
        ratio = h - cat if cat % 2 == 0 else 1 - (h - cat)
        mid = lo + ratio * (hi - lo)
        rgb = {0: (hi, mid, lo), 1: (mid, hi, lo), 2: (lo, hi, mid), 3: (lo, mid, hi), 4: (mid, lo, hi)}.get(
            cat, (hi, lo, mid)
        )
        out.reshape(-1, 3)[index] = rgb
    return out


def _np_contrast(frames: np.ndarray, factor: float) -> np.ndarray:
    """tf.image.adjust_contrast on (T, H, W, 3): each frame's per-channel mean."""
    mean = frames.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    return (frames - mean) * factor + mean


def _np_grey(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float64) @ np.array(GRAYSCALE_WEIGHTS)


def _to_cthw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).permute(3, 0, 1, 2)


def _to_thwc(clip: torch.Tensor) -> np.ndarray:
    return clip.permute(1, 2, 3, 0).numpy()


@pytest.fixture
def float_frames() -> np.ndarray:
    """(T, H, W, 3) floats partly outside [0, 1] (as after DMVR's unclipped brightness shift), with ties."""
    frames = np.random.default_rng(0).uniform(-0.2, 1.2, (2, 5, 6, 3))
    frames[0, 0, :4] = [(0.5, 0.3, 0.3), (0.2, 0.2, 0.2), (-0.1, -0.05, -0.2), (0.3, 0.7, 0.7)]
    frames[1, 1, :3] = [(0.4, 0.4, 0.1), (0.1, 0.4, 0.4), (0.4, 0.1, 0.4)]
    return frames.astype(np.float32)


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.37, 3.0])
def test_saturation_matches_tf_kernel(float_frames: np.ndarray, factor: float) -> None:
    got = _to_thwc(adjust_saturation(_to_cthw(float_frames), factor))
    np.testing.assert_allclose(got, _np_saturation(float_frames, factor), rtol=0, atol=2e-6)


@pytest.mark.parametrize("delta", [-0.5, -0.2, 0.0, 0.13, 0.2, 0.5])
def test_hue_matches_tf_kernel(float_frames: np.ndarray, delta: float) -> None:
    got = _to_thwc(adjust_hue(_to_cthw(float_frames), delta))
    np.testing.assert_allclose(got, _np_hue(float_frames, delta), rtol=0, atol=2e-6)


def test_contrast_brightness_grey_match_tf_formulas(float_frames: np.ndarray) -> None:
    clip = _to_cthw(float_frames)
    np.testing.assert_allclose(_to_thwc(adjust_contrast(clip, 1.37)), _np_contrast(float_frames, 1.37), atol=2e-6)
    np.testing.assert_allclose(_to_thwc(adjust_brightness(clip, -0.1)), float_frames - 0.1, atol=1e-7)
    grey = _to_thwc(rgb_to_grayscale(clip))
    for channel in range(3):
        np.testing.assert_allclose(grey[..., channel], _np_grey(float_frames), atol=1e-6)


# Six pixels (one 2x3 frame) and what TF 2.21's tf.image ops return for them.
_EDGE = [
    [(0.5, 0.3, 0.3000001), (0.2, 0.2, 0.2), (-0.1, -0.05, -0.2)],
    [(0.3, 0.7, 0.7), (1.1, 0.4, -0.05), (0.9, 0.1, 0.5)],
]
_TF = {
    ("saturation", 1.37): [
        (0.5, 0.226, 0.2260001),
        (0.2, 0.2, 0.2),
        (-0.05, -0.05, -0.05),  # max <= 0: s = 0, the pixel turns grey at its max
        (0.152, 0.7, 0.7),
        (1.1, 0.4304348, 0.0),  # a negative channel: s > 1 is clipped to 1
        (0.9, 0.0, 0.45),
    ],
    ("hue", 0.13): [
        (0.5, 0.456, 0.3),
        (0.2, 0.2, 0.2),
        (-0.2, -0.05, -0.183),
        (0.3, 0.388, 0.7),
        (0.903, 1.1, -0.05),
        (0.9, 0.324, 0.1),
    ],
    ("contrast", 1.37): [
        (0.5061666, 0.30925, 0.3215834),
        (0.0951667, 0.17225, 0.1845833),
        (-0.3158334, -0.17025, -0.3634167),
        (0.2321667, 0.85725, 0.8695832),
        (1.3281667, 0.44625, -0.1579167),
        (1.0541666, 0.03525, 0.5955833),
    ],
    ("grey", None): [(0.35975,), (0.19998,), (-0.08204,), (0.58037,), (0.55789,), (0.38471,)],
}


@pytest.mark.parametrize("op, arg", list(_TF))
def test_colour_ops_match_tensorflow_values(op: str, arg: float | None) -> None:
    clip = _to_cthw(np.array(_EDGE, dtype=np.float32)[None])
    fn = {"saturation": adjust_saturation, "hue": adjust_hue, "contrast": adjust_contrast}
    out = rgb_to_grayscale(clip)[:1] if op == "grey" else fn[op](clip, arg)
    np.testing.assert_allclose(_to_thwc(out).reshape(-1, out.shape[0]), np.array(_TF[op, arg]), atol=2e-6)


def test_color_augment_is_dmvr_color_default_augm(float_frames: np.ndarray) -> None:
    """One draw per clip, DMVR's order brightness -> saturation -> contrast -> hue, then the clip."""
    frames = np.clip(float_frames, 0, 1)
    out = ColorAugment(prob=1.0)(_to_cthw(frames), generator=torch.Generator().manual_seed(5))
    # the draws, in ColorAugment's order: coin, brightness, saturation, contrast, hue
    u = torch.rand(5, generator=torch.Generator().manual_seed(5), dtype=torch.float64).tolist()
    d = [(2 * u[1] - 1) * 32 / 255, 0.6 + 0.8 * u[2], 0.6 + 0.8 * u[3], (2 * u[4] - 1) * 0.2]
    assert -32 / 255 <= d[0] < 32 / 255 and 0.6 <= d[1] < 1.4 and 0.6 <= d[2] < 1.4 and -0.2 <= d[3] < 0.2
    expected = np.clip(_np_hue(_np_contrast(_np_saturation(frames + d[0], d[1]), d[2]), d[3]), 0, 1)
    np.testing.assert_allclose(_to_thwc(out), expected, atol=3e-6)
    # another order of the same four ops gives another clip: the order is tested, not only the ops
    other = np.clip(_np_saturation(_np_hue(_np_contrast(frames + d[0], d[2]), d[3]), d[1]), 0, 1)
    assert np.abs(other - expected).max() > 1e-3


def test_color_augment_probabilities_and_drop() -> None:
    clip = torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert ColorAugment(prob=0.0)(clip) is clip
    grey = ColorAugment(prob=0.0, drop_prob=1.0)(clip)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    np.testing.assert_allclose(grey[0].numpy(), _np_grey(_to_thwc(clip)), atol=1e-6)
    gen = torch.Generator().manual_seed(1)
    augment = ColorAugment(prob=0.8, drop_prob=0.1)
    outcomes = [augment(clip, generator=gen) for _ in range(400)]
    changed = sum(out is not clip for out in outcomes)
    dropped = sum(bool(torch.equal(out[0], out[1])) for out in outcomes)
    # 0.8 + 0.2 * 0.1 = 0.82 of the clips change, 0.1 turn grey (binomial, > 4 sigma margins)
    assert 0.72 * 400 < changed < 0.92 * 400
    assert 0.04 * 400 < dropped < 0.16 * 400
    with pytest.raises(ValueError, match="prob must be in"):
        ColorAugment(prob=1.5)
    with pytest.raises(ValueError, match=r"float RGB clip \(3, T, H, W\)"):
        ColorAugment()(torch.zeros(4, 3, 8, 8))


def test_color_augment_keeps_identical_frames_identical() -> None:
    frame = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    clip = frame.expand(3, 6, 8, 8).contiguous()
    for seed in range(20):
        out = ColorAugment(prob=1.0, drop_prob=0.5)(clip, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out, out[:, :1].expand_as(out))


# ---------------------------------------------------------------- numpy references: RandAugment (tf-models)


def _np_blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    image1 = image1.astype(np.float32)
    temp = image1 + np.float32(factor) * (image2.astype(np.float32) - image1)
    if not 0 < factor < 1:
        temp = np.clip(temp, 0, 255)
    return temp.astype(np.uint8)  # truncation, like tf.cast


def _np_grey_uint8(tall: np.ndarray) -> np.ndarray:
    pixels = tall.astype(np.float32) * np.float32(1 / 255)
    w = np.array(GRAYSCALE_WEIGHTS, np.float32)
    grey = pixels[..., 0] * w[0] + pixels[..., 1] * w[1] + pixels[..., 2] * w[2]
    return (grey * np.float32(255.5)).astype(np.uint8)


def _np_op(frames: np.ndarray, name: str, m: float) -> np.ndarray:
    """Scenic's op `name` at magnitude m, on the clip as one tall (T*H, W, 3) image."""
    t, h, w, _ = frames.shape
    img = frames.reshape(t * h, w, 3)
    enhance = m / 10 * 1.8 + 0.1
    if name == "AutoContrast":
        out = img.copy()
        for c in range(3):
            lo, hi = float(img[..., c].min()), float(img[..., c].max())
            if hi > lo:
                scale = np.float32(255.0) / np.float32(hi - lo)
                values = img[..., c].astype(np.float32) * scale + np.float32(-lo) * scale
                out[..., c] = np.clip(values, 0, 255).astype(np.uint8)
    elif name == "Equalize":
        out = img.copy()
        for c in range(3):
            hist = np.bincount(img[..., c].ravel(), minlength=256)
            nonzero = hist[hist > 0]
            step = (nonzero.sum() - nonzero[-1]) // 255
            if step:
                lut = np.concatenate([[0], ((np.cumsum(hist) + step // 2) // step)[:-1]])
                out[..., c] = np.clip(lut, 0, 255)[img[..., c]]
    elif name == "Invert":
        out = 255 - img
    elif name == "Posterize":
        shift = min(max(8 - int(m / 10 * 4), 0), 7)
        out = (img >> shift) << shift
    elif name == "Solarize":
        out = np.where(img < int(m / 10 * 256), img, 255 - img)
    elif name == "SolarizeAdd":
        out = np.where(img < 128, np.clip(img.astype(int) + int(m / 10 * 110), 0, 255), img).astype(np.uint8)
    elif name == "Color":
        out = _np_blend(np.repeat(_np_grey_uint8(img)[..., None], 3, -1), img, enhance)
    elif name == "Contrast":  # tf-models before its fix: the "mean" is pixel count / 256
        mean = min(max(t * h * w / 256.0, 0.0), 255.0)
        out = _np_blend(np.full_like(img, int(mean)), img, enhance)
    elif name == "Brightness":
        out = _np_blend(np.zeros_like(img), img, enhance)
    elif name == "Sharpness":
        kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]])
        smooth = img.copy()
        acc = np.zeros((t * h - 2, w - 2, 3), np.int64)
        for dy in range(3):
            for dx in range(3):
                acc += kernel[dy, dx] * img[dy : dy + t * h - 2, dx : dx + w - 2].astype(np.int64)
        smooth[1:-1, 1:-1] = acc // 13
        out = _np_blend(smooth, img, enhance)
    else:
        raise AssertionError(name)
    return out.reshape(frames.shape)


@pytest.fixture
def uint8_frames() -> np.ndarray:
    frames = np.random.default_rng(3).integers(30, 200, (3, 10, 12, 3)).astype(np.uint8)
    frames[:, 2:6, 3:9] = (90, 140, 60)  # a flat patch: Sharpness's mean is a whole number there
    return frames


@pytest.mark.parametrize("magnitude", [7, 15, 20])
@pytest.mark.parametrize("name", [op for op in RANDAUGMENT_OPS if op != "Cutout"])
def test_randaugment_ops_match_tf_models_formulas(uint8_frames: np.ndarray, name: str, magnitude: int) -> None:
    got = randaugment_op(torch.from_numpy(uint8_frames), name, magnitude).numpy()
    np.testing.assert_array_equal(got, _np_op(uint8_frames, name, magnitude))


def test_randaugment_magnitude_scale() -> None:
    """Spot values of tf-models' level -> argument maps (M = 15: Scenic's EPIC-Kitchens recipe)."""
    frames = torch.full((2, 4, 4, 3), 100, dtype=torch.uint8)
    assert int(randaugment_op(frames, "Brightness", 15)[0, 0, 0, 0]) == 255  # 100 * 2.8, clipped
    assert int(randaugment_op(frames, "Brightness", 5)[0, 0, 0, 0]) == 100  # factor 1.0: unchanged
    assert int(randaugment_op(frames, "SolarizeAdd", 15)[0, 0, 0, 0]) == 255  # 100 + 165, clipped
    assert int(randaugment_op(frames, "SolarizeAdd", 7)[0, 0, 0, 0]) == 177  # 100 + int(0.7 * 110)
    assert int(randaugment_op(frames - 99, "SolarizeAdd", 23)[0, 0, 0, 0]) == 253  # 1 + int(2.3 * 110 = 252.99...)
    assert int(randaugment_op(frames, "Posterize", 15)[0, 0, 0, 0]) == 100  # 6 bits: 100 = 0b01100100
    assert int(randaugment_op(frames + 3, "Posterize", 15)[0, 0, 0, 0]) == 100  # 103 -> 100
    assert torch.equal(randaugment_op(frames + 100, "Solarize", 15), frames + 100)  # threshold 384: no-op
    assert int(randaugment_op(frames + 100, "Solarize", 5)[0, 0, 0, 0]) == 55  # threshold 128


def test_scenic_contrast_blends_toward_white_and_the_fixed_one_toward_the_mean() -> None:
    frames = torch.full((32, 16, 16, 3), 100, dtype=torch.uint8)  # 8192 pixels / 256 = 32
    assert int(randaugment_op(frames, "Contrast", 15)[0, 0, 0, 0]) == 32 + int(np.float32(2.8) * 68)
    big = torch.full((32, 64, 64, 3), 100, dtype=torch.uint8)  # 131072 / 256 > 255: white
    assert int(randaugment_op(big, "Contrast", 15)[0, 0, 0, 0]) == 0  # 255 + 2.8 * (100 - 255) < 0
    assert torch.equal(randaugment_op(big, "Contrast", 15, scenic_contrast=False), big)  # grey == its mean


def test_sharpness_smooths_across_frame_boundaries_like_scenics_tall_image() -> None:
    frames = torch.zeros(2, 5, 6, 3, dtype=torch.uint8)
    frames[1] = 255
    out = randaugment_op(frames, "Sharpness", 15)  # factor 2.8 extrapolates away from the blur
    assert torch.equal(out[0, :-1], frames[0, :-1]) and torch.equal(out[1, 1:], frames[1, 1:])
    # the rows where the frames meet see each other through the 3x3 kernel (border columns kept)
    assert int(out[0, -1, 1, 0]) == 0 and int(out[1, 0, 1, 0]) == 255  # clipped either way
    gray = torch.full((2, 5, 6, 3), 100, dtype=torch.uint8)
    gray[1] = 120
    out = randaugment_op(gray, "Sharpness", 15)
    assert int(out[0, -1, 2, 0]) != 100 and torch.equal(out[0, 1:-1], gray[0, 1:-1])


def test_cutout_is_one_zero_box_shared_by_all_frames() -> None:
    frames = torch.randint(1, 256, (4, 50, 70, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pad = int(15 / 10 * 40)  # Scenic: cutout_const 40 at M 15 -> a 120-pixel square, clipped to the frame
    for seed in range(10):
        out = randaugment_op(frames, "Cutout", 15, generator=torch.Generator().manual_seed(seed))
        zero = out == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))  # the same box on every frame and channel
        rows = zero[0, :, :, 0].any(1).nonzero().flatten()
        cols = zero[0, :, :, 0].any(0).nonzero().flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert bool(zero[0, top:bottom, left:right].all())  # a filled rectangle
        assert torch.equal(out[~zero], frames[~zero])  # the rest untouched
        # a centre (cy, cx) inside the frame explains the box: [cy - pad, cy + pad) clipped
        assert any(max(cy - pad, 0) == top and min(cy + pad, 50) == bottom for cy in range(50))
        assert any(max(cx - pad, 0) == left and min(cx + pad, 70) == right for cx in range(70))


def test_randaugment_applies_one_op_to_every_frame() -> None:
    frame = torch.randint(0, 256, (1, 9, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    clip = frame.expand(6, 9, 10, 3).contiguous()  # a still video
    augment = RandAugment(num_ops=2, magnitude=15)
    for seed in range(60):
        out = augment(clip, generator=torch.Generator().manual_seed(seed))
        # identical frames stay identical, but for the rows where frames meet, which Sharpness
        # blurs across in Scenic's tall image
        assert torch.equal(out[:, 1:-1], out[:1, 1:-1].expand(6, 7, 10, 3))


def test_randaugment_draws_scenics_ops_uniformly_with_identity() -> None:
    # 1024 pixels: Scenic's Contrast blends toward grey 4, not toward black like Brightness
    frames = torch.randint(40, 200, (4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    # Solarize at M 15 is the identity (threshold 384): the two are counted together
    candidates = {
        name: randaugment_op(frames, name, 15) for name in RANDAUGMENT_OPS if name not in ("Cutout", "Solarize")
    }
    candidates["identity"] = frames
    assert len({bytes(c.numpy()) for c in candidates.values()}) == 10  # all distinct on this clip
    assert torch.equal(randaugment_op(frames, "Solarize", 15), frames)
    counts = dict.fromkeys([*candidates, "Cutout"], 0)
    augment = RandAugment(num_ops=1, magnitude=15)
    for seed in range(600):
        out = augment(frames, generator=torch.Generator().manual_seed(seed))
        found = [name for name, c in candidates.items() if torch.equal(out, c)]
        if not found:
            assert bool((out == 0).any()), "not one of Scenic's ops"
            found = ["Cutout"]
        counts[found[0]] += 1
    assert 100 - 40 < counts.pop("identity") < 100 + 40  # identity + Solarize: 2/12 of 600 draws
    for name, count in counts.items():
        assert 50 - 30 < count < 50 + 30, (name, counts)  # 1/12 each


def test_randaugment_validation() -> None:
    with pytest.raises(ValueError, match="num_ops must be an int >= 0"):
        RandAugment(num_ops=-1)
    with pytest.raises(ValueError, match="magnitude must be a number >= 0"):
        RandAugment(magnitude=float("nan"))
    with pytest.raises(ValueError, match=r"uint8 RGB frames \(T, H, W, 3\)"):
        RandAugment()(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="unknown RandAugment op 'Rotate'"):
        randaugment_op(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "Rotate", 10)
    frames = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    assert RandAugment(num_ops=0)(frames) is frames


# ---------------------------------------------------------------- through the training transform


def _still_video(t: int = 8, h: int = 40, w: int = 48) -> np.ndarray:
    frame = np.random.default_rng(7).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(frame, (t, h, w, 3)))


def test_transform_randaugment_keeps_frames_consistent() -> None:
    transform = create_transform({"input_size": (3, 8, 32, 32), "resize_size": 36}, train=True, randaugment=(2, 15))
    assert transform.randaugment == (2, 15.0)
    video = _still_video()
    for seed in range(12):
        out = transform(video, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
        assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
        assert torch.equal(out[:, :, 1:-1], out[:, :1, 1:-1].expand(3, 8, 30, 32))


def test_transform_colour_runs_on_the_crop_before_normalization() -> None:
    cfg = {"input_size": (3, 8, 32, 32), "resize_size": 36}
    plain = create_transform(cfg, train=True)(_still_video(), generator=torch.Generator().manual_seed(3))
    grey = create_transform(cfg, train=True, color_drop_prob=1.0)(
        _still_video(), generator=torch.Generator().manual_seed(3)
    )
    # the same crop and flip (colour draws come after them); grey of the [0, 1] pixels, normalized
    expected = 2 * torch.einsum("c...,c->...", (plain + 1) / 2, torch.tensor(GRAYSCALE_WEIGHTS)) - 1
    for channel in range(3):
        torch.testing.assert_close(grey[channel], expected, atol=2e-6, rtol=0)
    jittered = create_transform(cfg, train=True, color_prob=1.0)(_still_video(), generator=torch.Generator())
    assert torch.equal(jittered, jittered[:, :1].expand_as(jittered))  # one draw for the clip


def test_transform_options_from_cfg_and_errors() -> None:
    cfg = {"input_size": (3, 8, 32, 32), "resize_size": 36, "randaugment": [2, 20]}
    assert create_transform(cfg, train=True).randaugment == (2, 20.0)
    assert create_transform(cfg, train=True, randaugment=None).randaugment is None
    k400 = create_transform({"color_prob": 0.8, "color_drop_prob": 0.1}, train=True)
    assert (k400.color_prob, k400.color_drop_prob) == (0.8, 0.1)
    with pytest.raises(ValueError, match="RandAugment and colour augmentation are alternatives"):
        create_transform(None, train=True, randaugment=(2, 15), color_prob=0.8)
    with pytest.raises(ValueError, match=r"randaugment must be \(num_ops, magnitude\)"):
        create_transform(None, train=True, randaugment=(2,))
    with pytest.raises(TypeError, match="unexpected overrides"):
        create_transform(None, train=False, randaugment=(2, 15))


def test_video_dataset_serves_randaugmented_clips(tmp_path) -> None:
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        np.save(tmp_path / label / "clip.npy", _still_video(t=12))
    cfg = {"input_size": (3, 8, 32, 32), "resize_size": 36, "frame_stride": 1, "randaugment": (2, 15)}
    dataset = VideoDataset(tmp_path, "train", pretrained_cfg=cfg, seed=0)
    assert dataset.transform.randaugment == (2, 15.0)
    plain = VideoDataset(tmp_path, "train", pretrained_cfg={**cfg, "randaugment": None}, seed=0)
    differs = 0
    for index in range(2):
        for epoch in range(4):
            dataset.set_epoch(epoch)
            plain.set_epoch(epoch)
            clip = dataset[index]["video"]
            assert clip.shape == (3, 8, 32, 32)
            assert torch.equal(clip[:, :, 1:-1], clip[:, :1, 1:-1].expand(3, 8, 30, 32))
            differs += not torch.equal(clip, plain[index]["video"])
    assert differs >= 5  # RandAugment changed most clips (each of 8 keeps its pixels with chance (2/12)^2)
