"""See what the model sees: attention weights on demand and attention-rollout relevance maps.

Every attention in vivit runs through `F.scaled_dot_product_attention`, which never materialises
its weights. The functions here recover them without touching the models' forward path: for the
blocks asked for, a forward hook on each attention's fused `qkv` projection receives the very
q and k the kernel gets, regroups them as that model does (joint tokens, frames, or the time and
space axes) and computes `softmax(q k^T / sqrt(head_dim))` explicitly, in float32. The normal
forward pass has no hooks and is not slowed; the hooks exist only during a call here.

    maps = vivit.attention_maps(model, clip, blocks=[-1], queries="cls")
    maps["blocks.11"].joint              # (B, heads, 1, 1 + nt*nh*nw) for Model 1
    heat = vivit.explain.relevance(model, clip)   # (B, nt, nh, nw), attention rollout

`vivit explain VIDEO --out FILE.{png,gif,mp4}` (`explain_video`) draws the relevance map over the
clip the model saw; `vivit.render` holds the drawing and file-writing helpers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange
from torch import nn

from .data.sampling import sample_frame_indices
from .data.transforms import create_transform, resolve_data_config
from .data.video import read_video
from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
)
from .predict import top_predictions

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BlockAttention",
    "attention_maps",
    "attention_maps_nbytes",
    "check_block_head",
    "explain_video",
    "load_clip",
    "relevance",
]

#: Default budget of `attention_maps` for the weights it returns (1 GiB).
DEFAULT_MAX_BYTES = 2**30

Queries = Literal["cls"] | Sequence[int] | None


@dataclass(frozen=True)
class BlockAttention:
    """The softmax attention weights of one block, float32, on the model's device.

    Each field holds the weights of the attentions that mix tokens along one axis; the last two
    dimensions are (query, key), every row sums to 1. `None` where the block has no such attention.
    Shapes (B batch, H heads, nt/nh/nw the token grid, S = nh*nw, Q the kept queries):

    | model                      | field   | shape                  | tokens on the last two axes          |
    |----------------------------|---------|------------------------|--------------------------------------|
    | 1 `SpatioTemporalViViT`    | `joint` | `(B, H, Q, N)`         | `[cls] + (t h w)`, N = [1 +] nt*S    |
    | 2 `FactorizedEncoderViViT` | `space` | `(B, nt, H, Q, S')`    | per frame `[cls] + (h w)`, S' = [1 +] S (spatial blocks) |
    |                            | `time`  | `(B, H, Q, T')`        | `[cls] + t`, T' = [1 +] nt (temporal blocks) |
    | 3 `FactorizedSelfAttention`| `time`  | `(B, S, H, Q, nt)`     | per spatial position, its nt tokens  |
    |                            | `space` | `(B, nt, H, Q, S)`     | per frame, its S tokens              |
    | 4 `FactorizedDotProduct`   | `time`  | `(B, S, H/2, Q, nt)`   | heads 0..H/2-1, along time           |
    |                            | `space` | `(B, nt, H/2, Q, S)`   | heads H/2..H-1, along space          |

    Attributes:
        joint: Model 1's weights over all tokens.
        time: Weights of the attention(s) along time.
        space: Weights of the attention(s) along space.
        num_prefix_tokens: 1 when index 0 of the token axes is a class token (Models 1 and 2 with
            `global_pool='token'`), else 0.
        query_indices: The query tokens kept, as passed (indices on each query axis; "cls" is
            `(0,)`); `None` = all of them.
    """

    joint: torch.Tensor | None = None
    time: torch.Tensor | None = None
    space: torch.Tensor | None = None
    num_prefix_tokens: int = 0
    query_indices: tuple[int, ...] | None = None


# ---------------------------------------------------------------- where each model attends
@dataclass(frozen=True)
class _Site:
    """One attention module: its qkv projection and how the model groups its tokens.

    kind: "joint" `(B, N, 3D)`; "frames" `((B nt), S', 3D)`; "sequence" `(B, T', 3D)` (Model 2's
    temporal encoder); "time" / "space" (Model 3's two attentions, `(B, (t s), 3D)` and
    `((B t), s, 3D)`); "split" (Model 4: `(B, (t s), 3D)`, heads halved between time and space).
    """

    key: str  # the block's name in the model, e.g. "blocks.3", "temporal_blocks.0"
    qkv: nn.Linear
    num_heads: int
    kind: str
    prefix: int  # class tokens at the front of the attended sequence


def _model_kind(model: nn.Module) -> str:
    kinds = {
        SpatioTemporalViViT: "st",
        FactorizedEncoderViViT: "fe",
        FactorizedSelfAttentionViViT: "fsa",
        FactorizedDotProductViViT: "fdp",
    }
    for cls, kind in kinds.items():
        if isinstance(model, cls):
            return kind
    hint = ""  # the hooks go on the model's own submodules: a wrapper hides them
    if hasattr(model, "_orig_mod"):
        hint = " (torch.compile's wrapper): pass model._orig_mod"
    elif isinstance(getattr(model, "module", None), nn.Module):
        hint = " (a wrapper): pass model.module"
    raise TypeError(f"expected one of the four ViViT models, got {type(model).__name__}{hint}")


def _vivit(model: nn.Module) -> Any:
    """The model, checked to be a ViViT model, typed for reading its submodules and settings."""
    _model_kind(model)
    return model


def _num_blocks(model: nn.Module) -> int:
    m = _vivit(model)
    return len(m.blocks) + len(getattr(m, "temporal_blocks", ()))


def _block_indices(model: nn.Module, blocks: int | Sequence[int] | None) -> list[int]:
    """timm's `forward_intermediates` convention: None = all, n = the last n, a list = those."""
    depth = _num_blocks(model)
    if blocks is None:
        return list(range(depth))
    if isinstance(blocks, (bool, str)) or not isinstance(blocks, (int, np.integer, Sequence)):
        raise TypeError(f"blocks must be None, an int or a list of block indices, got {blocks!r}")
    if isinstance(blocks, (int, np.integer)):
        blocks = int(blocks)
        if not 0 < blocks <= depth:
            raise ValueError(f"blocks={blocks}: the model has {depth} blocks (an int n asks for the last n)")
        return list(range(depth - blocks, depth))
    taken = set()
    for i in blocks:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -depth <= i < depth:
            raise ValueError(f"block index {i!r} out of range for a model with {depth} blocks")
        taken.add(int(i) % depth)
    if not taken:
        raise ValueError("blocks is empty: ask for at least one block (None = all)")
    return sorted(taken)


