"""`inflate_vit`: a 2D image ViT -> any of the four ViViT models, as Scenic's init surgery does it.

Three kinds of evidence:
1. Scenic's own `initialise_from_train_state` output (tests/data/scenic/init) is reproduced exactly,
   except for one documented, deliberate difference (Model 2's spatial class token).
2. Function: a central- or average-inflated model on a static clip computes the image ViT per frame
   (reference: HF transformers' ViTModel, fed through the HF and the timm key layouts).
3. Clear errors for ViTs that do not fit.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
import torch
from scenic_fixtures import DATA, model_args_from_config

from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
)
from vivit.models.vivit import MODEL_CLASSES
from vivit.weights import from_scenic
from vivit.weights.inflate import inflate_vit
from vivit.weights.scenic import scenic_names

transformers = pytest.importorskip("transformers")

INIT = DATA / "init"
INIT_NAMES = sorted(p.stem for p in INIT.glob("*.json"))
EXACT = 1e-6  # parameter surgery is copies and exact arithmetic
FORWARD_TOL = 1e-5

# Scenic's config names for the tubelet kernel init -> ours (frame sampling has no temporal kernel)
_KERNEL_INIT = {"central_frame_initializer": "central", "average_frame_initializer": "average"}


# ------------------------------------------------------------------ 1. Scenic's init surgery
def _load_init_fixture(name: str) -> dict[str, Any]:
    """Source ViT params, the target's fresh init, Scenic's result (all '/'-joined), and our model."""
    meta = json.loads((INIT / f"{name}.json").read_text())
    arrays = np.load(INIT / f"{name}.npz")
    part = {
        p: {k[len(p) + 1 :]: arrays[k] for k in arrays.files if k.startswith(p + "/")}
        for p in ("src", "dst_init", "dst")
    }
    cfg = meta["target_config"]
    variant, args = model_args_from_config(cfg)
    model = MODEL_CLASSES[variant](**args)
    # Fresh-init tensors come from model.state_dict(): start from the very init Scenic started from.
    model.load_state_dict(from_scenic(part["dst_init"], model))
    method = cfg["model"]["temporal_encoding_config"].get("kernel_init_method")
    return dict(
        meta=meta,
        model=model,
        src=part["src"],
        dst_init=part["dst_init"],
        dst=part["dst"],
        kernel=_KERNEL_INIT.get(method, "central"),
        posemb=cfg["init_from"]["positional_embed_size_change"],
        temporal_init=_scenic_temporal_init(cfg),
    )


def _scenic_temporal_init(cfg: dict[str, Any]) -> str:
    """Scenic's Model 3 settings -> our `temporal_init` (irrelevant for the other models)."""
    if not cfg["init_from"].get("init_temporal_transformer", True):
        # MHA_time keeps its init: all zero with attention_kernel_init_method='zero'
        assert cfg["model"]["attention_config"].get("attention_kernel_init_method") == "zero"
        return "zero"
    return "copy"


def _scenic_origin(model: torch.nn.Module, leaf_summary: dict[str, str]) -> dict[str, str]:
    """Our state_dict key -> 'vit' (Scenic initialized it from the ViT) or 'fresh' (kept from init)."""
    names = scenic_names(model)
    origin = {}
    for key in model.state_dict():
        module = next(m for m in sorted(names, key=len, reverse=True) if key == m or key.startswith(m + "."))
        scenic = names[module][0]
        leaves = [v for k, v in leaf_summary.items() if k == scenic or k.startswith(scenic + "/")]
        assert leaves, key
        origin[key] = "fresh" if all(v == "kept_from_dst_init" for v in leaves) else "vit"
    return origin


def test_all_init_fixtures_present():
    # Model 1 (central, tile), Model 2 (central), Model 3 (zero temporal), Model 4 (average, from a gap ViT)
    assert len(INIT_NAMES) == 4


