"""Scenic's clip-level augmentations in torch: DMVR colour augmentation and Scenic's video RandAugment.

Both act on one whole clip at a time with one random draw per clip, so every frame gets the same
change (a per-frame draw would flicker and destroy the motion the model is meant to learn), and
both are vectorised over all frames at once.

* `ColorAugment` is DMVR's `color_default_augm` (`dmvr/processors.py`), which Scenic's Kinetics
  recipes run with probability 0.8 and colour drop 0.1 on float pixels after normalisation: it
  maps them back to [0, 1], applies `tf.image.random_brightness` (max delta 32/255),
  `random_saturation` (0.6..1.4), `random_contrast` (0.6..1.4) and `random_hue` (max delta 0.2)
  in that fixed order (DMVR does not shuffle them), clips to [0, 1], and maps back. The ops
  give TensorFlow's kernels' results to float32 rounding (`adjust_saturation_op.cc`,
  `adjust_hue_op.cc`: their HSV models, including how they treat values outside [0, 1] after
  the brightness shift), computed in closed form over the whole clip.
* `RandAugment` is Scenic's `video_ops.distort_image_with_randaugment` (`scenic/dataset_lib/
  video_ops.py`), which runs the per-image ops of tf-models' `official/vision/image_classification/
  augment.py` on the clip reshaped to one tall image `(T*H, W, C)`: the op and its magnitude are
  shared by every frame, and image statistics (AutoContrast's range, Equalize's histogram,
  Contrast's grey level) are those of the whole clip. Scenic's EPIC-Kitchens and SSv2 recipes
  use N=2 ops at magnitude 15 and 20. The ops work on uint8 and reproduce tf-models' arithmetic
  (float32 blends truncated to uint8) exactly, with the exceptions listed in `RandAugment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "GRAYSCALE_WEIGHTS",
    "RANDAUGMENT_OPS",
    "ColorAugment",
    "RandAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "randaugment_op",
    "rgb_to_grayscale",
]

#: `tf.image.rgb_to_grayscale`'s weights (they add up to 0.9999, not 1).
GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)

# ---------------------------------------------------------------- colour (float, DMVR / tf.image)


def _check_rgb(clip: torch.Tensor, what: str) -> None:
    if not isinstance(clip, torch.Tensor) or not clip.dtype.is_floating_point or clip.ndim < 3 or clip.shape[0] != 3:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        dtype = f" {clip.dtype}" if isinstance(clip, torch.Tensor) else ""
        raise ValueError(f"{what} expects a float RGB clip (3, T, H, W) with values in [0, 1]; got{dtype} {shape}")


def adjust_brightness(clip: torch.Tensor, delta: float) -> torch.Tensor:
    """`tf.image.adjust_brightness` on float pixels: `clip + delta`, not clipped.

    Args:
        clip: float `(3, T, H, W)` (any `(3, ..., H, W)`), values nominally in [0, 1].
        delta: Added to every pixel.

    Returns:
        A new tensor of the same shape and dtype.
    """
    _check_rgb(clip, "adjust_brightness")
    return clip + delta


def adjust_contrast(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """`tf.image.adjust_contrast`: `(x - mean) * factor + mean`, the mean per channel of each image.

    Each frame is its own image (TF treats the last three dimensions as one image), so the mean is
    over H x W for every (channel, frame).

    Args:
        clip: float `(3, T, H, W)` (any `(3, ..., H, W)`).
        factor: Contrast factor (DMVR draws it from U[0.6, 1.4)).

    Returns:
        A new tensor of the same shape and dtype, not clipped.
    """
    _check_rgb(clip, "adjust_contrast")
    mean = clip.mean(dim=(-2, -1), keepdim=True)
    return (clip - mean).mul_(factor).add_(mean)


def _max_min(clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel: the largest channel, the smallest, and their difference (the chroma)."""
    r, g, b = clip.unbind(0)
    high = torch.maximum(torch.maximum(r, g), b)
    low = torch.minimum(torch.minimum(r, g), b)
    return high, low, high - low


