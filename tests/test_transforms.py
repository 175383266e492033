"""Tests for vivit.data.transforms and vivit.data.sampling: Scenic/DMVR preprocessing conventions.

Reference numbers marked "DMVR" / "Scenic" / "JAX" were produced by running the real
`dmvr/processors.py`, Scenic's `video_ops.three_spatial_crops` (TF 2.21) and Scenic's
`sample_frames_uniformly` (JAX 0.10.2, float32 defaults) once, and are hard-coded here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vivit
from vivit.data.sampling import multiview_clip_starts, sample_frame_indices, scenic_uniform_frame_indices
from vivit.data.transforms import (
    DEFAULT_DATA_CFG,
    VideoEvalTransform,
    VideoTrainTransform,
    center_crop,
    create_transform,
    resize_short_side,
    resolve_data_config,
    short_side_size,
    three_crops,
    to_float_clip,
)

HERE = Path(__file__).parent
FIXTURE_DIRS = [
    HERE / "data" / "scenic" / "forward",
    HERE.parent.parent / "shared" / "fixtures" / "scenic" / "forward",
]


def _video(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _column_video(t: int, h: int, w: int) -> np.ndarray:
    """uint8 video whose every pixel holds its column index (w <= 256)."""
    cols = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, None, :, None], (t, h, w, 3))
    return np.ascontiguousarray(cols)


def _decode_columns(out: torch.Tensor) -> torch.Tensor:
    """Column indices back from a mean = std = 0.5 normalized output (C, T, H, W)."""
    return torch.round((out[0, 0, 0] + 1) * 127.5).long()


# ---------------------------------------------------------------- config


def test_resolve_defaults_and_crop_from_input_size() -> None:
    cfg = resolve_data_config(None)
    assert cfg["crop_size"] == (224, 224) and cfg["resize_size"] == 256
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    ssv2 = resolve_data_config({"input_size": (3, 32, 256, 256), "resize_size": 288, "url": "x"})
    assert ssv2["crop_size"] == (256, 256) and ssv2["url"] == "x"
    assert resolve_data_config({"crop_size": 200}, crop_size=(192, 160))["crop_size"] == (192, 160)
    assert DEFAULT_DATA_CFG["test_views"] == (4, 3)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"interpolation": "nearest"}, "interpolation must be one of"),
        ({"mean": (0.5, 0.5)}, "mean must have 3 entries"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
        ({"crop_size": (1, 2, 3)}, "crop_size must be an int or an"),
        ({"test_views": (4,)}, "test_views must be"),
        ({"sample_fps": 0}, "sample_fps must be a positive number of frames per second"),
        ({"sample_fps": float("nan")}, "sample_fps must be a positive number of frames per second"),
    ],
)
def test_resolve_rejects_bad_cfg(cfg: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_data_config(cfg)


def test_a_crop_larger_than_the_resize_is_the_cfgs_fault_not_the_videos(tmp_path: Path) -> None:
    """A checkpoint whose cfg crops 256 out of frames resized to 224: every video failed with
    "three_crops expected a clip at least 256x256", as if the videos were too small."""
    message = r"inconsistent preprocessing cfg: crop_size 256 > resize_size 224"
    for make in (
        lambda: resolve_data_config({"resize_size": 224, "crop_size": 256}),
        lambda: resolve_data_config({"input_size": (3, 32, 256, 256), "resize_size": 224}),  # crop from input_size
        lambda: create_transform({"resize_size": 224, "crop_size": 256}),
        lambda: create_transform({}, train=True, resize_size=224, crop_size=256),
        lambda: VideoEvalTransform(224, 256),
    ):
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match=r"crop_size 240x300 > resize_size 200"):
        create_transform({}, resize_size=200, crop_size=(240, 300))
    # a non-square crop that fits the short side is the cfg's right (landscape videos fit it)
    assert create_transform({}, resize_size=128, crop_size=(112, 160))(_video(1, 240, 320)).shape == (3, 1, 112, 160)
    # as a user meets it: the dataset refuses the cfg before reading any video
    with pytest.raises(ValueError, match=message):
        vivit.VideoDataset([tmp_path / "any.mp4"], "eval", pretrained_cfg={"resize_size": 224, "crop_size": 256})


def test_create_transform_rejects_unknown_override() -> None:
    with pytest.raises(TypeError, match="unexpected overrides"):
        create_transform({}, resize=256)
    with pytest.raises(TypeError, match="hflip"):
        create_transform({}, train=False, hflip=0.5)


def test_repr_is_readable() -> None:
    text = repr(create_transform({"resize_size": 288, "crop_size": 256}))
    assert text.startswith("VideoEvalTransform(") and "resize_size=288" in text and "crop_size=(256, 256)" in text
    assert "hflip=0.5" in repr(create_transform({}, train=True))


# ---------------------------------------------------------------- eval transform


def test_eval_exact_when_no_resize_needed() -> None:
    # Short side already 256: the transform is a central crop plus DMVR's x * 2/255 - 1.
    frames = _video(3, 256, 300)
    out = create_transform({})(frames)
    top, left = (256 - 224) // 2, (300 - 224) // 2
    crop = frames[:, top : top + 224, left : left + 224].astype(np.float32)
    expected = crop * np.float32(2.0 / 255.0) - np.float32(1.0)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 224, 224)
    assert torch.equal(out, torch.from_numpy(expected.transpose(3, 0, 1, 2)))


def test_eval_general_mean_std() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = _video(2, 224, 224, seed=1)
    out = create_transform({"mean": mean, "std": std, "resize_size": 224})(frames).numpy()
    expected = (frames / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected.transpose(3, 0, 1, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 240, 320), (4, 320, 240), (2, 97, 131), (1, 1080 // 4, 1920 // 4)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_shapes_and_range(shape: tuple[int, int, int], interpolation: str) -> None:
    frames = _video(*shape)
    for inp in (frames, torch.from_numpy(frames)):
        out = create_transform({}, interpolation=interpolation)(inp)
        assert out.shape == (3, shape[0], 224, 224) and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_eval_non_square_crop_and_numpy_views() -> None:
    frames = _video(2, 300, 400)[:, ::-1]  # negative strides must be accepted
    out = create_transform({}, resize_size=128, crop_size=(112, 96))(frames)
    assert out.shape == (3, 2, 112, 96)


def test_eval_center_crop_offsets_through_transform() -> None:
    # 32 x 60 frames, short side already 32: central crop of 24 starts at column (60 - 24) // 2.
    out = create_transform({}, resize_size=32, crop_size=24)(_column_video(2, 32, 60))
    assert torch.equal(_decode_columns(out), torch.arange(18, 42))


def test_constant_video_survives_resize() -> None:
    frames = np.full((2, 120, 200, 3), 77, dtype=np.uint8)
    for interpolation in ("bilinear", "bicubic"):
        for antialias in (True, False):
            out = create_transform({}, interpolation=interpolation, antialias=antialias)(frames)
            torch.testing.assert_close(out, torch.full_like(out, 77 * 2 / 255 - 1))


# ---------------------------------------------------------------- resize and crops


@pytest.mark.parametrize(
    "hw, expected",
    # DMVR resize_smallest(min_resize=256) output sizes.
    [
        ((240, 320), (256, 341)),
        ((320, 240), (341, 256)),
        ((256, 256), (256, 256)),
        ((1080, 1920), (256, 455)),
        ((100, 300), (256, 768)),
        ((257, 999), (256, 995)),
    ],
)
def test_short_side_size_matches_dmvr(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    assert short_side_size(*hw, 256) == expected
    out = resize_short_side(torch.zeros(1, *hw, 3, dtype=torch.uint8), 256)
    assert tuple(out.shape) == (1, 3, *expected)


def test_resize_without_antialias_is_half_pixel_bilinear() -> None:
    # 2x upsampling with half-pixel centres: output col 1 sits at input x = 0.25 -> 0.75*a + 0.25*b.
    frames = torch.tensor([0, 100], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 2, 2, 3).contiguous()
    out = resize_short_side(frames, 4, antialias=False)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 25.0, 75.0, 100.0]))


def _index_grid(h: int, w: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows, cols])  # (2, H, W): channel 0 = row, channel 1 = column


def _offsets(crops: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(int(c[0, 0, 0]), int(c[1, 0, 0])) for c in crops]


@pytest.mark.parametrize(
    "h, w, size, expected",
    # Scenic video_ops.three_spatial_crops, run on an index grid.
    [
        (256, 341, 224, [(16, 0), (16, 59), (16, 117)]),
        (341, 256, 224, [(0, 16), (59, 16), (117, 16)]),
        (256, 256, 224, [(16, 0), (16, 16), (16, 32)]),
        (257, 300, 224, [(17, 0), (17, 38), (17, 76)]),
        (288, 513, 256, [(16, 0), (16, 129), (16, 257)]),
    ],
)
def test_three_crops_match_scenic(h: int, w: int, size: int, expected: list) -> None:
    crops = three_crops(_index_grid(h, w), size)
    assert _offsets(crops) == expected
    assert all(c.shape == (2, size, size) for c in crops)


@pytest.mark.parametrize(
    "h, w, expected",
    # DMVR crop_image(random=False) = tf.image.resize_with_crop_or_pad: offsets round down.
    [(256, 341, (16, 58)), (341, 256, (58, 16)), (257, 300, (16, 38)), (256, 455, (16, 115))],
)
def test_center_crop_matches_dmvr(h: int, w: int, expected: tuple[int, int]) -> None:
    crop = center_crop(_index_grid(h, w), 224)
    assert _offsets([crop]) == [expected] and crop.shape == (2, 224, 224)


def test_center_crop_pads_small_inputs() -> None:
    out = center_crop(torch.ones(1, 10, 20), (14, 20))
    assert out.shape == (1, 14, 20) and out.sum() == 10 * 20
    assert out[0, :2].sum() == 0 and out[0, -2:].sum() == 0


def test_three_crops_reject_small_clip() -> None:
    with pytest.raises(ValueError, match="at least 224x224"):
        three_crops(torch.zeros(3, 2, 200, 300), 224)


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "frames, match",
    [
        (
            np.zeros((2, 32, 32, 3), np.float32),
            r"expected uint8 frames of shape \(T, H, W, C\).*float32",
        ),
        (torch.zeros(2, 32, 32, 3), r"expected uint8 frames.*torch.float32"),
        (
            np.zeros((1, 2, 32, 32, 3), np.uint8),
            r"expected uint8 frames of shape \(T, H, W, C\).*5 dimensions",
        ),
        (np.zeros((32, 32, 3), np.uint8), r"3 dimensions"),
        (np.zeros((2, 3, 32, 32), np.uint8), r"C == 3 \(channels last\)"),
        (np.zeros((2, 32, 32, 4), np.uint8), r"C == 3"),
        (np.zeros((0, 32, 32, 3), np.uint8), r"non-empty"),
        ([[[[0, 0, 0]]]], r"numpy array or torch tensor; got list"),
    ],
)
def test_bad_frames_raise(frames: object, match: str) -> None:
    for train in (False, True):
        with pytest.raises(ValueError, match=match):
            create_transform({}, train=train)(frames)


# ---------------------------------------------------------------- train transform


def test_train_shape_range_and_determinism() -> None:
    frames = _video(4, 240, 320, seed=3)
    transform = create_transform({}, train=True)
    assert isinstance(transform, VideoTrainTransform) and isinstance(create_transform({}), VideoEvalTransform)
    a = transform(frames, generator=torch.Generator().manual_seed(7))
    b = transform(frames, generator=torch.Generator().manual_seed(7))
    c = transform(frames, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 4, 224, 224) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # A generator given at construction is used when the call has none.
    seeded = create_transform({}, train=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded(frames), a)


def test_train_flips_for_some_seeds_only() -> None:
    # No resize and no jitter: the output is a crop of the column ramp, flipped or not.
    frames = _column_video(2, 32, 60)
    transform = create_transform({}, train=True, resize_size=32, crop_size=24, scale=(1.0, 1.0))
    flipped = []
    for seed in range(16):
        cols = _decode_columns(transform(frames, generator=torch.Generator().manual_seed(seed)))
        step = cols[1:] - cols[:-1]
        assert bool((step == 1).all()) or bool((step == -1).all())
        assert int(cols.min()) >= 0 and int(cols.max()) <= 59
        flipped.append(bool(step[0] == -1))
    assert any(flipped) and not all(flipped)
    always = create_transform({}, train=True, resize_size=32, crop_size=24, scale=(1.0, 1.0), hflip=1.0)
    cols = _decode_columns(always(frames, generator=torch.Generator().manual_seed(0)))
    assert bool((cols[1:] - cols[:-1] == -1).all())


def test_train_same_op_for_every_frame() -> None:
    frame = _video(1, 200, 260, seed=5)
    out = create_transform({}, train=True)(np.repeat(frame, 3, axis=0), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_train_jitter_never_below_crop() -> None:
    # 230 * (0.9 .. 0.95) = 207 .. 218 < 224: the jitter is floored to the crop
    transform = create_transform({}, train=True, resize_size=230, crop_size=224, scale=(0.9, 0.95))
    assert transform(_video(1, 240, 320), generator=torch.Generator().manual_seed(0)).shape == (
        3,
        1,
        224,
        224,
    )


def test_train_cfg_can_pin_augmentation() -> None:
    transform = create_transform({"hflip": 0.0, "scale": (1.0, 1.0)}, train=True)
    assert transform.hflip == 0.0 and transform.scale == (1.0, 1.0)
    assert create_transform({"hflip": 0.0}, train=True, hflip=1.0).hflip == 1.0


def test_train_rejects_bad_args() -> None:
    with pytest.raises(ValueError, match="hflip"):
        create_transform({}, train=True, hflip=1.5)
    with pytest.raises(ValueError, match="scale"):
        create_transform({}, train=True, scale=(1.2, 1.1))


# ---------------------------------------------------------------- temporal sampling


def test_sample_frame_indices_stride_start_and_loop() -> None:
    np.testing.assert_array_equal(sample_frame_indices(100, 4, 3, start=10), [10, 13, 16, 19])
    # DMVR sample_or_pad_sequence_indices(repeat_sequence=True): the video loops.
    np.testing.assert_array_equal(sample_frame_indices(5, 8, 2, start=3), [3, 0, 2, 4, 1, 3, 0, 2])
    np.testing.assert_array_equal(sample_frame_indices(10, 4, 3, start=25), [5, 8, 1, 4])
    assert sample_frame_indices(10, 4, 3).dtype == np.int64


@pytest.mark.parametrize(
    "length, n, s, first",
    # DMVR sample_sequence(random=False) first indices.
    [(100, 32, 2, 18), (301, 32, 2, 118), (31, 8, 2, 7), (5, 4, 3, 0)],
)
def test_sample_frame_indices_centered_matches_dmvr(length: int, n: int, s: int, first: int) -> None:
    idx = sample_frame_indices(length, n, s)
    assert idx[0] == first and len(idx) == n
    np.testing.assert_array_equal(idx, (first + s * np.arange(n)) % length)


def test_sample_frame_indices_random() -> None:
    starts = {int(sample_frame_indices(100, 8, 4, generator=torch.Generator().manual_seed(s))[0]) for s in range(200)}
    # Random starts keep the whole clip inside the video: start <= 100 - 7 * 4 - 1.
    assert min(starts) >= 0 and max(starts) <= 71 and len(starts) > 30
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(
        sample_frame_indices(100, 8, 4, generator=g1), sample_frame_indices(100, 8, 4, generator=g2)
    )
    # A video too short for the clip always starts at 0 and loops.
    np.testing.assert_array_equal(sample_frame_indices(6, 4, 2, generator=torch.Generator()), [0, 2, 4, 0])
    # An explicit start wins over the generator.
    assert sample_frame_indices(100, 8, 4, start=5, generator=torch.Generator())[0] == 5


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 8, 2), "num_video_frames"),
        ((10, 0, 2), "num_frames"),
        ((10, 8, 0), "stride"),
        ((10, 8, 2, -1), "start"),
    ],
)
def test_sample_frame_indices_bad_args(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_frame_indices(*args)


@pytest.mark.parametrize(
    "length, n, s, clips, expected",
    # DMVR sample_linspace_sequence offsets (max offset = length - n * s, float32 linspace).
    [
        (300, 32, 2, 4, [0, 78, 157, 236]),
        (250, 32, 2, 4, [0, 62, 124, 186]),
        (1000, 32, 1, 4, [0, 322, 645, 968]),
        (31, 8, 2, 5, [0, 3, 7, 11, 15]),
        (333, 16, 4, 7, [0, 44, 89, 134, 179, 224, 269]),
        (65, 32, 2, 4, [0, 0, 0, 1]),
        (63, 32, 2, 3, [0, 0, 0]),
    ],
)
def test_multiview_clip_starts_match_dmvr(length: int, n: int, s: int, clips: int, expected: list) -> None:
    assert multiview_clip_starts(length, n, s, clips) == expected


def test_multiview_single_clip_is_centered() -> None:
    assert multiview_clip_starts(100, 32, 2, 1) == [18] == [int(sample_frame_indices(100, 32, 2)[0])]
    with pytest.raises(ValueError, match="num_clips"):
        multiview_clip_starts(100, 32, 2, 0)


# ---------------------------------------------------------------- Scenic uniform frame sampling


def _fixture_files() -> list[Path]:
    for directory in FIXTURE_DIRS:
        files = sorted(directory.glob("*framesample*.json"))
        if files:
            return files
    return []


def test_uniform_indices_match_scenic_fixtures() -> None:
    files = _fixture_files()
    if not files:
        pytest.skip("Scenic forward fixtures not found")
    for path in files:
        meta = json.loads(path.read_text())
        num_frames = meta["input"]["shape"][1]
        n = meta["config"]["model"]["temporal_encoding_config"]["n_sampled_frames"]
        expected = meta["temporal_sampling_frame_indices"]
        assert (num_frames, n) == (8, 4)
        assert scenic_uniform_frame_indices(num_frames, n).tolist() == expected == [2, 3, 5, 6]


@pytest.mark.parametrize(
    "t, n, expected",
    [
        (8, 2, [3, 5, 7]),  # arange(8/3, 8, 8/3) has 3 entries: n + 1 frames, last clipped to 7
        (5, 1, [2]),  # 2.5 rounds half to even
        (7, 3, [2, 4, 5]),  # 1.75, 3.5 -> 4 (even), 5.25
        (8, 3, [2, 4, 6]),
        (32, 8, [4, 7, 11, 14, 18, 21, 25, 28]),  # JAX
        (
            13,
            11,
            [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12],
        ),  # JAX; float64 arithmetic would give 6, not 7
        (23, 19, [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 20, 21, 22, 22]),  # JAX
        (8, 8, list(range(8))),  # n >= T: every frame, once
        (8, 10, list(range(8))),
    ],
)
def test_uniform_indices_hand_checked(t: int, n: int, expected: list[int]) -> None:
    out = scenic_uniform_frame_indices(t, n)
    assert out.dtype == np.int64 and out.tolist() == expected


# ---------------------------------------------------------------- the uint8, crop-first fast path


def _float_reference_views(frames: np.ndarray, cfg: dict, crops: int) -> list[torch.Tensor]:
    """The whole frame resized in float32, then cropped: the path the transforms replaced."""
    clip = resize_short_side(torch.from_numpy(frames), cfg["resize_size"], cfg["interpolation"], cfg["antialias"])
    spatial = three_crops(clip, cfg["crop_size"]) if crops == 3 else [center_crop(clip, cfg["crop_size"])]
    return [(c.permute(1, 0, 2, 3) * np.float32(2 / 255) - 1) for c in spatial]


# Grey levels between the uint8 kernels and float32: both round-trips of a two-pass uint8 resize
# (0.5 each) plus the kernels' 16-bit fixed-point weights; measured worst case 1.014, on noise.
_UINT8_BILINEAR_TOLERANCE = 1.02 / 127.5
_FLOAT_TOLERANCE = 0.1 / 127.5  # bicubic resamples the cropped region in float32


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape", [(2, 360, 640), (2, 143, 175), (2, 500, 290)])
def test_crop_first_path_matches_whole_frame_float_path(interpolation: str, antialias: bool, shape: tuple) -> None:
    from vivit.data.transforms import crop_test_views

    frames = _video(*shape, seed=5)
    cfg = resolve_data_config({}, interpolation=interpolation, antialias=antialias)
    tolerance = _UINT8_BILINEAR_TOLERANCE if interpolation == "bilinear" else _FLOAT_TOLERANCE
    for crops in (1, 3):
        got = crop_test_views(torch.from_numpy(frames), crops, cfg)
        for a, b in zip(got, _float_reference_views(frames, cfg, crops), strict=True):
            assert a.shape == b.shape == (3, shape[0], 224, 224) and a.is_contiguous()
            torch.testing.assert_close(a, b, rtol=0, atol=tolerance)
    # the eval transform is the centre view
    torch.testing.assert_close(
        create_transform(cfg)(frames), _float_reference_views(frames, cfg, 1)[0], rtol=0, atol=tolerance
    )


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_train_crop_first_matches_float_path(interpolation: str) -> None:
    frames = _video(3, 300, 420, seed=6)
    transform = create_transform({}, train=True, interpolation=interpolation, antialias=False)
    tolerance = _UINT8_BILINEAR_TOLERANCE if interpolation == "bilinear" else _FLOAT_TOLERANCE
    for seed in range(4):
        got = transform(frames, generator=torch.Generator().manual_seed(seed))
        draws = torch.Generator().manual_seed(seed)  # replay the transform's draws on the float path
        s_h, s_w = (0.9 + (1.33 - 0.9) * torch.rand(2, generator=draws, dtype=torch.float64)).tolist()
        base_h, base_w = short_side_size(300, 420, 256)
        size = (max(int(s_h * base_h), 224), max(int(s_w * base_w), 224))
        clip = to_float_clip(torch.from_numpy(frames), size, interpolation, antialias=False)
        top = int(torch.randint(size[0] - 223, (1,), generator=draws))
        left = int(torch.randint(size[1] - 223, (1,), generator=draws))
        clip = clip[..., top : top + 224, left : left + 224]
        if float(torch.rand(1, generator=draws)) < 0.5:
            clip = clip.flip(-1)
        torch.testing.assert_close(got, clip.permute(1, 0, 2, 3) * np.float32(2 / 255) - 1, rtol=0, atol=tolerance)


def test_torchvision_layout_is_accepted_and_ambiguity_refused() -> None:
    from vivit.data.transforms import as_thwc

    frames = _video(4, 40, 50, seed=2)
    tchw = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # torchvision's (T, C, H, W)
    evaluate = create_transform({}, resize_size=32, crop_size=24)
    assert torch.equal(evaluate(tchw), evaluate(frames))
    train = create_transform({}, train=True)
    seeded = [torch.Generator().manual_seed(0) for _ in range(2)]
    assert torch.equal(train(tchw, generator=seeded[0]), train(frames, generator=seeded[1]))
    assert torch.equal(as_thwc(tchw), torch.from_numpy(frames))
    with pytest.raises(ValueError, match=r"ambiguous frame layout \(4, 3, 50, 3\)"):
        as_thwc(torch.zeros(4, 3, 50, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(T, C, H, W\) is accepted as a torch tensor"):
        as_thwc(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))  # numpy is always channels last


def test_memory_mapped_frames_are_not_copied_whole(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", _video(6, 64, 80, seed=4))
    frames = np.load(tmp_path / "v.npy", mmap_mode="r")  # read-only
    out = create_transform({}, resize_size=64, crop_size=48)(frames)
    assert out.shape == (3, 6, 48, 48)
