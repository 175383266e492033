"""Optimisers, learning-rate schedule and weight EMA for fine-tuning, by timm's names and Scenic's rules.

* `create_optimizer`: Scenic's ViViT optimiser (SGD with momentum 0.9, no Nesterov, no weight
  decay: `scenic/projects/vivit/configs/*`, `optimizer = 'momentum'`) or AdamW, with timm's
  weight-decay exclusions and optional layer-wise LR decay (`param_groups_layer_decay`).
* `warmup_cosine_lr`: Scenic's `'constant * cosine_decay * linear_warmup'` compound schedule
  (`scenic/train_lib/lr_schedules.py`), a pure function of the step.
* `ModelEmaV3`: an exponential moving average of the weights (timm `timm.utils.ModelEmaV3`).

Parameter groups with layer-wise decay:

Layers are numbered the way timm numbers them (`timm.models._manipulate.group_with_matcher`) from the
model's `group_matcher()`: each parameter gets an ordinal `(key index, regex groups..., suffix...)`
from the first pattern that matches it; ordinals are sorted and numbered 0, 1, ...; an ordinal ending
in 99999 (timm's `MATCH_PREV_GROUP`) joins the layer before it; unmatched parameters (the head) form
the last layer. So timm's own `param_groups_layer_decay` / `create_optimizer_v2(layer_decay=...)`
would group a vivit model exactly as this module does.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "ModelEmaV3",
    "create_optimizer",
    "layer_ids",
    "param_groups_layer_decay",
    "set_learning_rate",
    "warmup_cosine_lr",
]

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


def _param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's `param_groups_weight_decay`: 1-D tensors and `no_weight_decay()` names get none."""
    skip: set[str] = set()
    model_no_decay = getattr(model, "no_weight_decay", None)
    if callable(model_no_decay):
        skip = set(model_no_decay())
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
    ]


