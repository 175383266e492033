"""torch.hub entry points: one per registered vivit name.

    model = torch.hub.load("<owner>/<repo>", "vivit_b_fe_k400", pretrained=True)
    model = torch.hub.load("/path/to/checkout", "vivit_ti_st", source="local", num_classes=10)

Each entry point is `vivit.create_model(name, pretrained=pretrained, **overrides)`; the names are
generated from the registry, so they always match `vivit.list_models()`.
"""

from __future__ import annotations

import typing as _typing

dependencies = ["torch", "safetensors", "huggingface_hub", "einops", "numpy"]

import vivit as _vivit  # after `dependencies`: torch.hub checks those before importing anything

# torch.hub.list shows every public callable here: helpers and imports stay private (`_name`)


def _entry_point(name: str) -> _typing.Callable[..., _vivit.ViViT]:
    def load(pretrained: bool | str = False, **overrides: _typing.Any) -> _vivit.ViViT:
        return _vivit.create_model(name, pretrained=pretrained, **overrides)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = (
        f"vivit.create_model({name!r}, pretrained=pretrained, **overrides).\n\n"
        "Args:\n"
        "    pretrained: False (fresh init), True (the entry's released weights) or a checkpoint path.\n"
        "    **overrides: constructor arguments, e.g. num_classes=10, num_frames=16."
    )
    return load


globals().update({_name: _entry_point(_name) for _name in _vivit.list_models()})