@pytest.mark.parametrize("name", INIT_NAMES)
def test_matches_scenic_init_surgery(name):
    f = _load_init_fixture(name)
    model = f["model"]
    ours = inflate_vit(f["src"], model, kernel=f["kernel"], posemb=f["posemb"], temporal_init=f["temporal_init"])
    scenic = from_scenic(f["dst"], model)
    fresh = from_scenic(f["dst_init"], model)
    origin = _scenic_origin(model, f["meta"]["leaf_summary"])
    assert ours.keys() == scenic.keys()
    model.load_state_dict(ours, strict=True)

    deliberate = {"cls_token"} if isinstance(model, FactorizedEncoderViViT) else set()
    for key in ours:
        assert ours[key].dtype == torch.float32
        if key in deliberate:
            continue
        err = (ours[key] - scenic[key]).abs().max().item()
        assert err <= EXACT, f"{name}: {key} differs from Scenic's init by {err:.2e}"
        if origin[key] == "fresh":  # Model 2's temporal encoder, Model 3's temporal attention, heads
            assert (ours[key] - fresh[key]).abs().max().item() <= EXACT, key
    assert all(origin[k] == "vit" for k in ("patch_embed.proj.weight", "pos_embed", "norm.weight"))

    if deliberate:
        # The one deliberate difference: Scenic never loads the ViT's `cls` into Model 2 because its
        # target is named `cls_SpatialTransformer`; it stays at its zero init. We carry the ViT's
        # class token so the spatial encoder is exactly the image model at init.
        vit_cls = torch.from_numpy(f["src"]["cls"])
        assert torch.equal(ours["cls_token"], vit_cls)
        assert torch.count_nonzero(scenic["cls_token"]) == 0
        assert f["meta"]["leaf_summary"]["cls_SpatialTransformer"] == "kept_from_dst_init"


