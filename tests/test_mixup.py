"""Tests for vivit.data.Mixup: Scenic's mixup (`dataset_utils.mixup`) and CutMix on video batches.

The label weights are checked against the pixels themselves: every clip of the batch is filled with
its own value, so after mixing each pixel says where it came from (CutMix) or in what proportion
(mixup), and the targets must say the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vivit.data
from vivit.data import Mixup

B_SIZES = [1, 2, 5, 6]


def _tagged_batch(batch: int, c: int = 3, t: int = 4, h: int = 12, w: int = 10) -> torch.Tensor:
    """(B, C, T, H, W) float32: clip i holds the value 10 * (i + 1) everywhere."""
    values = 10.0 * torch.arange(1, batch + 1, dtype=torch.float32)
    return values.view(-1, 1, 1, 1, 1).expand(batch, c, t, h, w).clone()


def _onehot(index: int, n: int, smoothing: float = 0.0) -> torch.Tensor:
    row = torch.full((n,), smoothing / n)
    row[index] = 1.0 - smoothing + smoothing / n
    return row


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("batch", B_SIZES)
def test_cutmix_label_weight_is_the_fraction_of_own_pixels(mode: str, batch: int) -> None:
    clips = _tagged_batch(batch)
    original = clips.clone()
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode, label_smoothing=0.0, num_classes=batch)
    seen_cut = 0
    for seed in range(8):
        clips = original.clone()
        mixup.generator = torch.Generator().manual_seed(seed)
        out, targets = mixup(clips, torch.arange(batch))
        assert out is clips  # mixed in place, as timm
        assert targets.shape == (batch, batch) and targets.dtype == torch.float32
        for i in range(batch):
            j = batch - 1 - i
            own = out[i] == original[i, 0, 0, 0, 0]
            from_partner = out[i] == original[j, 0, 0, 0, 0]
            assert bool((own | from_partner).all())  # CutMix copies pixels, never blends them
            # the label weight is what the pixels are
            assert float(targets[i, i]) == pytest.approx(float(own.float().mean()), abs=1e-6)
            if i != j:
                assert float(targets[i, j]) == pytest.approx(float(from_partner.float().mean()), abs=1e-6)
            replaced = ~own
            # one box for the whole clip: the same on every channel and every frame (T is never cut)
            assert torch.equal(replaced, replaced[:1, :1].expand_as(replaced))
            rows, cols = replaced[0, 0].any(1), replaced[0, 0].any(0)
            assert int(replaced[0, 0].sum()) == int(rows.sum()) * int(cols.sum())  # a rectangle in H x W
            seen_cut += int(replaced.any())
        if batch % 2:  # the middle clip is its own partner: untouched, its label unmixed
            assert torch.equal(out[batch // 2], original[batch // 2])
            assert torch.equal(targets[batch // 2], _onehot(batch // 2, batch))
    assert seen_cut > 0 or batch == 1


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("batch", B_SIZES)
def test_mixup_label_weight_is_the_pixel_mix(mode: str, batch: int) -> None:
    original = _tagged_batch(batch)
    labels = torch.arange(batch)
    mixup = Mixup(mixup_alpha=0.4, mode=mode, label_smoothing=0.0, num_classes=batch)
    lams = set()
    for seed in range(6):
        mixup.generator = torch.Generator().manual_seed(seed)
        out, targets = mixup(original.clone(), labels)
        for i in range(batch):
            j = batch - 1 - i
            pixels = out[i]
            assert torch.allclose(pixels, pixels.flatten()[0].expand_as(pixels))  # one weight per clip
            a, b = float(original[i, 0, 0, 0, 0]), float(original[j, 0, 0, 0, 0])
            if i == j:
                assert float(pixels.flatten()[0]) == a and torch.equal(targets[i], _onehot(i, batch))
                continue
            lam = (float(pixels.flatten()[0]) - b) / (a - b)  # pixel = lam * own + (1 - lam) * partner
            expected = lam * _onehot(i, batch) + (1 - lam) * _onehot(j, batch)
            torch.testing.assert_close(targets[i], expected, atol=1e-5, rtol=0)
            lams.add(round(lam, 6))
        if mode == "batch" and batch > 1:
            row_lams = {round(float(targets[i, i]), 5) for i in range(batch) if i != batch - 1 - i}
            assert len(row_lams) == 1  # Scenic: one lambda for the whole batch
    assert len(lams) > 1 or batch == 1


def test_batch_mixup_follows_scenic_reversed_batch_with_smoothed_split_targets() -> None:
    """EPIC-Kitchens recipe: labels (noun, verb), smoothing per split, lam mixes each split linearly."""
    clips = torch.randn(4, 3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    original = clips.clone()
    labels = torch.tensor([[0, 1], [2, 0], [1, 1], [3, 0]])  # 4 nouns, 2 verbs
    mixup = Mixup(mixup_alpha=0.1, label_smoothing=0.2, num_classes=6, class_splits=(4, 2))
    mixup.generator = torch.Generator().manual_seed(3)
    out, targets = mixup(clips, labels)
    lam = float(((out[0] - original[3]) / (original[0] - original[3])).median())
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(out, lam * original + (1 - lam) * original.flip(0), atol=1e-5, rtol=0)

    def smoothed(noun: int, verb: int) -> torch.Tensor:  # Scenic's apply_label_smoothing per split
        return torch.cat([_onehot(noun, 4, 0.2), _onehot(verb, 2, 0.2)])

    for i in range(4):
        j = 3 - i
        expected = lam * smoothed(*labels[i].tolist()) + (1 - lam) * smoothed(*labels[j].tolist())
        torch.testing.assert_close(targets[i], expected, atol=1e-5, rtol=0)
        assert float(targets[i, :4].sum()) == pytest.approx(1.0) and float(targets[i, 4:].sum()) == pytest.approx(1.0)


def test_lambda_is_beta_distributed_and_prob_switch_work() -> None:
    labels = torch.arange(2)
    mixup = Mixup(mixup_alpha=0.1, label_smoothing=0.0, num_classes=2, generator=torch.Generator().manual_seed(0))
    lams = np.array([float(mixup(_tagged_batch(2), labels)[1][0, 0]) for _ in range(2000)])
    reference = np.random.default_rng(0).beta(0.1, 0.1, 20000)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # Beta(0.1, 0.1): mostly near 0 or 1
        assert abs(np.quantile(lams, q) - np.quantile(reference, q)) < 0.05
    never = Mixup(mixup_alpha=1.0, prob=0.0, num_classes=2, label_smoothing=0.1)
    clips = _tagged_batch(2)
    out, targets = never(clips, labels)
    assert out is clips and torch.equal(out, _tagged_batch(2))
    torch.testing.assert_close(targets, torch.stack([_onehot(0, 2, 0.1), _onehot(1, 2, 0.1)]))
    off = Mixup(mixup_alpha=1.0, num_classes=2, label_smoothing=0.0)
    off.mixup_enabled = False  # timm's switch for the end of training
    assert torch.equal(off(_tagged_batch(2), labels)[0], _tagged_batch(2))
    both = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, num_classes=6, label_smoothing=0.0)
    both.generator = torch.Generator().manual_seed(1)
    cut = 0
    for _ in range(200):
        out = both(_tagged_batch(6), torch.arange(6))[0]
        cut += int(bool(torch.isin(out, _tagged_batch(6)).all()))  # only original values: CutMix
    assert 60 < cut < 140  # switch_prob 0.5


def test_cutmix_minmax_boxes_and_reproducibility() -> None:
    mixup = Mixup(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.5), label_smoothing=0.0, num_classes=2)
    assert mixup.cutmix_alpha == 1.0
    for seed in range(10):
        mixup.generator = torch.Generator().manual_seed(seed)
        out, targets = mixup(_tagged_batch(2, h=40, w=50), torch.arange(2))
        replaced = out[0, 0, 0] != 10.0
        height, width = int(replaced.any(1).sum()), int(replaced.any(0).sum())
        assert 8 <= height < 20 and 10 <= width < 25
        assert float(targets[0, 0]) == pytest.approx(1 - height * width / 2000)
    torch.manual_seed(7)
    first = Mixup(cutmix_alpha=1.0, mode="elem", num_classes=4)(torch.randn(4, 3, 2, 8, 8), torch.arange(4))
    torch.manual_seed(7)
    second = Mixup(cutmix_alpha=1.0, mode="elem", num_classes=4)(torch.randn(4, 3, 2, 8, 8), torch.arange(4))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])  # torch's RNG state covers it


def test_timm_slicing_cuts_time_but_ours_cuts_each_frame() -> None:
    """The issue's report: timm draws its box over the last two dims (H, W) but pastes it with
    `x[:, :, yl:yh, xl:xh]`, which on (B, C, T, H, W) are T and H: the pixels do not match the label."""
    clips = _tagged_batch(2, t=8, h=32, w=32)
    yl, yh, xl, xh = 6, 26, 6, 26  # a 20 x 20 box: timm's label weight for the partner is 400 / 1024
    timm = clips.clone()
    timm[:, :, yl:yh, xl:xh] = timm.flip(0)[:, :, yl:yh, xl:xh]
    timm_replaced = float((timm[0] != 10.0).float().mean())
    assert timm_replaced == pytest.approx(2 / 8 * 20 / 32)  # frames 6-7 only, rows 6-25, every column
    assert abs(timm_replaced - 400 / 1024) > 0.2
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=2)
    for seed in range(20):
        mixup.generator = torch.Generator().manual_seed(seed)
        out, targets = mixup(clips.clone(), torch.arange(2))
        replaced = out[0] != 10.0
        per_frame = replaced[0].flatten(1).float().mean(1)
        assert torch.equal(per_frame, per_frame[:1].expand_as(per_frame))  # every frame cut alike
        assert float(targets[0, 1]) == pytest.approx(float(replaced.float().mean()))


def test_mixup_errors() -> None:
    mixup = Mixup(num_classes=4)
    with pytest.raises(ValueError, match=r"floating video batch \(B, C, T, H, W\)"):
        mixup(torch.zeros(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(ValueError, match=r"floating video batch"):
        mixup(torch.zeros(2, 3, 2, 8, 8, dtype=torch.uint8), torch.arange(2))
    with pytest.raises(ValueError, match=r"one row per clip \(2\)"):
        mixup(torch.zeros(2, 3, 2, 8, 8), torch.arange(3))
    with pytest.raises(ValueError, match=r"labels\[1\] = 4 is not a class index in \[0, 4\)"):
        mixup(torch.zeros(2, 3, 2, 8, 8), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="add up to 5 classes but there are 4"):
        Mixup(num_classes=4, class_splits=(3, 2))
    with pytest.raises(ValueError, match="mode must be one of"):
        Mixup(mode="clip")
    with pytest.raises(ValueError, match="prob must be in"):
        Mixup(prob=2.0)
    with pytest.raises(ValueError, match="cutmix_minmax"):
        Mixup(cutmix_minmax=(0.5, 0.2))
    assert vivit.data.Mixup is Mixup