def _sites(model: nn.Module, index: int) -> list[_Site]:
    """The attention modules of block `index` (Model 2: spatial blocks first, then temporal)."""
    kind, m = _model_kind(model), _vivit(model)
    prefix = m.num_prefix_tokens
    if kind == "fe" and index >= len(m.blocks):
        j = index - len(m.blocks)
        attn = m.temporal_blocks[j].attn
        return [_Site(f"temporal_blocks.{j}", attn.qkv, attn.num_heads, "sequence", prefix)]
    block = m.blocks[index]
    key = f"blocks.{index}"
    if kind == "fsa":
        sites = {
            "time": _Site(key, block.temporal_attn.qkv, block.temporal_attn.num_heads, "time", 0),
            "space": _Site(key, block.attn.qkv, block.attn.num_heads, "space", 0),
        }
        return [sites[a] for a in block.attention_order.split("_")]  # in the order they run
    site_kind = {"st": "joint", "fe": "frames", "fdp": "split"}[kind]
    return [_Site(key, block.attn.qkv, block.attn.num_heads, site_kind, prefix)]


def _split_qk(
    site: _Site, qkv: torch.Tensor, grid: tuple[int, int, int]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The hooked qkv output -> {axis: (q, k)}, each `(*groups, heads, tokens, head_dim)`, as the model groups them."""
    t = grid[0]
    heads = site.num_heads
    if site.kind in ("joint", "sequence"):
        q, k, _ = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
        return {"joint" if site.kind == "joint" else "time": (q, k)}
    if site.kind == "frames":
        q, k, _ = rearrange(qkv, "(b t) n (three h d) -> three b t h n d", three=3, t=t, h=heads)
        return {"space": (q, k)}
    if site.kind == "space":  # Model 3: `(B t) s D` sequences, one per frame
        q, k, _ = rearrange(qkv, "(b t) s (three h d) -> three b t h s d", three=3, t=t, h=heads)
        return {"space": (q, k)}
    if site.kind == "time":  # Model 3: one sequence over t per spatial position
        q, k, _ = rearrange(qkv, "b (t s) (three h d) -> three b s h t d", three=3, t=t, h=heads)
        return {"time": (q, k)}
    # Model 4: heads [0, H/2) attend over time, [H/2, H) over space (Scenic's order)
    half = heads // 2
    qkv = rearrange(qkv, "b (t s) (three h d) -> three b t s h d", three=3, t=t, h=heads)
    tq, tk, _ = rearrange(qkv[..., :half, :], "three b t s h d -> three b s h t d")
    sq, sk, _ = rearrange(qkv[..., half:, :], "three b t s h d -> three b t h s d")
    return {"time": (tq, tk), "space": (sq, sk)}


def _softmax_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`softmax(q k^T / sqrt(d))` in float32: what `F.scaled_dot_product_attention` computes inside."""
    scale = q.shape[-1] ** -0.5  # applied to q (tokens x d) rather than to the tokens x tokens logits
    return torch.softmax((q.float() * scale) @ k.float().transpose(-2, -1), dim=-1)


class _Stop(Exception):
    """Raised from a hook once every requested block is captured: the rest of the forward is not needed."""


@contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()  # attention dropout would make the weights differ from the ones used
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_video(model: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    """The token grid (nt, nh, nw) of a video batch, after checking it is `(B, C, T, H, W)` float."""
    m = _vivit(model)
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a float video tensor (B, C, T, H, W), got {got}")
    return m.patch_embed.grid_size(x.shape[2], (x.shape[3], x.shape[4]))


def _run_with_hooks(
    model: nn.Module,
    x: torch.Tensor,
    sites: Sequence[_Site],
    grid: tuple[int, int, int],
    on_qk: Callable[[_Site, dict[str, tuple[torch.Tensor, torch.Tensor]]], None],
    stop_early: bool,
) -> torch.Tensor | None:
    """Run the model's own forward with a hook on each site's qkv; returns the logits (None if stopped early)."""
    pending = set(range(len(sites)))
    handles = []

    def hook_for(i: int, site: _Site) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            on_qk(site, _split_qk(site, output, grid))
            pending.discard(i)
            if stop_early and not pending:
                raise _Stop

        return hook

    for i, site in enumerate(sites):
        handles.append(site.qkv.register_forward_hook(hook_for(i, site)))
    logits = None
    try:
        with _eval_no_grad(model):
            logits = model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if pending:  # the forward path no longer calls `qkv` as a module: these hooks cannot work
        missed = sorted({sites[i].key for i in pending})
        raise RuntimeError(f"internal error: the attention projections of {missed} were not called as modules")
    return logits


# ---------------------------------------------------------------- attention_maps
def _query_indices(queries: Queries, prefix: int) -> list[int] | None:
    if queries is None:
        return None
    if isinstance(queries, str):
        if queries != "cls":
            raise ValueError(f"queries must be None, 'cls' or a list of token indices, got {queries!r}")
        if not prefix:
            raise ValueError(
                "queries='cls': this model has no class token (global_pool='avg'); pass token indices instead"
            )
        return [0]
    indices = [int(i) for i in queries]
    if not indices or any(isinstance(i, bool) for i in queries):
        raise ValueError(f"queries must be a non-empty list of token indices, got {queries!r}")
    return indices


def _axis_sizes(site: _Site, grid: tuple[int, int, int]) -> dict[str, tuple[int, int]]:
    """{axis: (groups, tokens)} of a site: each group is one independent softmax over `tokens`."""
    t, h, w = grid
    s = h * w
    if site.kind == "joint":
        return {"joint": (1, site.prefix + t * s)}
    if site.kind == "frames":
        return {"space": (t, site.prefix + s)}
    if site.kind == "sequence":
        return {"time": (1, site.prefix + t)}
    if site.kind == "time":
        return {"time": (s, t)}
    if site.kind == "space":
        return {"space": (t, s)}
    return {"time": (s, t), "space": (t, s)}


def _heads_of(site: _Site, axis: str) -> int:
    return site.num_heads // 2 if site.kind == "split" else site.num_heads


def _checked_queries(indices: list[int] | None, tokens: int, site: _Site, axis: str) -> list[int] | None:
    if indices is None:
        return None
    for i in indices:
        if not -tokens <= i < tokens:
            raise ValueError(f"query index {i} out of range for the {axis} attention of {site.key} ({tokens} tokens)")
    return [i % tokens for i in indices]


def attention_maps_nbytes(
    model: nn.Module, x: torch.Tensor, blocks: int | Sequence[int] | None = None, queries: Queries = None
) -> int:
    """Bytes of float32 weights `attention_maps` would return for these arguments (nothing is run).

    Per attention: `4 * B * groups * heads * Q * K`, with K the tokens it attends over, Q the kept
    queries (K when all are kept) and groups the independent sequences: 1 for Model 1 and Model 2's
    temporal encoder, nt frames for spatial attention, nh*nw positions for Model 3/4's temporal
    attention (Model 4 has H/2 heads on each axis). Summed over the requested blocks.
    E.g. ViViT-B Model 1 on one 32x224x224 clip: N = 1 + 16*14*14 = 3137 tokens, 12 heads, so one
    block is 4 * 12 * 3137^2 = 472 MB and all 12 blocks 5.7 GB; with `queries="cls"` 1.8 MB.
    """
    grid = _check_video(model, x)
    indices = _query_indices(queries, _vivit(model).num_prefix_tokens)
    total = 0
    for index in _block_indices(model, blocks):
        for site in _sites(model, index):
            for axis, (groups, tokens) in _axis_sizes(site, grid).items():
                q = tokens if indices is None else len(indices)
                total += 4 * x.shape[0] * groups * _heads_of(site, axis) * q * tokens
    return total


def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    blocks: int | Sequence[int] | None = None,
    *,
    queries: Queries = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> dict[str, BlockAttention]:
    """The softmax attention weights each requested block uses on `x`, shaped after its factorisation.

    The model runs its own forward (in eval mode, without gradients; its mode is restored) with a
    hook on the qkv projection of each requested block, which computes `softmax(q k^T / sqrt(d))`
    in float32 from the same q and k that `F.scaled_dot_product_attention` receives. Multiplying the
    weights back onto v reproduces the attention outputs (tests/test_explain.py, <= 1e-5 for all four
    models). The forward stops after the last requested block.

    Example:
        >>> maps = attention_maps(model, clip[None], blocks=[-1], queries="cls")
        >>> maps["blocks.11"].joint.shape          # Model 1 B/16x2: (1, 12, 1, 3137)

    Args:
        model: One of the four ViViT models.
        x: Video `(B, C, T, H, W)`, float, as the model takes it.
        blocks: None (all blocks), n (the last n) or a list of block indices (negatives count from
            the end). Model 2 numbers its spatial blocks first, then its temporal blocks, as
            `forward_intermediates` does.
        queries: Query tokens to keep: None (all), "cls" (the class token only; Models 1 and 2
            with `global_pool='token'`) or indices on the query axis of every requested attention
            (e.g. `[0]`; for factorised attentions the index is along that attention's own axis).
        max_bytes: Refuse (ValueError) when the returned weights would exceed this many bytes
            (see `attention_maps_nbytes` for the formula); None = no limit.

    Returns:
        `{name: BlockAttention}` in block order; names are the blocks' module names
        (`"blocks.3"`, Model 2's `"temporal_blocks.0"`). See `BlockAttention` for the shapes.

    Raises:
        ValueError: Bad `x`, block or query indices, `queries="cls"` without a class token, or
            weights larger than `max_bytes` (the message gives the size and how to ask for less).
        TypeError: `model` is not a ViViT model, or `blocks` is not None, an int or a list.
    """
    grid = _check_video(model, x)
    prefix = _vivit(model).num_prefix_tokens
    indices = _query_indices(queries, prefix)
    block_ids = _block_indices(model, blocks)
    sites = [site for index in block_ids for site in _sites(model, index)]
    kept = {  # validated up front, so that nothing runs with a bad index
        (id(site), axis): _checked_queries(indices, tokens, site, axis)
        for site in sites
        for axis, (_, tokens) in _axis_sizes(site, grid).items()
    }
    if max_bytes is not None:
        size = attention_maps_nbytes(model, x, block_ids, queries)
        if size > max_bytes:
            raise ValueError(
                f"attention_maps would return {_format_bytes(size)} of weights for {len(block_ids)} block(s) "
                f"of {x.shape[0]} clip(s), over max_bytes={_format_bytes(max_bytes)}: ask for fewer blocks "
                "(blocks=[-1]), fewer query tokens (queries='cls' or a list of indices), fewer clips, "
                "or raise max_bytes (None = no limit)"
            )

    found: dict[str, dict[str, torch.Tensor]] = {site.key: {} for site in sites}

    def on_qk(site: _Site, qk: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for axis, (q, k) in qk.items():
            rows = kept[(id(site), axis)]
            if rows is not None:  # only the kept rows are ever computed
                q = q[..., rows, :]
            found[site.key][axis] = _softmax_weights(q, k)

    _run_with_hooks(model, x, sites, grid, on_qk, stop_early=True)
    out = {}
    for site in sites:  # site order is block order; Model 3's two sites share a key
        if site.key not in out:
            out[site.key] = BlockAttention(
                **found[site.key],
                num_prefix_tokens=site.prefix,
                query_indices=None if indices is None else tuple(indices),
            )
    return out


def _format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- relevance (attention rollout)
def _head_mean(q: torch.Tensor, k: torch.Tensor, head: int | None) -> torch.Tensor:
    """Attention weights averaged over heads (or of one head), `(*groups, tokens, tokens)`.

    One head at a time, so that no more than one head's weights exist at once (Model 1 B at 32x224^2:
    39 MB per head instead of 472 MB).
    """
    if head is not None:
        return _softmax_weights(q[..., head, :, :], k[..., head, :, :])
    total = _softmax_weights(q[..., 0, :, :], k[..., 0, :, :])
    for h in range(1, q.shape[-3]):
        total += _softmax_weights(q[..., h, :, :], k[..., h, :, :])
    return total / q.shape[-3]


def _mix(r: torch.Tensor, a: torch.Tensor, residual: bool) -> torch.Tensor:
    """`r @ A_hat` for a token-distribution row `r`: A_hat = (A + I) renormalised (rows of A + I sum to 2), or A."""
    ra = torch.einsum("...q,...qk->...k", r, a)
    return (r + ra) / 2 if residual else ra


def _mix_time(r: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """`r (B, nt, S)` through an attention along time, `a (B, S, nt, nt)`."""
    return torch.einsum("bts,bstu->bus", r, a)


def _mix_space(r: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """`r (B, nt, S)` through an attention along space, `a (B, nt, S, S)`."""
    return torch.einsum("bts,btsu->btu", r, a)


def _start_row(batch: int, tokens: int, prefix: int, device: torch.device) -> torch.Tensor:
    """The query: the class token (one-hot on index 0) when there is one, else the mean of the tokens."""
    r = torch.zeros(batch, tokens, device=device)
    if prefix:
        r[:, 0] = 1.0
    else:
        r[:] = 1.0 / tokens
    return r


def check_block_head(model: nn.Module, block: int | None, head: int | None) -> None:
    """Check a `block` / `head` selection for `relevance` before any work is done.

    Raises:
        ValueError: `head` without `block`, or a block or head the model does not have.
        TypeError: `model` is not a ViViT model.
    """
    _model_kind(model)
    if head is not None and block is None:
        raise ValueError("a head is one head of one block: select the block too")
    if block is None:
        return
    depth = _num_blocks(model)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not -depth <= block < depth:
        raise ValueError(
            f"block {block!r} out of range: the model has {depth} blocks (0..{depth - 1}, or negative from the end)"
        )
    (site, *_) = _sites(model, int(block) % depth)
    if head is not None and (
        isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < site.num_heads
    ):
        raise ValueError(
            f"head {head!r} out of range: block {site.key} has {site.num_heads} heads (0..{site.num_heads - 1})"
        )


def _rollout(
    model: nn.Module, x: torch.Tensor, block: int | None = None, head: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(relevance `(B, nt, nh, nw)`, logits or None) for `relevance`; see there."""
    grid = _check_video(model, x)
    kind = _model_kind(model)
    check_block_head(model, block, head)
    block_ids = list(range(_num_blocks(model))) if block is None else _block_indices(model, [block])
    sites = [site for index in block_ids for site in _sites(model, index)]
    mats: dict[tuple[str, str], torch.Tensor] = {}

    def on_qk(site: _Site, qk: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for axis, (q, k) in qk.items():
            if site.kind == "split" and head is not None:  # Model 4: a head lives on one axis only
                half = site.num_heads // 2
                local = head if axis == "time" else head - half
                if not 0 <= local < half:
                    continue
                mats[(site.key, axis)] = _head_mean(q, k, local)
            else:
                mats[(site.key, axis)] = _head_mean(q, k, head)

    logits = _run_with_hooks(model, x, sites, grid, on_qk, stop_early=block is not None)
    b, (t, h, w) = x.shape[0], grid
    s, prefix, residual = h * w, _vivit(model).num_prefix_tokens, block is None
    device = next(iter(mats.values())).device

    if kind == "fe":
        # Each frame's embedding is its spatial encoder's query row rolled out over that frame's
        # patches; the temporal encoder's rollout says how much each frame embedding counts.
        frame_rel = _start_row(b * t, prefix + s, prefix, device).view(b, t, prefix + s)
        frame_weight = _start_row(b, prefix + t, prefix, device)
        for site in reversed(sites):
            if site.kind == "frames":
                frame_rel = _mix(frame_rel, mats[(site.key, "space")], residual)
            else:
                frame_weight = _mix(frame_weight, mats[(site.key, "time")], residual)
        if block is not None:  # a single block says nothing about the other encoder: uniform there
            if sites[0].kind == "frames":
                frame_weight = torch.full((b, t), 1.0 / t, device=device)
            else:
                frame_rel = torch.full((b, t, s), 1.0 / s, device=device)
        rel = frame_weight[:, -t:, None] * frame_rel[:, :, -s:]
        return rel.reshape(b, t, h, w), logits

    if kind == "st":
        r = _start_row(b, prefix + t * s, prefix, device)
        for site in reversed(sites):
            r = _mix(r, mats[(site.key, "joint")], residual)
        return r[:, prefix:].reshape(b, t, h, w), logits

    r = torch.full((b, t, s), 1.0 / (t * s), device=device)  # Models 3 and 4: no class token
    for site in reversed(sites):
        # Model 3: one axis per site; Model 4: both, or the one axis of the selected head
        parts = [
            mix(r, mats[(site.key, axis)])
            for axis, mix in (("time", _mix_time), ("space", _mix_space))
            if (site.key, axis) in mats and site.kind in (axis, "split")
        ]
        mixed = sum(parts[1:], parts[0]) / len(parts)  # Model 4: half time heads, half space heads
        r = (r + mixed) / 2 if residual else mixed
    return r.reshape(b, t, h, w), logits


def relevance(model: nn.Module, x: torch.Tensor, *, block: int | None = None, head: int | None = None) -> torch.Tensor:
    """Where the model looks: attention rollout (Abnar & Zuidema 2020) over the token grid.

    Rollout follows how information flows through the residual stream: each block's attention,
    averaged over heads, plus the identity for the residual connection, rows renormalised
    (`A_hat = (A + I) / 2`), multiplied through the blocks; the row of the query token is the map.
    The query is what the classifier reads: the class token when the model has one
    (`global_pool='token'`), else the mean of all tokens. The four models mix tokens differently,
    so their per-block mixing matrices are built as follows:

    * Model 1: `A` is the joint attention over all tokens.
    * Model 2: the spatial encoder is rolled out per frame (query: its class token or mean token)
      and the temporal encoder over frames; a token's relevance is its frame's weight times its
      share within the frame (the frame embedding is exactly that spatial query's output).
    * Model 3: each block applies two residual attentions in `attention_order`, so its mixing
      matrix is `A_hat_space @ A_hat_time` (time then space) or the reverse; each acts along its
      own axis (block-diagonal over positions or frames).
    * Model 4: half the heads mix along time, half along space, added up by the output projection:
      the head average is `A = (A_time + A_space) / 2`, each embedded along its axis, and
      `A_hat = (A + I) / 2`.

    Mass that ends on a class token (which carries no input) is dropped, so a map sums to at most 1.

    With `block` (and optionally `head`) the map is that single block's attention instead: the
    query row of its head-averaged (or one head's) attention, no residual, no rollout; for Model 2
    the other encoder is taken as uniform.

    Memory: the head-averaged weights of every block are kept until the rollout runs backwards from
    the last block: Model 1 `4 * B * depth * N^2` bytes (ViViT-B, 32x224^2: 472 MB per clip);
    the factorised models a few MB.

    Args:
        model: One of the four ViViT models.
        x: Video `(B, C, T, H, W)`, float.
        block: One block index (Model 2: spatial blocks, then temporal) for its single map.
        head: With `block`: one head of it (Model 4: heads below H/2 attend along time, the rest
            along space; Model 3: this head of both its attentions).

    Returns:
        float32 `(B, nt, nh, nw)` on the model's device, non-negative.

    Raises:
        ValueError: Bad `x`, `block` or `head` (or `head` without `block`).
        TypeError: `model` is not a ViViT model.
    """
    return _rollout(model, x, block, head)[0]


# ---------------------------------------------------------------- the `vivit explain` job
def load_clip(video: str | os.PathLike[str], pretrained_cfg: Mapping[str, Any] | None) -> torch.Tensor:
    """The centre clip of a video, preprocessed as the model expects: float32 `(C, T, h, w)`.

    Frames: `input_size[1]` frames every `frame_stride`, the centred clip (`sample_frame_indices`),
    then the evaluation transform (`create_transform`). The one place the explain job reads videos.

    Raises:
        FileNotFoundError, ValueError: As `vivit.read_video`.
    """
    cfg = resolve_data_config(pretrained_cfg)
    frames = read_video(video)
    indices = sample_frame_indices(len(frames), cfg["input_size"][1], cfg["frame_stride"])
    return create_transform(cfg)(frames[indices])


def _display_frames(clip: torch.Tensor, cfg: Mapping[str, Any]) -> np.ndarray:
    """The model's input `(C, T, h, w)` back to uint8 RGB `(T, h, w, 3)`: exactly the pixels it saw."""
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1, 1)
    pixels = ((clip.float().cpu() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1, -1)
    return rearrange(pixels, "c t h w -> t h w c").numpy()


def explain_video(
    model: nn.Module,
    video: str | os.PathLike[str] | torch.Tensor,
    out: str | os.PathLike[str],
    *,
    pretrained_cfg: Mapping[str, Any] | None = None,
    block: int | None = None,
    head: int | None = None,
    top_k: int = 3,
    true_label: str | None = None,
    fps: float = 4.0,
    name: str | None = None,
) -> dict[str, Any]:
    """Draw where the model looks on a video's centre clip and write it as `.png`, `.gif` or `.mp4`.

    The clip is what the model sees (`load_clip`: centre clip, resized and cropped). The relevance
    map (`relevance`, or one block/head) is drawn over each frame as a heat map whose opacity
    grows with relevance, with a colour bar and the top-k predictions in the title. `.png` is a
    contact sheet of the frames (all of them up to 16, else 16 evenly spaced); `.gif` and `.mp4`
    are animations with one picture per frame. Files are written atomically.

    Args:
        model: One of the four ViViT models (moved nowhere; the clip goes to its device).
        video: A video path (`vivit.read_video`), or an already preprocessed clip `(C, T, h, w)`.
        out: Output file; its suffix chooses the format.
        pretrained_cfg: Preprocessing and label names; default `model.pretrained_cfg`.
        block, head: A single block's (head's) attention instead of the rollout (see `relevance`).
        top_k: Predictions in the title.
        true_label: Shown in the title when known.
        fps: Frames per second of an animation.
        name: The model's name for the title (default: its class).

    Returns:
        `{"out", "frames", "predictions"}`: the path written, the frames drawn, the top-k list
        (as `vivit.predict.top_predictions`).

    Raises:
        ValueError: A `video` tensor that is not a float `(C, T, h, w)` clip, unsupported `out` suffix, an
            `out` that is a folder, an `fps` a .gif cannot
            play (`render.check_animation_fps`), bad `block`/`head`, unreadable video.
        ImportError: matplotlib (or, for `.mp4`, PyAV) is not installed; the message says how to
            install it.
    """
    # matplotlib is optional: the drawing module is imported only when drawing
    from .render import (
        check_animation_fps,
        prediction_title,
        require_writer,
        token_heat_to_pixels,
        write_heat_overlay,
    )

    out = Path(out)
    require_writer(out)
    check_animation_fps(out, fps)  # before the model runs
    cfg = resolve_data_config(pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", None))
    labels_cfg = dict(pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", None) or {})
    is_clip = isinstance(video, torch.Tensor) and video.ndim == 4 and video.is_floating_point()
    if not (is_clip or isinstance(video, (str, os.PathLike))):
        # a uint8 tensor would be cast to float and run on 0..255 pixels: a wrong map, drawn without complaint
        got = (
            f"{video.dtype} tensor of shape {tuple(video.shape)}"
            if isinstance(video, torch.Tensor)
            else type(video).__name__
        )
        raise ValueError(
            "expected a video path or a preprocessed float clip (C, T, h, w) (vivit.explain.load_clip), got "
            f"{got}; for raw uint8 frames (T, H, W, 3) use vivit.create_transform(model.pretrained_cfg)(frames)"
        )
    clip = video if isinstance(video, torch.Tensor) else load_clip(video, cfg)
    param = next(model.parameters())
    x = clip[None].to(param.device, param.dtype)
    if block is None:
        heat, logits = _rollout(model, x)
    else:
        heat, _ = _rollout(model, x, block, head)
        with _eval_no_grad(model):
            logits = model(x)
    assert logits is not None
    predictions = top_predictions(logits[0], labels_cfg, top_k)
    frames = _display_frames(clip, cfg)
    what = "attention rollout" if block is None else f"block {_block_name(model, block)} attention"
    if head is not None:
        what += f", head {head}"
    query = "class token" if _vivit(model).num_prefix_tokens else "mean token"
    title = prediction_title(name or type(model).__name__, predictions, true_label)
    pixel_heat = token_heat_to_pixels(
        heat[0].float().cpu().numpy(), frames.shape[0], _vivit(model).patch_embed.kernel_size, frames.shape[1:3]
    )
    drawn = write_heat_overlay(out, frames, pixel_heat, title=title, caption=f"{what} ({query} as query)", fps=fps)
    return {"out": str(out), "frames": drawn, "predictions": predictions}


def _block_name(model: nn.Module, block: int) -> str:
    (index,) = _block_indices(model, [block])
    return _sites(model, index)[0].key.replace("blocks.", "").replace("temporal_", "temporal ")
