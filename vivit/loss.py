"""Training losses as Scenic defines them: label smoothing, soft-target cross-entropy, the split-head loss.

Scenic's classification loss (`scenic/model_lib/base_models/model_utils.py`,
`weighted_softmax_cross_entropy`) is the batch mean of `sum_k -target_k * log_softmax(logits)_k`,
with label smoothing applied to the (possibly mixed) one-hot target inside the loss
(`apply_label_smoothing`: `target * (1 - a) + a / num_classes`). timm's `LabelSmoothingCrossEntropy`
and `SoftTargetCrossEntropy` compute the same numbers; the names here are timm's.

Models with `class_splits` (EPIC-Kitchens: 300 nouns then 97 verbs in one 397-wide output) have one
softmax per split. Scenic's `ViViTMultiHeadClassificationModel.loss_function`
(`scenic/projects/vivit/model.py`) splits logits and targets at the split boundaries, takes each
split's smoothed cross-entropy (the smoothing mass spread over *that split's* classes) and returns
their mean. Labels of such models are one index per split, `(B, len(class_splits))`.

This module imports nothing from vivit, so any layer may use it (`vivit.data.Mixup` builds its
targets with `one_hot_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LabelSmoothingCrossEntropy",
    "SoftTargetCrossEntropy",
    "check_class_splits",
    "one_hot_targets",
]


def check_class_splits(class_splits: Sequence[int] | None, num_classes: int | None = None) -> tuple[int, ...] | None:
    """Validates `class_splits` (classes per output head, in order) and returns it as a tuple.

    Args:
        class_splits: Positive class counts, e.g. `(300, 97)` for EPIC-Kitchens nouns and verbs;
            `None` for one softmax over all classes.
        num_classes: The output width they must add up to (not checked when `None`).

    Returns:
        The splits as a tuple of ints, or `None`.

    Raises:
        ValueError: For an empty sequence, a non-positive count, or a sum other than `num_classes`.
    """
    if class_splits is None:
        return None
    splits = tuple(int(s) for s in class_splits)
    if not splits or min(splits) < 1:
        raise ValueError(f"class_splits must be positive class counts, one per head (e.g. (300, 97)); got {splits!r}")
    if num_classes is not None and sum(splits) != num_classes:
        raise ValueError(
            f"class_splits {splits} add up to {sum(splits)} classes but there are {num_classes} "
            "(logits / num_classes must be the splits side by side)"
        )
    return splits


def _label_matrix(labels: torch.Tensor, splits: tuple[int, ...]) -> torch.Tensor:
    """`labels` as int64 `(B, len(splits))`, checked against each split's class count."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a tensor of class indices, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(
            f"labels must be integer class indices, got dtype {labels.dtype} "
            "(soft targets go to SoftTargetCrossEntropy)"
        )
    expected = "(B,)" if len(splits) == 1 else f"(B, {len(splits)}) (one index per class split)"
    if len(splits) == 1 and labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if len(splits) == 1:
        if labels.ndim != 1:
            raise ValueError(f"labels must have shape {expected}, got {tuple(labels.shape)}")
        labels = labels[:, None]
    elif labels.ndim != 2 or labels.shape[1] != len(splits):
        raise ValueError(f"labels must have shape {expected}, got {tuple(labels.shape)}")
    labels = labels.long()
    sizes = torch.tensor(splits, device=labels.device)
    bad = (labels < 0) | (labels >= sizes)
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        where = f"labels[{row}]" if len(splits) == 1 else f"labels[{row}, {col}]"
        raise ValueError(
            f"{where} = {int(labels[row, col])} is not a class index in [0, {splits[col]}) "
            "(-1 marks an unlabelled video: leave those out of training)"
        )
    return labels


