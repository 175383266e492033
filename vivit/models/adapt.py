"""Fitting a checkpoint's state dict to a model built with other sizes (timm's `checkpoint_filter_fn`).

A converted checkpoint matches the architecture it was trained with; a model may be built with
another class count (a fresh head) or another frame count or frame size (resampled position tables).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .layers import pair
from .pos_embed import resample_pos_embed
from .vivit import FactorizedEncoderViViT, ViViT

__all__ = ["checkpoint_filter_fn", "token_grid"]


def token_grid(args: Mapping[str, Any]) -> tuple[int, int, int]:
    """The (nt, nh, nw) tubelet grid of constructor arguments (`img_size`, `patch_size`, `num_frames`,
    `tubelet_size`)."""
    (h, w), (ph, pw) = pair(args["img_size"]), pair(args["patch_size"])
    return args["num_frames"] // args["tubelet_size"], h // ph, w // pw


def checkpoint_filter_fn(
    state_dict: Mapping[str, torch.Tensor], model: ViViT, checkpoint_args: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """`state_dict` of a checkpoint made with `checkpoint_args`, fitted to `model`.

    * another class count (or `num_classes=0`): a fresh head, zero-initialised as Scenic does for a
      new task (no head for 0);
    * another token grid (frames, frame size, tubelet or patch): position tables resampled from the
      checkpoint's grid to the model's (`resample_pos_embed`: space bicubic per frame, time linear);
      Model 2's spatial and temporal tables separately.

    Works for a model on the meta device (only its sizes are read).

    Args:
        state_dict: The checkpoint in vivit's names (float tensors).
        model: The model to load it into.
        checkpoint_args: The constructor arguments the checkpoint was made with (`num_classes`,
            `img_size`, `patch_size`, `num_frames`, `tubelet_size`).

    Returns:
        A new dict (the tensors that need no change are the same objects).
    """
    sd = dict(state_dict)
    if model.num_classes != checkpoint_args.get("num_classes", model.num_classes) or model.num_classes == 0:
        sd.pop("head.weight", None)
        sd.pop("head.bias", None)
        if model.num_classes:
            sd["head.weight"] = torch.zeros(model.num_classes, model.embed_dim)
            sd["head.bias"] = torch.zeros(model.num_classes)
    old, new = token_grid(checkpoint_args), model.grid_size
    if old != new and "pos_embed" in sd:
        prefix = model.num_prefix_tokens
        if isinstance(model, FactorizedEncoderViViT):
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (1, *old[1:]), (1, *new[1:]), prefix)
            if "temporal_pos_embed" in sd:
                sd["temporal_pos_embed"] = resample_pos_embed(
                    sd["temporal_pos_embed"], (old[0], 1, 1), (new[0], 1, 1), prefix
                )
        else:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], old, new, prefix)
    return sd
