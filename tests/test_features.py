"""Feature API (timm conventions), gradient checkpointing and flexible input sizes."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_GRID, build_tiny_model
from einops import rearrange

from vivit.models.pos_embed import resample_pos_embed
from vivit.optim import param_groups_layer_decay

# The shared tiny model (tests/conftest.py), one block deeper: layer decay needs a middle block.
MODELS = {
    variant: functools.partial(build_tiny_model, variant, None, depth=3) for variant in ("st", "fe", "fsa", "fdp")
}
GRID = TINY_GRID


def _video(b: int = 2, t: int = 8, h: int = 32, w: int = 48) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", MODELS)
def test_forward_pieces_compose(variant):
    model = MODELS[variant]().eval()
    x = _video()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model(x)
    assert pooled.shape == (2, model.num_features)
    assert torch.allclose(model.head(pooled), logits, atol=1e-6)


@pytest.mark.parametrize("variant", MODELS)
def test_forward_intermediates(variant):
    model = MODELS[variant]().eval()
    x = _video()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        feats = model.forward_features(x)
        nlc = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NLC", intermediates_only=True)
    assert torch.allclose(final, feats, atol=1e-6)
    d = model.embed_dim
    if variant == "fe":
        assert len(inter) == 3 + 2
        assert all(t.shape == (2, d, *GRID) for t in inter[:3])  # spatial blocks, per frame
        assert all(t.shape == (2, d, GRID[0], 1, 1) for t in inter[3:])  # temporal blocks
        assert torch.allclose(nlc[0], feats[:, 1:], atol=1e-6)  # normed last temporal block
    else:
        assert len(inter) == 3 and all(t.shape == (2, d, *GRID) for t in inter)
        assert torch.allclose(nlc[0], feats[:, model.num_prefix_tokens :], atol=1e-6)
        # NCTHW is the time-major token sequence laid out on its grid
        assert torch.allclose(
            rearrange(inter[-1], "b d t h w -> b (t h w) d"),
            model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)[0],
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[7])
    with pytest.raises(ValueError, match="output_fmt must be 'NCTHW' or 'NLC'"):
        model.forward_intermediates(x, output_fmt="NCHW")


def test_frame_features_of_model2():
    model = MODELS["fe"](dynamic_size=True).eval()
    with torch.no_grad():
        frames = model.forward_frame_features(_video())
        one = model.forward_frame_features(_video()[:, :, 2:4])  # the second tubelet alone
    assert frames.shape == (2, 4, model.embed_dim)
    assert torch.allclose(frames[:, 1:2], one, atol=1e-5)  # weights shared over frames, no time mixing


@pytest.mark.parametrize("variant", MODELS)
def test_grad_checkpointing_gives_identical_gradients(variant):
    torch.manual_seed(0)
    model = MODELS[variant](drop_rate=0.0)
    x = _video()
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5), name


def test_reset_classifier_and_no_weight_decay():
    model = MODELS["fe"]()
    model.reset_classifier(11)
    assert model(_video()).shape == (2, 11) and model.head.weight.abs().sum() == 0
    model.reset_classifier(0)
    assert model(_video()).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="cannot switch global_pool from 'token' to 'avg'"):
        model.reset_classifier(3, global_pool="avg")
    assert model.no_weight_decay() == {"cls_token", "pos_embed", "temporal_cls_token", "temporal_pos_embed"}


def test_layer_decay_groups():
    model = MODELS["fe"]()
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5, lr=1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["lr"] == 1e-3 * g["lr_scale"] for g in groups)  # torch optimizers read `lr`, not `lr_scale`
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    n = 3 + 2  # spatial + temporal blocks
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(model.patch_embed.proj.weight)] == 0.5 ** (n + 1)
    assert scale[id(model.blocks[0].attn.qkv.weight)] == 0.5**n
    assert scale[id(model.temporal_blocks[1].mlp.fc1.weight)] == 0.5**1
    assert wd[id(model.pos_embed)] == 0.0 and wd[id(model.blocks[0].norm1.weight)] == 0.0
    assert wd[id(model.blocks[0].attn.qkv.weight)] == 0.05


def _reference_trilinear(table: torch.Tensor, old: tuple, new: tuple) -> torch.Tensor:
    """Independent reference: separable linear resampling == one trilinear F.interpolate."""
    grid = rearrange(table, "1 (t h w) d -> 1 d t h w", t=old[0], h=old[1], w=old[2])
    grid = F.interpolate(grid, size=new, mode="trilinear", align_corners=False)
    return rearrange(grid, "1 d t h w -> 1 (t h w) d")


def test_resample_pos_embed_against_trilinear_reference():
    table = torch.randn(1, 1 + 4 * 3 * 5, 8)
    out = resample_pos_embed(table, (4, 3, 5), (6, 4, 7), num_prefix_tokens=1, space_mode="bilinear")
    assert torch.equal(out[:, :1], table[:, :1])
    assert torch.allclose(out[:, 1:], _reference_trilinear(table[:, 1:], (4, 3, 5), (6, 4, 7)), atol=1e-6)
    with pytest.raises(ValueError, match="needs 61"):
        resample_pos_embed(table[:, 1:], (4, 3, 5), (2, 2, 2), num_prefix_tokens=1)


@pytest.mark.parametrize("variant", MODELS)
def test_dynamic_size_equals_model_built_for_that_size(variant):
    """dynamic_size=True at forward time == a model created for the new size with resampled tables."""
    torch.manual_seed(0)
    dynamic = MODELS[variant](dynamic_size=True).eval()
    new = dict(num_frames=12, img_size=(40, 24))  # grid (6, 5, 3): time, rows, columns all change
    static = MODELS[variant](**new).eval()
    sd = dynamic.state_dict()
    if variant == "fe":
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (1, 4, 6), (1, 5, 3), dynamic.num_prefix_tokens)
        # temporal table: plain 1D linear interpolation over frames, cls slot unchanged
        cls, table = sd["temporal_pos_embed"][:, :1], sd["temporal_pos_embed"][:, 1:]
        table = F.interpolate(table.transpose(1, 2), size=6, mode="linear", align_corners=False).transpose(1, 2)
        sd["temporal_pos_embed"] = torch.cat([cls, table], dim=1)
    else:
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], GRID, (6, 5, 3), dynamic.num_prefix_tokens)
    static.load_state_dict(sd)
    x = _video(t=12, h=40, w=24)
    with torch.no_grad():
        assert torch.allclose(dynamic(x), static(x), atol=1e-5)
    with pytest.raises(ValueError, match="dynamic_size=True"):
        MODELS[variant]()(x)