def adjust_saturation(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """`tf.image.adjust_saturation` on float pixels: TensorFlow's CPU kernel, to float32 rounding.

    The kernel goes RGB -> HSV (`v = max`, `s = (max - min) / v`, `s = 0` where `v <= 0`), sets
    `s <- clip(s * factor, 0, 1)` and goes back, keeping hue and value. In closed form each channel
    becomes `v - (v - x) * k` with `k = min(factor, v / (max - min))` (`k = 0`, i.e. grey at `v`,
    where `v <= 0` or the pixel is already grey), which is what is computed here: a few whole-clip
    ops instead of the kernel's per-pixel branches. Pixels need not lie in [0, 1] (DMVR applies it
    after an unclipped brightness shift): as in the kernel, a pixel with a negative channel has
    `s > 1` and comes out with its smallest channel at 0.

    Args:
        clip: float `(3, T, H, W)` (any `(3, ...)`).
        factor: Saturation factor (DMVR draws it from U[0.6, 1.4)).

    Returns:
        A new float tensor of the same shape.
    """
    _check_rgb(clip, "adjust_saturation")
    if factor < 0:
        raise ValueError(f"saturation factor must be >= 0, got {factor!r}")
    high, _, span = _max_min(clip)
    scale = torch.where((high > 0) & (span > 0), (high / span).clamp_(max=factor), 0.0)
    return high - (high - clip).mul_(scale)


def adjust_hue(clip: torch.Tensor, delta: float) -> torch.Tensor:
    """`tf.image.adjust_hue` on float pixels: TensorFlow's CPU kernel, to float32 rounding.

    The kernel keeps each pixel's max and min and turns its hue, on the [0, 6) sextant scale, by
    `6 * delta` with wrap-around; values outside [0, 1] are turned the same way. Computed here
    in closed form: hue `h` from the channel differences, then channel `n` (R 5, G 3, B 1) is
    `max - (max - min) * clip(min(k, 4 - k), 0, 1)` with `k = (n + h + 6 delta) mod 6`.

    Args:
        clip: float `(3, T, H, W)` (any `(3, ...)`).
        delta: Hue shift in turns, in [-0.5, 0.5] (DMVR draws it from U[-0.2, 0.2)).

    Returns:
        A new float tensor of the same shape.

    Raises:
        ValueError: For `|delta| > 0.5` (as `tf.image.random_hue`).
    """
    _check_rgb(clip, "adjust_hue")
    if not -0.5 <= delta <= 0.5:
        raise ValueError(f"hue delta must be in [-0.5, 0.5], got {delta!r}")
    r, g, b = clip.unbind(0)
    high, _, span = _max_min(clip)
    h = torch.where(r == high, (g - b) / span, torch.where(g == high, (b - r) / span + 2.0, (r - g) / span + 4.0))
    # grey pixels (0 / 0) have hue 0; TF adds `delta * 6` computed in float32
    h = h.nan_to_num_(0.0).add_(float(torch.tensor(delta, dtype=torch.float32) * 6))
    k = torch.stack([h + 5.0, h + 3.0, h + 1.0]).remainder_(6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return high - weight.mul_(span)


def rgb_to_grayscale(clip: torch.Tensor) -> torch.Tensor:
    """`tf.image.rgb_to_grayscale` on float pixels, repeated to 3 channels (DMVR's colour drop).

    Args:
        clip: float `(3, T, H, W)` (any `(3, ...)`).

    Returns:
        A new float tensor of the same shape whose three channels hold
        `0.2989 R + 0.5870 G + 0.1140 B`.
    """
    _check_rgb(clip, "rgb_to_grayscale")
    r, g, b = clip.unbind(0)
    wr, wg, wb = GRAYSCALE_WEIGHTS
    grey = r * wr + g * wg + b * wb
    return grey.expand(3, *grey.shape).clone()


class ColorAugment:
    """DMVR's `color_default_augm`: one colour jitter per clip, then maybe colour drop.

    With probability `prob`, one draw per clip of brightness delta ~ U[-32/255, 32/255),
    saturation factor ~ U[0.6, 1.4), contrast factor ~ U[0.6, 1.4) and hue delta ~ U[-0.2, 0.2),
    applied in that order (`adjust_brightness`, `adjust_saturation`, `adjust_contrast`,
    `adjust_hue`, TensorFlow's semantics) and clipped to [0, 1]; then, with probability
    `drop_prob`, the clip becomes grey (`rgb_to_grayscale`). Scenic's Kinetics configs: prob 0.8,
    drop 0.1 (`augmentation_params.prob_color_augment`, `prob_color_drop`).

    DMVR runs it on the normalised [-1, 1] pixels, mapping them to [0, 1] and back around the
    jitter, and drops the colour of the [-1, 1] pixels; here both happen on the [0, 1] pixels,
    before normalisation. The jitter is the same; the grey differs by at most 5e-5 in [0, 1] units
    (TF's grey weights add up to 0.9999, so DMVR's grey of [-1, 1] pixels is not quite the
    normalised grey of [0, 1] pixels).

    Args:
        prob: Probability of the colour jitter (0 = never).
        drop_prob: Probability of the colour drop (0 = never), drawn independently after it.
        generator: Default source of randomness (a call's own `generator` wins); `None` uses
            torch's global generator.

    Call:
        `augment(clip, generator=None)`: float `(3, T, H, W)` with values in [0, 1] -> the same
        shape; a new tensor, or `clip` itself when nothing was drawn.

    Raises:
        ValueError: For a probability outside [0, 1], or when called on anything but a float
            RGB clip.
    """

    BRIGHTNESS_DELTA = 32.0 / 255.0
    SATURATION = (0.6, 1.4)
    CONTRAST = (0.6, 1.4)
    HUE_DELTA = 0.2

    def __init__(self, prob: float = 0.8, drop_prob: float = 0.0, generator: torch.Generator | None = None) -> None:
        for name, value in (("prob", prob), ("drop_prob", drop_prob)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"colour augmentation {name} must be in [0, 1], got {value!r}")
        self.prob = float(prob)
        self.drop_prob = float(drop_prob)
        self.generator = generator

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_rgb(clip, "ColorAugment")
        gen = generator if generator is not None else self.generator

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))

        if self.prob > 0 and uniform(0.0, 1.0) < self.prob:
            brightness = uniform(-self.BRIGHTNESS_DELTA, self.BRIGHTNESS_DELTA)
            saturation = uniform(*self.SATURATION)
            contrast = uniform(*self.CONTRAST)
            hue = uniform(-self.HUE_DELTA, self.HUE_DELTA)
            clip = adjust_brightness(clip, brightness)
            clip = adjust_saturation(clip, saturation)
            clip = adjust_contrast(clip, contrast)
            clip = adjust_hue(clip, hue).clamp_(0.0, 1.0)
        if self.drop_prob > 0 and uniform(0.0, 1.0) < self.drop_prob:
            clip = rgb_to_grayscale(clip)
        return clip

    def __repr__(self) -> str:
        return f"ColorAugment(prob={self.prob}, drop_prob={self.drop_prob})"


