"""Mixup and CutMix for video batches `(B, C, T, H, W)`, with timm's interface and Scenic's pairing.

Scenic's ViViT recipes mix inside the train step (`scenic/projects/vivit/train_utils.py` calls
`scenic/dataset_lib/dataset_utils.py` `mixup`): one weight `lam ~ Beta(alpha, alpha)` for the whole
batch, example `i` mixed with example `B - 1 - i` of the same batch (the batch reversed, so any
batch size works; the middle example of an odd batch is mixed with itself, i.e. left as it is) and
the one-hot labels mixed with the same weight. Label smoothing is applied in Scenic's loss to the
mixed targets; smoothing is affine, so smoothing then mixing (as here and in timm) gives the same
targets. Scenic draws its weight per device batch; here it is drawn per call.

CutMix (Yun et al. 2019) is not used by Scenic's ViViT recipes but is offered as timm offers it:
one box over H x W, the same for every frame and channel of a clip, never over time. timm's own
`Mixup` indexes dimensions 2 and 3, which for a video batch are T and H: it cuts a box in the
T x H plane while computing its label weight from H x W. Here the box is always in the last two
dimensions and the label weight is the fraction of the clip's pixels that are its own after the
box is clipped to the frame (timm's `correct_lam`), so the targets say what the pixels are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..loss import check_class_splits, one_hot_targets

__all__ = ["Mixup"]

_MODES = ("batch", "pair", "elem")


class Mixup:
    """Mixup / CutMix of a video batch and its labels (timm's `timm.data.Mixup` interface).

    Example:
        >>> mixup = Mixup(mixup_alpha=0.1, label_smoothing=0.2, num_classes=397, class_splits=(300, 97))
        >>> clips, targets = mixup(batch["video"], batch["label"])  # EPIC-Kitchens recipe
        >>> loss = SoftTargetCrossEntropy(class_splits=(300, 97))(model(clips), targets)

    Example `i` is always mixed with example `B - 1 - i` (Scenic's reversed batch; timm's pairing
    too). In `"batch"` mode one weight (and one CutMix box) serves the whole batch, as in Scenic's
    `dataset_utils.mixup`; `"pair"` draws one per pair `(i, B - 1 - i)`, `"elem"` one per example
    (its partner's pixels are taken from the unmixed batch). Any batch size works; the middle
    example of an odd batch keeps its pixels and its label.

    Args:
        mixup_alpha: Beta(alpha, alpha) parameter of the mixup weight; mixup is on when > 0
            (Scenic: 0.1 EPIC-Kitchens, 0.3 SSv2). With both alphas 0 (and no `cutmix_minmax`)
            nothing is mixed and the targets are only smoothed (timm raises instead).
        cutmix_alpha: Beta parameter of the CutMix weight; CutMix is on when > 0.
        cutmix_minmax: `(min, max)` box side as fractions of H and W; when set, CutMix is on and
            the box size is drawn uniformly in that range instead of from a Beta weight (timm).
        prob: Probability that a batch (pair, example) is mixed at all.
        switch_prob: With both mixup and CutMix on, the probability of CutMix.
        mode: `"batch"`, `"pair"` or `"elem"` (see above).
        label_smoothing: Smoothing of the one-hot targets before mixing (`vivit.loss.one_hot_targets`:
            per class split, Scenic's `apply_label_smoothing`).
        num_classes: Width of the targets (the sum of `class_splits` when given).
        class_splits: Classes per output head, e.g. `(300, 97)` for EPIC-Kitchens nouns and verbs;
            labels are then `(B, len(class_splits))` and each split's targets sum to 1.
        generator: Source of randomness (one int64 drawn per call seeds the draws); `None` uses
            torch's global generator, so `torch.manual_seed` and saved RNG states cover it.

    Attributes:
        mixup_enabled: Set to False to stop mixing (targets are then only smoothed), as in timm.

    Call:
        `clips, targets = mixup(clips, labels)`: clips float `(B, C, T, H, W)`, mixed **in place**
        and returned; labels int `(B,)` or `(B, len(class_splits))` (any device); targets float32
        `(B, num_classes)` on the clips' device: `lam_i * onehot_i + (1 - lam_i) * onehot_{B-1-i}`,
        each smoothed, where `lam_i` is the weight of example i's own clip (for CutMix: the
        fraction of its pixels outside the box).

    Raises:
        ValueError: For bad settings (negative alpha, probability outside [0, 1], unknown mode,
            splits that do not add up to `num_classes`) or, when called, clips that are not a
            floating `(B, C, T, H, W)` batch, or labels of the wrong shape, dtype or range.
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
        generator: torch.Generator | None = None,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha!r} and {cutmix_alpha!r}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax: tuple[float, float] | None = None
        if cutmix_minmax is not None:
            low, high = (float(v) for v in cutmix_minmax)
            if not 0.0 < low < high <= 1.0:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, got {cutmix_minmax!r}")
            self.cutmix_minmax = (low, high)
            self.cutmix_alpha = 1.0  # timm: minmax switches CutMix on (the alpha is then unused)
        self.mix_prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.class_splits = check_class_splits(class_splits, self.num_classes)
        self.generator = generator
        self.mixup_enabled = True

    # ------------------------------------------------------------ parameters
    def _params(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` weights (1 = unmixed) and CutMix flags, drawn as timm's `_params_per_elem`."""
        lam = np.ones(count)
        use_cutmix = np.zeros(count, dtype=bool)
        if not self.mixup_enabled or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return lam, use_cutmix
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.random(count) < self.switch_prob
        elif self.cutmix_alpha > 0:
            use_cutmix = np.ones(count, dtype=bool)
        mixed = rng.random(count) < self.mix_prob
        mix_lam = rng.beta(self.mixup_alpha, self.mixup_alpha, count) if self.mixup_alpha > 0 else lam
        cut_lam = rng.beta(self.cutmix_alpha, self.cutmix_alpha, count) if self.cutmix_alpha > 0 else lam
        lam = np.where(mixed, np.where(use_cutmix, cut_lam, mix_lam), 1.0)
        return lam, use_cutmix & mixed

    def _boxes(
        self, rng: np.random.Generator, lam: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """CutMix boxes `[top, bottom) x [left, right)` for weights `lam` (timm's `rand_bbox` /
        `rand_bbox_minmax`), clipped to the frame."""
        count = len(lam)
        if self.cutmix_minmax is not None:
            low, high = self.cutmix_minmax
            cut_h = rng.integers(int(height * low), max(int(height * high), int(height * low) + 1), count)
            cut_w = rng.integers(int(width * low), max(int(width * high), int(width * low) + 1), count)
            top = rng.integers(0, height - cut_h + 1)
            left = rng.integers(0, width - cut_w + 1)
            return top, top + cut_h, left, left + cut_w
        ratio = np.sqrt(1.0 - lam)
        half_h = (height * ratio).astype(np.int64) // 2
        half_w = (width * ratio).astype(np.int64) // 2
        cy = rng.integers(0, height, count)
        cx = rng.integers(0, width, count)
        return (
            np.clip(cy - half_h, 0, height),
            np.clip(cy + half_h, 0, height),
            np.clip(cx - half_w, 0, width),
            np.clip(cx + half_w, 0, width),
        )

    # ------------------------------------------------------------ call
    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or not clips.dtype.is_floating_point:
            shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
            dtype = f" {clips.dtype}" if isinstance(clips, torch.Tensor) else ""
            raise ValueError(f"Mixup expects a floating video batch (B, C, T, H, W); got{dtype} {shape}")
        batch, height, width = clips.shape[0], clips.shape[-2], clips.shape[-1]
        if not isinstance(labels, torch.Tensor) or labels.ndim == 0 or labels.shape[0] != batch:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a tensor with one row per clip ({batch}), got {shape}")
        targets = one_hot_targets(labels.to(clips.device), self.num_classes, self.label_smoothing, self.class_splits)

        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator))
        rng = np.random.default_rng(seed)
        if self.mode == "batch":
            lam, use_cutmix = (np.repeat(v, batch) for v in self._params(rng, 1))
        elif self.mode == "pair":
            half_lam, half_cut = self._params(rng, batch // 2)
            middle = [1.0] * (batch % 2)
            lam = np.concatenate([half_lam, middle, half_lam[::-1]])
            use_cutmix = np.concatenate([half_cut, [False] * (batch % 2), half_cut[::-1]])
        else:
            lam, use_cutmix = self._params(rng, batch)
        if batch % 2:  # the middle example is its own partner: nothing changes
            lam[batch // 2], use_cutmix[batch // 2] = 1.0, False
        if np.all(lam == 1.0):
            return clips, targets

        partner = clips.flip(0)  # a copy: the unmixed partners, even while `clips` is overwritten
        if use_cutmix.any():
            if self.mode == "batch":
                top, bottom, left, right = (np.repeat(v, batch) for v in self._boxes(rng, lam[:1], height, width))
            elif self.mode == "pair":
                half = [v[: batch // 2] for v in self._boxes(rng, lam[: batch // 2], height, width)]
                top, bottom, left, right = (
                    np.concatenate([v, np.zeros(batch % 2, dtype=np.int64), v[::-1]]) for v in half
                )
            else:
                top, bottom, left, right = self._boxes(rng, lam, height, width)
            area = (bottom - top) * (right - left)
            # the label weight is what the pixels are: the fraction outside the clipped box
            lam = np.where(use_cutmix, 1.0 - area / float(height * width), lam)
            rows = torch.arange(height, device=clips.device)
            cols = torch.arange(width, device=clips.device)

            def column(values: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(values.astype(np.int64)).to(clips.device)[:, None]

            inside_rows = (rows >= column(top)) & (rows < column(bottom))  # (B, H)
            inside_cols = (cols >= column(left)) & (cols < column(right))  # (B, W)
            box = (inside_rows[:, :, None] & inside_cols[:, None, :]) & column(use_cutmix)[:, :, None].bool()
            box = box[:, None, None]  # (B, 1, 1, H, W): the same box on every channel and frame
        mix = np.where(use_cutmix, 1.0, lam)  # mixup weight of each clip's own pixels
        if np.any(mix != 1.0):
            weight = torch.from_numpy(mix).to(clips.device, clips.dtype).view(-1, 1, 1, 1, 1)
            clips.mul_(weight).add_(partner * (1.0 - weight))
        if use_cutmix.any():
            clips.copy_(torch.where(box, partner, clips))

        lam_t = torch.from_numpy(lam).to(targets.device, torch.float32)[:, None]
        targets = targets * lam_t + targets.flip(0) * (1.0 - lam_t)
        return clips, targets

    def __repr__(self) -> str:
        fields = {
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "cutmix_minmax": self.cutmix_minmax,
            "prob": self.mix_prob,
            "switch_prob": self.switch_prob,
            "mode": self.mode,
            "label_smoothing": self.label_smoothing,
            "num_classes": self.num_classes,
            "class_splits": self.class_splits,
        }
        return f"Mixup({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
