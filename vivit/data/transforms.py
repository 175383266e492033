"""Video preprocessing that reproduces Scenic's (DMVR-based) ViViT input pipeline in plain torch.

The released ViViT checkpoints were trained and evaluated with DeepMind's DMVR readers as wired up
by Scenic (`scenic/projects/vivit/data/video_tfrecord_dataset.py`), so every convention here follows
those two code bases rather than torchvision's:

* temporal sampling lives in `vivit.data.sampling` (DMVR's index arithmetic);
* the short-side resize computes the output size like `dmvr.processors.resize_smallest`
  (integer floor, never below the target);
* the single evaluation crop is DMVR's central crop (`tf.image.resize_with_crop_or_pad`, offset
  rounded down); the three test crops follow Scenic's `video_ops.three_spatial_crops`
  (left/centre/right along the longer side, centre offset rounded *up*);
* pixels map to `(x / 255 - mean) / std`; with the released models' mean = std = 0.5 this is
  computed as `x * (2 / 255) - 1`, bit-for-bit what `dmvr.processors.normalize_image` does.

Frames go in as decoded uint8 `(T, H, W, C)` (numpy or torch; also torchvision's `(T, C, H, W)`
as a torch tensor, see `as_thwc`) and come out as float32 `(C, T, H, W)`, the layout the models take.

The transforms work on uint8 and crop before they resize: only the source region that ends up in
the crop (plus a margin for the filter) is resampled, with `F.interpolate` on uint8 channels-last
frames on the CPU, and only the cropped clip is converted to float. Work and memory are therefore
bounded by the output size, not the frame size. The region is chosen so that its resampling grid
is the full frame's grid shifted by whole pixels (see `vivit.data._resample`), so the pixels match
resizing the whole frame in float and cropping (`resize_short_side` + `center_crop`, kept as the
reference) to within one grey level (the uint8 kernels round their result to integers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ._resample import RESIZE_CHUNK, Box, resized_crops
from .augment import ColorAugment, RandAugment
from .sampling import check_sample_fps

__all__ = [
    "DEFAULT_DATA_CFG",
    "VideoEvalTransform",
    "VideoTrainTransform",
    "as_thwc",
    "center_crop",
    "check_crop_fits",
    "create_transform",
    "resize_short_side",
    "resolve_data_config",
    "short_side_size",
    "three_crops",
    "to_float_clip",
]

#: Preprocessing of the released Kinetics ViViT checkpoints; any key missing from a model's
#: `pretrained_cfg` falls back to these values.
DEFAULT_DATA_CFG: dict[str, Any] = {
    "input_size": (3, 32, 224, 224),
    "frame_stride": 2,
    "resize_size": 256,
    "crop_size": 224,
    "interpolation": "bilinear",
    "antialias": True,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "test_views": (4, 3),
    # Frames by presentation time, this many per second (`vivit.data.sampling.*_by_time`); None:
    # every `frame_stride` frames, as DMVR and Scenic sample (the released models were trained and
    # evaluated so). A cfg may record the rate a model was trained at.
    "sample_fps": None,
}

# Scenic's ViViT configs use DMVR `scale_jitter_augm` with these factors and probability 1.0.
_DEFAULT_SCALE_JITTER: tuple[float, float] = (0.9, 1.33)
_INTERPOLATIONS = ("bilinear", "bicubic")


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Normalizes an int or an (H, W) pair to a validated pair of positive ints.

    Args:
        value: An int (square) or a two-element sequence (height, width).
        name: The parameter name, for the error message.

    Returns:
        `(height, width)`.
    """
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        try:
            values = tuple(int(v) for v in value)
        except TypeError:
            raise ValueError(f"{name} must be an int or an (H, W) pair, got {value!r}") from None
        if len(values) != 2:
            raise ValueError(f"{name} must be an int or an (H, W) pair, got {value!r}")
        pair = (values[0], values[1])
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def complete_cfg_from_model(model: Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` completed from the model itself where it says nothing about the input size.

    A cfg without `input_size` would fall back to 32 frames of 224x224, which a model built for
    another size rejects: the model's own frames and size are the only sensible default. Crop =
    the model's size; the short side keeps Kinetics' 256:224 ratio to the crop.
    """
    out = dict(cfg)
    if "input_size" not in out and hasattr(model, "img_size") and hasattr(model, "num_frames"):
        height, width = model.img_size
        out["input_size"] = (model.in_chans, model.num_frames, height, width)
        out.setdefault("crop_size", (height, width))
    if "resize_size" not in out and "input_size" in out:
        crop = out.get("crop_size", tuple(out["input_size"][-2:]))
        out["resize_size"] = round(min(_pair(crop, "crop_size")) * 256 / 224)
    return out


def resolve_data_config(
    pretrained_cfg: Mapping[str, Any] | None = None, *, model: Any = None, **overrides: Any
) -> dict[str, Any]:
    """Merges a model's `pretrained_cfg` with the defaults and explicit overrides.

    Keys not related to preprocessing (urls, labels, ...) are carried along untouched. If
    `crop_size` is given by neither the cfg nor the overrides, it is taken from `input_size`
    (so an SSv2 entry with `input_size=(3, 32, 256, 256)` crops 256 without saying so twice).

    With `model=` (timm's form, `resolve_data_config(model=model)` or
    `resolve_data_config({}, model=model)`): the cfg is `model.pretrained_cfg` with `pretrained_cfg`
    as overrides on top, completed from the model's own `num_frames` / `img_size` where it has no
    `input_size` (crop = the model's size, short side scaled 256:224), and only the preprocessing
    keys (those of `DEFAULT_DATA_CFG`) are returned, so that
    `create_transform(**resolve_data_config(model=model))` works.

    Args:
        pretrained_cfg: The model's `pretrained_cfg` dict (or `None` for the defaults); with
            `model=`, overrides of the model's cfg.
        model: A vivit model (reads `pretrained_cfg`, `num_frames`, `img_size`, `in_chans`).
        **overrides: Values that take precedence over both (`None` values are ignored).

    Returns:
        A new dict with at least every key of `DEFAULT_DATA_CFG`, validated.
    """
    if model is not None:
        cfg = complete_cfg_from_model(
            model, {**(getattr(model, "pretrained_cfg", None) or {}), **(pretrained_cfg or {})}
        )
        resolved = resolve_data_config(cfg, **overrides)
        return {key: resolved[key] for key in DEFAULT_DATA_CFG}
    given = {**(pretrained_cfg or {}), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = {**DEFAULT_DATA_CFG, **given}
    if "crop_size" not in given and "input_size" in given:
        cfg["crop_size"] = tuple(int(v) for v in given["input_size"][-2:])

    input_size = tuple(int(v) for v in cfg["input_size"])
    if len(input_size) != 4 or min(input_size) < 1:
        raise ValueError(f"input_size must be (C, T, H, W) with positive entries, got {input_size!r}")
    cfg["input_size"] = input_size
    cfg["crop_size"] = _pair(cfg["crop_size"], "crop_size")
    cfg["resize_size"] = int(cfg["resize_size"])
    if cfg["resize_size"] < 1:
        raise ValueError(f"resize_size must be positive, got {cfg['resize_size']!r}")
    check_crop_fits(cfg["resize_size"], cfg["crop_size"])
    cfg["frame_stride"] = int(cfg["frame_stride"])
    if cfg["frame_stride"] < 1:
        raise ValueError(f"frame_stride must be positive, got {cfg['frame_stride']!r}")
    if cfg["interpolation"] not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {cfg['interpolation']!r}")
    cfg["antialias"] = bool(cfg["antialias"])
    channels = input_size[0]
    for key in ("mean", "std"):
        values = tuple(float(v) for v in cfg[key])
        if len(values) != channels:
            raise ValueError(f"{key} must have {channels} entries (one per channel), got {values!r}")
        cfg[key] = values
    if min(cfg["std"]) <= 0:
        raise ValueError(f"std must be positive, got {cfg['std']!r}")
    views = tuple(int(v) for v in cfg["test_views"])
    if len(views) != 2 or min(views) < 1:
        raise ValueError(f"test_views must be (clips, crops) with positive entries, got {views!r}")
    cfg["test_views"] = views
    if cfg["sample_fps"] is not None:
        cfg["sample_fps"] = check_sample_fps(cfg["sample_fps"])
    return cfg


def check_crop_fits(resize_size: int, crop_size: tuple[int, int]) -> None:
    """Refuse a preprocessing cfg whose crop cannot fit in any resized frame.

    Frames are resized so that their short side is `resize_size`, then `crop_size` is cut out;
    a crop whose shorter side exceeds `resize_size` fits in no frame, whatever the video (a
    non-square crop may still not fit a frame of the other orientation: that is the video's
    shape, reported when it happens).

    Raises:
        ValueError: Saying the cfg is inconsistent, with both numbers.
    """
    if min(crop_size) > resize_size:
        crop = f"{crop_size[0]}" if crop_size[0] == crop_size[1] else f"{crop_size[0]}x{crop_size[1]}"
        raise ValueError(
            f"inconsistent preprocessing cfg: crop_size {crop} > resize_size {resize_size} (frames are resized to "
            f"a short side of resize_size, then crop_size is cut from them); fix the checkpoint's pretrained_cfg "
            "or override resize_size / crop_size"
        )


def _expected(channels: int) -> str:
    return f"uint8 frames of shape (T, H, W, C) with C == {channels}"


def _validate_frames(frames: np.ndarray | torch.Tensor, channels: int = 3) -> None:
    """Raises ValueError unless `frames` is uint8 video in a layout `as_thwc` accepts.

    Args:
        frames: The candidate frames.
        channels: The expected C.
    """
    as_thwc(frames, channels)


def as_thwc(frames: np.ndarray | torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Validates uint8 video frames and returns them as a `(T, H, W, C)` tensor (no copy if possible).

    Accepted layouts:

    * `(T, H, W, C)`, channels last: what decoders (PyAV, `vivit.VideoReader`) return; numpy or torch;
    * `(T, C, H, W)`: torchvision's video layout, as a torch tensor only (numpy arrays are always
      read as channels last). The rule: a torch tensor whose dimension 1 is `C` and whose last
      dimension is not. A tensor with both equal to `C` (e.g. `(T, 3, W, 3)`, a 3-pixel-high
      channels-last video or a 3-pixel-wide channels-first one) is ambiguous and refused.

    Args:
        frames: uint8 numpy array or tensor.
        channels: The number of channels C (3 for RGB).

    Returns:
        A uint8 tensor `(T, H, W, C)` sharing memory with `frames` where numpy allows it (a permuted
        view for `(T, C, H, W)` input).

    Raises:
        ValueError: For another dtype, rank or layout, an ambiguous layout, or an empty video.
    """
    expected = _expected(channels)
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise ValueError(f"expected {expected}; got a numpy array of dtype {frames.dtype}")
    elif isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise ValueError(f"expected {expected}; got a tensor of dtype {frames.dtype}")
    else:
        raise ValueError(f"expected {expected} as a numpy array or torch tensor; got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if len(shape) != 4:
        raise ValueError(f"expected {expected}; got {len(shape)} dimensions, shape {shape}")
    if isinstance(frames, torch.Tensor) and shape[1] == channels:
        if shape[-1] == channels:
            raise ValueError(
                f"ambiguous frame layout {shape}: (T, H, W, C) with H == {channels} or (T, C, H, W) with "
                f"W == {channels}; pass a numpy array (always read as (T, H, W, C)) or frames of another size"
            )
        frames = frames.permute(0, 2, 3, 1)  # torchvision's (T, C, H, W)
        shape = tuple(frames.shape)
    if shape[-1] != channels:
        hint = "; (T, C, H, W) is accepted as a torch tensor" if shape[1] == channels else ""
        raise ValueError(f"expected {expected} (channels last); got shape {shape}{hint}")
    if min(shape[:3]) < 1:
        raise ValueError(f"expected {expected} with non-empty T, H and W; got shape {shape}")
    return _as_tensor(frames)


def _as_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Wraps validated frames as a torch tensor, sharing memory where numpy allows it.

    Args:
        frames: uint8 numpy array or tensor.

    Returns:
        A uint8 tensor with the same contents.
    """
    if isinstance(frames, torch.Tensor):
        return frames
    if any(stride < 0 for stride in frames.strides):
        frames = np.array(frames)  # torch.from_numpy rejects negative strides (frames[..., ::-1])
    if not frames.flags.writeable:
        # Read-only buffers (memory-mapped files, np.frombuffer) are only ever read here, so
        # torch's warning about writing through the tensor does not apply; no copy is needed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(frames)
    return torch.from_numpy(frames)


def _check_frames(frames: np.ndarray | torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Validates decoded frames and returns them as a uint8 tensor `(T, H, W, C)`.

    Args:
        frames: uint8 frames, `(T, H, W, C)` or (torch) `(T, C, H, W)`.
        channels: The expected C.

    Returns:
        The frames as a `torch.uint8` tensor `(T, H, W, C)`.
    """
    return as_thwc(frames, channels)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output size of a short-side resize, computed as DMVR's `resize_smallest` does.

    The long side is `long * size // short` (rounded down), and neither side drops below `size`.

    Args:
        height: Input height.
        width: Input width.
        size: Target length of the shorter side.

    Returns:
        `(new_height, new_width)`.
    """
    return max(size, height * size // width), max(size, width * size // height)


def to_float_clip(
    frames: torch.Tensor,
    size: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Converts uint8 `(T, H, W, C)` frames to float32 `(T, C, H', W')` in [0, 255], maybe resized.

    Resizing uses `F.interpolate` with `align_corners=False` (half-pixel centres, like
    `tf.image.resize`); the anti-aliasing filter is only switched on when a side shrinks. Bicubic
    overshoot is clamped back to [0, 255], the range of the source pixels.

    Args:
        frames: uint8 tensor `(T, H, W, C)`.
        size: Output `(H', W')`; `None` or the input size skips resampling.
        interpolation: `"bilinear"` or `"bicubic"`.
        antialias: Low-pass filter when downscaling.

    Returns:
        float32 tensor `(T, C, H', W')` on the device of `frames`.
    """
    height, width = frames.shape[1:3]
    if size is None or tuple(size) == (height, width):
        return rearrange(frames, "t h w c -> t c h w").float()
    shrink = size[0] < height or size[1] < width
    chunks = []
    for part in frames.split(RESIZE_CHUNK):
        part = rearrange(part, "t h w c -> t c h w").float()
        part = F.interpolate(
            part,
            size=tuple(size),
            mode=interpolation,
            align_corners=False,
            antialias=antialias and shrink,
        )
        chunks.append(part)
    out = torch.cat(chunks)
    if interpolation == "bicubic":
        out = out.clamp_(0.0, 255.0)
    return out


def resize_short_side(
    frames: torch.Tensor,
    size: int,
    interpolation: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Resizes uint8 frames so the shorter side equals `size`, keeping the aspect ratio.

    Args:
        frames: uint8 tensor `(T, H, W, C)`.
        size: Target length of the shorter side (sizes as in `short_side_size`).
        interpolation: `"bilinear"` or `"bicubic"`.
        antialias: Low-pass filter when downscaling.

    Returns:
        float32 tensor `(T, C, H', W')` with values in [0, 255].
    """
    height, width = frames.shape[1:3]
    return to_float_clip(frames, short_side_size(height, width, size), interpolation, antialias)


def center_crop(clip: torch.Tensor, crop_size: int | tuple[int, int]) -> torch.Tensor:
    """Central crop over the last two dimensions, as DMVR's evaluation crop does.

    The offset is `(size - crop) // 2` (rounded down), as in `tf.image.resize_with_crop_or_pad`,
    which DMVR's `crop_image(random=False)` calls. A side shorter than the crop is zero-padded
    (before normalization, i.e. black), again like that function.

    Args:
        clip: Tensor `(..., H, W)`.
        crop_size: int or `(h, w)`.

    Returns:
        Tensor `(..., h, w)`; a view of `clip` unless padding was needed.
    """
    crop_h, crop_w = _pair(crop_size, "crop_size")
    height, width = clip.shape[-2:]
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        # Same split as resize_with_crop_or_pad: the smaller half of the padding goes first.
        clip = F.pad(clip, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = clip.shape[-2:]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return clip[..., top : top + crop_h, left : left + crop_w]


def three_crops(clip: torch.Tensor, crop_size: int | tuple[int, int]) -> list[torch.Tensor]:
    """The three test crops of the multi-view protocol (Scenic `video_ops.three_spatial_crops`).

    Along the longer side the crops sit at the start, centre and end (left/centre/right for
    landscape, top/centre/bottom for portrait); across it they are centred. As in Scenic's
    `deterministic_crop`, centred offsets are `ceil((size - crop) / 2)` (one pixel further than
    `center_crop` when the difference is odd), and a square frame is cropped left/centre/right.

    Args:
        clip: Tensor `(..., H, W)` already resized (short side >= crop).
        crop_size: int or `(h, w)`.

    Returns:
        Three views of `clip`, each `(..., h, w)`, in Scenic's order (index 0, 1, 2).
    """
    crop_h, crop_w = _pair(crop_size, "crop_size")
    height, width = clip.shape[-2:]
    if height < crop_h or width < crop_w:
        raise ValueError(f"three_crops expected a clip at least {crop_h}x{crop_w} (H x W); got {height}x{width}")
    top = math.ceil((height - crop_h) / 2)
    left = math.ceil((width - crop_w) / 2)
    if height > width:
        offsets = [(0, left), (top, left), (height - crop_h, left)]
    else:
        offsets = [(top, 0), (top, left), (top, width - crop_w)]
    return [clip[..., y : y + crop_h, x : x + crop_w] for y, x in offsets]


# ---------------------------------------------------------------- crops as boxes, then clips
def _to_clip(
    crop: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], pad: tuple[int, ...] = ()
) -> torch.Tensor:
    """A `(T, C, h, w)` crop (uint8 or float in [0, 255]) as a new normalized float32 `(C, T, h, w)` clip.

    Args:
        crop: The crop; not modified.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        pad: Zero padding `(left, right, top, bottom)` added before normalizing (black), if any.

    Returns:
        A contiguous float32 tensor `(C, T, h + top + bottom, w + left + right)`.
    """
    crop = crop.permute(1, 0, 2, 3)
    clip = torch.empty(crop.shape, dtype=torch.float32, device=crop.device)
    clip.copy_(crop)  # the only float conversion: of the cropped clip
    if any(pad):  # a non-square crop longer than the resized frame: black borders, as `center_crop`
        clip = F.pad(clip, pad)
    return _normalize(clip, mean, std, inplace=True)


def _center_boxes(size: tuple[int, int], crop: tuple[int, int]) -> tuple[Box, tuple[int, int, int, int]]:
    """DMVR's central crop of a `size` frame as a box inside it plus the zero padding it needs.

    Same offsets and padding as `center_crop` (offset rounded down; a side shorter than the crop
    is padded, the smaller half first).
    """
    (height, width), (crop_h, crop_w) = size, crop
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    box = (
        (height - crop_h) // 2 if not pad_h else 0,
        (width - crop_w) // 2 if not pad_w else 0,
        min(crop_h, height),
        min(crop_w, width),
    )
    return box, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)


def _three_boxes(size: tuple[int, int], crop: tuple[int, int]) -> list[Box]:
    """The boxes of `three_crops` (Scenic's left/centre/right test crops)."""
    (height, width), (crop_h, crop_w) = size, crop
    if height < crop_h or width < crop_w:
        raise ValueError(f"three_crops expected a clip at least {crop_h}x{crop_w} (H x W); got {height}x{width}")
    top, left = math.ceil((height - crop_h) / 2), math.ceil((width - crop_w) / 2)
    if height > width:
        offsets = [(0, left), (top, left), (height - crop_h, left)]
    else:
        offsets = [(top, 0), (top, left), (top, width - crop_w)]
    return [(y, x, crop_h, crop_w) for y, x in offsets]


def crop_test_views(frames: torch.Tensor, crops: int, cfg: Mapping[str, Any]) -> list[torch.Tensor]:
    """The `crops` (1: DMVR centre, 3: Scenic left/centre/right) test views of one clip.

    Args:
        frames: uint8 `(T, H, W, C)` frames of the clip.
        crops: 1 or 3.
        cfg: Resolved preprocessing cfg (`resolve_data_config`).

    Returns:
        `crops` float32 `(C, T, h, w)` views, normalized.
    """
    size = short_side_size(frames.shape[1], frames.shape[2], cfg["resize_size"])
    mean, std = cfg["mean"], cfg["std"]
    if crops == 3:
        boxes = _three_boxes(size, cfg["crop_size"])
        crops_ = resized_crops(frames, size, boxes, cfg["interpolation"], cfg["antialias"])
        return [_to_clip(crop, mean, std) for crop in crops_]
    box, pad = _center_boxes(size, cfg["crop_size"])
    (crop,) = resized_crops(frames, size, [box], cfg["interpolation"], cfg["antialias"])
    return [_to_clip(crop, mean, std, pad)]


def _normalize(
    clip: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], inplace: bool = False
) -> torch.Tensor:
    """Maps a float `(C, T, H, W)` clip in [0, 255] to `(x / 255 - mean) / std`.

    Written as one multiply and one add with the constants folded in double precision, which for
    mean = std = 0.5 is exactly DMVR's `x * (2 / 255) - 1` in float32.

    Args:
        clip: float32 tensor `(C, T, H, W)` with values in [0, 255].
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        inplace: Overwrite `clip` rather than return a new tensor.

    Returns:
        The normalized float32 tensor of the same shape.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=clip.dtype, device=clip.device)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=clip.dtype, device=clip.device)
    scaled = clip.mul_(scale.view(-1, 1, 1, 1)) if inplace else clip.mul(scale.view(-1, 1, 1, 1))
    return scaled.add_(shift.view(-1, 1, 1, 1))


class VideoEvalTransform:
    """Deterministic evaluation preprocessing: short-side resize, central crop, normalization.

    Takes uint8 frames `(T, H, W, C)` (numpy or torch; or torchvision's `(T, C, H, W)` as a tensor)
    and returns float32 `(C, T, h, w)` on the frames' device. All frames of the clip get the same
    spatial operation. Only the region that becomes the crop is resized (see the module docstring):
    within one grey level of resizing the whole frame in float32, with work bounded by the crop.

    Args:
        resize_size: Target length of the shorter side (output size as DMVR's `resize_smallest`).
        crop_size: int or `(h, w)` of the central crop.
        interpolation: `"bilinear"` or `"bicubic"`.
        antialias: Low-pass filter when downscaling (DMVR itself uses plain bilinear).
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
    """

    def __init__(
        self,
        resize_size: int,
        crop_size: int | tuple[int, int],
        interpolation: str = "bilinear",
        antialias: bool = True,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
    ) -> None:
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
        self.resize_size = int(resize_size)
        self.crop_size = _pair(crop_size, "crop_size")
        check_crop_fits(self.resize_size, self.crop_size)
        self.interpolation = interpolation
        self.antialias = bool(antialias)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Preprocesses one clip.

        Args:
            frames: uint8 `(T, H, W, C)` (numpy or torch) or torchvision's `(T, C, H, W)` tensor
                (see `as_thwc`).

        Returns:
            float32 `(C, T, h, w)`, contiguous.
        """
        video = _check_frames(frames, len(self.mean))
        size = short_side_size(video.shape[1], video.shape[2], self.resize_size)
        box, pad = _center_boxes(size, self.crop_size)
        (crop,) = resized_crops(video, size, [box], self.interpolation, self.antialias)
        return _to_clip(crop, self.mean, self.std, pad)

    def _fields(self) -> dict[str, Any]:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "antialias": self.antialias,
            "mean": self.mean,
            "std": self.std,
        }

    def __repr__(self) -> str:
        body = "".join(f"\n    {key}={value!r}," for key, value in self._fields().items())
        return f"{type(self).__name__}({body}\n)"


class VideoTrainTransform(VideoEvalTransform):
    """Scenic's ViViT training augmentation: scale jitter, random crop, flip, then RandAugment or colour.

    The recipe, per clip (one draw shared by all its frames):

    1. `(h0, w0)` = the short-side resize of the frame to `resize_size` (as in evaluation);
    2. scale jitter: independent factors `s_h, s_w ~ U[scale[0], scale[1])` and target size
       `(int(s_h * h0), int(s_w * w0))`, never below the crop size (DMVR `scale_jitter_augm`,
       which Scenic's ViViT configs run with factors 0.9..1.33 and probability 1; the aspect
       ratio therefore jitters too). The frame is resampled once from the source straight to
       this size rather than twice as in DMVR, which saves a blur;
    3. a `crop_size` crop at a uniformly random offset (DMVR `crop_image(random=True)`);
    4. horizontal flip with probability `hflip` (DMVR `random_flip_left_right`: 0.5; Scenic
       turns it off for Something-Something, whose labels are direction-sensitive);
    5. with `randaugment=(N, M)`: Scenic's video RandAugment on the uint8 crop
       (`vivit.data.augment.RandAugment`; Scenic's EPIC-Kitchens recipe (2, 15), SSv2 (2, 20));
    6. with `color_prob` / `color_drop_prob`: DMVR's `color_default_augm` on the crop's [0, 1]
       pixels (`vivit.data.augment.ColorAugment`; Scenic's Kinetics recipe 0.8 and 0.1);
    7. normalization as in evaluation.

    Scenic runs RandAugment and colour augmentation as alternatives (`video_ops.additional_augmentations`),
    so setting both is refused. Mixup acts on batches: see `vivit.data.Mixup`.

    Args:
        resize_size: Short side before jitter.
        crop_size: int or `(h, w)` of the random crop.
        interpolation: `"bilinear"` or `"bicubic"`.
        antialias: Low-pass filter when downscaling.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        scale: `(low, high)` range of the jitter factors; `(1.0, 1.0)` disables jitter.
        hflip: Probability of a horizontal flip.
        generator: Default source of randomness (a call's own `generator` wins); `None` uses
            torch's global generator.
        color_prob: Probability of the colour jitter (0 = off).
        color_drop_prob: Probability of turning the clip grey (0 = off).
        randaugment: `(num_ops, magnitude)` of RandAugment, or `None` (off).

    Raises:
        ValueError: For a bad range or probability, a malformed `randaugment`, or RandAugment
            together with colour augmentation.
    """

    def __init__(
        self,
        resize_size: int,
        crop_size: int | tuple[int, int],
        interpolation: str = "bilinear",
        antialias: bool = True,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        scale: tuple[float, float] = _DEFAULT_SCALE_JITTER,
        hflip: float = 0.5,
        generator: torch.Generator | None = None,
        color_prob: float = 0.0,
        color_drop_prob: float = 0.0,
        randaugment: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(resize_size, crop_size, interpolation, antialias, mean, std)
        low, high = (float(v) for v in scale)
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
        self.scale = (low, high)
        self.hflip = float(hflip)
        self.generator = generator
        color_prob, color_drop_prob = color_prob or 0.0, color_drop_prob or 0.0  # None in a cfg: off
        self._color = ColorAugment(color_prob, color_drop_prob) if color_prob or color_drop_prob else None
        self.color_prob, self.color_drop_prob = float(color_prob), float(color_drop_prob)
        self._randaugment = None
        self.randaugment: tuple[int, float] | None = None
        if randaugment is not None:
            if isinstance(randaugment, (str, bytes)) or len(randaugment) != 2:
                raise ValueError(f"randaugment must be (num_ops, magnitude), e.g. (2, 15); got {randaugment!r}")
            if self._color is not None:
                raise ValueError(
                    "RandAugment and colour augmentation are alternatives in Scenic's recipes: set randaugment "
                    f"or color_prob/color_drop_prob, not both (got randaugment={tuple(randaugment)!r}, "
                    f"color_prob={color_prob!r}, color_drop_prob={color_drop_prob!r})"
                )
            num_ops, magnitude = randaugment
            self._randaugment = RandAugment(num_ops, magnitude)
            self.randaugment = (self._randaugment.num_ops, self._randaugment.magnitude)

    def __call__(self, frames: np.ndarray | torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augments one clip.

        Args:
            frames: uint8 `(T, H, W, C)` (numpy or torch) or torchvision's `(T, C, H, W)` tensor.
            generator: Source of randomness for this call (falls back to the one given at
                construction, then to torch's global generator). Must live on the CPU.

        Returns:
            float32 `(C, T, h, w)`, contiguous.
        """
        video = _check_frames(frames, len(self.mean))
        gen = generator if generator is not None else self.generator
        crop_h, crop_w = self.crop_size
        base_h, base_w = short_side_size(video.shape[1], video.shape[2], self.resize_size)

        low, high = self.scale
        s_h, s_w = (low + (high - low) * torch.rand(2, generator=gen, dtype=torch.float64)).tolist()
        # The floor to the crop size keeps the crop valid when resize_size * low < crop_size.
        size = (max(int(s_h * base_h), crop_h), max(int(s_w * base_w), crop_w))
        top = int(torch.randint(size[0] - crop_h + 1, (1,), generator=gen))
        left = int(torch.randint(size[1] - crop_w + 1, (1,), generator=gen))
        box = (top, left, crop_h, crop_w)
        (crop,) = resized_crops(video, size, [box], self.interpolation, self.antialias)
        if float(torch.rand(1, generator=gen)) < self.hflip:
            crop = crop.flip(-1)
        if self._randaugment is not None:
            if crop.dtype != torch.uint8:  # float path (bicubic, GPU): Scenic clips and truncates to uint8
                crop = crop.clamp(0.0, 255.0).to(torch.uint8)
            crop = self._randaugment(crop.permute(0, 2, 3, 1), generator=gen).permute(0, 3, 1, 2)
        if self._color is None:
            return _to_clip(crop, self.mean, self.std)
        clip = torch.empty(crop.shape[1], crop.shape[0], *crop.shape[2:], dtype=torch.float32, device=crop.device)
        clip.copy_(crop.permute(1, 0, 2, 3)).mul_(1.0 / 255.0)  # DMVR jitters [0, 1] pixels
        clip = self._color(clip, generator=gen)
        return _normalize(clip.mul_(255.0), self.mean, self.std, inplace=True).contiguous()

    def _fields(self) -> dict[str, Any]:
        fields = {**super()._fields(), "scale": self.scale, "hflip": self.hflip}
        if self._color is not None:
            fields.update(color_prob=self.color_prob, color_drop_prob=self.color_drop_prob)
        if self.randaugment is not None:
            fields["randaugment"] = self.randaugment
        return fields


_EVAL_KEYS = ("resize_size", "crop_size", "interpolation", "antialias", "mean", "std")
_TRAIN_KEYS = ("scale", "hflip", "generator", "color_prob", "color_drop_prob", "randaugment")
# Keys of a resolved data config that choose frames, not pixels: accepted (so that
# `create_transform(**resolve_data_config(model=model))` works, as in timm) and not used here.
_SAMPLING_KEYS = ("input_size", "frame_stride", "test_views", "sample_fps")


def create_transform(
    pretrained_cfg: Mapping[str, Any] | None = None, train: bool = False, **overrides: Any
) -> VideoEvalTransform:
    """Builds the preprocessing that matches a model's weights.

    Example:
        >>> transform = create_transform(model.pretrained_cfg)
        >>> clip = transform(frames[sample_frame_indices(len(frames), 32, 2)])  # (3, 32, 224, 224)

    Args:
        pretrained_cfg: The model's `pretrained_cfg` (keys `resize_size`, `crop_size`,
            `interpolation`, `antialias`, `mean`, `std`, `input_size`, and for training `scale`,
            `hflip`, `color_prob`, `color_drop_prob`, `randaugment`); missing keys fall back to
            `DEFAULT_DATA_CFG`, other keys are ignored.
        train: Return the random training augmentation (`VideoTrainTransform`) instead of the
            deterministic evaluation transform (`VideoEvalTransform`).
        **overrides: Replace cfg values: any of `resize_size`, `crop_size`, `interpolation`,
            `antialias`, `mean`, `std`; with `train=True` also `scale` (jitter range), `hflip`
            (probability), `generator` (a `torch.Generator`), `color_prob` and `color_drop_prob`
            (DMVR colour augmentation; Kinetics recipe 0.8 and 0.1) and `randaugment`
            (`(num_ops, magnitude)`, e.g. `(2, 15)`; exclusive with colour augmentation).
            `input_size` (its H, W is the crop when `crop_size` is not given), `frame_stride`,
            `test_views` and `sample_fps` are accepted too, so
            `create_transform(**resolve_data_config(model=model))` works as in timm.

    Returns:
        A callable mapping uint8 `(T, H, W, C)` frames (or a `(T, C, H, W)` tensor) to float32
        `(C, T, h, w)`. It crops before it resizes, on uint8: its cost is bounded by the crop.
    """
    allowed = _EVAL_KEYS + _SAMPLING_KEYS + (_TRAIN_KEYS if train else ())
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(f"create_transform(train={train}) got unexpected overrides {unknown}; allowed: {list(allowed)}")
    train_args = {key: overrides.pop(key) for key in _TRAIN_KEYS if key in overrides}
    # A cfg may pin the augmentation too (e.g. `hflip: 0.0` for direction-sensitive labels).
    for key in ("scale", "hflip", "color_prob", "color_drop_prob", "randaugment"):
        if key not in train_args and pretrained_cfg is not None and key in pretrained_cfg:
            train_args[key] = pretrained_cfg[key]
    cfg = resolve_data_config(pretrained_cfg, **overrides)
    args = {key: cfg[key] for key in _EVAL_KEYS}
    if train:
        return VideoTrainTransform(**args, **train_args)
    return VideoEvalTransform(**args)