# ---------------------------------------------------------------- RandAugment (uint8, tf-models ops)

#: Scenic's op list (`distort_image_with_randaugment`'s `available_ops`, in its order). A draw
#: picks one of these or, with the same chance, none (Scenic's `tf.switch_case` default branch).
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "Cutout",
    "SolarizeAdd",
)
_MAX_LEVEL = 10.0  # tf-models augment.py


def _level_arg(name: str, magnitude: float, cutout_const: float) -> float:
    """tf-models' `level_to_arg` for Scenic's ops (none of them is randomly negated there)."""

    def mult(multiplier: float) -> int:
        return int((magnitude / _MAX_LEVEL) * multiplier)  # `_mult_to_arg`, same float expression

    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (magnitude / _MAX_LEVEL) * 1.8 + 0.1  # `_enhance_level_to_arg`
    return {"Posterize": mult(4), "Solarize": mult(256), "SolarizeAdd": mult(110), "Cutout": mult(cutout_const)}.get(
        name, 0.0
    )


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """`tf.cast(float32, uint8)` of values already in [0, 255]: truncation toward zero."""
    return values.to(torch.uint8)


def _blend(image1: torch.Tensor, image2: torch.Tensor, factor: float) -> torch.Tensor:
    """tf-models `blend`: `image1 + factor * (image2 - image1)` in float32, truncated to uint8
    (clipped to [0, 255] first when extrapolating). Separate ops, as TF runs them (no fused
    multiply-add), so the rounding is TF's."""
    if factor == 0.0:
        return image1.clone()
    if factor == 1.0:
        return image2.clone()
    start = image1.to(torch.float32)
    temp = image2.to(torch.float32).sub_(start).mul_(factor).add_(start)
    if 0.0 < factor < 1.0:
        return _to_uint8(temp)
    return _to_uint8(temp.clamp_(0.0, 255.0))


