"""Scenic (Flax) ViViT parameters -> our `state_dict`.

A rename table from our module names to Scenic's, plus a handful of named layout transforms
(Dense kernel transpose, attention kernels -> fused qkv, conv kernel permutation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.layers import FactorizedSelfAttentionBlock
from ..models.vivit import FactorizedEncoderViViT, _ViViT
from .flax_msgpack import flatten_params

__all__ = ["from_scenic", "scenic_model_args", "scenic_names"]


# ------------------------------------------------------------------ layout transforms (Flax -> torch)
def _dense(p: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {"weight": p[f"{name}/kernel"].T, "bias": p[f"{name}/bias"]}


def _layer_norm(p: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {"weight": p[f"{name}/scale"], "bias": p[f"{name}/bias"]}


def _attention(p: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    # q/k/v kernels [D, heads, head_dim] -> rows of one fused (3D, D) weight, heads outermost
    qkv = [p[f"{name}/{w}/kernel"] for w in ("query", "key", "value")]
    bias = [p[f"{name}/{w}/bias"] for w in ("query", "key", "value")]
    out = p[f"{name}/out/kernel"]  # [heads, head_dim, D]
    return {
        "qkv.weight": np.concatenate([k.reshape(k.shape[0], -1).T for k in qkv]),
        "qkv.bias": np.concatenate([b.reshape(-1) for b in bias]),
        "proj.weight": out.reshape(-1, out.shape[-1]).T,
        "proj.bias": p[f"{name}/out/bias"],
    }


def _embedding(p: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    k = p[f"{name}/kernel"]
    if k.ndim == 4:  # uniform frame sampling: 2D kernel (h, w, C, D) == a t=1 tubelet
        k = k[None]
    return {"weight": k.transpose(4, 3, 0, 1, 2), "bias": p[f"{name}/bias"]}  # (t,h,w,C,D) -> (D,C,t,h,w)


def _param(p: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {"": p[name]}


_TRANSFORMS = {"dense": _dense, "ln": _layer_norm, "attn": _attention, "conv": _embedding, "param": _param}
# sub-paths inside each Scenic block, by our block type: our module -> (Scenic module, kind)
_BLOCK = {
    "norm1": ("LayerNorm_0", "ln"),
    "attn": ("MultiHeadDotProductAttention_0", "attn"),
    "norm2": ("LayerNorm_1", "ln"),
    "mlp.fc1": ("MlpBlock_0/Dense_0", "dense"),
    "mlp.fc2": ("MlpBlock_0/Dense_1", "dense"),
}
_FACTORIZED_BLOCK = {
    "temporal_norm": ("LayerNorm_time", "ln"),
    "temporal_attn": ("MultiHeadDotProductAttention_time", "attn"),
    "norm1": ("LayerNorm_space", "ln"),
    "attn": ("MultiHeadDotProductAttention_space", "attn"),
    "norm2": ("LayerNorm_mlp", "ln"),
    "mlp.fc1": ("MlpBlock/Dense_0", "dense"),
    "mlp.fc2": ("MlpBlock/Dense_1", "dense"),
}


def _encoder_names(ours: str, scenic: str, blocks: nn.ModuleList, norm: str, pos: str) -> dict[str, tuple[str, str]]:
    names = {norm: (f"{scenic}/encoder_norm", "ln"), pos: (f"{scenic}/posembed_input/pos_embedding", "param")}
    for i, blk in enumerate(blocks):
        table = _FACTORIZED_BLOCK if isinstance(blk, FactorizedSelfAttentionBlock) else _BLOCK
        for sub, (theirs, kind) in table.items():
            names[f"{ours}.{i}.{sub}"] = (f"{scenic}/encoderblock_{i}/{theirs}", kind)
    return names


def scenic_names(model: _ViViT) -> dict[str, tuple[str, str]]:
    """Our module/parameter name -> (Scenic name, transform kind) for every tensor of `model`."""
    names: dict[str, tuple[str, str]] = {"patch_embed.proj": ("embedding", "conv")}
    if isinstance(model.head, nn.Linear):
        names["head"] = ("output_projection", "dense")
    if isinstance(model, FactorizedEncoderViViT):
        names |= _encoder_names("blocks", "SpatialTransformer", model.blocks, "norm", "pos_embed")
        names |= _encoder_names(
            "temporal_blocks", "TemporalTransformer", model.temporal_blocks, "temporal_norm", "temporal_pos_embed"
        )
        if model.cls_token is not None:
            names["cls_token"] = ("cls_SpatialTransformer", "param")
            names["temporal_cls_token"] = ("cls_TemporalTransformer", "param")
    else:
        names |= _encoder_names("blocks", "Transformer", model.blocks, "norm", "pos_embed")
        if model.cls_token is not None:
            names["cls_token"] = ("cls", "param")
    return names


def _scenic_leaves(name: str, kind: str) -> list[str]:
    if kind == "param":
        return [name]
    if kind == "attn":
        return [f"{name}/{w}/{leaf}" for w in ("query", "key", "value", "out") for leaf in ("kernel", "bias")]
    return [f"{name}/{leaf}" for leaf in (("scale", "bias") if kind == "ln" else ("kernel", "bias"))]


def from_scenic(params: Mapping[str, Any], model: _ViViT) -> dict[str, torch.Tensor]:
    """Convert Scenic ViViT parameters into a `state_dict` for `model`.

    Args:
        params: the Flax params tree (nested dict) or a flat dict of '/'-joined names
            (`Transformer/encoderblock_0/...`) to arrays. Train-state wrappers must be removed
            first (see `read_flax_checkpoint`).
        model: the target model; its architecture decides the name mapping and shapes.

    Returns:
        A float32 `state_dict` ready for `model.load_state_dict(..., strict=True)`.

    Raises:
        ValueError: naming every missing, unexpected and mis-shaped parameter.
    """
    flat = {k: np.asarray(v) for k, v in flatten_params(params).items()}
    names = scenic_names(model)
    wanted = {leaf for name, kind in names.values() for leaf in _scenic_leaves(name, kind)}
    missing = sorted(wanted - flat.keys())
    unexpected = sorted(flat.keys() - wanted)
    problems = []
    if missing:
        problems.append(f"missing in the checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"not used by {type(model).__name__}: {', '.join(unexpected)}")
    if not problems:
        target = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for ours, (theirs, kind) in names.items():
            for suffix, array in _TRANSFORMS[kind](flat, theirs).items():
                key = f"{ours}.{suffix}" if suffix else ours
                tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
                if tuple(tensor.shape) != tuple(target[key].shape):
                    problems.append(
                        f"{theirs} gives {key} shape {tuple(tensor.shape)}, model has {tuple(target[key].shape)}"
                    )
                out[key] = tensor
        if not problems:
            return out
    raise ValueError(
        f"Scenic parameters do not fit {type(model).__name__} "
        f"(grid {model.grid_size}, global_pool={model.global_pool!r}):\n  " + "\n  ".join(problems)
    )


def scenic_model_args(params: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture arguments read from the tensors of a Scenic ViViT checkpoint.

    Depths, widths, heads, patch/tubelet size, pooling and class count come from the shapes,
    so a config that disagrees with the checkpoint (e.g. 24 vs 4 temporal layers) cannot
    mislead us. Model 4 has the same tensors as Model 1 and Model 3 differs only in block names: the
    caller knows which class it loads, and `from_scenic` rejects the wrong one by name.
    """
    flat = flatten_params(params)
    if "embedding/kernel" not in flat:
        raise ValueError("not a Scenic ViViT checkpoint: no 'embedding/kernel' parameter")
    kernel = flat["embedding/kernel"]
    tubelet = kernel.shape[0] if kernel.ndim == 5 else 1
    h, w = kernel.shape[-4:-2] if kernel.ndim == 5 else kernel.shape[:2]
    factorized_encoder = any(k.startswith("SpatialTransformer/") for k in flat)
    encoder = "SpatialTransformer" if factorized_encoder else "Transformer"

    def _encoder(prefix: str) -> dict[str, int]:
        blocks = {k.split("/")[1] for k in flat if k.startswith(f"{prefix}/encoderblock_")}
        block0 = f"{prefix}/encoderblock_0"
        attn = next(k for k in flat if k.startswith(block0) and k.endswith("query/kernel"))
        mlp = next(k for k in flat if k.startswith(block0) and k.endswith("Dense_0/kernel"))
        return {"depth": len(blocks), "num_heads": flat[attn].shape[1], "mlp_dim": flat[mlp].shape[1]}

    args: dict[str, Any] = {
        "patch_size": (int(h), int(w)),
        "tubelet_size": int(tubelet),
        "embed_dim": int(kernel.shape[-1]),
        "global_pool": "token" if any(k == "cls" or k.startswith("cls_") for k in flat) else "avg",
        **_encoder(encoder),
    }
    if "output_projection/kernel" in flat:
        args["num_classes"] = int(flat["output_projection/kernel"].shape[1])
    if factorized_encoder:
        t = _encoder("TemporalTransformer")
        args.update(temporal_depth=t["depth"], temporal_num_heads=t["num_heads"], temporal_mlp_dim=t["mlp_dim"])
    return {k: int(v) if isinstance(v, np.integer) else v for k, v in args.items()}
