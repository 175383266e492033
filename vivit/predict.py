"""Multi-view video classification: Scenic's clips x crops test protocol for one decoded video."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from .data.sampling import multiview_clip_starts, sample_frame_indices
from .data.transforms import (
    _as_tensor,
    _model_size_cfg,
    _normalize,
    _validate_frames,
    center_crop,
    resize_short_side,
    resolve_data_config,
    three_crops,
)

__all__ = ["iter_views", "model_data_config", "predict_views", "top_predictions"]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype the model's inputs should have.

    Args:
        model: Any module.

    Returns:
        Device and dtype of the first floating parameter (or buffer); CPU / float32 if none.
    """
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def iter_views(
    frames: np.ndarray | torch.Tensor,
    clips: int,
    crops: int,
    pretrained_cfg: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Yields the `clips x crops` test views of one video, one at a time, clip-major.

    Each clip is `input_size[1]` frames every `frame_stride` frames, started as in
    `multiview_clip_starts` (evenly spaced; the centred clip when `clips == 1`; short videos
    loop). Its frames are resized so the short side is `resize_size`, then cut into
    `three_crops` (`crops == 3`) or one `center_crop` (`crops == 1`), then normalized. Only the
    current clip's frames are converted and resized, so memory does not grow with the video.

    Args:
        frames: The whole decoded video, uint8 `(T, H, W, C)` (numpy or torch).
        clips: Number of temporal clips.
        crops: Spatial crops per clip, 1 or 3.
        pretrained_cfg: Preprocessing cfg (see `vivit.data.transforms.resolve_data_config`).
        device: Where the views are built (default: where `frames` lives).

    Returns:
        An iterator of float32 `(C, T, h, w)` views.
    """
    cfg = resolve_data_config(pretrained_cfg)
    channels, num_frames = cfg["input_size"][:2]
    _validate_frames(frames, channels)
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 (centre) or 3 (left/centre/right), got {crops!r}")
    if isinstance(clips, bool) or not isinstance(clips, (int, np.integer)) or clips < 1:
        raise ValueError(f"clips must be a positive integer, got {clips!r}")
    return _generate_views(frames, int(clips), crops, cfg, num_frames, device)


def _generate_views(
    frames: np.ndarray | torch.Tensor,
    clips: int,
    crops: int,
    cfg: Mapping[str, Any],
    num_frames: int,
    device: torch.device | str | None,
) -> Iterator[torch.Tensor]:
    """The generator behind `iter_views` (kept separate so argument errors raise eagerly).

    Args:
        frames: Validated uint8 `(T, H, W, C)` frames.
        clips: Number of temporal clips.
        crops: 1 or 3.
        cfg: Resolved preprocessing cfg.
        num_frames: Frames per clip.
        device: Where the views are built.

    Yields:
        float32 `(C, T, h, w)` views.
    """
    stride = cfg["frame_stride"]
    length = frames.shape[0]
    for start in multiview_clip_starts(length, num_frames, stride, clips):
        indices = sample_frame_indices(length, num_frames, stride, start=start)
        if isinstance(frames, torch.Tensor):
            clip_frames = frames[torch.from_numpy(indices).to(frames.device)]
        else:
            # Fancy indexing copies only this clip's frames out of the (possibly huge) video.
            clip_frames = _as_tensor(frames[indices])
        if device is not None:
            # Moving uint8 before resizing keeps the transfer 4x smaller and resizes on device.
            clip_frames = clip_frames.to(device)
        clip = resize_short_side(
            clip_frames, cfg["resize_size"], cfg["interpolation"], cfg["antialias"]
        )
        spatial = (
            three_crops(clip, cfg["crop_size"])
            if crops == 3
            else [center_crop(clip, cfg["crop_size"])]
        )
        for crop in spatial:
            yield _normalize(rearrange(crop, "t c h w -> c t h w"), cfg["mean"], cfg["std"])
        del clip, spatial


def _batched(views: Iterator[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    """Groups an iterator into lists of at most `size` items, pulling lazily.

    Args:
        views: Source iterator.
        size: Maximum group length.

    Yields:
        Lists of up to `size` items.
    """
    batch: list[torch.Tensor] = []
    for view in views:
        batch.append(view)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_views(
    model: nn.Module,
    frames: np.ndarray | torch.Tensor,
    clips: int | None = None,
    crops: int | None = None,
    *,
    pretrained_cfg: Mapping[str, Any] | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> torch.Tensor:
    """Classifies one video with Scenic's multi-view test protocol and averages the raw logits.

    Builds `clips x crops` views (see `iter_views`), runs the model on them in batches of
    `batch_size` under `torch.inference_mode()` in eval mode, and returns the mean of the
    logits over all views. Scenic averages logits, not probabilities; apply softmax (or, for the
    Epic-Kitchens heads, split nouns/verbs) afterwards. Views are built lazily, so at most
    `batch_size` of them (plus one resized clip) exist at a time. The model's training flag is
    restored afterwards.

    Example:
        >>> model = vivit.create_model("vivit_b_st_k400", pretrained=True)
        >>> logits = predict_views(model, frames)  # frames: uint8 (T, H, W, 3), 4 clips x 3 crops
        >>> top5 = logits.softmax(-1).topk(5)

    Args:
        model: A ViViT classifier mapping `(B, C, T, H, W)` to `(B, num_classes)` logits.
        frames: One whole decoded video, uint8 `(T, H, W, C)` (numpy or torch, any device). For
            a batch of videos, call once per video (their lengths and views differ).
        clips: Temporal clips (default: `test_views[0]` of the cfg; 4 for the released models).
        crops: Spatial crops per clip, 1 (centre) or 3 (default: `test_views[1]`).
        pretrained_cfg: Preprocessing cfg; default `resolve_data_config(model=model)`: the
            model's `pretrained_cfg`, completed from its own `num_frames` / `img_size` when it has
            no `input_size`, then `vivit.data.transforms.DEFAULT_DATA_CFG` for missing keys.
        batch_size: Views per forward pass.
        progress: Print a view counter to stderr.

    Returns:
        float32 tensor `(num_classes,)` of view-averaged logits, on the model's device.
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    cfg = (
        resolve_data_config(pretrained_cfg)
        if pretrained_cfg is not None
        else resolve_data_config(model=model)  # the model's own frames and size when its cfg has none
    )
    clips = cfg["test_views"][0] if clips is None else clips
    crops = cfg["test_views"][1] if crops is None else crops
    device, dtype = _model_device_dtype(model)
    views = iter_views(frames, clips, crops, cfg, device)
    total = clips * crops

    was_training = model.training
    model.eval()
    logit_sum: torch.Tensor | None = None
    done = 0
    try:
        with torch.inference_mode():
            for batch in _batched(views, int(batch_size)):
                logits = model(torch.stack(batch).to(dtype))
                if (
                    not isinstance(logits, torch.Tensor)
                    or logits.ndim != 2
                    or logits.shape[0] != len(batch)
                ):
                    got = f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
                    expected = f"({len(batch)}, num_classes)"
                    raise ValueError(
                        f"expected the model to return logits of shape {expected}; got {got}"
                    )
                # Summing in float32 keeps low-precision (bf16/fp16) models from losing the average.
                batch_sum = logits.float().sum(0)
                logit_sum = batch_sum if logit_sum is None else logit_sum + batch_sum
                done += len(batch)
                if progress:
                    print(
                        f"\rpredict_views: {done}/{total} views",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        model.train(was_training)
        if progress:
            print(file=sys.stderr, flush=True)
    assert logit_sum is not None  # total >= 1 is guaranteed by iter_views' checks
    return logit_sum / total


def model_data_config(model: nn.Module) -> tuple[dict[str, Any], bool]:
    """The model's preprocessing cfg, completed from the model when its checkpoint carried none.

    Without an `input_size` the transforms would fall back to 32 frames of 224x224, which a model
    built for another size rejects; its own frames and size are the only sensible default. The
    resize keeps Kinetics' 256:224 ratio between short side and crop.

    Args:
        model: A ViViT model (its `pretrained_cfg`, `img_size`, `num_frames`, `in_chans` are read).

    Returns:
        `(cfg, defaulted)`: a new cfg dict, and whether the input size had to come from the model.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    completed = _model_size_cfg(model, cfg)  # the same completion as resolve_data_config(model=...)
    return completed, "input_size" not in cfg and "input_size" in completed


def top_predictions(logits: torch.Tensor, cfg: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """Softmax and top-k, per class split (Epic-Kitchens nouns and verbs are separate softmaxes).

    Args:
        logits: float `(num_classes,)` (e.g. from `predict_views`).
        cfg: The model's `pretrained_cfg` (`label_names`, `class_splits`, `split_names` are read).
        k: Classes per split.

    Returns:
        Dicts `{"index", "label", "probability"}` (plus `"split"` for split heads), best first.
    """
    logits = logits.float().cpu()
    names = cfg.get("label_names")
    if names is not None and len(names) != logits.numel():
        names = None  # a fresh head (e.g. --override num_classes=...) no longer matches the names
    sizes = list(cfg.get("class_splits") or [logits.numel()])
    split_names = list(cfg.get("split_names") or [None] * len(sizes))
    if sum(sizes) != logits.numel() or len(split_names) != len(sizes):
        sizes, split_names = [logits.numel()], [None]
    out = []
    start = 0
    for size, split in zip(sizes, split_names, strict=True):
        probs = logits[start : start + size].softmax(-1)
        top = probs.topk(min(k, size))
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            index = start + i
            item = {"index": index, "label": names[index] if names else str(index), "probability": p}
            out.append({"split": split, **item} if split else item)
        start += size
    return out