def _grey_uint8(frames: torch.Tensor) -> torch.Tensor:
    """`tf.image.rgb_to_grayscale` of uint8 pixels: `uint8(grey(x / 255) * 255.5)`, as TF's
    `convert_image_dtype` scales back (truncating), computed in float32 in TF's order."""
    pixels = frames.to(torch.float32).mul_(1.0 / 255.0)
    wr, wg, wb = GRAYSCALE_WEIGHTS
    grey = (pixels[..., 0] * wr).add_(pixels[..., 1] * wg).add_(pixels[..., 2] * wb)
    return _to_uint8(grey.mul_(255.5))


def _autocontrast(frames: torch.Tensor) -> torch.Tensor:
    """Per channel, stretch the clip's [min, max] to [0, 255] (channels with max == min unchanged)."""
    flat = frames.reshape(-1, 3)
    low = flat.amin(0).to(torch.float32)
    high = flat.amax(0).to(torch.float32)
    scale = 255.0 / (high - low)
    offset = -low * scale
    out = _to_uint8(frames.to(torch.float32).mul_(scale).add_(offset).clamp_(0.0, 255.0))
    return torch.where(high > low, out, frames)


def _equalize(frames: torch.Tensor) -> torch.Tensor:
    """PIL's Equalize as tf-models writes it, one histogram per channel over the whole clip."""
    flat = frames.reshape(-1, 3).to(torch.int64)
    offsets = torch.arange(3, device=frames.device) * 256
    hist = torch.bincount((flat + offsets).reshape(-1), minlength=768).view(3, 256)
    total = hist.sum(1)
    last = torch.stack([h[h.nonzero()[-1]].squeeze() for h in hist])  # count of the brightest level
    step = (total - last) // 255
    safe = step.clamp(min=1)[:, None]
    lut = (hist.cumsum(1) + safe // 2) // safe
    lut = torch.cat([torch.zeros(3, 1, dtype=lut.dtype, device=lut.device), lut[:, :-1]], 1).clamp_(0, 255)
    identity = torch.arange(256, device=frames.device).expand(3, 256)
    lut = torch.where((step == 0)[:, None], identity, lut).to(torch.uint8).reshape(-1)
    return lut[flat + offsets].view(frames.shape)


def _posterize(frames: torch.Tensor, bits: int) -> torch.Tensor:
    # TF clamps the shift of `bitwise.right_shift` to [0, 7] for uint8 (checked with TF 2.21)
    shift = min(max(8 - int(bits), 0), 7)
    return (frames >> shift) << shift


def _solarize(frames: torch.Tensor, threshold: int) -> torch.Tensor:
    if threshold > 255:  # magnitude > 10 (e.g. Scenic's 15, 20): no uint8 pixel reaches it
        return frames.clone()
    return torch.where(frames < threshold, frames, 255 - frames)


def _solarize_add(frames: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    added = (frames.to(torch.int16) + addition).clamp_(0, 255).to(torch.uint8)
    return torch.where(frames < threshold, added, frames)


def _color(frames: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(_grey_uint8(frames)[..., None].expand(frames.shape), frames, factor)


def _contrast(frames: torch.Tensor, factor: float, scenic: bool = True) -> torch.Tensor:
    if scenic:
        # tf-models (before its 2024 fix, PR 11219) sums the histogram without weighting it by
        # the grey levels: the "mean" is pixel count / 256, clipped to 255. For a clip that is
        # white (32 frames of 224^2: 6272 -> 255), so Scenic's Contrast blends toward white.
        pixels = frames.numel() // 3
        mean = min(max(float(torch.tensor(float(pixels), dtype=torch.float32) / 256.0), 0.0), 255.0)
    else:
        mean = float(_grey_uint8(frames).to(torch.float64).mean())
    degenerate = torch.full_like(frames, int(mean))  # float32 -> uint8 truncation
    return _blend(degenerate, frames, factor)


def _brightness(frames: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(torch.zeros_like(frames), frames, factor)


def _sharpness(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """tf-models' Sharpness on Scenic's tall image `(T*H, W, C)`: PIL's SMOOTH kernel
    `[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13` over the interior (VALID), the border pixels kept,
    then blended with the original. Frame-boundary rows are smoothed across the two frames they
    join, as the tall image makes Scenic do."""
    t, h, w, c = frames.shape
    tall = frames.reshape(t * h, w, c)
    if t * h < 3 or w < 3:  # no interior: the degenerate image is the image
        return _blend(tall, tall, factor).view(frames.shape)
    x = tall.to(torch.int16)
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    box = rows[:-2] + rows[1:-1] + rows[2:]
    centre = x[1:-1, 1:-1]
    # exact integer floor of the weighted mean (see `RandAugment`: TF's float32 conv can land one
    # grey level lower where the mean is a whole number)
    smooth = tall.clone()
    smooth[1:-1, 1:-1] = torch.div(box + 4 * centre, 13, rounding_mode="floor").to(torch.uint8)
    return _blend(smooth, tall, factor).view(frames.shape)


def _cutout(frames: torch.Tensor, pad_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Scenic's video `cutout`: one `2 pad_size` square (clipped to the frame), centred uniformly
    in H x W, zeroed on every frame (Scenic passes no `replace`, so 0 rather than tf-models' 128)."""
    _, h, w, _ = frames.shape
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    out = frames.clone()
    out[:, max(cy - pad_size, 0) : min(cy + pad_size, h), max(cx - pad_size, 0) : min(cx + pad_size, w)] = 0
    return out


def _check_frames(frames: torch.Tensor, what: str) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        dtype = f" {frames.dtype}" if isinstance(frames, torch.Tensor) else ""
        raise ValueError(f"{what} expects uint8 RGB frames (T, H, W, 3); got{dtype} {shape}")


def randaugment_op(
    frames: torch.Tensor,
    name: str,
    magnitude: float,
    *,
    cutout_const: float = 40.0,
    scenic_contrast: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One of Scenic's RandAugment ops on a whole clip, at `magnitude` (see `RandAugment`).

    Args:
        frames: uint8 `(T, H, W, 3)`.
        name: One of `RANDAUGMENT_OPS`.
        magnitude: RandAugment's M (tf-models' level; 10 is its nominal maximum, Scenic uses 15
            and 20): Posterize keeps `int(M / 10 * 4)` bits, Solarize's threshold is
            `int(M / 10 * 256)`, SolarizeAdd adds `int(M / 10 * 110)`, Cutout's half side is
            `int(M / 10 * cutout_const)`, Color/Contrast/Brightness/Sharpness blend with factor
            `M / 10 * 1.8 + 0.1`.
        cutout_const: Scenic's `cutout_const` (40).
        scenic_contrast: Contrast as Scenic ran it (see `RandAugment`).
        generator: Randomness of Cutout's position.

    Returns:
        A new uint8 `(T, H, W, 3)` tensor.

    Raises:
        ValueError: For an unknown op name, a negative magnitude, or frames that are not uint8
            `(T, H, W, 3)`.
    """
    _check_frames(frames, "randaugment_op")
    if name not in RANDAUGMENT_OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; Scenic's ops are {list(RANDAUGMENT_OPS)}")
    if not magnitude >= 0:
        raise ValueError(f"RandAugment magnitude must be >= 0, got {magnitude!r}")
    arg = _level_arg(name, float(magnitude), float(cutout_const))
    ops: dict[str, Callable[[], torch.Tensor]] = {
        "AutoContrast": lambda: _autocontrast(frames),
        "Equalize": lambda: _equalize(frames),
        "Invert": lambda: 255 - frames,
        "Posterize": lambda: _posterize(frames, int(arg)),
        "Solarize": lambda: _solarize(frames, int(arg)),
        "Color": lambda: _color(frames, arg),
        "Contrast": lambda: _contrast(frames, arg, scenic_contrast),
        "Brightness": lambda: _brightness(frames, arg),
        "Sharpness": lambda: _sharpness(frames, arg),
        "Cutout": lambda: _cutout(frames, int(arg), generator),
        "SolarizeAdd": lambda: _solarize_add(frames, int(arg)),
    }
    return ops[name]()


class RandAugment:
    """Scenic's video RandAugment (`video_ops.distort_image_with_randaugment`) on uint8 clips.

    `num_ops` times: pick one of the 11 ops of `RANDAUGMENT_OPS` or none, each with chance 1/12
    (Scenic draws from `len(ops) + 1` branches, the last the identity), and apply it to the whole
    clip at magnitude `magnitude` (`randaugment_op`). The op and its argument are the same for
    every frame; statistics are the whole clip's, as for Scenic's tall image. No geometric op
    (Rotate, Shear, Translate) is in Scenic's list; none of its ops is randomly negated. Scenic's
    recipes: EPIC-Kitchens N=2, M=15; SSv2 N=2, M=20; `cutout_const=40`.

    Where this differs from what Scenic's code computes (checked against TF 2.21):

    * Contrast: tf-models (as Scenic imports it, `official.vision.image_classification.augment`)
      blends toward grey level `min(255, pixels / 256)` instead of the mean grey level (a bug,
      fixed upstream in 2024); for video clips that is white. `scenic_contrast=True` (default)
      reproduces it; `False` blends toward the clip's mean grey level, as PIL does.
    * Sharpness: the smoothing kernel's weighted mean is taken exactly (integer arithmetic);
      TF's float32 convolution (fused multiply-adds) lands one grey level lower on some pixels
      where that mean is a whole number: 0.5% of the pixels of real 224^2 video frames, more in
      flat regions, before the blend (which multiplies the difference by `factor - 1`).
    * Non-uint8 input is refused rather than clipped and cast (the transform passes uint8).

    Args:
        num_ops: N, the number of ops applied in sequence (>= 0).
        magnitude: M (>= 0; tf-models' scale, where 10 is nominal maximum).
        cutout_const: Scale of Cutout's half side (`int(M / 10 * cutout_const)` pixels).
        scenic_contrast: Reproduce Scenic's Contrast (above).
        generator: Default source of randomness (a call's own `generator` wins); `None` uses
            torch's global generator.

    Call:
        `augment(frames, generator=None)`: uint8 `(T, H, W, 3)` -> uint8 `(T, H, W, 3)` (a new
        tensor, or `frames` itself when every draw was the identity).

    Raises:
        ValueError: For a negative or non-integer `num_ops`, a negative magnitude, or frames that
            are not uint8 `(T, H, W, 3)`.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 15,
        cutout_const: float = 40.0,
        scenic_contrast: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(num_ops, bool) or int(num_ops) != num_ops or num_ops < 0:
            raise ValueError(f"RandAugment num_ops must be an int >= 0, got {num_ops!r}")
        if not (isinstance(magnitude, (int, float)) and math.isfinite(magnitude) and magnitude >= 0):
            raise ValueError(f"RandAugment magnitude must be a number >= 0, got {magnitude!r}")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.cutout_const = float(cutout_const)
        self.scenic_contrast = bool(scenic_contrast)
        self.generator = generator

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames, "RandAugment")
        gen = generator if generator is not None else self.generator
        for _ in range(self.num_ops):
            choice = int(torch.randint(len(RANDAUGMENT_OPS) + 1, (1,), generator=gen))
            if choice == len(RANDAUGMENT_OPS):
                continue  # Scenic's default branch: identity
            frames = randaugment_op(
                frames,
                RANDAUGMENT_OPS[choice],
                self.magnitude,
                cutout_const=self.cutout_const,
                scenic_contrast=self.scenic_contrast,
                generator=gen,
            )
        return frames

    def __repr__(self) -> str:
        return (
            f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude:g}, cutout_const={self.cutout_const:g}, "
            f"scenic_contrast={self.scenic_contrast})"
        )
