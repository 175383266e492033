"""The registered architectures: ViT sizes x the four ViViT variants, as data.

Names are `vivit_{size}_{variant}`: size in ti, s, b, l, h (the ViT widths; H uses 14x14
patches) and variant in st (Model 1), fe (Model 2), fsa (Model 3), fdp (Model 4). Defaults are
the paper's: 32 frames of 224x224, 16x16x2 tubelets, 400 classes.
"""

from __future__ import annotations

from .pretrained_cfgs import PRETRAINED_ENTRIES
from .registry import register_model
from .vivit import MODEL_CLASSES

SIZES: dict[str, dict[str, int]] = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3),
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "b": dict(embed_dim=768, depth=12, num_heads=12),
    "l": dict(embed_dim=1024, depth=24, num_heads=16),
    "h": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}
VARIANT_ARGS: dict[str, dict[str, object]] = {
    "st": dict(global_pool="token"),
    "fe": dict(global_pool="token", temporal_depth=4),
    "fsa": dict(global_pool="avg"),
    "fdp": dict(global_pool="avg"),
}
DEFAULT_ARGS: dict[str, object] = dict(img_size=224, num_frames=32, patch_size=16, tubelet_size=2, num_classes=400)


def architecture_args(size: str, variant: str) -> dict[str, object]:
    return {**DEFAULT_ARGS, **SIZES[size], **VARIANT_ARGS[variant]}


def _register_all() -> None:
    for size, size_args in SIZES.items():
        for variant, cls in MODEL_CLASSES.items():
            if variant == "fdp" and size_args["num_heads"] % 2:
                continue  # Model 4 splits heads half time / half space; ViT-Ti has 3 heads
            register_model(f"vivit_{size}_{variant}", cls, architecture_args(size, variant))
    for entry in PRETRAINED_ENTRIES:
        size, variant = entry["architecture"].split("_")[1:3]
        args = {**architecture_args(size, variant), **entry.get("model_args", {})}
        register_model(entry["name"], MODEL_CLASSES[variant], args, entry["pretrained_cfg"])


_register_all()
