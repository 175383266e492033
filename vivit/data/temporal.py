"""Destroy a clip's time on purpose: does a model use motion, or only what single frames show?

A model that learned motion loses accuracy when its clips' frames are shuffled, played backwards
or frozen on the middle frame; a model that recognises scenes and objects does not. These are
functions on frame order, applied to preprocessed clips (the spatial preprocessing of a view is
the same for every frame, so reordering after it equals reordering the decoded frames).

* `"shuffle"`: a random permutation of the frames (seeded: the same clip gets the same order);
* `"reverse"`: the frames in reverse order;
* `"middle"`: every frame replaced by the middle one (`T // 2`): no motion at all, the scene kept.

Used by `vivit train` (at the end of training) and `vivit evaluate --temporal-check`.
"""

from __future__ import annotations

import torch

__all__ = ["TEMPORAL_PERTURBATIONS", "perturb_time", "temporal_order"]

#: The perturbations, in the order they are reported.
TEMPORAL_PERTURBATIONS = ("shuffle", "reverse", "middle")


def temporal_order(num_frames: int, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices that reorder `num_frames` frames as `mode` says.

    Args:
        num_frames: T (>= 1).
        mode: `"none"`, `"shuffle"`, `"reverse"` or `"middle"`.
        generator: randomness of `"shuffle"` (CPU generator; None: torch's global one).

    Returns:
        int64 `(T,)`: frame `i` of the result is frame `order[i]` of the clip.

    Raises:
        ValueError: an unknown mode or `num_frames < 1`.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode == "none":
        return torch.arange(num_frames)
    if mode == "shuffle":
        return torch.randperm(num_frames, generator=generator)
    if mode == "reverse":
        return torch.arange(num_frames - 1, -1, -1)
    if mode == "middle":
        return torch.full((num_frames,), num_frames // 2, dtype=torch.int64)
    raise ValueError(
        f"unknown temporal perturbation {mode!r}; expected one of none, {', '.join(TEMPORAL_PERTURBATIONS)}"
    )


def perturb_time(
    clips: torch.Tensor, mode: str, generator: torch.Generator | None = None, *, time_dim: int = -3
) -> torch.Tensor:
    """Reorder the frames of clips: `(..., C, T, H, W)` by default (the models' layout).

    All clips of the call share one order (one draw for `"shuffle"`), so the views of one video are
    perturbed alike.

    Args:
        clips: float or uint8 tensor with a time axis at `time_dim`, e.g. `(C, T, H, W)` or
            `(V, C, T, H, W)`.
        mode: see `temporal_order`.
        generator: randomness of `"shuffle"`.
        time_dim: the time axis (`-3` for `(C, T, H, W)`; `0` for decoded `(T, H, W, C)` frames).

    Returns:
        A new tensor of the same shape and dtype (the input itself for `"none"`).
    """
    if mode == "none":
        return clips
    order = temporal_order(clips.shape[time_dim], mode, generator)
    return clips.index_select(time_dim, order.to(clips.device))
