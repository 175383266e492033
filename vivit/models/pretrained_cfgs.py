"""Pretrained entries as data: which architecture, which arguments, where the weights come from.

Each entry: `name`, `architecture` (a `vivit_{size}_{variant}` name), optional `model_args`
(overrides the weights need) and `pretrained_cfg`. Sources are tried in order; each names its
`format` (how it is converted): 'vivit' (our safetensors), 'scenic' (Flax msgpack, converted once
and cached as safetensors), 'transformers' (HF ViViT), 'vit' (a 2D image ViT, inflated).
Depths and class counts are read from the checkpoint tensors, never from these entries.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED_ENTRIES", "label_names"]

_LABELS = Path(__file__).resolve().parent / "labels"  # beside the registry that names them
PAPER = "https://arxiv.org/abs/2103.15691"


@cache
def label_names(name: str) -> tuple[str, ...]:
    """Class names, one per logit, from `vivit/models/labels/{name}.txt` (provenance in SOURCES.md there)."""
    return tuple((_LABELS / f"{name}.txt").read_text(encoding="utf-8").splitlines())


# Scenic's released video preprocessing (eval): 32 frames, short side 256, centre crop 224,
# pixels x/255*2-1 (mean = std = 0.5), 4 clips x 3 crops with averaged logits.
_KINETICS_EVAL = dict(
    input_size=(3, 32, 224, 224),
    frame_stride=2,
    resize_size=256,
    crop_size=224,
    interpolation="bilinear",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    test_views=(4, 3),
    antialias=False,  # DMVR resizes with plain bilinear: match it for the released accuracy
)
_SCENIC_LICENSE = "Apache-2.0"  # google-research/scenic, code and released checkpoints


def _scenic(path: str) -> dict[str, str]:
    # relative to vivit.weights.hub.scenic_base_url() (overridable by VIVIT_SCENIC_BASE_URL)
    return {"format": "scenic", "url": f"{{scenic}}/{path}/checkpoint"}


def _kinetics(name: str, arch: str, classes: str, top1: float, scenic_path: str, extra_sources=()) -> dict[str, Any]:
    labels = label_names(classes)
    return {
        "name": name,
        "architecture": arch,
        "model_args": {"num_classes": len(labels)},
        "pretrained_cfg": {
            "sources": (*extra_sources, _scenic(scenic_path)),
            "dataset": classes,
            "num_classes": len(labels),
            "label_names": labels,
            "metrics": {"top1": top1, "views": "4x3"},
            "license": _SCENIC_LICENSE,
            "paper": PAPER,
            **_KINETICS_EVAL,
        },
    }


PRETRAINED_ENTRIES: list[dict[str, Any]] = [
    _kinetics(
        "vivit_b_st_k400",
        "vivit_b_st",
        "kinetics400",
        79.9,
        "kinetics_400/vivit_base_16x2_unfactorized",
        # the same weights, converted by HF; safetensors only on the PR branch
        extra_sources=(
            {
                "format": "transformers",
                "hf_hub": "google/vivit-b-16x2-kinetics400",
                "revision": "refs/pr/3",
                "filename": "model.safetensors",
            },
        ),
    ),
    _kinetics("vivit_b_fe_k400", "vivit_b_fe", "kinetics400", 78.4, "kinetics_400/vivit_base_16x2_fe"),
    _kinetics("vivit_l_fe_k400", "vivit_l_fe", "kinetics400", 80.3, "kinetics_400/vivit_large_16x2_fe"),
    _kinetics("vivit_l_fe_k600", "vivit_l_fe", "kinetics600", 81.6, "kinetics_600/vivit_large_16x2_fe"),
    {
        "name": "vivit_l_fe_ek100",
        "architecture": "vivit_l_fe",
        "model_args": {"num_classes": 397},
        "pretrained_cfg": {
            "sources": (_scenic("epic_kitchens/vivit_large_16x2_fe"),),
            "dataset": "epic_kitchens_100",
            "num_classes": 397,
            # logits [:300] are nouns, [300:] verbs (Scenic's class_splits = [300, 97])
            "label_names": label_names("epic_kitchens_100_nouns") + label_names("epic_kitchens_100_verbs"),
            "class_splits": (300, 97),
            "split_names": ("noun", "verb"),
            "metrics": {"action_top1": 43.6, "views": "4x1"},
            "license": _SCENIC_LICENSE,
            "paper": PAPER,
            **{**_KINETICS_EVAL, "frame_stride": 1, "test_views": (4, 1)},
        },
    },
]

# Video models initialised from the ImageNet-21k ViTs the paper started from (timm's copies on
# the Hub): Ti/S from "How to train your ViT" (augreg), B/L/H the original Google release.
_IN21K = {
    "ti": "timm/vit_tiny_patch16_224.augreg_in21k",
    "s": "timm/vit_small_patch16_224.augreg_in21k",
    "b": "timm/vit_base_patch16_224.orig_in21k",
    "l": "timm/vit_large_patch16_224.orig_in21k",
    "h": "timm/vit_huge_patch14_224.orig_in21k",
}
for _size, _repo in _IN21K.items():
    for _variant in ("st", "fe", "fsa", "fdp"):
        if (_size, _variant) == ("ti", "fdp"):
            continue  # no vivit_ti_fdp architecture (3 heads cannot be split between time and space)
        PRETRAINED_ENTRIES.append(
            {
                "name": f"vivit_{_size}_{_variant}_in21k",
                "architecture": f"vivit_{_size}_{_variant}",
                "pretrained_cfg": {
                    "sources": ({"format": "vit", "hf_hub": _repo, "filename": "model.safetensors"},),
                    "dataset": "imagenet21k (image weights inflated to video)",
                    "inflation": {"kernel": "central", "posemb": "resize_tile", "temporal_init": "identity"},
                    "num_classes": 400,
                    "label_names": None,
                    "license": "Apache-2.0",
                    "paper": PAPER,
                    **_KINETICS_EVAL,
                },
            }
        )

# A tiny Model 1 (SpatioTemporalViViT, width 64, 4 blocks, 0.16M parameters) trained by
# examples/make_demo.py, with the recipe and the moving-discs generator of examples/finetune.py, to
# tell which way a disc moves in synthetic 8-frame 32x32 clips. It ships inside the package, with a
# held-out sample clip, so that `vivit predict` works offline on a fresh install. `synthetic_data`
# makes the CLI say, beside each answer on a user's video, that such an answer means nothing.
PRETRAINED_ENTRIES.append(
    {
        "name": "vivit_demo",
        "architecture": "vivit_ti_st",
        "model_args": dict(
            img_size=32,
            num_frames=8,
            patch_size=8,
            tubelet_size=2,
            embed_dim=64,
            depth=4,
            num_heads=4,
            mlp_dim=128,
            num_classes=4,
            global_pool="token",
        ),
        "pretrained_cfg": {
            "sources": ({"format": "vivit", "file": "assets/vivit_demo.safetensors"},),
            "dataset": "synthetic moving discs (examples/make_demo.py)",
            "synthetic_data": True,  # trained on generated clips only, never on real video
            "num_classes": 4,
            "label_names": ("right", "left", "down", "up"),  # direction of motion
            "metrics": {"top1": 99.0, "views": "1x1"},  # 2000 held-out clips (make_demo.py)
            "license": "Apache-2.0",
            "input_size": (3, 8, 32, 32),
            "frame_stride": 1,
            "resize_size": 32,
            "crop_size": 32,
            "interpolation": "bilinear",
            "antialias": False,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "test_views": (1, 1),
        },
    }
)
