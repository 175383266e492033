"""Building blocks shared by the four ViViT models.

Numerics follow Scenic (Flax) exactly: pre-LN residual blocks, LayerNorm eps 1e-6, tanh-approximated
GELU, biases on q/k/v/out and one attention kernel (`F.scaled_dot_product_attention`) for every
attention pattern. Tensor shapes in comments use B batch, N tokens, D width, H heads, d head width,
t/s the temporal/spatial token counts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "LAYER_NORM_EPS",
    "Attention",
    "Block",
    "DropPath",
    "FactorizedDotProductAttention",
    "FactorizedSelfAttentionBlock",
    "Mlp",
    "TubeletEmbed",
    "layer_norm",
    "pair",
]

LAYER_NORM_EPS = 1e-6
Grid = tuple[int, int]  # (temporal tokens t, spatial tokens s) of a time-major token sequence


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def pair(x: int | tuple[int, int]) -> tuple[int, int]:
    """An (h, w) pair from an int or a pair (sizes of frames, patches and crops)."""
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of each example with probability `drop_prob`.

    Scenic's code (`scenic/model_lib/layers/nn_layers.py` `StochasticDepth`, used by the ViViT encoder
    blocks) multiplies by `1 - mask` and does not rescale the kept branches, although its docstring says
    it scales by `1 / (1 - rate)`; timm rescales. We follow Scenic's code, so that the paper's recipes
    (drop path 0.2 / 0.3) train the models as Scenic trained them; evaluation is the identity either way.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.drop_prob)
        return x * keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Scenic `MlpBlock`: Dense -> GELU(tanh) -> Dropout -> Dense -> Dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    `grid` is accepted (and ignored) so that every attention in the package has one call signature.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, 3D) -> (3, B, H, N, d)
        return rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.attn_drop if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x)
        x = rearrange(self._sdpa(q, k, v), "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(x))


class FactorizedDotProductAttention(Attention):
    """Model 4: the first half of the heads attends over time, the second half over space.

    Tokens are time-major, so `(t s)` splits them into a (time, space) grid; each half keeps the
    other axis as a batch dimension. Outputs are concatenated time heads first, as in Scenic.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        if num_heads % 2:
            raise ValueError(
                f"factorized dot-product attention splits heads between time and space, so num_heads "
                f"must be even (got {num_heads})"
            )
        super().__init__(dim, num_heads, attn_drop, proj_drop)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        assert grid is not None, "FactorizedDotProductAttention needs the (t, s) token grid"
        t, s = grid
        qkv = rearrange(self.qkv(x), "b (t s) (three h d) -> three b t s h d", three=3, t=t, h=self.num_heads)
        half = self.num_heads // 2
        # 4-D (batch, heads, sequence, dim) inputs keep SDPA on its fused CPU kernel (5-D falls back
        # to the unfused math path): the other axis is folded into the batch
        q, k, v = rearrange(qkv[..., :half, :], "three b t s h d -> three (b s) h t d")
        time_out = rearrange(self._sdpa(q, k, v), "(b s) h t d -> b t s h d", s=s)
        q, k, v = rearrange(qkv[..., half:, :], "three b t s h d -> three (b t) h s d")
        space_out = rearrange(self._sdpa(q, k, v), "(b t) h s d -> b t s h d", t=t)
        x = rearrange(torch.cat([time_out, space_out], dim=3), "b t s h d -> b (t s) (h d)")
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-LN transformer block: `y = x + MHA(LN(x)); out = y + MLP(LN(y))`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_layer: type[Attention] = Attention,
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = attn_layer(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FactorizedSelfAttentionBlock(nn.Module):
    """Model 3: attention over time, then over space (or the reverse), then the MLP.

    Each attention is its own pre-LN residual on the regrouped tokens: over time the sequences are
    `(B s) t D`, over space `(B t) s D`. `norm1`/`attn` are the spatial (image-ViT) pair so a 2D
    ViT maps onto them unchanged; `temporal_norm`/`temporal_attn` are the new temporal pair.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attention_order: Literal["time_space", "space_time"] = "time_space",
    ) -> None:
        super().__init__()
        if attention_order not in ("time_space", "space_time"):
            raise ValueError(f"attention_order must be 'time_space' or 'space_time', got {attention_order!r}")
        self.attention_order = attention_order
        self.temporal_norm = layer_norm(dim)
        self.temporal_attn = Attention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)

    def _attend_time(self, x: torch.Tensor, t: int) -> torch.Tensor:
        # LayerNorm and the projections act per token, so they run in the time-major layout; only
        # q/k/v and the output are regrouped into one sequence over t per spatial position
        a = self.temporal_attn
        qkv = rearrange(
            a.qkv(self.temporal_norm(x)), "b (t s) (three h d) -> three (b s) h t d", three=3, t=t, h=a.num_heads
        )
        z = rearrange(a._sdpa(*qkv), "(b s) h t d -> b (t s) (h d)", s=x.shape[1] // t)
        return x + self.drop_path(a.proj_drop(a.proj(z)))

    def _attend_space(self, x: torch.Tensor, t: int) -> torch.Tensor:
        z = rearrange(x, "b (t s) d -> (b t) s d", t=t)  # a view: tokens are time-major
        z = z + self.drop_path(self.attn(self.norm1(z)))
        return rearrange(z, "(b t) s d -> b (t s) d", t=t)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        assert grid is not None, "FactorizedSelfAttentionBlock needs the (t, s) token grid"
        t = grid[0]
        if self.attention_order == "time_space":
            x = self._attend_space(self._attend_time(x, t), t)
        else:
            x = self._attend_time(self._attend_space(x, t), t)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TubeletEmbed(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (t, h, w), VALID padding.

    `tubelet_size=1` is uniform frame sampling (a 2D patch embedding applied to every frame).
    Leftover frames or pixels that do not fill a whole tubelet are dropped, as in Scenic.
    """

    def __init__(
        self,
        patch_size: int | tuple[int, int] = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.patch_size = pair(patch_size)
        self.tubelet_size = int(tubelet_size)
        self.kernel_size = (self.tubelet_size, *self.patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.kernel_size, stride=self.kernel_size)

    def grid_size(self, num_frames: int, img_size: tuple[int, int]) -> tuple[int, int, int]:
        """Token grid (nt, nh, nw) for a clip of `num_frames` frames of size `img_size`."""
        return (
            num_frames // self.tubelet_size,
            img_size[0] // self.patch_size[0],
            img_size[1] // self.patch_size[1],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, D, nt, nh, nw)."""
        return self.proj(x)