def create_optimizer(
    model: nn.Module,
    opt: str = "sgd",
    lr: float = 0.1,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    *,
    nesterov: bool = False,
    layer_decay: float | None = None,
    filter_bias_and_bn: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """A torch optimiser for `model`, as timm's `create_optimizer_v2` builds it.

    `opt="sgd"` (alias `"momentum"`) is Scenic's ViViT optimiser: `flax.optim.Momentum(beta=0.9,
    nesterov=False)` with `l2_decay_factor = 0` (`scenic/projects/vivit/configs/*`,
    `scenic/train_lib_deprecated/optimizers.py`). Its update `m = 0.9 m + g; w -= lr m` (momentum
    starting at zero) is `torch.optim.SGD(momentum=0.9, dampening=0)` exactly. `opt="adamw"` is
    `torch.optim.AdamW` (decoupled weight decay), the usual choice with layer decay (BEiT, timm).

    Every group carries `lr_scale` (1, or the layer-decay factor), which `set_learning_rate`
    applies, so a schedule can set one base rate for all groups.

    Args:
        model: the model (a vivit model for `layer_decay`: it needs `group_matcher()`).
        opt: `"sgd"` / `"momentum"` or `"adamw"`.
        lr: base learning rate (the head's with layer decay).
        weight_decay: decay of weight matrices (0 in Scenic's ViViT recipes).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum (Scenic's `'nesterov'` optimiser).
        layer_decay: per-layer LR decay factor from the head down (`param_groups_layer_decay`);
            None: one rate for every layer.
        filter_bias_and_bn: no weight decay on biases, norms and `model.no_weight_decay()` (timm).
        betas, eps: AdamW's.

    Returns:
        The optimiser; its groups' `lr` already set to `lr * lr_scale`.

    Raises:
        ValueError: an unknown `opt` or a negative rate.
    """
    name = opt.lower()
    if name not in ("sgd", "momentum", "adamw"):
        raise ValueError(f"unknown optimizer {opt!r}: expected 'sgd' (Scenic's 'momentum') or 'adamw'")
    if not (lr >= 0 and math.isfinite(lr)) or weight_decay < 0:
        raise ValueError(f"lr and weight_decay must be finite and >= 0, got lr={lr}, weight_decay={weight_decay}")
    if layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay, layer_decay, lr=lr)
    elif weight_decay and filter_bias_and_bn:
        groups = _param_groups_weight_decay(model, weight_decay)
    else:
        groups = [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
                "lr_scale": 1.0,
            }
        ]
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to `lr * group["lr_scale"]` (1 for groups without a scale)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Scenic's ViViT learning rate at optimiser step `step` (0-based: the rate of the first update is lr(0)).

    Scenic's `compound_lr_scheduler` with `factors = 'constant * cosine_decay * linear_warmup'`,
    `warmup_steps = int(2.5 * steps_per_epoch)`, `steps_per_cycle = total_steps`
    (`scenic/train_lib/lr_schedules.py`, `scenic/projects/vivit/configs/*`):

    * linear warm-up: `min(1, step / warmup_steps)` (so the very first update has rate 0, as in
      Scenic, whose `train_step` reads the rate of `global_step` before incrementing it);
    * cosine: over the `total_steps - warmup_steps` steps after the warm-up,
      `0.5 * (1 + cos(pi * p))` with `p = max(0, step - warmup_steps) / (total_steps - warmup_steps)`
      (taken modulo 1 as Scenic's cycles; a run never reaches `p = 1`). Skipped when the warm-up
      covers the whole run.

    Args:
        step: optimiser updates done so far (>= 0).
        base_lr: the peak rate (`base_learning_rate`).
        warmup_steps: warm-up length in updates (0: none).
        total_steps: updates of the whole run.

    Returns:
        The learning rate (Python float, computed in double precision; Scenic uses float32).
    """
    ratio = float(base_lr)
    if warmup_steps > 0:
        ratio *= min(1.0, step / warmup_steps)
    cycle = total_steps - int(warmup_steps)
    if cycle > 0:
        progress = max(0.0, step - warmup_steps) / cycle
        progress -= math.floor(progress)
        ratio *= max(0.0, 0.5 * (1.0 + math.cos(math.pi * (progress % 1.0))))
    return ratio


class ModelEmaV3(nn.Module):
    """An exponential moving average of a model's weights (timm's `ModelEmaV3`, same arguments).

    After each optimiser step call `ema.update(model, step)`; evaluate `ema.module`. Every
    floating-point entry of the state dict (parameters and buffers) moves as
    `ema = ema + (1 - decay) * (model - ema)` (`torch.lerp`); integer buffers are copied.
    With `use_warmup` the decay ramps up as `1 - (1 + step / warmup_gamma) ** -warmup_power`
    (capped at `decay`, floored at `min_decay`); the first `update_after_step + 1` updates copy.
    Scenic's ViViT recipes use no EMA; it is an option of `vivit train`.

    Args:
        model: the model to follow (copied now; pass the bare model, not a DDP wrapper).
        decay: the decay factor per update (e.g. 0.9998).
        min_decay, update_after_step, use_warmup, warmup_gamma, warmup_power: timm's schedule.
        device: keep the average on this device (default: the model's).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        min_decay: float = 0.0,
        update_after_step: int = 0,
        use_warmup: bool = False,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.min_decay = float(min_decay)
        self.update_after_step = int(update_after_step)
        self.use_warmup = bool(use_warmup)
        self.warmup_gamma = float(warmup_gamma)
        self.warmup_power = float(warmup_power)
        self.device = torch.device(device) if device is not None else None
        if self.device is not None:
            self.module.to(self.device)

    def get_decay(self, step: int | None = None) -> float:
        """The decay of the update after optimiser step `step` (timm's rule; None: `decay`)."""
        if step is None:
            return self.decay
        step = max(0, step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        if self.use_warmup:
            decay = 1 - (1 + step / self.warmup_gamma) ** -self.warmup_power
            return max(min(decay, self.decay), self.min_decay)
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Move the average towards `model`'s current weights."""
        decay = self.get_decay(step)
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            model_v = model_v.detach().to(ema_v.device)
            if ema_v.is_floating_point():
                ema_v.lerp_(model_v.to(ema_v.dtype), 1.0 - decay)
            else:
                ema_v.copy_(model_v)

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy `model`'s weights into the average."""
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            ema_v.copy_(model_v.detach().to(ema_v.device))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
