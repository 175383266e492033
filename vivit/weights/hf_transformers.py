"""HF transformers ViViT (`VivitForVideoClassification` / `VivitModel`) -> our `state_dict`.

Only Model 1 exists in transformers. Two key layouts are accepted: the one on disk and on the Hub
(transformers 4: `encoder.layer.N.attention.attention.query`, ...) and the one transformers 5 uses
in memory (`layers.N.attention.q_proj`, ...). Both are renamed onto one canonical form, then q/k/v
are fused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..models.vivit import SpatioTemporalViViT

__all__ = ["from_transformers"]

# (pattern, replacement) applied in order to each key, after stripping a leading 'vivit.'
_RENAMES: list[tuple[str, str]] = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),  # transformers 4
    (r"^layers\.(\d+)\.", r"blocks.\1."),  # transformers 5
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.(q|k|v)_proj\.", lambda m: ".attn." + {"q": "query", "k": "key", "v": "value"}[m[1]] + "."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]
_IGNORED = re.compile(r"^pooler\.")  # VivitModel's tanh pooler: not part of the classifier


def _rename(key: str) -> str:
    key = key.removeprefix("vivit.")
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def from_transformers(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert an HF transformers ViViT `state_dict` into one for our Model 1.

    Args:
        state_dict: keys of `VivitForVideoClassification` or `VivitModel`, transformers 4 (Hub)
            or 5 (in-memory) naming.
        model: a `SpatioTemporalViViT` with `global_pool='token'` (HF's classifier reads the cls
            token) and matching sizes. Build it with `num_classes=0` for a `VivitModel` backbone.

    Raises:
        ValueError: the model is not Model 1, or keys are missing / unexpected / mis-shaped.
    """
    if not isinstance(model, SpatioTemporalViViT) or model.global_pool != "token":
        raise ValueError(
            "transformers' ViViT is Model 1 with a class token: convert into a SpatioTemporalViViT with "
            f"global_pool='token', not {type(model).__name__}(global_pool={getattr(model, 'global_pool', None)!r})"
        )
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not _IGNORED.match(key.removeprefix("vivit.")):
            renamed[_rename(key)] = value
    out: dict[str, torch.Tensor] = {}
    for key in list(renamed):
        m = re.fullmatch(r"(blocks\.\d+\.attn)\.query\.(weight|bias)", key)
        if m:
            parts = [renamed.pop(f"{m[1]}.{w}.{m[2]}", None) for w in ("query", "key", "value")]
            if any(p is None for p in parts):
                raise ValueError(f"checkpoint has {m[1]} query but not all of key/value ({m[2]})")
            out[f"{m[1]}.qkv.{m[2]}"] = torch.cat(parts)
    out.update((k, v) for k, v in renamed.items() if ".attn.key." not in k and ".attn.value." not in k)
    leftovers = sorted(k for k in renamed if ".attn.key." in k or ".attn.value." in k)

    target = model.state_dict()
    missing = sorted(target.keys() - out.keys())
    unexpected = sorted((out.keys() - target.keys()) | set(leftovers))
    misshaped = [
        f"{k}: checkpoint {tuple(out[k].shape)}, model {tuple(target[k].shape)}"
        for k in sorted(out.keys() & target.keys())
        if out[k].shape != target[k].shape
    ]
    if missing or unexpected or misshaped:
        lines = [f"missing: {', '.join(missing)}"] if missing else []
        lines += [f"unexpected (after renaming): {', '.join(unexpected)}"] if unexpected else []
        lines += [f"mis-shaped {m}" for m in misshaped]
        raise ValueError("transformers ViViT weights do not fit the model:\n  " + "\n  ".join(lines))
    return {k: v.detach().to(torch.float32).clone() for k, v in out.items()}
