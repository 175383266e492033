"""`create_model`: the one place where the registry (architectures) meets the weights (loading).

`vivit.models` knows nothing about files and `vivit.weights` nothing about names the user types;
this module joins them, so the arrows between packages point one way (see DESIGN.md section 8).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .models.registry import get_entry
from .weights.loading import load_pretrained_model

__all__ = ["create_model"]


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally with weights.

    Args:
        name: a name from `list_models()`.
        pretrained: False (random init), True (the entry's released weights), or a path to a
            `.safetensors` file / a directory written by `save_pretrained` / `'hf-hub:org/repo'`.
        **overrides: any constructor argument (e.g. `num_classes=10`, `num_frames=16`). With
            weights, `num_classes` gives a fresh head and size overrides resample position tables.
    """
    entry = get_entry(name)
    if pretrained is False or pretrained is None:
        model = entry.model_cls(**{**entry.model_args, **overrides})
        if entry.pretrained_cfg is not None:
            model.pretrained_cfg = dict(entry.pretrained_cfg)
        return model
    return load_pretrained_model(entry, pretrained, overrides)
