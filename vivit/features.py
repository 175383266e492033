"""Feature extraction: pooled or per-frame embeddings of a video, averaged over test views."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .models.vivit import FactorizedEncoderViViT, ViViT
from .predict import iter_views

__all__ = ["FeatureFn", "feature_fn", "video_features"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_fn(model: ViViT, per_frame: bool) -> FeatureFn:
    """(B, C, T, H, W) -> (B, D) pooled pre-logits features, or (B, nt, D) per temporal token."""
    if not per_frame:
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    if isinstance(model, FactorizedEncoderViViT):  # Model 2: its spatial encoder's per-frame output
        return model.forward_frame_features

    def frames(x: torch.Tensor) -> torch.Tensor:
        (grid,) = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        return grid.mean(dim=(3, 4)).transpose(1, 2)  # (B, D, nt, nh, nw) -> (B, nt, D)

    return frames


def video_features(
    frames: np.ndarray, extract: FeatureFn, views: tuple[int, int], cfg: Mapping[str, Any], batch_size: int, device: torch.device
) -> torch.Tensor:
    """Features of one video, averaged over its views, as a contiguous float32 CPU tensor."""
    total: torch.Tensor | None = None
    view_iter = iter_views(frames, views[0], views[1], cfg, device)
    with torch.inference_mode():
        while batch := list(itertools.islice(view_iter, batch_size)):
            summed = extract(torch.stack(batch)).float().sum(0)
            total = summed if total is None else total + summed
    assert total is not None  # iter_views yields clips * crops >= 1 views
    return (total / (views[0] * views[1])).cpu().contiguous()


