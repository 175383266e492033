"""Architecture facts (paper parameter/MAC counts), registry behaviour and input validation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vivit
from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
)

# ViViT-B/16x2, 32x224x224, 400 classes (paper Table 2 / DESIGN §6)
PAPER = {
    "st": (88.9e6, 455.2e9),
    "fe": (115.1e6, 284.4e9),
    "fsa": (117.3e6, 372.3e9),
    "fdp": (88.9e6, 277.1e9),
}
TINY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4, num_classes=5)
CLASSES = [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]


@pytest.mark.parametrize("variant", PAPER)
def test_paper_parameter_and_mac_counts(variant):
    params, macs = PAPER[variant]
    with torch.device("meta"):  # counts shapes only: no 455 GFLOP forward on the CPU
        model = vivit.create_model(f"vivit_b_{variant}")
        video = torch.empty(1, 3, 32, 224, 224)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) < 0.1e6, f"{n / 1e6:.3f}M parameters vs paper {params / 1e6}M"
    with FlopCounterMode(display=False) as counter:
        model(video)
    counted = counter.get_total_flops() / 2  # the counter reports 2 FLOPs per multiply-add
    assert abs(counted / macs - 1) < 0.01, f"{counted / 1e9:.1f} GMACs vs paper {macs / 1e9}"


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("tubelet", [1, 2])
def test_forward_backward_shapes(cls, tubelet):
    pool = "token" if cls in (SpatioTemporalViViT, FactorizedEncoderViViT) else "avg"
    model = cls(**{**TINY, "tubelet_size": tubelet, "img_size": (32, 48)}, global_pool=pool)
    video = torch.randn(2, 3, 8, 32, 48, requires_grad=True)
    out = model(video)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0


def test_leftover_frames_are_dropped_like_scenic():
    model = SpatioTemporalViViT(**TINY).eval()
    video = torch.randn(1, 3, 9, 32, 32)  # 9 frames, tubelet 2: the 9th frame is not used
    with torch.no_grad():
        a = model(video)
        b = model(video[:, :, :8])
        video[:, :, 8] = 100.0
        c = model(video)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_dropout_only_in_training():
    model = SpatioTemporalViViT(**TINY, drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.5)
    video = torch.randn(2, 3, 8, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(video), model(video))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(video), model(video))
    rates = [blk.drop_path.drop_prob for blk in model.blocks]
    assert rates == [0.0, 0.5]  # linear from 0 to drop_path_rate, as Scenic


def test_model4_heads_split_time_then_space():
    """Zeroing the second half of the heads' values leaves a pure temporal attention."""
    model = FactorizedDotProductViViT(**{**TINY, "depth": 1}).eval()
    attn = model.blocks[0].attn
    x = torch.randn(1, 4 * 16, 32)
    with torch.no_grad():
        d = attn.head_dim * attn.num_heads
        attn.qkv.weight[2 * d + d // 2 :] = 0  # value rows of the space heads
        attn.qkv.bias[2 * d + d // 2 :] = 0
        base = attn(x, (4, 16))
        x2 = x.clone()
        x2[:, 16:32] += 1.0  # change tokens of frame 1 only
        moved = attn(x2, (4, 16)) - base
    per_token = moved.abs().amax(dim=-1).reshape(4, 16)
    # time heads mix only tokens at the same spatial position: every position changes, as the
    # changed frame holds all positions; the space heads (zeroed values) contribute nothing
    assert (per_token > 0).all()
    with torch.no_grad():
        x3 = x.clone()
        x3[:, 5] += 1.0  # frame 0, position 5
        moved = (attn(x3, (4, 16)) - base).abs().amax(dim=-1).reshape(4, 16)
    assert (moved[:, 5] > 0).all() and moved[:, :5].abs().max() == 0 and moved[:, 6:].abs().max() == 0


def test_variant_specific_argument_errors():
    with pytest.raises(ValueError, match="num_heads must be even"):
        FactorizedDotProductViViT(**{**TINY, "num_heads": 1})
    for cls in (FactorizedSelfAttentionViViT, FactorizedDotProductViViT):
        with pytest.raises(ValueError, match="has no class token.*use global_pool='avg'"):
            cls(**TINY, global_pool="token")
    with pytest.raises(ValueError, match="attention_order must be 'time_space' or 'space_time'"):
        FactorizedSelfAttentionViViT(**TINY, attention_order="diagonal")
    with pytest.raises(ValueError, match="global_pool must be 'token' or 'avg'"):
        SpatioTemporalViViT(**TINY, global_pool="max")
    with pytest.raises(ValueError, match="no tokens"):
        SpatioTemporalViViT(**{**TINY, "num_frames": 1})


@pytest.mark.parametrize(
    "shape, dtype, match",
    [
        ((1, 8, 3, 32, 32), torch.float32, r"looks like \(B, T, C, H, W\); use x.permute\(0, 2, 1, 3, 4\)"),
        ((1, 4, 8, 32, 32), torch.float32, r"expected 3 channels at dim 1 of \(B, C, T, H, W\)"),
        ((1, 3, 1, 32, 32), torch.float32, r"smaller than one tubelet \(t=2, h=8, w=8\).*at least 2 frames"),
        ((1, 3, 8, 32, 32), torch.uint8, r"expected a floating-point video.*got dtype torch.uint8.*create_transform"),
        ((3, 8, 32, 32), torch.float32, r"expected a 5-D video tensor \(B, C=3, T, H, W\).*unsqueeze\(0\)"),
        ((1, 3, 16, 32, 32), torch.float32, r"model expects 8 frames of 32x32.*got T=16.*dynamic_size=True"),
    ],
)
def test_bad_input_errors(shape, dtype, match):
    model = SpatioTemporalViViT(**TINY)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape, dtype=dtype))


def test_registry_names_and_overrides():
    names = vivit.list_models()
    for size in ("ti", "s", "b", "l", "h"):
        for variant in ("st", "fe", "fsa"):
            assert f"vivit_{size}_{variant}" in names
    assert "vivit_ti_fdp" not in names  # ViT-Ti has 3 heads: Model 4 cannot split them
    assert vivit.list_models("vivit_b_???") == ["vivit_b_fdp", "vivit_b_fsa"]  # fnmatch patterns
    assert vivit.list_models("vivit_b_*_k400") == ["vivit_b_fe_k400", "vivit_b_st_k400"]
    with torch.device("meta"):
        model = vivit.create_model("vivit_h_st")
        assert model.patch_embed.kernel_size == (2, 14, 14) and len(model.blocks) == 32 and model.embed_dim == 1280
        model = vivit.create_model("vivit_s_fe", num_classes=10, temporal_depth=2, num_frames=16)
        assert model.head.out_features == 10 and len(model.temporal_blocks) == 2 and model.grid_size == (8, 14, 14)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'vivit_b_fee'; did you mean vivit_b_fe"):
        vivit.create_model("vivit_b_fee")


def test_registering_a_name_twice_is_an_error():
    from vivit.models.registry import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("vivit_b_st", SpatioTemporalViViT, {})
