"""Feature extraction: pooled or per-frame embeddings of a video, averaged over test views."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .models.vivit import FactorizedEncoderViViT, ViViT
from .predict import Video, _iter_views, _sum_over_views, inference_model

__all__ = ["FeatureFn", "feature_fn", "video_features"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_fn(model: ViViT, per_frame: bool) -> FeatureFn:
    """(B, C, T, H, W) -> (B, D) pooled pre-logits features, or (B, nt, D) per temporal token.

    The model is used in eval mode without being modified (see `vivit.predict.inference_model`).
    """
    model = inference_model(model)
    if not per_frame:
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    if isinstance(model, FactorizedEncoderViViT):  # Model 2: its spatial encoder's per-frame output
        return model.forward_frame_features

    def frames(x: torch.Tensor) -> torch.Tensor:
        (grid,) = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        return grid.mean(dim=(3, 4)).transpose(1, 2)  # (B, D, nt, nh, nw) -> (B, nt, D)

    return frames


def video_features(
    video: Video,
    extract: FeatureFn,
    views: tuple[int, int],
    cfg: Mapping[str, Any],
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Features of one video (a path, a `VideoReader` or uint8 frames), averaged over its views.

    Returns a contiguous float32 CPU tensor. Only the frames of the views' clips are decoded.
    """
    view_iter = _iter_views(video, views[0], views[1], cfg, device, stacklevel=3)
    total = views[0] * views[1]
    summed = _sum_over_views(extract, view_iter, batch_size, torch.float32, total, False, lambda out, _: out)
    return (summed / total).cpu().contiguous()
