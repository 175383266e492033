"""Optimizer parameter groups for fine-tuning: weight-decay exclusions and layer-wise LR decay.

Layers are numbered the way timm numbers them (`timm.models._manipulate.group_with_matcher`) from the
model's `group_matcher()`: each parameter gets an ordinal `(key index, regex groups..., suffix...)`
from the first pattern that matches it; ordinals are sorted and numbered 0, 1, ...; an ordinal ending
in 99999 (timm's `MATCH_PREV_GROUP`) joins the layer before it; unmatched parameters (the head) form
the last layer. So timm's own `param_groups_layer_decay` / `create_optimizer_v2(layer_decay=...)`
would group a vivit model exactly as this module does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["layer_ids", "param_groups_layer_decay"]

_MATCH_PREV_GROUP = 99999.0  # timm's MATCH_PREV_GROUP


_Matcher = tuple[re.Pattern[str], tuple[float, ...], tuple[float, ...]]  # (regex, ordinal prefix, suffix)


def _ordinal(name: str, matchers: list[_Matcher]) -> tuple[float, ...]:
    for pattern, prefix, suffix in matchers:
        m = pattern.match(name)
        if m:
            return prefix + tuple(float(g) for g in m.groups() if g is not None) + suffix
    return (float("inf"),)  # no pattern: the head, after everything


def layer_ids(names: Iterable[str], group_matcher: Mapping[str, Any]) -> dict[str, int]:
    """Parameter name -> layer index (0 = stem), by timm's `group_matcher` rules (module docstring).

    Args:
        names: parameter names, e.g. `n for n, _ in model.named_parameters()`.
        group_matcher: `model.group_matcher()`: `{group: regex or [(regex, suffix tuple or None), ...]}`.
    """
    matchers: list[_Matcher] = []
    for index, spec in enumerate(group_matcher.values()):
        if spec is None:
            continue
        for regex, suffix in [(spec, None)] if isinstance(spec, str) else spec:
            matchers.append((re.compile(regex), (float(index),), tuple(float(s) for s in suffix or ())))
    ordinals = {name: _ordinal(name, matchers) for name in names}
    layer_of: dict[tuple[float, ...], int] = {}
    layer = -1
    for ordinal in sorted(set(ordinals.values())):
        if layer < 0 or ordinal[-1] != _MATCH_PREV_GROUP:
            layer += 1
        layer_of[ordinal] = layer
    return {name: layer_of[ordinal] for name, ordinal in ordinals.items()}


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    *,
    lr: float,
    no_weight_decay_list: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay (BEiT, timm), ready for any torch optimizer.

    The layer of each parameter comes from `model.group_matcher()` (stem 0, one layer per block,
    Model 2's temporal blocks after its spatial ones, the head last; see `layer_ids`). A parameter in
    layer `i` of `n` gets `lr = lr * layer_decay ** (n - 1 - i)`: the head the full rate, the stem the
    smallest. Each group also carries timm's `lr_scale` (the factor); torch optimizers ignore that
    key, which is why `lr` itself is set. Biases, norms (every 1-D tensor) and the names in
    `model.no_weight_decay()` and `no_weight_decay_list` get no weight decay.

    Example:
        >>> groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75, lr=1e-4)
        >>> optimizer = torch.optim.AdamW(groups)

    Args:
        model: a vivit model (anything with `group_matcher()`).
        weight_decay: decay for weight matrices.
        layer_decay: per-layer multiplicative LR decay from the head down (1.0 disables it).
        lr: the base learning rate (the head's).
        no_weight_decay_list: further parameter names without weight decay.

    Returns:
        One dict per (layer, decay or not) with `params`, `lr`, `lr_scale`, `weight_decay`, `layer`.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    group_matcher = getattr(model, "group_matcher", None)
    if not callable(group_matcher):
        raise TypeError(f"{type(model).__name__} has no group_matcher(); expected a vivit model")
    layers = layer_ids((n for n, _ in named), group_matcher())
    last = max(layers.values(), default=0)
    no_decay = set(no_weight_decay_list)
    model_no_decay = getattr(model, "no_weight_decay", None)
    if callable(model_no_decay):
        no_decay |= set(model_no_decay())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in named:
        decay = p.ndim > 1 and name not in no_decay
        layer = layers[name]
        scale = layer_decay ** (last - layer)
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
                "layer": layer,
            },
        )
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]
