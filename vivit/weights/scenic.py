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
from ..models.vivit import FactorizedEncoderViViT, ViViT
from .flax_msgpack import flatten_params
from .validate import all_finite, count_blocks, short_list

__all__ = [
    "CONVERTER_VERSION",
    "FLAX_TRANSFORMS",
    "check_scenic_params",
    "from_scenic",
    "scenic_model_args",
    "scenic_names",
]

# Bumped whenever `from_scenic` produces different tensors for the same file, so that conversions
# cached by an older version are rebuilt (vivit.weights.cache compares it).
CONVERTER_VERSION = 2


# ------------------------------------------------------------------ layout transforms (Flax -> torch)
# Each takes the flat Flax parameters and a module name and returns that module's torch tensors by leaf name.
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


FLAX_TRANSFORMS = {"dense": _dense, "ln": _layer_norm, "attn": _attention, "conv": _embedding, "param": _param}
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


def scenic_names(model: ViViT) -> dict[str, tuple[str, str]]:
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


def _same(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


def _transposed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[::-1]


def _conv_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    t, h, w, c, d = shape if len(shape) == 5 else (1, *shape)
    return (d, c, t, h, w)


# Per Scenic leaf: the Flax shapes that fit, our state_dict key it feeds (None for the split
# attention kernels), that key's shape, and how a Flax shape maps onto ours (for messages).
_Expected = tuple[tuple[tuple[int, ...], ...], "str | None", tuple[int, ...], Any]


def _expected_shapes(model: ViViT) -> dict[str, _Expected]:
    """Scenic leaf name -> what fits `model` (works on the meta device)."""
    target: dict[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out: dict[str, _Expected] = {}
    for ours, (theirs, kind) in scenic_names(model).items():
        if kind == "param":
            out[theirs] = ((target[ours],), ours, target[ours], _same)
        elif kind in ("ln", "dense", "conv"):
            weight, bias = target[f"{ours}.weight"], target[f"{ours}.bias"]
            name = "scale" if kind == "ln" else "kernel"
            shapes: tuple[tuple[int, ...], ...]
            if kind == "ln":
                shapes, layout = (weight,), _same
            elif kind == "dense":
                shapes, layout = (weight[::-1],), _transposed
            else:
                d, c, t, h, w = weight
                shapes, layout = ((t, h, w, c, d),) + (((h, w, c, d),) if t == 1 else ()), _conv_layout
            out[f"{theirs}/{name}"] = (shapes, f"{ours}.weight", weight, layout)
            out[f"{theirs}/bias"] = ((bias,), f"{ours}.bias", bias, _same)
        else:  # attention: q/k/v kernels [D, heads, head_dim], out kernel [heads, head_dim, D]
            attn = model.get_submodule(ours)
            heads, head_dim = int(attn.num_heads), int(attn.head_dim)  # type: ignore[arg-type]  # Attention's ints
            dim = target[f"{ours}.proj.weight"][0]
            for which in ("query", "key", "value"):
                out[f"{theirs}/{which}/kernel"] = (((dim, heads, head_dim),), None, (dim, heads, head_dim), _same)
                out[f"{theirs}/{which}/bias"] = (((heads, head_dim),), None, (heads, head_dim), _same)
            out[f"{theirs}/out/kernel"] = (((heads, head_dim, dim),), None, (heads, head_dim, dim), _same)
            out[f"{theirs}/out/bias"] = (((dim,),), f"{ours}.proj.bias", (dim,), _same)
    return out


def _shape_problem(leaf: str, found: tuple[int, ...], expected: _Expected) -> str:
    """`"<Scenic module> gives <our key> shape <ours>, model has <ours>"` when the layout maps, else Flax shapes."""
    shapes, key, target, layout = expected
    if key is not None and len(found) in {len(s) for s in shapes}:
        module = leaf if key.count(".") == 0 else leaf.rsplit("/", 1)[0]
        return f"{module} gives {key} shape {layout(found)}, model has {target}"
    return f"{leaf} has shape {found}, model needs {' or '.join(map(str, shapes))}"


def check_scenic_params(params: Mapping[str, Any], model: ViViT, where: str = "the checkpoint") -> None:
    """Check names, shapes and dtypes of Scenic parameters against `model`, reading no values.

    Call it with `FlaxCheckpoint.specs` and a model built on the meta device to validate a file
    before any array is copied out of it.

    Args:
        params: Flat or nested Scenic parameters: numpy arrays or `ArraySpec`s (anything with
            `.shape` and `.dtype`).
        model: The target model (meta device is fine).
        where: The file, for the message.

    Raises:
        ValueError: Naming a few missing, unexpected, mis-shaped or non-float parameters and how
            many there are in all.
    """
    flat = flatten_params(params)
    expected = _expected_shapes(model)
    missing = [k for k in expected if k not in flat]
    unexpected = [k for k in flat if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing in the checkpoint: {short_list(missing)}")
    if unexpected:
        problems.append(f"not used by {type(model).__name__}: {short_list(unexpected)}")
    shaped = [
        _shape_problem(k, tuple(int(d) for d in flat[k].shape), want)
        for k, want in expected.items()
        if k in flat and tuple(flat[k].shape) not in want[0]
    ]
    if shaped:
        problems.append(short_list(shaped, 3, sep="; "))
    not_float = [f"{k} ({flat[k].dtype})" for k in expected if k in flat and str(flat[k].dtype) not in _FLOAT_NAMES]
    if not_float:
        problems.append(f"not floating point: {short_list(not_float)}")
    if problems:
        raise ValueError(
            f"{where}: Scenic parameters do not fit {type(model).__name__} "
            f"(grid {model.grid_size}, global_pool={model.global_pool!r}): " + "; ".join(problems)
        )


_FLOAT_NAMES = frozenset({"float16", "bfloat16", "float32", "float64"})


def from_scenic(params: Mapping[str, Any], model: ViViT, where: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Convert Scenic ViViT parameters into a `state_dict` for `model`.

    Args:
        params: the Flax params tree (nested dict) or a flat dict of '/'-joined names
            (`Transformer/encoderblock_0/...`) to float arrays. Train-state wrappers must be removed
            first (see `read_flax_checkpoint`).
        model: the target model; its architecture decides the name mapping and shapes.
        where: the file the parameters came from, for messages.

    Returns:
        A float32 `state_dict` ready for `model.load_state_dict(..., strict=True)`.

    Raises:
        ValueError: naming a few missing, unexpected, mis-shaped or non-float parameters (see
            `check_scenic_params`), or values that are not finite in float32 (NaN, infinity, or
            float64 values beyond float32's range: they are refused, never turned into inf).
    """
    flat = {k: np.asarray(v) for k, v in flatten_params(params).items()}
    check_scenic_params(flat, model, where)
    out: dict[str, torch.Tensor] = {}
    non_finite = []
    for ours, (theirs, kind) in scenic_names(model).items():
        for suffix, array in FLAX_TRANSFORMS[kind](flat, theirs).items():
            key = f"{ours}.{suffix}" if suffix else ours
            with np.errstate(over="ignore", invalid="ignore"):
                tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            if not all_finite(tensor):
                non_finite.append(theirs)
            out[key] = tensor
    if non_finite:
        raise ValueError(
            f"{where}: {len(non_finite)} Scenic parameters are NaN, infinite or beyond float32's range: "
            f"{short_list(sorted(set(non_finite)))}; the weights are corrupt and cannot be used"
        )
    return out


def scenic_model_args(params: Mapping[str, Any], where: str = "the checkpoint") -> dict[str, Any]:
    """Architecture arguments read from the tensors of a Scenic ViViT checkpoint.

    Depths, widths, heads, patch/tubelet size, pooling and class count come from the shapes,
    so a config that disagrees with the checkpoint (e.g. 24 vs 4 temporal layers) cannot
    mislead us. Model 4 has the same tensors as Model 1 and Model 3 differs only in block names: the
    caller knows which class it loads, and `from_scenic` rejects the wrong one by name. The depth
    is the number of distinct block indices, which must run 0..N-1 (see
    `vivit.weights.validate.count_blocks`). Only shapes are read, so `FlaxCheckpoint.specs` works.

    Raises:
        ValueError: If a tensor the architecture is read from is missing or has the wrong rank.
    """
    flat = flatten_params(params)

    def shape(name: str, ndims: tuple[int, ...]) -> tuple[int, ...]:
        if name not in flat:
            raise ValueError(f"{where}: not a Scenic ViViT checkpoint: no {name!r} parameter")
        found = tuple(int(d) for d in flat[name].shape)
        if len(found) not in ndims:
            raise ValueError(f"{where}: {name!r} has shape {found}, expected {' or '.join(map(str, ndims))} dimensions")
        return found

    kernel = shape("embedding/kernel", (4, 5))
    tubelet = kernel[0] if len(kernel) == 5 else 1
    h, w = kernel[-4:-2] if len(kernel) == 5 else kernel[:2]
    factorized_encoder = any(k.startswith("SpatialTransformer/") for k in flat)
    encoder = "SpatialTransformer" if factorized_encoder else "Transformer"

    def _encoder(prefix: str) -> dict[str, int]:
        depth = count_blocks(flat, rf"{prefix}/encoderblock_(\d+)/", where, f"{prefix} blocks")
        block0 = f"{prefix}/encoderblock_0"
        attn = next(
            (k for k in flat if k.startswith(f"{block0}/") and k.endswith("query/kernel")), f"{block0}/.../query/kernel"
        )
        mlp = next(
            (k for k in flat if k.startswith(f"{block0}/") and k.endswith("Dense_0/kernel")),
            f"{block0}/.../Dense_0/kernel",
        )
        return {"depth": depth, "num_heads": shape(attn, (3,))[1], "mlp_dim": shape(mlp, (2,))[1]}

    args: dict[str, Any] = {
        "patch_size": (int(h), int(w)),
        "tubelet_size": int(tubelet),
        "embed_dim": int(kernel[-1]),
        "global_pool": "token" if any(k == "cls" or k.startswith("cls_") for k in flat) else "avg",
        **_encoder(encoder),
    }
    if "output_projection/kernel" in flat:
        args["num_classes"] = shape("output_projection/kernel", (2,))[1]
    if factorized_encoder:
        t = _encoder("TemporalTransformer")
        args.update(temporal_depth=t["depth"], temporal_num_heads=t["num_heads"], temporal_mlp_dim=t["mlp_dim"])
    return args
