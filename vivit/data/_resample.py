"""Resizing only the part of a frame a crop needs, with the same pixels as resizing it all.

`resized_crops` gives the crops of frames resized to some size without resizing the whole frame:
it resamples a window of the source around the crops, aligned so that `F.interpolate` samples it
on exactly the whole frame's grid (`_axis_window`), on uint8 channels-last frames where torch has
fast kernels. The preprocessing conventions themselves (which size, which crops) live in
`vivit.data.transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Frames converted to float32 at a time while resizing in float; bounds the transient copy of
# full-resolution frames (32 float32 1080p frames would otherwise take ~800 MB).
RESIZE_CHUNK = 8

__all__ = ["RESIZE_CHUNK", "Box", "resized_crops"]

Box = tuple[int, int, int, int]  # (top, left, height, width) in the coordinates of the resized frame


def _filter_margin(in_size: int, out_size: int, interpolation: str, antialias: bool) -> int:
    """Output pixels beyond a crop whose source pixels the resampling filter may still touch.

    `F.interpolate`'s filters reach 1 (bilinear) or 2 (bicubic) source pixels from the sample
    point, times the scale when anti-aliasing a shrinking axis; one pixel more covers rounding.
    """
    scale = in_size / out_size
    support = 1.0 if interpolation == "bilinear" else 2.0
    if antialias and scale > 1.0:
        support *= scale
    return math.ceil((support + 1.0) / scale) + 1


def _axis_window(in_size: int, out_size: int, lo: int, hi: int, margin: int) -> tuple[int, int, int, int]:
    """A source window whose resampling reproduces output pixels `[lo, hi)` of the whole axis.

    `F.interpolate(size=out)` samples output pixel `i` at source position `(i + 0.5) * in / out -
    0.5` (`align_corners=False`). With `g = gcd(in, out)`, every `out / g` output pixels span
    exactly `in / g` source pixels, so a window starting at a multiple of `out / g` output pixels
    and resized to a multiple of `out / g` pixels has the same scale (the same float, as `in/out`
    and `k*in / (k*out)` round to the same number) and a grid shifted by a whole number of source
    pixels. The window also covers `margin` output pixels either side (clamped to the frame, where
    the filter is clamped in both cases), so the filter never sees the window's edge.

    Args:
        in_size: Source length of the axis.
        out_size: Resized length of the axis.
        lo: First output pixel needed.
        hi: One past the last output pixel needed.
        margin: Output pixels of margin (see `_filter_margin`).

    Returns:
        `(src_lo, src_hi, out_lo, out_hi)`: resize source pixels `[src_lo, src_hi)` to
        `out_hi - out_lo` pixels to get output pixels `[out_lo, out_hi)`.
    """
    g = math.gcd(in_size, out_size)
    src_step, out_step = in_size // g, out_size // g
    out_lo = max(lo - margin, 0) // out_step * out_step
    out_hi = min(-(-min(hi + margin, out_size) // out_step) * out_step, out_size)
    return out_lo // out_step * src_step, out_hi // out_step * src_step, out_lo, out_hi


def _float_resize(region: torch.Tensor, size: tuple[int, int], interpolation: str, antialias: bool) -> torch.Tensor:
    """`to_float_clip`'s resampling of uint8 `(T, C, h, w)` frames, a few frames at a time."""
    parts = [
        F.interpolate(part.float(), size=size, mode=interpolation, align_corners=False, antialias=antialias)
        for part in region.split(RESIZE_CHUNK)
    ]
    out = torch.cat(parts)
    return out.clamp_(0.0, 255.0) if interpolation == "bicubic" else out


