"""Mixup on video batches, Scenic's way, behind timm's `Mixup` interface.

Minimal implementation of the agreed interface; the `trainlib` branch replaces this file. Scenic
(`scenic/dataset_lib/dataset_utils.py: mixup`): one `lam ~ Beta(alpha, alpha)` per batch, example
`i` mixed with example `-(i + 1)` of the same batch (the reversed batch, so any batch size works),
labels mixed linearly. CutMix is not implemented here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Mixup"]


class Mixup:
    """`clips, targets = mixup(clips, labels)` on float `(B, C, T, H, W)` clips (timm's interface).

    Randomness comes from torch's global generator (seed it for reproducible runs).

    Args:
        mixup_alpha: Beta distribution parameter (0: no mixing, targets only smoothed).
        cutmix_alpha: must be 0 here (CutMix: NotImplementedError).
        cutmix_minmax, switch_prob, mode: timm's; only `mode="batch"` is supported.
        prob: probability of mixing a batch.
        label_smoothing: Scenic's smoothing, per class split.
        num_classes: total logits.
        class_splits: sizes of consecutive logit groups (labels `(B, len(class_splits))`).
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        class_splits: Sequence[int] | None = None,
    ) -> None:
        if cutmix_alpha > 0 or cutmix_minmax is not None:
            raise NotImplementedError("CutMix is not implemented in this build")
        if mode != "batch":
            raise NotImplementedError(f"mode={mode!r}: only 'batch' is implemented")
        self.mixup_alpha = float(mixup_alpha)
        self.prob = float(prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.class_splits = tuple(class_splits) if class_splits else None

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if clips.ndim != 5:
            raise ValueError(f"clips must be (B, C, T, H, W), got shape {tuple(clips.shape)}")
        targets = self._targets(labels).to(clips.device)
        if self.mixup_alpha <= 0 or float(torch.rand(())) >= self.prob:
            return clips, targets
        lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        mixed = clips * lam + clips.flip(0) * (1.0 - lam)
        return mixed, targets * lam + targets.flip(0) * (1.0 - lam)

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        sizes = list(self.class_splits or [self.num_classes])
        columns = labels.long().reshape(len(labels), -1)
        if columns.shape[1] != len(sizes):
            raise ValueError(f"labels must be (B,) or (B, {len(sizes)}), got {tuple(labels.shape)}")
        a = self.label_smoothing
        return torch.cat([F.one_hot(columns[:, i], n).float() * (1.0 - a) + a / n for i, n in enumerate(sizes)], dim=1)
