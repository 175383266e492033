"""Model registry: names -> (model class, default arguments, optional pretrained config).

An architecture (`vivit_b_fe`) and a pretrained entry (`vivit_b_fe_k400`) are both registered
names; a pretrained entry is the architecture plus the arguments its weights need plus a
`pretrained_cfg`. Adding released weights is therefore a data change (see `pretrained_cfgs.py`).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .vivit import ViViT

__all__ = ["ModelEntry", "get_entry", "list_models", "matching_architectures", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered name: the class, its default constructor arguments, its weights (or None)."""

    name: str
    model_cls: type[ViViT]
    model_args: Mapping[str, Any]
    pretrained_cfg: Mapping[str, Any] | None = field(default=None)

    @property
    def has_weights(self) -> bool:
        return self.pretrained_cfg is not None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    model_cls: type[ViViT],
    model_args: Mapping[str, Any],
    pretrained_cfg: Mapping[str, Any] | None = None,
) -> ModelEntry:
    """Register `name`; registering a name twice is an error (no silent overwrite).

    Args:
        name: the name `create_model` will take.
        model_cls: one of the four model classes (or a subclass of `vivit.ViViT`).
        model_args: default constructor arguments.
        pretrained_cfg: where the weights come from and how to preprocess for them (see
            `vivit.models.pretrained_cfgs`), or None for an architecture without weights.
    """
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    entry = ModelEntry(
        name,
        model_cls,
        MappingProxyType(dict(model_args)),
        None if pretrained_cfg is None else MappingProxyType(dict(pretrained_cfg)),
    )
    _REGISTRY[name] = entry
    return entry


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or a ValueError listing close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        # every name shares "vivit_", so keep only those about as close as the closest (sorted, for a stable line)
        ratios = {n: difflib.SequenceMatcher(None, name, n).ratio() for n in _REGISTRY}
        best = max(ratios.values(), default=0.0)
        close = sorted(n for n, r in ratios.items() if r >= max(0.6, best - 0.05))[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} (vivit.list_models() lists all {len(_REGISTRY)} names)"
        ) from None


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names matching the fnmatch `pattern`, sorted.

    Args:
        pattern: shell-style pattern, e.g. 'vivit_b_*'.
        pretrained: only names that come with weights.
    """
    return sorted(
        n for n, e in _REGISTRY.items() if fnmatch.fnmatchcase(n, pattern) and (e.has_weights or not pretrained)
    )


def matching_architectures(model_cls: type[ViViT], **model_args: Any) -> list[str]:
    """Registered architectures (names without weights) of `model_cls` whose default arguments
    equal every given one, e.g. `matching_architectures(SpatioTemporalViViT, embed_dim=192, num_heads=3)`
    -> `['vivit_ti_st']`. Used to name the architecture a foreign checkpoint fits."""
    return sorted(
        n
        for n, e in _REGISTRY.items()
        if not e.has_weights
        and e.model_cls is model_cls
        and all(_same(e.model_args.get(k), v) for k, v in model_args.items())
    )


def _same(a: Any, b: Any) -> bool:
    # sizes may be an int or an (h, w) pair
    def norm(v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(v, list) else v

    return a == b or norm(a) == norm(b)
