"""Initialize a ViViT from a 2D image ViT ("inflation", paper §3.4; Scenic `initialise_from_train_state`).

Three source layouts are accepted and told apart by their keys:

- timm: `patch_embed.proj.weight` (D, C, h, w), `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, `norm`;
- HF transformers `ViTModel` / `ViTForImageClassification`, `vit.` prefix optional:
  `embeddings.patch_embeddings.projection`, `encoder.layer.N.attention.attention.query` (transformers 4,
  on disk and on the Hub) or `layers.N.attention.q_proj` (transformers 5, in memory);
- Flax (Scenic, big_vision, google-research/vision_transformer), '/'-joined or nested: `embedding/kernel`
  (h, w, C, D), `cls`, `[Transformer/posembed_input/]pos_embedding`, `Transformer/encoderblock_N/...`
  (or big_vision's scanned `Transformer/encoderblock/...`), `Transformer/encoder_norm`.

Each is first normalized to one canonical image state dict in timm layout (`_ImageViT`), then a single
inflation path maps that onto any of the four video models:

- tubelet kernel (D, C, h, w) -> (D, C, t, h, w): `central` puts it at temporal index t // 2, `average`
  spreads k / t over every index (both sum to k, so a static clip embeds like its frame); bias copied;
- position table: the ViT's spatial grid, resized (linear, align_corners=True, = Scenic's
  `scipy.ndimage.zoom(order=1)`) when the model's grid differs, then tiled over the nt frames (Models
  1/3/4, time-major); Model 2's spatial encoder takes the (resized) grid itself;
- blocks one to one, final norm copied. Model 3: the ViT attention becomes the spatial `attn`/`norm1`;
  its temporal attention is set by `temporal_init` (below) and `temporal_norm` is ones/zeros;
- the class token and its position slot come from the ViT when both have one;
- the classifier head is zeroed; everything else (Model 2's temporal encoder and temporal cls) keeps the
  model's current values, i.e. its fresh init.

Model 3's temporal attention (`temporal_init`):

- `"identity"` (default): q/k/v from the ViT's attention, output projection zero. Each temporal branch
  `z + MHA_time(LN(z))` adds exactly zero, so the model computes the image ViT per frame at init, and
  every weight gets gradient: the output projection at once (its input, the attention output, is not
  zero), q/k/v as soon as the projection has moved.
- `"copy"`: Scenic's default (`init_temporal_transformer=True`): the whole ViT attention, output
  projection included, is copied into the temporal attention; the model no longer equals the image
  model at init.
- `"zero"`: the paper's literal wording ("temporal MSA weights zero", Sec. 3.4; Scenic with
  `attention_kernel_init_method='zero'`, `init_temporal_transformer=False`): q/k/v and output all zero.
  It starts as the identity too but cannot learn: v = 0 makes the output projection's input zero, so
  the gradients of its weight and of q/k/v are exactly zero at every step (only its bias moves).
  Offered to reproduce Scenic's fixture, not for training.

One deliberate difference from Scenic: Model 2's spatial `cls_token` takes the ViT's class token. Scenic
leaves it at its zero init because its name (`cls_SpatialTransformer`) does not match the ViT's (`cls`);
carrying it makes the spatial encoder compute exactly the image model at init.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from einops import repeat
from torch import nn

from ..models.pos_embed import resample_pos_embed
from ..models.vivit import FactorizedEncoderViViT, FactorizedSelfAttentionViViT, ViViT
from .flax_msgpack import flatten_params
from .hf_transformers import transformers_key
from .scenic import FLAX_TRANSFORMS
from .validate import ARCH_LIMITS, check_finite, short_list

__all__ = ["inflate_vit", "inflation_settings"]

KernelInit = Literal["central", "average"]
PosembInit = Literal["tile", "resize_tile"]
TemporalInit = Literal["identity", "copy", "zero"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "kernel": ("central", "average"),
    "posemb": ("tile", "resize_tile"),
    "temporal_init": ("identity", "copy", "zero"),
}

# Parameters of one canonical (timm-layout) block, relative to `blocks.N.`.
_BLOCK_KEYS = tuple(
    f"{module}.{leaf}"
    for module in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    for leaf in ("weight", "bias")
)
_STEM_KEYS = ("patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias")
# Classifier-side parameters of an image ViT: a video model starts a fresh head, so these are dropped.
_IGNORED_TIMM = re.compile(r"^(head|pre_logits|attn_pool)\.")
_IGNORED_FLAX = re.compile(r"^(head|output_projection|pre_logits|MAPHead_\d+)/")


@dataclass(frozen=True)
class _ImageViT:
    """A 2D ViT in canonical timm layout, plus what its keys told us about its shape."""

    state: dict[str, torch.Tensor]  # float32, timm names, `cls_token` only if the ViT has one
    layout: str  # 'timm', 'transformers' or 'flax', for error messages
    num_heads: int | None  # known only for Flax sources (q kernel [D, heads, head_dim])
    extra: tuple[str, ...] = ()  # source names no canonical key took (checked with the timm leftovers)

    @property
    def embed_dim(self) -> int:
        return self.state["patch_embed.proj.weight"].shape[0]

    @property
    def depth(self) -> int:
        return sum(1 for k in self.state if k.startswith("blocks.") and k.endswith(".attn.qkv.weight"))

    @property
    def has_cls(self) -> bool:
        return "cls_token" in self.state


# ------------------------------------------------------------------ source layouts -> canonical timm layout
def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float32).clone()
    return torch.from_numpy(np.array(value, dtype=np.float32))  # np.array copies: never alias the caller's


def _to_numpy_tree(tree: Any) -> Any:
    # flatten_params takes numpy leaves; users may hand us a Flax tree already converted to torch
    if isinstance(tree, Mapping):
        return {k: _to_numpy_tree(v) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().float().numpy()
    return tree


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`blocks.N.attn.{query,key,value}.*` -> one `blocks.N.attn.qkv.*` (rows q, then k, then v)."""
    out = {k: v for k, v in state.items() if not re.search(r"\.attn\.(query|key|value)\.", k)}
    for key in state:
        m = re.fullmatch(r"(blocks\.\d+\.attn)\.query\.(weight|bias)", key)
        if m:
            parts = [state[k] for w in ("query", "key", "value") if (k := f"{m[1]}.{w}.{m[2]}") in state]
            if len(parts) != 3:
                raise ValueError(f"image ViT has {m[1]}.query.{m[2]} but not both key and value")
            want = 2 if m[2] == "weight" else 1
            if any(part.ndim != want or part.shape[1:] != parts[0].shape[1:] for part in parts):
                shapes = ", ".join(str(tuple(part.shape)) for part in parts)
                raise ValueError(
                    f"image ViT {m[1]} query/key/value {m[2]}s have shapes {shapes}; expected {want}-D and alike"
                )
            out[f"{m[1]}.qkv.{m[2]}"] = torch.cat(parts)
    return out


