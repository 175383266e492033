"""Pretrained entries as data: which architecture, which arguments, where the weights come from.

Each entry: `name`, `architecture` (a `vivit_{size}_{variant}` name), optional `model_args`
(overrides the weights need) and `pretrained_cfg` (sources, preprocessing, labels, metrics).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRETRAINED_ENTRIES"]

PRETRAINED_ENTRIES: list[dict[str, Any]] = []