def _uint8_resize(
    video: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], size: tuple[int, int], antialias: bool
) -> torch.Tensor:
    """Bilinear resize of `video[:, rows, cols]` ((T, H, W, C) uint8) with the CPU's uint8 kernels.

    `F.interpolate` resamples uint8 channels-last frames with vectorised kernels (the ones
    torchvision uses). A run of whole rows of one frame is already channels-last contiguous, so
    each frame is passed as a view, without copying; only a narrower column window is copied out.
    """
    (top, bottom), (left, right) = rows, cols
    if (left, right) != (0, video.shape[2]):
        video = video[:, :, left:right].contiguous()  # narrow: worth one copy of the window
    if (top, bottom) == (0, video.shape[1]) and video.is_contiguous():
        return F.interpolate(
            video.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False, antialias=antialias
        )
    frames = [
        F.interpolate(
            frame[None, top:bottom].permute(0, 3, 1, 2),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        for frame in video
    ]
    return torch.cat(frames)


def resized_crops(
    video: torch.Tensor,
    size: tuple[int, int],
    boxes: Sequence[Box],
    interpolation: str,
    antialias: bool,
) -> list[torch.Tensor]:
    """Crops `boxes` out of the frames resized to `size`, resampling only the region they need.

    Equivalent to `to_float_clip(video, size, ...)` followed by slicing each box (within one grey
    level: the CPU kernels round to uint8), at a cost bounded by the boxes' size.

    Args:
        video: uint8 `(T, H, W, C)` frames.
        size: `(H', W')` the whole frame would be resized to.
        boxes: `(top, left, height, width)` crops inside `[0, H') x [0, W')`.
        interpolation: `"bilinear"` or `"bicubic"`.
        antialias: Low-pass filter when the frame shrinks (as `to_float_clip`).

    Returns:
        One `(T, C, height, width)` tensor per box, uint8 (CPU) or float32 with values in [0, 255];
        they may share memory.
    """
    height, width = video.shape[1:3]
    if len(boxes) > 1:
        union = (max(b[0] + b[2] for b in boxes) - min(b[0] for b in boxes)) * (
            max(b[1] + b[3] for b in boxes) - min(b[1] for b in boxes)
        )
        if union > sum(b[2] * b[3] for b in boxes):  # crops far apart (a very wide frame): one at a time
            return [crop for box in boxes for crop in resized_crops(video, size, [box], interpolation, antialias)]
    y_lo, y_hi = min(b[0] for b in boxes), max(b[0] + b[2] for b in boxes)
    x_lo, x_hi = min(b[1] for b in boxes), max(b[1] + b[3] for b in boxes)
    if tuple(size) == (height, width):
        resized, out_top, out_left = video[:, y_lo:y_hi, x_lo:x_hi].permute(0, 3, 1, 2), y_lo, x_lo
    else:
        # The filter choice of `to_float_clip`: anti-aliasing only when some side shrinks.
        antialias = antialias and (size[0] < height or size[1] < width)
        src_top, src_bottom, out_top, out_bottom = _axis_window(
            height, size[0], y_lo, y_hi, _filter_margin(height, size[0], interpolation, antialias)
        )
        src_left, src_right, out_left, out_right = _axis_window(
            width, size[1], x_lo, x_hi, _filter_margin(width, size[1], interpolation, antialias)
        )
        out_size = (out_bottom - out_top, out_right - out_left)
        # uint8 bicubic kernels use another cubic (a = -0.5, PIL's) and round between their two
        # passes, several grey levels off the float path; bilinear stays within one.
        if video.device.type == "cpu" and interpolation == "bilinear":
            if 2 * (src_right - src_left) > width:  # a wide window: resample whole rows, copy nothing
                src_left, src_right, out_left, out_right = 0, width, 0, size[1]
                out_size = (out_size[0], size[1])
            resized = _uint8_resize(video, (src_top, src_bottom), (src_left, src_right), out_size, antialias)
        else:
            region = video[:, src_top:src_bottom, src_left:src_right].permute(0, 3, 1, 2)
            resized = _float_resize(region, out_size, interpolation, antialias)
    return [
        resized[..., top - out_top : top - out_top + h, left - out_left : left - out_left + w]
        for top, left, h, w in boxes
    ]
