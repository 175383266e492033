"""Position-embedding resampling for video token grids.

The old grid is always passed explicitly: a (t, h, w) table cannot be recovered from a token count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["resample_pos_embed", "resample_temporal_pos_embed"]


def _interp_space(grid: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    # grid: (t, D, h, w); bicubic/bilinear resample each frame's table independently
    align = mode == "linear_align_corners"
    mode = "bilinear" if mode.startswith("linear") else mode
    kwargs = {} if mode == "nearest" else {"align_corners": align}
    return F.interpolate(grid, size=size, mode=mode, **kwargs)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    num_prefix_tokens: int = 0,
    space_mode: str = "bicubic",
    time_mode: str = "linear",
) -> torch.Tensor:
    """Resample a joint space-time position table `(1, [prefix +] t*h*w, D)` to a new grid.

    Space is resampled per frame (`space_mode`: 'bicubic', 'bilinear', or 'linear_align_corners',
    the latter matching Scenic/scipy `zoom(order=1)`), then time linearly per spatial location.
    Prefix (cls) tokens are kept unchanged.

    Args:
        pos_embed: the table, `(1, num_prefix_tokens + prod(old_grid), D)`.
        old_grid: `(t, h, w)` the table was trained for.
        new_grid: `(t, h, w)` wanted.
        num_prefix_tokens: leading non-grid tokens (1 with a cls token).
        space_mode: interpolation over (h, w).
        time_mode: 'linear' or 'nearest' over t.
    """
    old_grid, new_grid = tuple(int(g) for g in old_grid), tuple(int(g) for g in new_grid)
    if old_grid == new_grid:
        return pos_embed
    expected = num_prefix_tokens + old_grid[0] * old_grid[1] * old_grid[2]
    if pos_embed.shape[1] != expected:
        raise ValueError(
            f"position table has {pos_embed.shape[1]} tokens but grid {old_grid} with "
            f"{num_prefix_tokens} prefix tokens needs {expected}"
        )
    prefix, table = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dtype = table.dtype
    t, h, w = old_grid
    nt, nh, nw = new_grid
    grid = rearrange(table.float(), "1 (t h w) d -> t d h w", t=t, h=h, w=w)
    if (h, w) != (nh, nw):
        grid = _interp_space(grid, (nh, nw), space_mode)
    if t != nt:
        seq = rearrange(grid, "t d h w -> 1 (d h w) t")
        seq = F.interpolate(seq, size=nt, mode=time_mode, **({"align_corners": False} if time_mode == "linear" else {}))
        grid = rearrange(seq, "1 (d h w) t -> t d h w", h=nh, w=nw)
    table = rearrange(grid, "t d h w -> 1 (t h w) d").to(dtype)
    return torch.cat([prefix, table], dim=1)


def resample_temporal_pos_embed(
    pos_embed: torch.Tensor, old_t: int, new_t: int, num_prefix_tokens: int = 0, mode: str = "linear"
) -> torch.Tensor:
    """Resample a 1D temporal table `(1, [prefix +] t, D)` (Model 2's temporal encoder)."""
    return resample_pos_embed(pos_embed, (old_t, 1, 1), (new_t, 1, 1), num_prefix_tokens, time_mode=mode)