def _from_timm(state: Mapping[str, Any]) -> _ImageViT:
    return _ImageViT({k: _to_tensor(v) for k, v in state.items() if not _IGNORED_TIMM.match(k)}, "timm", None)


def _from_transformers(state: Mapping[str, Any]) -> _ImageViT:
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("vit.")
        if key.startswith("pooler.") or key == "embeddings.mask_token":  # ViTModel's tanh pooler, MIM token
            continue
        key = transformers_key(key)  # shared with the ViViT converter: same encoder names as HF's ViT
        if not _IGNORED_TIMM.match(key):
            renamed[key] = _to_tensor(value)
    return _ImageViT(_fuse_qkv(renamed), "transformers", None)


def _unscan(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # big_vision `scan=True` stores all blocks stacked on a leading axis under `Transformer/encoderblock/`
    out: dict[str, np.ndarray] = {}
    for name, array in flat.items():
        m = re.fullmatch(r"Transformer/encoderblock/(.+)", name)
        if m:
            depth = array.shape[0] if array.ndim else 0
            if not ARCH_LIMITS["depth"][0] <= depth <= ARCH_LIMITS["depth"][1]:
                raise ValueError(
                    f"scanned Flax ViT parameter {name} has shape {array.shape}: its first axis (the layers) must "
                    f"be in {ARCH_LIMITS['depth'][0]}..{ARCH_LIMITS['depth'][1]}"
                )
            for i, layer in enumerate(array):
                out[f"Transformer/encoderblock_{i}/{m[1]}"] = layer
        else:
            out[name] = array
    return out


def _flax_block_modules(flat: Mapping[str, np.ndarray], block: str) -> dict[str, tuple[str, str]]:
    """Our module -> (Flax module, transform kind) inside one encoder block.

    Scenic numbers its sub-modules `LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0`;
    google-research/vision_transformer numbers them in creation order (`..._1, LayerNorm_2, MlpBlock_3`).
    Both keep the two LayerNorms in order, so sorting by the index tells norm1 from norm2.
    """
    subs = sorted({n[len(block) + 1 :].split("/")[0] for n in flat if n.startswith(block + "/")})
    index = {s: int(s.rsplit("_", 1)[1]) if re.search(r"_\d+$", s) else 0 for s in subs}
    norms = sorted((s for s in subs if s.startswith("LayerNorm")), key=index.__getitem__)
    attns = [s for s in subs if s.startswith("MultiHeadDotProductAttention")]
    mlps = [s for s in subs if s.startswith("MlpBlock")]
    if len(norms) != 2 or len(attns) != 1 or len(mlps) != 1 or len(subs) != 4:
        raise ValueError(
            f"{block} is not a standard ViT block (2 LayerNorms, 1 attention, 1 MlpBlock); it holds {short_list(subs)}"
        )
    return {
        "norm1": (f"{block}/{norms[0]}", "ln"),
        "attn": (f"{block}/{attns[0]}", "attn"),
        "norm2": (f"{block}/{norms[1]}", "ln"),
        "mlp.fc1": (f"{block}/{mlps[0]}/Dense_0", "dense"),
        "mlp.fc2": (f"{block}/{mlps[0]}/Dense_1", "dense"),
    }


# Number of axes of each Flax ViT leaf (by the last two name parts), checked before any transform so
# that a file with wrong shapes gets a ValueError naming the parameter instead of a numpy IndexError.
_FLAX_NDIM = {
    "embedding/kernel": 4,
    "embedding/bias": 1,
    "query/kernel": 3,
    "key/kernel": 3,
    "value/kernel": 3,
    "query/bias": 2,
    "key/bias": 2,
    "value/bias": 2,
    "out/kernel": 3,
    "out/bias": 1,
    "cls": 3,
    "pos_embedding": 3,
}


def _flax_ndim(name: str) -> int | None:
    parts = name.split("/")
    for key in ("/".join(parts[-2:]), parts[-1]):
        if key in _FLAX_NDIM:
            return _FLAX_NDIM[key]
    if parts[-1] == "kernel" and len(parts) > 1 and parts[-2].startswith("Dense"):
        return 2
    if parts[-1] in ("scale", "bias"):
        return 1
    return None


def _from_flax(params: Mapping[str, Any]) -> _ImageViT:
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused by _canonical_vit
        flat = _unscan({k: np.asarray(v, dtype=np.float32) for k, v in flatten_params(_to_numpy_tree(params)).items()})
    misshaped = [
        f"{n} {tuple(a.shape)}"
        for n, a in flat.items()
        if not _IGNORED_FLAX.match(n) and (want := _flax_ndim(n)) is not None and a.ndim != want
    ]
    if misshaped:
        raise ValueError(f"Flax ViT parameters with the wrong number of axes: {short_list(misshaped)}")
    pos_name = next((n for n in ("Transformer/posembed_input/pos_embedding", "pos_embedding") if n in flat), None)
    names: dict[str, tuple[str, str]] = {
        "patch_embed.proj": ("embedding", "conv"),
        "norm": ("Transformer/encoder_norm", "ln"),
    }
    if pos_name is not None:
        names["pos_embed"] = (pos_name, "param")
    if "cls" in flat:
        names["cls_token"] = ("cls", "param")
    blocks = sorted({int(m[1]) for n in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", n))})
    for i in blocks:
        for ours, spec in _flax_block_modules(flat, f"Transformer/encoderblock_{i}").items():
            names[f"blocks.{i}.{ours}"] = spec

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ours, (theirs, kind) in names.items():
        try:
            converted = FLAX_TRANSFORMS[kind](flat, theirs)
        except KeyError as err:
            raise ValueError(f"Flax ViT parameters lack {err.args[0]} (needed for {ours})") from None
        except (ValueError, IndexError) as err:  # numpy reshape/transpose/concatenate of mismatched shapes
            shapes = short_list(
                f"{n} {tuple(a.shape)}" for n, a in flat.items() if n == theirs or n.startswith(theirs + "/")
            )
            raise ValueError(f"Flax ViT parameters of {theirs} do not fit together ({err}): {shapes}") from None
        for suffix, array in converted.items():
            state[f"{ours}.{suffix}" if suffix else ours] = torch.from_numpy(np.array(array, dtype=np.float32))
        used.update(n for n in flat if n == theirs or n.startswith(theirs + "/"))
    if "patch_embed.proj.weight" in state:  # the shared conv transform yields a t=1 tubelet (D, C, 1, h, w)
        state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].squeeze(2)
    # Flax keeps the head split in the q kernel [D, heads, head_dim]; timm/HF fused weights do not
    heads = int(flat[f"{names['blocks.0.attn'][0]}/query/kernel"].shape[1]) if "blocks.0.attn" in names else None
    extra = tuple(sorted(n for n in flat.keys() - used if not _IGNORED_FLAX.match(n)))
    return _ImageViT(state, "flax", heads, extra)


def _canonical_vit(state: Mapping[str, Any]) -> _ImageViT:
    """Detect the source layout from its keys and normalize it to timm layout."""
    state = _strip_checkpoint_prefix(state)
    keys = list(state.keys())
    if "patch_embed.proj.weight" in state:
        vit = _from_timm(state)
    elif any(k.removeprefix("vit.") == "embeddings.patch_embeddings.projection.weight" for k in keys):
        vit = _from_transformers(state)
    elif "embedding" in state or any(k == "embedding/kernel" or k.startswith("Transformer/") for k in keys):
        vit = _from_flax(state)
    else:
        sample = ", ".join(map(str, keys[:6])) + (", ..." if len(keys) > 6 else "")
        raise ValueError(
            "unrecognized image ViT key layout: expected timm ('patch_embed.proj.weight', 'blocks.0.attn.qkv."
            "weight', ...), HF transformers ('[vit.]embeddings.patch_embeddings.projection.weight', ...) or "
            f"Scenic/big_vision Flax ('embedding/kernel', 'Transformer/encoderblock_0/...') names; got {sample}"
        )
    _check_complete(vit)
    # in float32: float64 values beyond float32's range became infinite here and are refused too
    check_finite(f"{vit.layout} image ViT", vit.state, "parameters")
    return vit


def _strip_checkpoint_prefix(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameters of a flat Flax checkpoint saved with its wrapper, as timm's `_load_weights` reads
    them: big_vision's `params/...` (next to `opt/...`), vision_transformer's `opt/target/...`."""
    for prefix in ("params/", "opt/target/"):
        if f"{prefix}embedding/kernel" in state:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _check_complete(vit: _ImageViT) -> None:
    """Every canonical parameter present, nothing ViViT cannot hold. qkv without bias gets zeros."""
    s = vit.state
    depth = vit.depth
    for i in range(depth):
        qkv = s.get(f"blocks.{i}.attn.qkv.weight")
        if qkv is not None and f"blocks.{i}.attn.qkv.bias" not in s:
            s[f"blocks.{i}.attn.qkv.bias"] = qkv.new_zeros(qkv.shape[0])  # qkv_bias=False == zero bias
    if "fc_norm.weight" in s and "norm.weight" not in s:
        raise ValueError(
            "image ViT normalizes after pooling ('fc_norm', timm global_pool='avg' models) while ViViT "
            "normalizes every token before pooling; to accept that approximation, rename 'fc_norm.*' to "
            "'norm.*' before inflating"
        )
    wanted = set(_STEM_KEYS) | {f"blocks.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS}
    if vit.has_cls:
        wanted.add("cls_token")
    missing = sorted(wanted - s.keys())
    extra = sorted(s.keys() - wanted) + list(vit.extra)
    problems = [f"missing: {short_list(missing)}"] if missing else []
    if extra:
        problems.append(
            "parameters ViViT has no place for (layer scale, qk-norm, register tokens, pre-norm, "
            f"...?): {short_list(extra)}"
        )
    if depth == 0:
        problems.append("no transformer blocks found")
    misshaped = [f"{k} {tuple(s[k].shape)}" for k in sorted(wanted & s.keys()) if s[k].ndim != _canonical_ndim(k)]
    if misshaped:
        problems.append(f"wrong number of axes: {short_list(misshaped)}")
    if problems:
        raise ValueError(f"{vit.layout} image ViT is not a plain ViT:\n  " + "\n  ".join(problems))


def _canonical_ndim(key: str) -> int:
    """Axes of a canonical (timm-layout) parameter: (D, C, h, w) kernel, (1, N, D) tables, 2-D weights, 1-D rest."""
    if key == "patch_embed.proj.weight":
        return 4
    if key in ("cls_token", "pos_embed"):
        return 3
    return 2 if key.endswith(".weight") and not re.search(r"norm\d?\.weight$", key) else 1


# ------------------------------------------------------------------ the inflation itself
def _inflate_kernel(kernel: torch.Tensor, t: int, method: KernelInit) -> torch.Tensor:
    """2D patch kernel (D, C, h, w) -> tubelet kernel (D, C, t, h, w)."""
    if method == "average":  # I3D "filter inflation": a static clip gives the 2D response
        return repeat(kernel, "d c h w -> d c t h w", t=t) / t
    out = kernel.new_zeros(kernel.shape[0], kernel.shape[1], t, *kernel.shape[2:])
    out[:, :, t // 2] = kernel  # Scenic's central frame: t=2 -> the second frame
    return out


def _split_pos_embed(
    vit: _ImageViT, image_grid: tuple[int, int] | None
) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
    """The ViT position table as (cls slot or None, grid table (1, h*w, D), (h, w))."""
    pos = vit.state["pos_embed"]
    n = pos.shape[1]
    if image_grid is not None:
        gh, gw = int(image_grid[0]), int(image_grid[1])
        prefix = n - gh * gw
        if prefix not in ((0, 1) if vit.has_cls else (0,)):
            raise ValueError(
                f"image_grid={image_grid} has {gh * gw} positions but the ViT position table has {n} "
                f"({'with' if vit.has_cls else 'without'} a class token)"
            )
    else:
        # timm `no_embed_class` ViTs have a cls token but no position slot for it: try both
        for prefix in (1, 0) if vit.has_cls else (0,):
            side = math.isqrt(n - prefix)
            if side * side == n - prefix:
                gh = gw = side
                break
        else:
            raise ValueError(
                f"the ViT position table has {n} entries, which is no square grid"
                f"{' (with or without a class slot)' if vit.has_cls else ''}; pass image_grid=(rows, cols)"
            )
    return (pos[:, :1] if prefix else None), pos[:, prefix:], (gh, gw)


def _check_fits(vit: _ImageViT, model: ViViT) -> None:
    args = model.model_args
    problems = []
    if vit.embed_dim != model.embed_dim:
        problems.append(f"width: ViT embed_dim {vit.embed_dim}, model embed_dim {model.embed_dim}")
    if vit.depth != args["depth"]:
        which = "spatial encoder depth" if isinstance(model, FactorizedEncoderViViT) else "depth"
        problems.append(
            f"depth: ViT has {vit.depth} blocks, model {which} is {args['depth']} (blocks map one to one; "
            "slice or build the model to match)"
        )
    if vit.num_heads is not None and vit.num_heads != args["num_heads"]:
        problems.append(f"heads: ViT has {vit.num_heads}, model num_heads is {args['num_heads']}")
    mlp = vit.state["blocks.0.mlp.fc1.weight"].shape[0] if vit.depth else None
    if mlp is not None and mlp != model.mlp_dim:
        problems.append(f"MLP width: ViT {mlp}, model mlp_dim {model.mlp_dim}")
    _, c, h, w = vit.state["patch_embed.proj.weight"].shape
    if (h, w) != model.patch_embed.patch_size or c != model.in_chans:
        problems.append(
            f"patch embedding: ViT patch {h}x{w} with {c} channels, model patch "
            f"{model.patch_embed.patch_size[0]}x{model.patch_embed.patch_size[1]} with {model.in_chans} channels"
        )
    if problems:
        raise ValueError(f"{vit.layout} image ViT does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))


def _temporal_attention(src: Mapping[str, torch.Tensor], depth: int, init: TemporalInit) -> dict[str, torch.Tensor]:
    """Model 3's `blocks.N.temporal_attn` and `temporal_norm` from the ViT's block N (see module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(depth):
        attn, temporal = f"blocks.{i}.attn", f"blocks.{i}.temporal_attn"
        for leaf in ("weight", "bias"):
            qkv, proj = src[f"{attn}.qkv.{leaf}"], src[f"{attn}.proj.{leaf}"]
            out[f"{temporal}.qkv.{leaf}"] = torch.zeros_like(qkv) if init == "zero" else qkv.clone()
            out[f"{temporal}.proj.{leaf}"] = proj.clone() if init == "copy" else torch.zeros_like(proj)
        norm = src[f"blocks.{i}.norm1.weight"]
        out[f"blocks.{i}.temporal_norm.weight"] = torch.ones_like(norm)  # LayerNorm_time: fresh, as in Scenic
        out[f"blocks.{i}.temporal_norm.bias"] = torch.zeros_like(norm)
    return out


def inflation_settings(
    spec: str | Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Keyword arguments for `inflate_vit` from the `inflation=` setting of `create_model`.

    Args:
        spec: None (the defaults), a tubelet kernel name (`'central'` / `'average'`, the form of
            vivit 0.1), or a mapping with any of `kernel`, `posemb`, `temporal_init`, `image_grid`.
        defaults: settings that `spec` overrides (e.g. a registry entry's `pretrained_cfg['inflation']`).

    Returns:
        A new dict of validated settings.

    Raises:
        ValueError: an unknown key or value, naming the accepted ones.
    """
    settings = dict(defaults or {})
    if isinstance(spec, str):
        spec = {"kernel": spec}
    elif spec is not None and not isinstance(spec, Mapping):
        raise ValueError(
            f"inflation must be a kernel name ('central' or 'average') or a dict of {', '.join(_CHOICES)}, "
            f"image_grid; got {spec!r}"
        )
    settings.update(spec or {})
    for key, value in settings.items():
        if key == "image_grid":
            ok = value is None or (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(isinstance(v, int) and v > 0 for v in value)
            )
            if not ok:
                raise ValueError(f"inflation image_grid must be (rows, cols), got {value!r}")
        elif key not in _CHOICES:
            raise ValueError(f"unknown inflation setting {key!r}; known: {', '.join(_CHOICES)}, image_grid")
        elif value not in _CHOICES[key]:
            raise ValueError(f"inflation {key} must be one of {', '.join(map(repr, _CHOICES[key]))}, got {value!r}")
    if settings.get("image_grid") is not None:
        settings["image_grid"] = tuple(int(v) for v in settings["image_grid"])
    return settings


def inflate_vit(
    image_state_dict: Mapping[str, torch.Tensor | np.ndarray | Mapping[str, Any]],
    model: nn.Module,
    *,
    kernel: KernelInit = "central",
    posemb: PosembInit = "resize_tile",
    image_grid: tuple[int, int] | None = None,
    temporal_init: TemporalInit = "identity",
) -> dict[str, torch.Tensor]:
    """Inflate a 2D image ViT into a complete `state_dict` for a ViViT model (paper §3.4, Scenic's init).

    Args:
        image_state_dict: the image ViT's weights in timm, HF transformers (`ViTModel` /
            `ViTForImageClassification`, transformers 4 or 5 names, `vit.` prefix optional) or Flax
            (Scenic / big_vision / vision_transformer; flat '/'-joined names or a nested tree) layout.
            Classifier-side entries (`head`, `pre_logits`, `output_projection`, pooler) are ignored.
        model: the target video model (any of the four). Tensors the ViT does not provide (Model 2's
            temporal encoder and temporal cls; a class token the ViT lacks) keep the values
            `model.state_dict()` holds now, i.e. its fresh init.
        kernel: tubelet kernel init, `'central'` (2D kernel at temporal index t // 2, zeros elsewhere)
            or `'average'` (k / t at every index). Irrelevant for t = 1 (uniform frame sampling).
        posemb: `'resize_tile'` resizes the ViT's spatial grid to the model's (linear interpolation,
            align_corners=True, as Scenic's `scipy.ndimage.zoom(order=1)`) when they differ, then tiles
            it over the frames; `'tile'` only tiles and requires equal grids.
        image_grid: the ViT's patch grid (rows, cols); default: the square root of the table size.
        temporal_init: Model 3's temporal attention (other models have none and ignore it):
            `'identity'` (q/k/v from the ViT, output projection zero: the image model at init, and it
            trains), `'copy'` (Scenic's default: the whole ViT attention) or `'zero'` (the paper's
            literal all-zero init; it cannot learn: v = 0 leaves the q/k/v and output weights with
            exactly zero gradient at every step). See the module docstring.

    Returns:
        A float32 `state_dict` with every key of `model`, for `model.load_state_dict(sd, strict=True)`.

    Raises:
        ValueError: unrecognized layout, parameters ViViT cannot hold, or a ViT whose width, depth,
            MLP width, heads (when the source records them) or patch size differ from the model's.
    """
    if not isinstance(model, ViViT):
        raise TypeError(f"model must be one of the four ViViT models, got {type(model).__name__}")
    for name, choice in (("kernel", kernel), ("posemb", posemb), ("temporal_init", temporal_init)):
        if choice not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, _CHOICES[name]))}, got {choice!r}")
    vit = _canonical_vit(image_state_dict)
    _check_fits(vit, model)
    src = vit.state
    # start from the model's own tensors: whatever the ViT does not initialize keeps its fresh value
    out = {k: v.detach().to(device="cpu", dtype=torch.float32).clone() for k, v in model.state_dict().items()}

    t = model.patch_embed.tubelet_size
    out["patch_embed.proj.weight"] = _inflate_kernel(src["patch_embed.proj.weight"], t, kernel)
    out["patch_embed.proj.bias"] = src["patch_embed.proj.bias"]
    for key, value in src.items():
        if key.startswith(("blocks.", "norm.")):
            out[key] = value
    if isinstance(model, FactorizedSelfAttentionViViT):
        out.update(_temporal_attention(src, vit.depth, temporal_init))

    # position table: grid resized to the model's (nh, nw); Models 1/3/4 tile it over time
    cls_pos, grid_pos, (gh, gw) = _split_pos_embed(vit, image_grid)
    nt, nh, nw = model.grid_size
    if (gh, gw) != (nh, nw):
        if posemb == "tile":
            raise ValueError(
                f"posemb='tile' needs equal spatial grids, but the ViT's is {gh}x{gw} and the model's {nh}x{nw}; "
                "use posemb='resize_tile'"
            )
        grid_pos = resample_pos_embed(grid_pos, (1, gh, gw), (1, nh, nw), space_mode="linear_align_corners")
    if not isinstance(model, FactorizedEncoderViViT):
        grid_pos = repeat(grid_pos, "1 n d -> 1 (t n) d", t=nt)  # time-major, as our tokens
    if model.num_prefix_tokens:
        if vit.has_cls:
            out["cls_token"] = src["cls_token"]
            # a cls token without a slot (timm no_embed_class) is one whose position embedding is zero
            cls_pos = cls_pos if cls_pos is not None else torch.zeros_like(src["cls_token"])
        else:  # Scenic: a ViT without cls leaves the target's cls and its slot at their init
            cls_pos = out["pos_embed"][:, :1]
        grid_pos = torch.cat([cls_pos, grid_pos], dim=1)
    out["pos_embed"] = grid_pos

    if isinstance(model.head, nn.Linear):  # a new task: Scenic zero-initializes the classifier
        out["head.weight"] = torch.zeros_like(out["head.weight"])
        out["head.bias"] = torch.zeros_like(out["head.bias"])

    target = model.state_dict()
    misshaped = [
        f"{k}: {tuple(out[k].shape)}, model {tuple(v.shape)}" for k, v in target.items() if out[k].shape != v.shape
    ]
    unexpected = sorted(out.keys() - target.keys())
    if misshaped or unexpected:  # a safety net: _check_fits should have named the cause already
        lines = misshaped + [f"unexpected {k}" for k in unexpected]
        raise ValueError("inflated state_dict does not fit the model:\n  " + "\n  ".join(lines))
    return {k: v.contiguous() for k, v in out.items()}
