"""`create_model`: the one place where the registry (architectures) meets the weights (loading).

`vivit.models` knows nothing about files and `vivit.weights` nothing about names the user types;
this module joins them, so the arrows between packages point one way (see DESIGN.md section 11).
"""

from __future__ import annotations

import os
from typing import Any

from .models.registry import get_entry
from .models.vivit import ViViT
from .weights.loading import build_model, load_described_model, load_pretrained_model

__all__ = ["create_model"]


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **overrides: Any) -> ViViT:
    """Build a registered model, optionally with weights.

    Args:
        name: a name from `list_models()`; or, as in timm, `'hf-hub:org/repo[@revision]'` /
            `'local-dir:/path'`: a checkpoint whose config names its architecture (vivit's own
            `config.json` written by `save_pretrained` / `push_to_hub`, or a transformers ViViT).
        pretrained: False (fresh init), True (the entry's released weights; for `hf-hub:` /
            `local-dir:` names, the checkpoint's), or a checkpoint: a `.safetensors` file (vivit,
            timm/transformers ViT, transformers ViViT), a directory written by `save_pretrained` (vivit's
            or transformers'), a Scenic (Flax msgpack) checkpoint (a ViViT, or a 2D ViT, inflated), a
            Google `.npz` ViT, or `'hf-hub:org/repo'`. Pickled files (`.pt`, `.bin`, ...) are refused.
        **overrides: any constructor argument (e.g. `num_classes=10`, `num_frames=16`). With
            weights, `num_classes` gives a fresh (zero) head and size overrides resample position
            tables. `inflation=` configures inflating a 2D ViT: a tubelet kernel name (`'central'`,
            `'average'`) or a dict with `kernel`, `posemb`, `temporal_init` (Model 3: `'identity'`
            (default), `'copy'`, `'zero'`), see `vivit.weights.inflate_vit`.

    Returns:
        The model (a `vivit.ViViT`), in eval mode when weights were loaded. `model.pretrained_cfg`
        records its preprocessing, labels, source and `architecture` (the registered name). A model
        with weights is built on the meta device and takes the checkpoint's tensors (no random init
        first); one without is randomly initialised (Scenic's init: zero heads).

    Raises:
        ValueError: an unknown name, arguments of the wrong type or beyond the limits of
            `vivit.weights.validate` (checked before anything is allocated, naming the source), or a
            checkpoint that does not fit.
        FileNotFoundError: a checkpoint path that does not exist.
        ImportError: a Scenic checkpoint without msgpack installed (the message says how to install it).
        vivit.weights.WeightsDownloadError: weights that could not be downloaded.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        return load_described_model(name, bool(pretrained), overrides)
    entry = get_entry(name)
    if pretrained is False or pretrained is None:
        if "inflation" in overrides:
            raise ValueError("inflation= configures loading a 2D ViT: pass it together with pretrained=")
        where = name if not overrides else f"{name} with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}"
        model = build_model(entry.model_cls, {**entry.model_args, **overrides}, where, from_file=False, device=None)
        model.pretrained_cfg = {**(entry.pretrained_cfg or {}), "architecture": entry.name}
        return model
    return load_pretrained_model(entry, pretrained, overrides)
