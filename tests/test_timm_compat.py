"""timm look-alikes behave like timm's: group_matcher + layer decay, resolve_data_config(model=...),
create_transform(**resolve_data_config(...)), and predict_views on a model whose cfg has no input size.

timm itself cannot be installed beside torch 2.13 here, so its grouping rule (`group_with_matcher` in
timm/models/_manipulate.py) is spelled out below as expected layer numbers for small models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vivit
from vivit.optim import layer_ids, param_groups_layer_decay

TINY = dict(img_size=32, num_frames=8, patch_size=8, depth=3, num_classes=5)


def _layers(model: torch.nn.Module) -> dict[str, int]:
    return layer_ids((n for n, _ in model.named_parameters()), model.group_matcher())


@pytest.mark.parametrize("name", ["vivit_ti_st", "vivit_ti_fsa", "vivit_s_fdp"])
def test_group_matcher_single_encoder(name):
    # timm's ViT numbering: stem 0, block i -> i + 1, the final norm with the last block, head last
    model = vivit.create_model(name, **TINY)
    layers = _layers(model)
    for param, layer in layers.items():
        if param.startswith(("patch_embed.", "pos_embed", "cls_token")):
            assert layer == 0, param
        elif param.startswith("blocks."):
            assert layer == int(param.split(".")[1]) + 1, param
        elif param.startswith("norm."):
            assert layer == 3, param
        else:
            assert param.startswith("head.") and layer == 4, param
    if name == "vivit_ti_fsa":  # Model 3's temporal attention belongs to its block
        assert layers["blocks.1.temporal_attn.qkv.weight"] == layers["blocks.1.attn.qkv.weight"] == 2


def test_group_matcher_factorized_encoder():
    model = vivit.create_model("vivit_ti_fe", temporal_depth=2, **TINY)
    layers = _layers(model)
    expected = {
        "cls_token": 0,
        "pos_embed": 0,
        "patch_embed.proj.weight": 0,
        "blocks.0.norm1.weight": 1,
        "blocks.2.mlp.fc2.bias": 3,
        "norm.weight": 3,
        "temporal_cls_token": 4,
        "temporal_pos_embed": 4,
        "temporal_blocks.0.attn.qkv.weight": 4,
        "temporal_blocks.1.attn.proj.bias": 5,
        "temporal_norm.bias": 5,
        "head.weight": 6,
    }
    assert {k: layers[k] for k in expected} == expected
    assert set(layers.values()) == set(range(7))


def test_layer_decay_sets_lr_for_torch_optimizers():
    model = vivit.create_model("vivit_ti_st", **TINY)
    groups = param_groups_layer_decay(model, weight_decay=0.1, layer_decay=0.5, lr=0.01)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr[id(model.head.weight)] == 0.01 and lr[id(model.norm.weight)] == 0.005
    assert lr[id(model.blocks[0].attn.qkv.weight)] == 0.01 * 0.5**3 and lr[id(model.pos_embed)] == 0.01 * 0.5**4
    optimizer = torch.optim.AdamW(groups, lr=123.0)  # the groups' lr wins over the default
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [0.01 * 0.5**k for k in (4, 3, 2, 1, 0)]
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model.pos_embed)] == decay[id(model.blocks[0].norm1.bias)] == 0.0
    assert decay[id(model.blocks[0].mlp.fc1.weight)] == 0.1


def test_resolve_data_config_from_the_model():
    model = vivit.create_model("vivit_ti_st", **TINY)  # no weights: no preprocessing in its cfg
    cfg = vivit.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 8, 32, 32) and cfg["crop_size"] == (32, 32)
    assert cfg["resize_size"] == round(32 * 256 / 224)  # Kinetics' short side : crop ratio
    assert set(cfg) == set(vivit.data.DEFAULT_DATA_CFG)  # timm: only the data config
    assert vivit.resolve_data_config({"crop_size": 24}, model=model)["crop_size"] == (24, 24)  # timm's args form
    frames = np.random.default_rng(0).integers(0, 256, (8, 48, 40, 3), dtype=np.uint8)
    clip = vivit.create_transform(**cfg)(frames)
    assert clip.shape == (3, 8, 32, 32)
    with torch.no_grad():
        assert model(clip[None]).shape == (1, 5)
    released = vivit.resolve_data_config(model=vivit.create_model("vivit_b_fe_k400", depth=1, temporal_depth=1))
    assert released["input_size"] == (3, 32, 224, 224) and released["resize_size"] == 256
    assert released["antialias"] is False and released["test_views"] == (4, 3)


def test_predict_views_uses_the_models_own_size():
    model = vivit.create_model("vivit_ti_st", **TINY).eval()
    frames = np.random.default_rng(0).integers(0, 256, (20, 40, 36, 3), dtype=np.uint8)
    logits = vivit.predict_views(model, frames, clips=2, crops=3)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
