"""Classification losses of Scenic's ViViT trainer: soft-target and label-smoothed cross-entropy.

Minimal implementation of the agreed interface (timm's names, `timm.loss`); the `trainlib` branch
replaces this file. Label smoothing is Scenic's (`model_utils.weighted_softmax_cross_entropy`):
`onehot * (1 - a) + a / num_classes`, applied per class split; for a head with `class_splits`
(EPIC-KITCHENS nouns and verbs) the loss is the mean over the splits of each split's cross-entropy
(Scenic `ViViTMultiHeadClassificationModel.loss_function`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LabelSmoothingCrossEntropy", "SoftTargetCrossEntropy", "one_hot_targets"]


def _splits(num_classes: int, class_splits: Sequence[int] | None) -> list[int]:
    sizes = [int(s) for s in class_splits] if class_splits else [num_classes]
    if sum(sizes) != num_classes or min(sizes) < 1:
        raise ValueError(f"class_splits {sizes} must be positive and add up to {num_classes} classes")
    return sizes


def one_hot_targets(
    labels: torch.Tensor, num_classes: int, smoothing: float = 0.0, class_splits: Sequence[int] | None = None
) -> torch.Tensor:
    """Smoothed one-hot targets, float32 `(B, num_classes)`; each split's slice sums to 1.

    Args:
        labels: int `(B,)`, or `(B, len(class_splits))` with indices within each split.
        num_classes: total logits.
        smoothing: Scenic's `a`: `onehot * (1 - a) + a / classes_of_the_split`.
        class_splits: sizes of consecutive logit groups (e.g. `(300, 97)`).

    Raises:
        ValueError: labels of the wrong shape or out of range.
    """
    sizes = _splits(num_classes, class_splits)
    labels = labels.long()
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[1] != len(sizes):
        raise ValueError(
            f"labels must be (B,) or (B, {len(sizes)}) for {len(sizes)} class splits, got {tuple(labels.shape)}"
        )
    parts = []
    for i, size in enumerate(sizes):
        column = labels[:, i]
        if len(column) and (int(column.min()) < 0 or int(column.max()) >= size):
            raise ValueError(f"labels of split {i} must be in [0, {size}), got {column.tolist()}")
        parts.append(F.one_hot(column, size).float() * (1.0 - smoothing) + smoothing / size)
    return torch.cat(parts, dim=1)


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy with soft targets `(B, N)`; for split heads the mean of the per-split losses."""

    def __init__(self, class_splits: Sequence[int] | None = None) -> None:
        super().__init__()
        self.class_splits = tuple(int(s) for s in class_splits) if class_splits else None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        sizes = _splits(logits.shape[-1], self.class_splits)
        losses = [
            torch.sum(-t * F.log_softmax(x.float(), dim=-1), dim=-1).mean()
            for x, t in zip(logits.split(sizes, dim=-1), targets.split(sizes, dim=-1), strict=True)
        ]
        return torch.stack(losses).mean()


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy of integer labels with Scenic's label smoothing (per split for split heads)."""

    def __init__(self, smoothing: float = 0.1, class_splits: Sequence[int] | None = None) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)
        self.class_splits = tuple(int(s) for s in class_splits) if class_splits else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = one_hot_targets(labels, logits.shape[-1], self.smoothing, self.class_splits)
        return SoftTargetCrossEntropy(self.class_splits)(logits, targets.to(logits.device))
