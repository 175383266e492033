"""What `vivit info` says about a model: its size, compute, input, preprocessing and weights.

`describe_model(model)` returns `(field, text)` pairs for a model built on the meta device (so even
ViViT-H is described without allocating anything); `count_macs` counts the multiply-adds of one
forward pass, which the paper's tables call "FLOPs" (Arnab et al. 2021, Table 6).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .data.transforms import resolve_data_config
from .models.registry import list_models
from .models.vivit import ViViT
from .threads import describe_threads
from .weights.hub import scenic_base_url

__all__ = ["MODEL_KINDS", "count_macs", "describe_model"]

#: What each class is, in the paper's words (Section 3.3).
MODEL_KINDS = {
    "SpatioTemporalViViT": "Model 1: joint space-time attention",
    "FactorizedEncoderViViT": "Model 2: factorized encoder, spatial then temporal",
    "FactorizedSelfAttentionViViT": "Model 3: factorized self-attention, time then space",
    "FactorizedDotProductViViT": "Model 4: factorized dot-product attention, half the heads each",
}


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-adds of one forward pass (the paper's "FLOPs"), counted on the meta device.

    Args:
        model: Any module; it is run on an empty meta tensor (nothing is computed or allocated).
        input_shape: The input's shape, e.g. `(1, 3, 32, 224, 224)`.

    Returns:
        Multiply-adds (torch's `FlopCounterMode` counts 2 FLOPs per multiply-add).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(tuple(input_shape)))
    return counter.get_total_flops() / 2


def _giga(count: float) -> str:
    """Billions with one decimal, or three significant digits for small models (0.0117, not 0.0)."""
    value = count / 1e9
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ordinal(n: int) -> str:
    """`frame`, `2nd`, `3rd`, `4th`, ... for 'every ... frame'."""
    if n == 1:
        return "single"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fmt_tuple(values: Sequence[Any]) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + ")"


def _describe_source(src: Mapping[str, Any]) -> str:
    fmt = src.get("format", "?")
    if "url" in src:
        where = src["url"].replace("{scenic}", scenic_base_url())
    elif "file" in src:
        where = f"bundled with the package (vivit/{src['file']})"
    else:
        where = f"hf-hub:{src.get('hf_hub')}"
        extras = [v for v in (src.get("filename"), src.get("revision") and f"revision {src['revision']}") if v]
        where += f" ({', '.join(extras)})" if extras else ""
    return f"{fmt}: {where}"


def _describe_metrics(metrics: Mapping[str, Any]) -> str:
    views = metrics.get("views")
    parts = [f"{k} {v}%" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in metrics.items() if k != "views"]
    return ", ".join(parts) + (f" ({views} views)" if views else "")


def describe_model(
    model: ViViT, pretrained_cfg: Mapping[str, Any] | None = None, *, name: str | None = None, macs: bool = True
) -> Iterator[tuple[str, str]]:
    """`(field, text)` pairs describing a model: class, widths, parameters, GMACs, input, preprocessing,
    test views, dataset, classes, accuracy, weights, licence, and the CPU thread policy it would run
    with here (`vivit.threads.describe_threads`).

    Args:
        model: The model, best built on the meta device (`with torch.device("meta"): ...`).
        pretrained_cfg: What its weights carry (a registry entry's cfg); None or empty: no weights.
        name: Its registered name (to list the entries that have weights when it has none).
        macs: Count multiply-adds (the slow part for big models: about a second for ViViT-H).
    """
    yield from _describe_model(model, pretrained_cfg, name, macs)
    yield "threads", describe_threads()


def _describe_model(
    model: ViViT, pretrained_cfg: Mapping[str, Any] | None, name: str | None, macs: bool
) -> Iterator[tuple[str, str]]:
    a = model.model_args
    cls = type(model).__name__
    yield "class", f"{cls} ({MODEL_KINDS.get(cls, 'custom')})"
    widths = f"embed_dim {a['embed_dim']}, depth {a['depth']}, heads {a['num_heads']}, mlp {a['mlp_dim']}"
    if "temporal_depth" in a:
        widths += (
            f"; temporal depth {a['temporal_depth']}, heads {a['temporal_num_heads']}, mlp {a['temporal_mlp_dim']}"
        )
    yield "architecture", f"{widths}; pool {a['global_pool']}; {a['num_classes']} outputs"
    params = sum(p.numel() for p in model.parameters())
    yield "parameters", f"{params / 1e6:.1f}M ({params:,})"

    height, width = model.img_size
    shape = (1, model.in_chans, model.num_frames, height, width)
    count = count_macs(model, shape) if macs else 0.0
    t, ph, pw = model.patch_embed.kernel_size
    nt, nh, nw = model.grid_size
    cfg = dict(pretrained_cfg or {})
    line = f"{_giga(count)} per view of {'x'.join(map(str, shape))}"
    if cfg:
        clips, crops = resolve_data_config(cfg)["test_views"]
        line += f"; {_giga(clips * crops * count)} per video with {clips}x{crops} views"
    yield "GMACs", line
    yield (
        "input",
        (
            f"{model.num_frames} frames of {height}x{width}, {model.in_chans} channels; "
            f"tubelet {t}x{ph}x{pw} (t x h x w) -> {nt}x{nh}x{nw} tokens"
        ),
    )
    if not cfg:
        with_weights = list_models(f"{name}_*", pretrained=True) if name else []
        yield (
            "weights",
            "no pretrained weights" + (f" (entries with weights: {', '.join(with_weights)})" if with_weights else ""),
        )
        return
    d = resolve_data_config(cfg)
    yield "frame stride", str(d["frame_stride"])
    if d["sample_fps"] is None:
        how = (
            "as Scenic trained and evaluated the released Kinetics models"
            if str(cfg.get("dataset", "")).startswith("kinetics")
            else "DMVR/Scenic's rule"
        )
        yield (
            "sampling",
            f"by frame index, every {_ordinal(d['frame_stride'])} frame ({how}); --sample-fps F chooses frames by time",
        )
    else:
        rate = d["sample_fps"]
        frames = d["input_size"][1]
        yield "sampling", f"by time, {rate:g} frames per second (a clip spans {frames / rate:.3g} s in any file)"
    crop = d["crop_size"][0] if d["crop_size"][0] == d["crop_size"][1] else "x".join(map(str, d["crop_size"]))
    yield (
        "preprocessing",
        (
            f"resize short side to {d['resize_size']} ({d['interpolation']}, antialias {'on' if d['antialias'] else 'off'}), "
            f"centre crop {crop}, (x/255 - mean)/std with mean {_fmt_tuple(d['mean'])}, std {_fmt_tuple(d['std'])}"
        ),
    )
    clips, crops = d["test_views"]
    yield "test views", f"{_plural(clips, 'clip')} x {_plural(crops, 'crop')} (logits averaged)"
    if cfg.get("dataset"):
        synthetic = (
            "; synthetic data only: its answers on real videos mean nothing" if cfg.get("synthetic_data") else ""
        )
        yield "dataset", f"{cfg['dataset']}{synthetic}"
    labels = "named" if cfg.get("label_names") else "no names (class indices)"
    if cfg.get("class_splits"):
        splits = zip(cfg.get("split_names", ()), cfg["class_splits"], strict=False)
        labels += "; split " + " + ".join(f"{n} {s}" for n, s in splits)
    if cfg.get("sources") and all(src.get("format") == "vit" for src in cfg["sources"]):
        labels += "; head untrained (zero): for fine-tuning or features, not for 'vivit predict'"
    yield "classes", f"{cfg.get('num_classes', a['num_classes'])}, {labels}"
    if cfg.get("metrics"):
        yield "accuracy", _describe_metrics(cfg["metrics"])
    for i, src in enumerate(cfg.get("sources", ())):
        yield "weights" if i == 0 else "", _describe_source(src)
    if cfg.get("source") and not cfg.get("sources"):
        yield "weights", str(cfg["source"])
    for key in ("license", "paper"):
        if cfg.get(key):
            yield key, str(cfg[key])
