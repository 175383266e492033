"""Optimizer parameter groups for fine-tuning: weight-decay exclusions and layer-wise LR decay."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

__all__ = ["param_groups_layer_decay"]


def _layer_id(name: str, num_spatial: int, num_layers: int) -> int:
    """Depth of a parameter: 0 = stem (patch embed, spatial tokens), blocks 1.., head last."""
    if name.startswith(("patch_embed.", "cls_token", "pos_embed")):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    if m:
        return int(m[1]) + 1
    m = re.match(r"temporal_blocks\.(\d+)\.", name)
    if m:
        return num_spatial + int(m[1]) + 1
    if name.startswith(("temporal_cls_token", "temporal_pos_embed")):
        return num_spatial + 1  # enters the model with the first temporal block
    return num_layers + 1  # final norms and head


def param_groups_layer_decay(
    model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """Parameter groups with learning-rate scale `layer_decay ** (num_layers + 1 - depth)`.

    Biases, norms and the names in `model.no_weight_decay()` get no weight decay. Model 2's
    temporal blocks count as deeper than its spatial blocks. Each group carries `lr_scale`:
    multiply your base learning rate by it (as timm and BEiT do).

    Args:
        model: a vivit model.
        weight_decay: decay for weight matrices.
        layer_decay: per-layer multiplicative LR decay from the head down (1.0 disables it).
    """
    num_spatial = len(model.blocks)
    num_layers = num_spatial + len(getattr(model, "temporal_blocks", ()))
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in no_decay
        layer = _layer_id(name, num_spatial, num_layers)
        group = groups.setdefault(
            (layer, decay),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": layer_decay ** (num_layers + 1 - layer)},
        )
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]
