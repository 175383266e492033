"""The four ViViT models (Arnab et al., ICCV 2021, arXiv 2103.15691).

| class                          | paper   | attention                                              |
|--------------------------------|---------|--------------------------------------------------------|
| `SpatioTemporalViViT`          | Model 1 | joint attention over all t*h*w tokens                  |
| `FactorizedEncoderViViT`       | Model 2 | spatial encoder per frame, then a temporal encoder     |
| `FactorizedSelfAttentionViViT` | Model 3 | each block: attention over time, then over space       |
| `FactorizedDotProductViViT`    | Model 4 | half the heads attend over time, half over space       |

All take a float video `(B, C, T, H, W)` and return logits `(B, num_classes)`. Tokens are
time-major: `(t h w)`, which is what Scenic's checkpoints expect.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    Attention,
    Block,
    FactorizedDotProductAttention,
    FactorizedSelfAttentionBlock,
    TubeletEmbed,
    layer_norm,
    pair,
)
from .pos_embed import resample_pos_embed

__all__ = [
    "MODEL_CLASSES",
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionViViT",
    "SpatioTemporalViViT",
    "ViViT",
    "register_saver",
]

GlobalPool = Literal["token", "avg"]
OutputFormat = Literal["NCTHW", "NLC"]


def _check_arg_types(args: dict[str, Any]) -> None:
    """Constructor arguments of the wrong type get a ValueError naming the argument and what it takes
    (before: `'<' not supported between 'str' and 'int'` for `drop_rate='abc'`, a bare `int()` error)."""
    for name, value in args.items():
        if name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        elif name == "dynamic_size":
            if not isinstance(value, bool):
                raise ValueError(f"dynamic_size must be true or false, got {value!r}")
        elif value is not None and name not in ("global_pool",):  # sizes: an integer or an (h, w) pair
            sizes = value if name in ("img_size", "patch_size") and isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in sizes):
                raise ValueError(
                    f"{name} must be an integer{' or an (h, w) pair' if len(sizes) != 1 else ''}, got {value!r}"
                )


def _drop_path_rates(rate: float, depth: int) -> list[float]:
    # linear from 0 at the first block to `rate` at the last, as Scenic's Encoder does
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def _take_indices(indices: int | Sequence[int] | None, depth: int) -> set[int]:
    """timm semantics: None = every block, n = the last n blocks, a list = those (negatives allowed)."""
    if indices is None:
        return set(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"indices={indices}: the model has {depth} blocks")
        return set(range(depth - indices, depth))
    taken = set()
    for i in indices:
        if not -depth <= i < depth:
            raise ValueError(f"block index {i} out of range for {depth} blocks")
        taken.add(i % depth)
    return taken


def _grid3(tokens: torch.Tensor) -> tuple[int, int, int]:
    """The (nt, nh, nw) token grid of patch-embedded tokens `(B, D, nt, nh, nw)`."""
    nt, nh, nw = tokens.shape[2:]
    return int(nt), int(nh), int(nw)


def _check_output_fmt(output_fmt: str) -> None:
    if output_fmt not in ("NCTHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCTHW' or 'NLC', got {output_fmt!r}")


class ViViT(nn.Module):
    """The base of the four models: tokenizer, input checks, prefix/pos-emb, pooling, head, and the
    public API they share (`forward_features`, `forward_head`, `forward_intermediates`,
    `reset_classifier`, `group_matcher`, `save_pretrained`, ...). `vivit.create_model` returns one.

    Not built directly: use one of the four subclasses (see the module docstring).
    """

    allows_token_pool: bool = True
    # Submodules every model has (declared for type checkers: nn.Module's __getattr__ is untyped)
    patch_embed: TubeletEmbed
    cls_token: nn.Parameter | None
    pos_embed: nn.Parameter
    blocks: nn.ModuleList
    norm: nn.LayerNorm
    head: nn.Module

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 32,
        patch_size: int | tuple[int, int] = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int | None = None,
        num_classes: int = 400,
        global_pool: GlobalPool = "token",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_size: bool = False,
    ) -> None:
        super().__init__()
        _check_arg_types(
            dict(
                img_size=img_size,
                num_frames=num_frames,
                patch_size=patch_size,
                tubelet_size=tubelet_size,
                in_chans=in_chans,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                num_classes=num_classes,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                drop_path_rate=drop_path_rate,
                dynamic_size=dynamic_size,
            )
        )
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not self.allows_token_pool:
            raise ValueError(
                f"{type(self).__name__} has no class token (as in the paper and Scenic); use global_pool='avg'"
            )
        for arg, value in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("in_chans", in_chans),
            ("patch_size", min(pair(patch_size))),
        ):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        if tubelet_size < 1:
            raise ValueError(f"tubelet_size must be >= 1 (1 = uniform frame sampling), got {tubelet_size}")
        self.img_size = pair(img_size)
        self.num_frames = int(num_frames)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool: GlobalPool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.mlp_dim = mlp_dim if mlp_dim is not None else 4 * embed_dim
        self.num_prefix_tokens = 1 if global_pool == "token" else 0
        self.dynamic_size = dynamic_size
        self.grad_checkpointing = False
        self.pretrained_cfg: dict[str, Any] = {}

        self.patch_embed = TubeletEmbed(patch_size, tubelet_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size(self.num_frames, self.img_size)
        if min(self.grid_size) < 1:
            raise ValueError(
                f"num_frames={num_frames}, img_size={self.img_size} give no tokens with tubelet "
                f"{self.patch_embed.kernel_size} (t, h, w): the clip must hold at least one tubelet"
            )
        self.pos_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        # Everything needed to rebuild this architecture (saved in config.json).
        self.model_args: dict[str, Any] = dict(
            img_size=self.img_size,
            num_frames=self.num_frames,
            patch_size=self.patch_embed.patch_size,
            tubelet_size=tubelet_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_dim=self.mlp_dim,
            num_classes=num_classes,
            global_pool=global_pool,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            dynamic_size=dynamic_size,
        )

    # ---------------------------------------------------------------- construction helpers
    def _new_cls_token(self) -> nn.Parameter | None:
        return nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if self.num_prefix_tokens else None

    def _new_pos_embed(self, num_tokens: int) -> nn.Parameter:
        return nn.Parameter(torch.zeros(1, self.num_prefix_tokens + num_tokens, self.embed_dim))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("pos_embed"):
                nn.init.trunc_normal_(p, std=0.02)
            elif name.endswith("cls_token"):
                nn.init.normal_(p, std=1e-6)
        fan_in = self.patch_embed.proj.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=math.sqrt(1.0 / fan_in))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)

    # ---------------------------------------------------------------- input and tokens
    def _check_input(self, x: torch.Tensor, any_frames: bool = False) -> None:
        """Raises ValueError unless `x` is a video this model takes (`any_frames`: any whole number of
        tubelet slices, for Model 2's `forward_slices`)."""
        c = self.in_chans
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor video (B, C, T, H, W), got {type(x).__name__}")
        if x.ndim != 5:
            hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 4 else ""
            raise ValueError(f"expected a 5-D video tensor (B, C={c}, T, H, W), got shape {tuple(x.shape)}{hint}")
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point video (B, C, T, H, W), got dtype {x.dtype}; preprocess uint8 frames "
                "first, e.g. vivit.create_transform(model.pretrained_cfg)(frames), which scales pixels as the "
                "weights expect"
            )
        param_dtype = self.patch_embed.proj.weight.dtype
        if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"input dtype {x.dtype} does not match the model's parameters ({param_dtype}); use "
                f"x.to({param_dtype}), model.to({x.dtype}), or run under torch.autocast"
            )
        _, ch, t, h, w = x.shape
        if ch != c:
            if x.shape[2] == c:
                raise ValueError(
                    f"expected channels first (B, C={c}, T, H, W), got shape {tuple(x.shape)} which looks like "
                    "(B, T, C, H, W); use x.permute(0, 2, 1, 3, 4)"
                )
            raise ValueError(f"expected {c} channels at dim 1 of (B, C, T, H, W), got shape {tuple(x.shape)}")
        kt, kh, kw = self.patch_embed.kernel_size
        if t < kt or h < kh or w < kw:
            raise ValueError(
                f"input (T={t}, H={h}, W={w}) is smaller than one tubelet (t={kt}, h={kh}, w={kw}); "
                f"the model needs at least {kt} frames of {kh}x{kw} pixels"
            )
        grid = self.patch_embed.grid_size(t, (h, w))
        if any_frames and t % kt:
            raise ValueError(f"expected whole tubelet slices, a multiple of t={kt} frames; got T={t}")
        if grid != (grid[:1] + self.grid_size[1:] if any_frames else self.grid_size) and not self.dynamic_size:
            nt, nh, nw = self.grid_size
            raise ValueError(
                f"model expects {self.num_frames} frames of {self.img_size[0]}x{self.img_size[1]} "
                f"(token grid t={nt}, h={nh}, w={nw}), got T={t}, H={h}, W={w} (grid {grid}); create the model "
                f"with num_frames=/img_size= overrides (position embeddings are resampled) or dynamic_size=True"
            )

    def _tokenize(self, x: torch.Tensor, any_frames: bool = False) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, D, nt, nh, nw) after validating the input."""
        self._check_input(x, any_frames)
        return self.patch_embed(x)

    def _add_pos(
        self,
        x: torch.Tensor,
        cls_token: nn.Parameter | None,
        pos_embed: nn.Parameter,
        table_grid: tuple[int, int, int],
        grid: tuple[int, int, int],
    ) -> torch.Tensor:
        if cls_token is not None:
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos: torch.Tensor = pos_embed
        if grid != table_grid:  # only reachable with dynamic_size=True
            pos = resample_pos_embed(pos, table_grid, grid, self.num_prefix_tokens)
        return self.pos_drop(x + pos)

    def _run_blocks(self, blocks: Iterable[nn.Module], x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        for blk in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, grid, use_reentrant=False)
            else:
                x = blk(x, grid)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "token":
            return x[:, 0]
        return x[:, self.num_prefix_tokens :].mean(dim=1)

    def _grid_tokens(self, x: torch.Tensor, grid: tuple[int, int, int], output_fmt: OutputFormat) -> torch.Tensor:
        """Grid tokens (no prefix) `(B, t*h*w, D)` -> `(B, D, t, h, w)` ('NCTHW') or unchanged ('NLC')."""
        if output_fmt == "NLC":
            return x
        t, h, w = grid
        return rearrange(x, "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    # ---------------------------------------------------------------- public API
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalized tokens `(B, [1 +] N, D)` (Model 2: those of its temporal encoder)."""
        raise NotImplementedError

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = ...,
        norm: bool = ...,
        output_fmt: OutputFormat = ...,
        intermediates_only: Literal[False] = ...,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = ...,
        norm: bool = ...,
        output_fmt: OutputFormat = ...,
        *,
        intermediates_only: Literal[True],
    ) -> list[torch.Tensor]: ...

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        output_fmt: OutputFormat = "NCTHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-block token grids for dense video tasks (timm's `forward_intermediates`).

        Models 1, 3, 4 give `(B, D, nt, nh, nw)` per block ('NCTHW') or `(B, nt*nh*nw, D)` ('NLC').
        Model 2's block indices run over `depth + temporal_depth`: its spatial blocks give each
        frame's tokens in the same shapes, its temporal blocks `(B, D, nt, 1, 1)` / `(B, nt, D)`, and
        `norm` applies `norm` / `temporal_norm` respectively. Class tokens are left out.

        Args:
            x: video `(B, C, T, H, W)`.
            indices: blocks to return: None (all), n (the last n) or a list of indices.
            norm: apply the final norm to each returned intermediate.
            output_fmt: 'NCTHW' or 'NLC'.
            intermediates_only: return only the list.

        Returns:
            `(forward_features(x), intermediates)`, or the list alone.

        Raises:
            ValueError: an index out of range or an unknown `output_fmt`.
        """
        _check_output_fmt(output_fmt)
        features, intermediates = self._intermediates(x, indices, norm, output_fmt)
        return intermediates if intermediates_only else (features, intermediates)

    def _intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None, norm: bool, output_fmt: OutputFormat
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens of `forward_features` and apply the classifier (unless `pre_logits`)."""
        x = self._pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Video `(B, C, T, H, W)` -> logits `(B, num_classes)`."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: GlobalPool | None = None) -> None:
        """Replace the head with a fresh zero-initialized one (Scenic's init for a new task)."""
        if (
            global_pool is not None
            and global_pool != self.global_pool
            and (global_pool == "token") != (self.num_prefix_tokens == 1)
        ):
            raise ValueError(
                f"cannot switch global_pool from {self.global_pool!r} to {global_pool!r}: the class "
                "token is part of the architecture; create a new model instead"
            )
        self.num_classes = self.model_args["num_classes"] = num_classes
        ref = self.head.weight if isinstance(self.head, nn.Linear) else self.patch_embed.proj.weight
        if num_classes > 0:
            head = nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.head = head
        else:
            self.head = nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter-name patterns that group parameters by depth, in timm's `group_matcher` form.

        timm's `group_parameters` / `param_groups_layer_decay` (and `create_optimizer_v2(...,
        layer_decay=...)`) and `vivit.optim.param_groups_layer_decay` read it: groups are ordered
        by (key order, block index); `(99999,)` (timm's `MATCH_PREV_GROUP`) merges a pattern into
        the group before it; parameters no pattern matches (the head) form the last group.

        Args:
            coarse: accepted for timm compatibility; every block is its own group either way.

        Returns:
            `{"stem": patch embedding, class token and position table, "blocks": [(regex, suffix)]}`.
        """
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm\.", (99999,))],
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward: less memory, identical gradients."""
        self.grad_checkpointing = enable

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `model.safetensors` + `config.json` (timm's Hub layout) to `directory`; reload with
        `create_model(name, pretrained=directory)` or `create_model('local-dir:' + directory)`.

        The writer lives with the other file formats (`vivit.weights.saving.save_pretrained`), which
        registers itself here: models never import the weights package (DESIGN.md section 11).
        """
        if _SAVER is None:
            raise RuntimeError("no checkpoint writer is registered; import vivit (it registers vivit.weights.saving)")
        _SAVER(self, directory)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names that conventionally get no weight decay (position tables, cls tokens)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "cls_token"))}


class _JointTokenViViT(ViViT):
    """Models 1, 3, 4: one encoder over all t*h*w tokens with one joint position table."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        nt, nh, nw = self.grid_size
        self.cls_token = self._new_cls_token()
        self.pos_embed = self._new_pos_embed(nt * nh * nw)
        a = self.model_args
        dpr = _drop_path_rates(a["drop_path_rate"], a["depth"])
        self.blocks = nn.ModuleList(self._make_block(rate) for rate in dpr)
        self.norm = layer_norm(self.embed_dim)
        self._init_weights()

    def _make_block(self, drop_path: float) -> nn.Module:
        a = self.model_args
        return Block(
            self.embed_dim,
            a["num_heads"],
            self.mlp_dim,
            drop=a["drop_rate"],
            attn_drop=a["attn_drop_rate"],
            drop_path=drop_path,
            attn_layer=self.attn_layer,
        )

    attn_layer: type[Attention] = Attention

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._tokenize(x)
        grid = _grid3(x)
        x = rearrange(x, "b d t h w -> b (t h w) d")
        x = self._add_pos(x, self.cls_token, self.pos_embed, self.grid_size, grid)
        x = self._run_blocks(self.blocks, x, (grid[0], grid[1] * grid[2]))
        return self.norm(x)

    def _intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None, norm: bool, output_fmt: OutputFormat
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        take = _take_indices(indices, len(self.blocks))
        x = self._tokenize(x)
        grid = _grid3(x)
        x = self._add_pos(
            rearrange(x, "b d t h w -> b (t h w) d"), self.cls_token, self.pos_embed, self.grid_size, grid
        )
        intermediates = []
        for i, blk in enumerate(self.blocks):
            x = self._run_blocks([blk], x, (grid[0], grid[1] * grid[2]))
            if i in take:
                y = (self.norm(x) if norm else x)[:, self.num_prefix_tokens :]
                intermediates.append(self._grid_tokens(y, grid, output_fmt))
        return self.norm(x), intermediates


class SpatioTemporalViViT(_JointTokenViViT):
    """Model 1: every token attends to every other token across space and time.

    Args:
        img_size: frame size, int or (H, W).
        num_frames: frames per clip T.
        patch_size: spatial patch size, int or (h, w).
        tubelet_size: temporal extent t of a tubelet; 1 = uniform frame sampling.
        in_chans: input channels.
        embed_dim, depth, num_heads, mlp_dim: transformer width, blocks, heads, MLP width (4x default).
        num_classes: classifier outputs; 0 for no head.
        global_pool: 'token' (class token) or 'avg' (mean of all tokens).
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth
            (linearly increasing over blocks), active in training mode only.
        dynamic_size: resample position embeddings at forward time for inputs of other sizes.
    """


class FactorizedSelfAttentionViViT(_JointTokenViViT):
    """Model 3: each block attends over time, then over space (`attention_order`), then the MLP.

    Same arguments as `SpatioTemporalViViT` (no class token: `global_pool='avg'` only), plus
    `attention_order` 'time_space' (Scenic's default) or 'space_time'.
    """

    allows_token_pool = False

    def __init__(self, *, attention_order: Literal["time_space", "space_time"] = "time_space", **kwargs: Any) -> None:
        kwargs.setdefault("global_pool", "avg")
        self.attention_order = attention_order
        super().__init__(**kwargs)
        self.model_args["attention_order"] = attention_order

    def _make_block(self, drop_path: float) -> nn.Module:
        a = self.model_args
        return FactorizedSelfAttentionBlock(
            self.embed_dim,
            a["num_heads"],
            self.mlp_dim,
            drop=a["drop_rate"],
            attn_drop=a["attn_drop_rate"],
            drop_path=drop_path,
            attention_order=self.attention_order,
        )


class FactorizedDotProductViViT(_JointTokenViViT):
    """Model 4: the first half of the heads attends over time, the second half over space.

    Same arguments as `SpatioTemporalViViT` (no class token: `global_pool='avg'` only);
    `num_heads` must be even.
    """

    allows_token_pool = False
    attn_layer = FactorizedDotProductAttention

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("global_pool", "avg")
        super().__init__(**kwargs)


class FactorizedEncoderViViT(ViViT):
    """Model 2: a spatial encoder per frame (shared weights), then a temporal encoder over frames.

    Same arguments as `SpatioTemporalViViT` (which describe the spatial encoder), plus
    `temporal_depth` (4 in the paper's B model), `temporal_num_heads` and `temporal_mlp_dim`
    (default: those of the spatial encoder). `global_pool` applies to both encoders.
    """

    temporal_cls_token: nn.Parameter | None
    temporal_pos_embed: nn.Parameter
    temporal_blocks: nn.ModuleList
    temporal_norm: nn.LayerNorm

    def __init__(
        self,
        *,
        temporal_depth: int = 4,
        temporal_num_heads: int | None = None,
        temporal_mlp_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        a = self.model_args
        temporal_num_heads = a["num_heads"] if temporal_num_heads is None else temporal_num_heads
        temporal_mlp_dim = self.mlp_dim if temporal_mlp_dim is None else temporal_mlp_dim
        a.update(
            temporal_depth=temporal_depth, temporal_num_heads=temporal_num_heads, temporal_mlp_dim=temporal_mlp_dim
        )
        nt, nh, nw = self.grid_size
        common = dict(drop=a["drop_rate"], attn_drop=a["attn_drop_rate"])

        self.cls_token = self._new_cls_token()
        self.pos_embed = self._new_pos_embed(nh * nw)
        self.blocks = nn.ModuleList(
            Block(self.embed_dim, a["num_heads"], self.mlp_dim, drop_path=r, **common)
            for r in _drop_path_rates(a["drop_path_rate"], a["depth"])
        )
        self.norm = layer_norm(self.embed_dim)

        self.temporal_cls_token = self._new_cls_token()
        self.temporal_pos_embed = self._new_pos_embed(nt)
        self.temporal_blocks = nn.ModuleList(
            Block(self.embed_dim, temporal_num_heads, temporal_mlp_dim, drop_path=r, **common)
            for r in _drop_path_rates(a["drop_path_rate"], temporal_depth)
        )
        self.temporal_norm = layer_norm(self.embed_dim)
        self._init_weights()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style groups (see `ViViT.group_matcher`): stem, the spatial blocks (with `norm`),
        then the temporal blocks (the temporal class token and position table join the first of
        them, `temporal_norm` the last); the head last."""
        return {
            **super().group_matcher(coarse),
            "temporal_blocks": [
                (r"^temporal_blocks\.(\d+)", None),
                (r"^temporal_cls_token|^temporal_pos_embed", (0,)),
                (r"^temporal_norm\.", (99999,)),
            ],
        }

    def _spatial_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Video -> per-frame token sequences `((B nt), [1 +] nh*nw, D)` with the spatial pos-emb added."""
        x = self._tokenize(x)
        grid = _grid3(x)
        x = rearrange(x, "b d t h w -> (b t) (h w) d")
        return self._add_pos(x, self.cls_token, self.pos_embed, (1, *self.grid_size[1:]), (1, *grid[1:])), grid

    def _temporal_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings `(B, nt, D)` -> temporal sequence with its cls and pos-emb."""
        nt = frames.shape[1]
        table_grid = (self.grid_size[0], 1, 1)
        return self._add_pos(frames, self.temporal_cls_token, self.temporal_pos_embed, table_grid, (nt, 1, 1))

    def forward_frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings `(B, nt, D)`: the spatial encoder's pooled output for each tubelet slice."""
        return self._encode_slices(self._tokenize(x))

    def forward_slices(self, x: torch.Tensor) -> torch.Tensor:
        """`forward_frame_features` of any whole number of tubelet slices, for reuse across windows.

        The spatial encoder sees one slice (`t` frames) at a time, so a slice's embedding does not
        depend on the clip around it (paper Sec. 3.3, Model 2): `forward_slices(x)[:, i]` equals
        `forward_frame_features(clip)[:, j]` for any clip whose slice `j` holds the same pixels.
        `vivit.windows` encodes each slice of a video once this way and runs `forward_temporal` per
        window.

        Args:
            x: float video `(B, C, k * t, H, W)`, `k >= 1` slices of `t = tubelet_size` frames each, at
                the model's frame size (any size with `dynamic_size=True`).

        Returns:
            float32 `(B, k, D)`: each slice's pooled, normalized spatial embedding.

        Raises:
            ValueError: For a frame count that is not a multiple of `t`, or a wrong shape, size or dtype.
        """
        return self._encode_slices(self._tokenize(x, any_frames=True))

    def _encode_slices(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens `(B, D, nt, nh, nw)` -> pooled spatial embeddings `(B, nt, D)`."""
        grid = _grid3(tokens)
        x = rearrange(tokens, "b d t h w -> (b t) (h w) d")
        x = self._add_pos(x, self.cls_token, self.pos_embed, (1, *self.grid_size[1:]), (1, *grid[1:]))
        x = self.norm(self._run_blocks(self.blocks, x, None))
        return rearrange(self._pool(x), "(b t) d -> b t d", t=grid[0])  # not b=: einops cannot split 0 by b=0

    def forward_temporal(self, frames: torch.Tensor) -> torch.Tensor:
        """The temporal encoder on per-frame embeddings: `forward_features` after `forward_frame_features`.

        `forward_features(x) == forward_temporal(forward_frame_features(x))`; `forward_head` of the
        result gives logits (or pooled features with `pre_logits=True`).

        Args:
            frames: float `(B, nt, D)` per-frame embeddings (`forward_frame_features`, or the
                `forward_slices` of a clip's `nt` slices stacked in time order); `nt` must be the
                model's token frames unless `dynamic_size=True`.

        Returns:
            `(B, [1 +] nt, D)` normalized temporal tokens (the class token first with `global_pool='token'`).

        Raises:
            ValueError: For another shape, or another `nt` without `dynamic_size`.
        """
        nt = self.grid_size[0]
        if frames.ndim != 3 or frames.shape[2] != self.embed_dim or (frames.shape[1] != nt and not self.dynamic_size):
            raise ValueError(
                f"expected per-frame embeddings (B, nt={nt}, D={self.embed_dim}), got shape {tuple(frames.shape)}"
            )
        x = self._temporal_tokens(frames)
        return self.temporal_norm(self._run_blocks(self.temporal_blocks, x, None))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_temporal(self.forward_frame_features(x))

    def _intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None, norm: bool, output_fmt: OutputFormat
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        depth = len(self.blocks)
        take = _take_indices(indices, depth + len(self.temporal_blocks))
        x, grid = self._spatial_tokens(x)
        intermediates = []
        for i, blk in enumerate(self.blocks):
            x = self._run_blocks([blk], x, None)
            if i in take:
                y = rearrange(self.norm(x) if norm else x, "(b t) s d -> b t s d", t=grid[0])
                y = rearrange(y[:, :, self.num_prefix_tokens :], "b t s d -> b (t s) d")
                intermediates.append(self._grid_tokens(y, grid, output_fmt))
        x = self._temporal_tokens(rearrange(self._pool(self.norm(x)), "(b t) d -> b t d", t=grid[0]))
        for i, blk in enumerate(self.temporal_blocks, start=depth):
            x = self._run_blocks([blk], x, None)
            if i in take:
                y = (self.temporal_norm(x) if norm else x)[:, self.num_prefix_tokens :]
                intermediates.append(self._grid_tokens(y, (grid[0], 1, 1), output_fmt))
        return self.temporal_norm(x), intermediates


Saver = Callable[[ViViT, "str | os.PathLike[str]"], Path]
_SAVER: Saver | None = None


def register_saver(saver: Saver) -> None:
    """Set the function behind `ViViT.save_pretrained` (called once by `vivit.weights.saving`)."""
    global _SAVER
    _SAVER = saver


# registry variant -> class (names `vivit_{size}_{variant}`)
MODEL_CLASSES: dict[str, type[ViViT]] = {
    "st": SpatioTemporalViViT,
    "fe": FactorizedEncoderViViT,
    "fsa": FactorizedSelfAttentionViViT,
    "fdp": FactorizedDotProductViViT,
}