def one_hot_targets(
    labels: torch.Tensor,
    num_classes: int,
    smoothing: float = 0.0,
    class_splits: Sequence[int] | None = None,
) -> torch.Tensor:
    """Smoothed one-hot targets, Scenic's `apply_label_smoothing` applied per class split.

    Each split (the whole output without `class_splits`) gets `onehot * (1 - smoothing) +
    smoothing / n` with `n` that split's class count, so the true class holds
    `1 - smoothing + smoothing / n`, every other `smoothing / n`, and every split's slice sums to 1.

    Args:
        labels: int `(B,)` class indices, or `(B, len(class_splits))` one index per split.
        num_classes: Output width (the sum of `class_splits` when given).
        smoothing: Label smoothing `a` in [0, 1] (Scenic configs: 0.2 EPIC-Kitchens, 0.3 SSv2).
        class_splits: Classes per head, e.g. `(300, 97)`.

    Returns:
        float32 `(B, num_classes)` on the labels' device.

    Raises:
        ValueError: For a smoothing outside [0, 1], splits that do not add up to `num_classes`,
            labels of the wrong shape or dtype, or a label outside its split's range.
    """
    if not 0.0 <= float(smoothing) <= 1.0:
        raise ValueError(f"label smoothing must be in [0, 1], got {smoothing!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes!r}")
    splits = check_class_splits(class_splits, int(num_classes)) or (int(num_classes),)
    index = _label_matrix(labels, splits)
    targets = torch.empty(index.shape[0], int(num_classes), dtype=torch.float32, device=index.device)
    start = 0
    for column, size in enumerate(splits):
        part = targets[:, start : start + size]
        part.fill_(smoothing / size)
        part.scatter_(1, index[:, column : column + 1], 1.0 - smoothing + smoothing / size)
        start += size
    return targets


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, splits: tuple[int, ...] | None) -> torch.Tensor:
    """Mean over splits of the batch-mean soft cross-entropy (float32 log-softmax)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, num_classes), got {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("the batch is empty: no logits to score")
    splits = check_class_splits(splits, logits.shape[1]) or (logits.shape[1],)
    # log-softmax in float32 even under bf16/fp16 autocast: the loss is a sum of small terms
    logits, targets = logits.float(), targets.float()
    losses = [
        torch.sum(-t * F.log_softmax(z, dim=-1), dim=-1).mean()
        for z, t in zip(logits.split(splits, dim=1), targets.split(splits, dim=1), strict=True)
    ]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (mixup, label smoothing), per class split (timm's name).

    `loss = mean over splits of mean over the batch of sum_k -targets_k * log_softmax(logits)_k`
    (Scenic `weighted_softmax_cross_entropy` with no smoothing, as the targets already carry it;
    for `class_splits` Scenic's `ViViTMultiHeadClassificationModel.loss_function`: one softmax per
    split, the mean of the splits' losses).

    Args:
        class_splits: Classes per head, e.g. `(300, 97)`; `None` for one softmax.

    Call:
        `loss(logits, targets)`: logits `(B, N)` (any float dtype, computed in float32), targets
        float `(B, N)` (e.g. from `vivit.data.Mixup`); returns a float32 scalar.

    Raises:
        ValueError: For mismatched shapes, an empty batch, or splits that do not add up to N.
    """

    def __init__(self, class_splits: Sequence[int] | None = None) -> None:
        super().__init__()
        self.class_splits = check_class_splits(class_splits)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _soft_cross_entropy(logits, targets, self.class_splits)

    def extra_repr(self) -> str:
        return f"class_splits={self.class_splits}"


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy with label smoothing against integer labels, per class split (timm's name).

    The targets are `one_hot_targets(labels, N, smoothing, class_splits)` (Scenic's
    `apply_label_smoothing`: on-value `1 - a + a / n`, off-value `a / n`, `n` the split's class
    count); the loss is then `SoftTargetCrossEntropy`'s. For one split this equals timm's
    `LabelSmoothingCrossEntropy` and `F.cross_entropy(..., label_smoothing=a)`.

    Args:
        smoothing: `a` in [0, 1] (Scenic: 0.2 for EPIC-Kitchens, 0.3 for SSv2, none for Kinetics).
        class_splits: Classes per head, e.g. `(300, 97)`; labels are then `(B, len(class_splits))`.

    Call:
        `loss(logits, labels)`: logits `(B, N)`, labels int `(B,)` or `(B, len(class_splits))`;
        returns a float32 scalar.

    Raises:
        ValueError: For a smoothing outside [0, 1], labels of the wrong shape or out of range, or
            splits that do not add up to N.
    """

    def __init__(self, smoothing: float = 0.1, class_splits: Sequence[int] | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(smoothing) <= 1.0:
            raise ValueError(f"label smoothing must be in [0, 1], got {smoothing!r}")
        self.smoothing = float(smoothing)
        self.class_splits = check_class_splits(class_splits)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (B, num_classes), got {tuple(logits.shape)}")
        if labels.ndim == 0 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels {tuple(labels.shape)} and logits {tuple(logits.shape)} differ in batch size")
        targets = one_hot_targets(labels.to(logits.device), logits.shape[1], self.smoothing, self.class_splits)
        return _soft_cross_entropy(logits, targets, self.class_splits)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, class_splits={self.class_splits}"