def _rename_flax(params: dict[str, np.ndarray], table: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        for pattern, repl in table:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def _vision_transformer_names(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # google-research/vision_transformer (the paper's ImageNet-21k checkpoints) numbers block
    # sub-modules in creation order and names the classifier `head`
    return _rename_flax(
        src,
        [
            (r"/MultiHeadDotProductAttention_0/", "/MultiHeadDotProductAttention_1/"),
            (r"/LayerNorm_1/", "/LayerNorm_2/"),
            (r"/MlpBlock_0/", "/MlpBlock_3/"),
            (r"^output_projection/", "head/"),
        ],
    ) | {"pre_logits/kernel": np.zeros((32, 32), np.float32), "pre_logits/bias": np.zeros(32, np.float32)}


def _big_vision_scan(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # big_vision: top-level `pos_embedding`, and with scan=True the blocks stacked on a leading axis
    out = _rename_flax(src, [(r"^Transformer/posembed_input/pos_embedding$", "pos_embedding")])
    per_leaf: dict[str, dict[int, np.ndarray]] = {}
    for k in [k for k in out if k.startswith("Transformer/encoderblock_")]:
        i, rest = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.+)", k).groups()
        per_leaf.setdefault(rest, {})[int(i)] = out.pop(k)
    stacked = {f"Transformer/encoderblock/{k}": np.stack([v[i] for i in sorted(v)]) for k, v in per_leaf.items()}
    return out | stacked


def _nested(src: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in src.items():
        *path, leaf = name.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = torch.from_numpy(value)  # torch leaves are accepted too
    return tree


@pytest.mark.parametrize("variant", [_vision_transformer_names, _big_vision_scan, _nested])
def test_flax_name_variants_give_the_same_init(variant):
    f = _load_init_fixture("m1_tubelet_token_from_vit_token_central_tile")
    plain = inflate_vit(f["src"], f["model"], kernel=f["kernel"], posemb=f["posemb"])
    other = inflate_vit(variant(f["src"]), f["model"], kernel=f["kernel"], posemb=f["posemb"])
    assert plain.keys() == other.keys()
    assert all(torch.equal(plain[k], other[k]) for k in plain)


# ------------------------------------------------------------------ 2. function: per-frame image ViT
IMG, PATCH, WIDTH, DEPTH, HEADS, MLP, FRAMES = 16, 4, 32, 2, 4, 64, 8


def _hf_vit(qkv_bias: bool = True, seed: int = 0) -> torch.nn.Module:
    config = transformers.ViTConfig(
        image_size=IMG,
        patch_size=PATCH,
        hidden_size=WIDTH,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=MLP,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
    )
    torch.manual_seed(seed)
    vit = transformers.ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # HF's init leaves LN at 1/0, biases and cls at 0: randomize every path
        for name, p in vit.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    return vit


def _v4_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 in-memory ViT names -> transformers 4 on-disk names, as `ViTForImageClassification`."""
    table = [
        (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
        (r"\.attention\.q_proj\.", ".attention.attention.query."),
        (r"\.attention\.k_proj\.", ".attention.attention.key."),
        (r"\.attention\.v_proj\.", ".attention.attention.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
    ]
    out = {}
    for k, v in sd.items():
        for pattern, repl in table:
            k = re.sub(pattern, repl, k)
        out["vit." + k] = v
    return out | {"classifier.weight": torch.zeros(3, WIDTH), "classifier.bias": torch.zeros(3)}


# transformers 5 ViT names -> timm `VisionTransformer` names (written out here so that the timm path
# is checked against timm's own layout, not against our converter's idea of it)
_HF_TO_TIMM = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_TO_TIMM_BLOCK = {
    "layernorm_before": "norm1",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _timm_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {timm: sd[hf] for hf, timm in _HF_TO_TIMM.items()}
    for i in range(DEPTH):
        for hf, timm in _HF_TO_TIMM_BLOCK.items():
            for leaf in ("weight", "bias"):
                out[f"blocks.{i}.{timm}.{leaf}"] = sd[f"layers.{i}.{hf}.{leaf}"]
        for leaf in ("weight", "bias"):  # timm fuses q, k, v into one Linear, rows in that order
            qkv = [sd[f"layers.{i}.attention.{w}_proj.{leaf}"] for w in "qkv"]
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(qkv)
    return out | {"head.weight": torch.zeros(3, WIDTH), "head.bias": torch.zeros(3)}


_LAYOUTS = {
    "transformers5": lambda sd: sd,
    "transformers4": _v4_keys,
    "transformers_numpy": lambda sd: {k: v.numpy() for k, v in sd.items()},
    "timm": _timm_keys,
}


def _video_model(cls: type, **kw: Any) -> torch.nn.Module:
    args = (
        dict(
            img_size=IMG,
            num_frames=FRAMES,
            patch_size=PATCH,
            tubelet_size=2,
            embed_dim=WIDTH,
            depth=DEPTH,
            num_heads=HEADS,
            mlp_dim=MLP,
            num_classes=5,
        )
        | kw
    )
    return cls(**args).eval()


def _static_clip(frame: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    return frame.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()  # (B, C, H, W) -> (B, C, T, H, W)


@pytest.mark.parametrize("kernel", ["central", "average"])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_model2_on_static_clip_is_the_image_vit_per_frame(layout, kernel):
    vit = _hf_vit()
    model = _video_model(FactorizedEncoderViViT, temporal_depth=1, global_pool="token")
    model.load_state_dict(inflate_vit(_LAYOUTS[layout](vit.state_dict()), model, kernel=kernel), strict=True)
    frame = torch.rand(2, 3, IMG, IMG) * 2 - 1
    with torch.no_grad():
        expected = vit(pixel_values=frame).last_hidden_state[:, 0]  # cls output after the final LN
        got = model.forward_frame_features(_static_clip(frame))  # (B, nt, D)
    assert got.shape == (2, FRAMES // 2, WIDTH)
    err = (got - expected[:, None]).abs().max().item()
    assert err <= FORWARD_TOL, f"{layout}/{kernel}: max abs error {err:.2e}"


@pytest.mark.parametrize("temporal_init", ["identity", "zero"])
def test_model3_temporal_branch_starts_as_identity(temporal_init):
    """A zero temporal output projection: Model 3 is the image ViT applied per frame, for any clip."""
    sd = _hf_vit().state_dict()
    m3 = _video_model(FactorizedSelfAttentionViViT, global_pool="avg")
    m3.load_state_dict(inflate_vit(sd, m3, temporal_init=temporal_init), strict=True)
    for blk in m3.blocks:
        assert (
            torch.count_nonzero(blk.temporal_attn.proj.weight) == torch.count_nonzero(blk.temporal_attn.proj.bias) == 0
        )
        qkv = blk.temporal_attn.qkv.weight
        if temporal_init == "identity":  # q/k/v are the image attention's (so they can learn)
            assert torch.equal(qkv, blk.attn.qkv.weight) and torch.equal(blk.temporal_attn.qkv.bias, blk.attn.qkv.bias)
        else:
            assert torch.count_nonzero(qkv) == 0
        assert torch.equal(blk.temporal_norm.weight, torch.ones(WIDTH))
    # reference without any temporal branch: Model 2's spatial encoder (no cls, mean of frame tokens)
    m2 = _video_model(FactorizedEncoderViViT, global_pool="avg")
    m2.load_state_dict(inflate_vit(sd, m2), strict=True)
    clip = torch.rand(2, 3, FRAMES, IMG, IMG) * 2 - 1  # not static: per-frame equality holds regardless
    with torch.no_grad():
        pooled = m3.forward_head(m3.forward_features(clip), pre_logits=True)
        per_frame = m2.forward_frame_features(clip).mean(dim=1)  # equal token counts: mean of means
    assert (pooled - per_frame).abs().max().item() <= FORWARD_TOL


def test_model1_on_static_clip_pools_like_one_frame():
    """Joint attention over t identical copies of a frame's keys equals attention within the frame."""
    sd = _hf_vit().state_dict()
    m1 = _video_model(SpatioTemporalViViT, global_pool="avg")
    m1.load_state_dict(inflate_vit(sd, m1, kernel="average"), strict=True)
    m2 = _video_model(FactorizedEncoderViViT, global_pool="avg")
    m2.load_state_dict(inflate_vit(sd, m2), strict=True)
    clip = _static_clip(torch.rand(1, 3, IMG, IMG) * 2 - 1)
    with torch.no_grad():
        pooled = m1.forward_head(m1.forward_features(clip), pre_logits=True)
        frame = m2.forward_frame_features(clip)[:, 0]
    assert (pooled - frame).abs().max().item() <= FORWARD_TOL


@pytest.mark.parametrize(
    "cls", [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]
)
def test_complete_state_dict_for_every_model(cls):
    pool = "token" if cls in (SpatioTemporalViViT, FactorizedEncoderViViT) else "avg"
    model = _video_model(cls, global_pool=pool)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = inflate_vit(_hf_vit().state_dict(), model)
    assert sd.keys() == before.keys()
    assert all(v.dtype == torch.float32 for v in sd.values())
    model.load_state_dict(sd, strict=True)
    assert torch.count_nonzero(sd["head.weight"]) == 0 and torch.count_nonzero(sd["head.bias"]) == 0
    kernel = sd["patch_embed.proj.weight"]  # central: the 2D kernel at t // 2 = 1, zeros at 0
    assert torch.count_nonzero(kernel[:, :, 0]) == 0 and torch.count_nonzero(kernel[:, :, 1]) > 0
    if cls is FactorizedEncoderViViT:  # temporal encoder and its cls keep the model's fresh init
        for k in sd:
            if k.startswith("temporal_"):
                assert torch.equal(sd[k], before[k]), k


def _zoom_linear(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reference for scipy.ndimage.zoom(grid, (sh, sw, 1), order=1): corners map onto corners."""
    for axis, n in enumerate(size):
        m = grid.shape[axis]
        pos = np.arange(n) * (m - 1) / (n - 1)
        lo = np.minimum(np.floor(pos).astype(int), m - 2)
        frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(grid.ndim)])
        grid = np.take(grid, lo, axis=axis) * (1 - frac) + np.take(grid, lo + 1, axis=axis) * frac
    return grid


@pytest.mark.parametrize("image_grid", [(4, 4), (2, 8)])
def test_pos_embed_resized_like_scenic_then_tiled(image_grid):
    sd = _timm_keys(_hf_vit().state_dict())
    gh, gw = image_grid
    model = _video_model(SpatioTemporalViViT, img_size=(24, 28), global_pool="token")  # grid 6 x 7
    out = inflate_vit(sd, model, image_grid=None if gh == gw else image_grid)
    table = sd["pos_embed"][0, 1:].reshape(gh, gw, WIDTH).double().numpy()
    expected = _zoom_linear(table, (6, 7))
    got = out["pos_embed"][0, 1:].reshape(FRAMES // 2, 6, 7, WIDTH)  # time-major
    for t in range(FRAMES // 2):
        assert np.abs(got[t].numpy() - expected).max() <= EXACT
    assert torch.equal(out["pos_embed"][:, :1], sd["pos_embed"][:, :1])  # cls slot from the ViT
    assert torch.equal(out["cls_token"], sd["cls_token"])


def test_timm_variants_without_cls_slot_or_qkv_bias():
    sd = _timm_keys(_hf_vit().state_dict())
    model = _video_model(SpatioTemporalViViT, global_pool="token")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}

    # no_embed_class: a class token whose position slot does not exist is one with a zero slot
    no_slot = sd | {"pos_embed": sd["pos_embed"][:, 1:]}
    out = inflate_vit(no_slot, model)
    assert torch.count_nonzero(out["pos_embed"][:, 0]) == 0 and torch.equal(out["cls_token"], sd["cls_token"])

    # a 'gap' ViT (class_token=False): the target's cls token and slot keep their init (as Scenic)
    gap = {k: v for k, v in no_slot.items() if k != "cls_token"}
    out = inflate_vit(gap, model)
    assert torch.equal(out["cls_token"], fresh["cls_token"])
    assert torch.equal(out["pos_embed"][:, 0], fresh["pos_embed"][:, 0])
    assert torch.equal(out["pos_embed"][:, 1:17], sd["pos_embed"][:, 1:])

    # qkv_bias=False is a zero bias
    no_bias = {k: v for k, v in sd.items() if not k.endswith("attn.qkv.bias")}
    assert torch.count_nonzero(inflate_vit(no_bias, model)["blocks.0.attn.qkv.bias"]) == 0


def test_model3_copy_is_scenics_default():
    """temporal_init='copy': the whole image attention (output projection too) in both attentions."""
    m3 = _video_model(FactorizedSelfAttentionViViT, global_pool="avg")
    m3.load_state_dict(inflate_vit(_hf_vit().state_dict(), m3, temporal_init="copy"), strict=True)
    for blk in m3.blocks:
        for (name, p), q in zip(blk.temporal_attn.named_parameters(), blk.attn.parameters(), strict=True):
            assert torch.equal(p, q) and torch.count_nonzero(p) > 0, name


# ------------------------------------------------------------------ 3. inflated models train
_POOL = {SpatioTemporalViViT: "token", FactorizedEncoderViViT: "token"}


def _train(model: torch.nn.Module, steps: int) -> dict[str, torch.Tensor]:
    """A few Adam steps on random clips and labels; returns the parameters from before."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Adam without weight decay: a weight moves if and only if it received a non-zero gradient
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        clip = torch.rand(4, 3, FRAMES, IMG, IMG, generator=g) * 2 - 1
        loss = torch.nn.functional.cross_entropy(model(clip), torch.randint(5, (4,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before


@pytest.mark.parametrize("kernel", ["central", "average"])
@pytest.mark.parametrize(
    "cls", [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]
)
def test_every_parameter_of_an_inflated_model_moves(cls, kernel, one_thread):
    """No parameter is stuck at a saddle: after a few steps every tensor has changed.

    The head starts at zero, so step 1 moves only the head; Model 3's zero temporal output projection
    moves at step 2 and the temporal q/k/v behind it at step 3. Four steps cover that chain.
    """
    model = _video_model(cls, global_pool=_POOL.get(cls, "avg"))
    model.load_state_dict(inflate_vit(_hf_vit().state_dict(), model, kernel=kernel), strict=True)
    before = _train(model, steps=4)
    stuck = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert stuck == []


def test_model3_zero_temporal_init_cannot_learn(one_thread):
    """The paper's literal all-zero temporal attention is a saddle: v = 0, so no gradient reaches
    the q/k/v or output weights (nor the LayerNorm before them), ever; only the output bias moves.
    This is why it is not the default."""
    model = _video_model(FactorizedSelfAttentionViViT, global_pool="avg")
    model.load_state_dict(inflate_vit(_hf_vit().state_dict(), model, temporal_init="zero"), strict=True)
    before = _train(model, steps=6)
    stuck = sorted(n for n, p in model.named_parameters() if torch.equal(p, before[n]))
    leaves = (
        "temporal_attn.proj.weight",
        "temporal_attn.qkv.bias",
        "temporal_attn.qkv.weight",
        "temporal_norm.bias",
        "temporal_norm.weight",
    )
    expected = [f"blocks.{i}.{leaf}" for i in range(DEPTH) for leaf in leaves]
    assert stuck == sorted(expected)


# ------------------------------------------------------------------ 4. errors
def test_width_mismatch():
    model = _video_model(SpatioTemporalViViT, embed_dim=48, num_heads=4, global_pool="token")
    with pytest.raises(ValueError, match=r"width: ViT embed_dim 32, model embed_dim 48"):
        inflate_vit(_hf_vit().state_dict(), model)


def test_too_shallow_vit():
    model = _video_model(FactorizedEncoderViViT, depth=3, global_pool="token")
    with pytest.raises(ValueError, match=r"depth: ViT has 2 blocks, model spatial encoder depth is 3"):
        inflate_vit(_hf_vit().state_dict(), model)


def test_flax_head_count_mismatch():
    f = _load_init_fixture("m4_tubelet_gap_from_vit_gap_average_tile")
    model = _video_model(FactorizedDotProductViViT, num_heads=2)
    with pytest.raises(ValueError, match=r"heads: ViT has 4, model num_heads is 2"):
        inflate_vit(f["src"], model)


def test_unrecognized_layout():
    with pytest.raises(ValueError, match=r"unrecognized image ViT key layout.*got conv1\.weight"):
        inflate_vit({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, _video_model(SpatioTemporalViViT))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda sd: sd | {"blocks.0.ls1.gamma": torch.ones(WIDTH)}, r"no place for .*blocks\.0\.ls1\.gamma"),
        (
            lambda sd: {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in sd.items()},
            r"fc_norm",
        ),
        (
            lambda sd: {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"},
            r"missing: blocks\.1\.mlp\.fc2\.bias",
        ),
        (
            lambda sd: sd | {"pos_embed": sd["pos_embed"][:, :-2]},
            r"15 entries, which is no square grid.*pass image_grid",
        ),
    ],
)
def test_unsupported_or_incomplete_timm_vit(edit, match):
    sd = _timm_keys(_hf_vit().state_dict())
    with pytest.raises(ValueError, match=match):
        inflate_vit(edit(sd), _video_model(SpatioTemporalViViT))


def test_tile_needs_equal_grids():
    model = _video_model(SpatioTemporalViViT, img_size=24)
    with pytest.raises(ValueError, match=r"posemb='tile' needs equal spatial grids.*4x4.*6x6"):
        inflate_vit(_hf_vit().state_dict(), model, posemb="tile")
