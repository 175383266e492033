"""HF transformers ViViT (`VivitForVideoClassification` / `VivitModel`) <-> our Model 1.

transformers has only Model 1 (joint space-time attention, class token). One rename table maps our
module names to the names transformers stores on disk and on the Hub (transformers 4's module names;
transformers 5 still writes them), in both directions; two named transforms do the rest: q/k/v fused
into one `qkv` (and split again), and nothing else changes layout (both use `(out, in)` Linear and
`(D, C, t, h, w)` Conv3d weights). transformers 5 renames the encoder in memory
(`layers.N.attention.q_proj`, `mlp.fc1`, ...); those names are mapped onto the table's first.

The HF `config.json` supplies what tensors cannot: head count, frame count and image size (checked
against the position table), the GELU flavour and LayerNorm eps (checked: ours are tanh and 1e-6, as
Scenic's), and the label names. `preprocessor_config.json`, when present, gives the preprocessing:
HF's `VivitImageProcessor` rescales to [-1, 1] and then normalizes again with its mean/std, which is
expressed exactly as our `(x / 255 - mean) / std` (see `data_config_from_transformers`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write, new_folder_contents, writing
from ..models.vivit import SpatioTemporalViViT, ViViT
from .validate import count_blocks

__all__ = [
    "data_config_from_transformers",
    "from_transformers",
    "model_args_from_transformers_config",
    "to_transformers",
    "transformers_key",
    "transformers_label_names",
    "transformers_model_args",
]

# Our module <-> transformers' module as stored on disk / on the Hub. `{i}` is a block index, `{w}`
# one of query/key/value (our fused `qkv` is split into those three before renaming, and fused after).
_NAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "embeddings.cls_token"),
    ("pos_embed", "embeddings.position_embeddings"),
    ("patch_embed.proj", "embeddings.patch_embeddings.projection"),
    ("blocks.{i}.norm1", "encoder.layer.{i}.layernorm_before"),
    ("blocks.{i}.attn.{w}", "encoder.layer.{i}.attention.attention.{w}"),
    ("blocks.{i}.attn.proj", "encoder.layer.{i}.attention.output.dense"),
    ("blocks.{i}.norm2", "encoder.layer.{i}.layernorm_after"),
    ("blocks.{i}.mlp.fc1", "encoder.layer.{i}.intermediate.dense"),
    ("blocks.{i}.mlp.fc2", "encoder.layer.{i}.output.dense"),
    ("norm", "layernorm"),
    ("head", "classifier"),
)
# transformers 5's in-memory names (its `state_dict()`) -> the stored names above
_IN_MEMORY: tuple[tuple[str, str], ...] = (
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)
_IGNORED = re.compile(r"^pooler\.")  # VivitModel's tanh pooler: not part of the classifier
_QKV = ("query", "key", "value")
# transformers activations that are the tanh-approximated GELU our blocks (and Scenic's) compute
_TANH_GELUS = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh", "gelu_accurate")
_LAYER_NORM_EPS = 1e-6
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resampling codes in HF's processor configs


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{w\}", r"(?P<w>query|key|value)")
    return re.compile(pattern + r"(?P<leaf>\.weight|\.bias)?")


_TO_HF = tuple((_compile(ours), theirs) for ours, theirs in _NAMES)
_FROM_HF = tuple((_compile(theirs), ours) for ours, theirs in _NAMES)


def _translate(key: str, table: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in table:
        m = pattern.fullmatch(key)
        if m:
            fields = {k: v for k, v in m.groupdict().items() if k != "leaf" and v is not None}
            return template.format(**fields) + (m["leaf"] or "")
    return None


def _stored_name(key: str) -> str:
    """Any transformers key (4 or 5 naming, `vivit.` prefix optional) -> the stored name, unprefixed."""
    key = key.removeprefix("vivit.")
    for pattern, repl in _IN_MEMORY:
        key = re.sub(pattern, repl, key)
    return key


def transformers_key(key: str) -> str:
    """transformers key -> our name, with q/k/v still separate (`blocks.N.attn.query.weight`).

    Keys the table does not know come back in their stored form (the caller reports them).
    Shared with the HF image ViT path of `inflate_vit` (same encoder names).
    """
    stored = _stored_name(key)
    return _translate(stored, _FROM_HF) or stored


def _fuse_qkv(renamed: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`blocks.N.attn.{query,key,value}.*` -> `blocks.N.attn.qkv.*`; returns (state, incomplete keys).

    A checkpoint with `qkv_bias=False` has no q/k/v biases: that is a zero bias.
    """
    out = {k: v for k, v in renamed.items() if not re.search(r"\.attn\.(query|key|value)\.", k)}
    incomplete: list[str] = []
    for block in sorted({m[1] for k in renamed if (m := re.match(r"(blocks\.\d+\.attn)\.(query|key|value)\.", k))}):
        weights = [renamed.get(f"{block}.{w}.weight") for w in _QKV]
        if any(w is None for w in weights):
            incomplete += [f"{block}.{w}.weight" for w, t in zip(_QKV, weights, strict=True) if t is None]
            continue
        full = [w for w in weights if w is not None]
        out[f"{block}.qkv.weight"] = torch.cat(full)
        biases = [renamed.get(f"{block}.{w}.bias") for w in _QKV]
        out[f"{block}.qkv.bias"] = torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for b, w in zip(biases, full, strict=True)]
        )
    return out, incomplete


def _ours(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A transformers ViViT state dict in our names (q/k/v fused); returns (state, problems)."""
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        stored = _stored_name(key)
        if _IGNORED.match(stored):
            continue
        ours = _translate(stored, _FROM_HF)
        if ours is None:
            unknown.append(key)
        else:
            renamed[ours] = value
    fused, incomplete = _fuse_qkv(renamed)
    problems = [f"unknown key {k}" for k in unknown] + [f"missing {k} (q, k and v come together)" for k in incomplete]
    return fused, problems


def from_transformers(state_dict: Mapping[str, torch.Tensor], model: ViViT) -> dict[str, torch.Tensor]:
    """Convert an HF transformers ViViT `state_dict` into one for our Model 1.

    Args:
        state_dict: keys of `VivitForVideoClassification` or `VivitModel`, transformers 4 (on disk,
            on the Hub) or 5 (in memory) naming. q/k/v biases may be absent (`qkv_bias=False`).
        model: a `SpatioTemporalViViT` with `global_pool='token'` (HF's classifier reads the cls
            token) and matching sizes (`transformers_model_args` reads them from a checkpoint). Build
            it with `num_classes=0` for a `VivitModel` backbone.

    Returns:
        A float32 `state_dict` for `model.load_state_dict(..., strict=True)`.

    Raises:
        ValueError: the model is not Model 1, or keys are missing / unexpected / mis-shaped.
    """
    _require_model1(model, "convert into")
    out, problems = _ours(state_dict)
    target = model.state_dict()
    missing = sorted(target.keys() - out.keys())
    unexpected = sorted(out.keys() - target.keys())
    misshaped = [
        f"{k}: checkpoint {tuple(out[k].shape)}, model {tuple(target[k].shape)}"
        for k in sorted(out.keys() & target.keys())
        if out[k].shape != target[k].shape
    ]
    lines = [f"missing: {', '.join(missing)}"] if missing else []
    lines += [f"unexpected (after renaming): {', '.join(unexpected)}"] if unexpected else []
    lines += [f"mis-shaped {m}" for m in misshaped] + problems
    if lines:
        raise ValueError("transformers ViViT weights do not fit the model:\n  " + "\n  ".join(lines))
    return {k: v.detach().to(torch.float32).clone() for k, v in out.items()}


def _require_model1(model: ViViT, verb: str) -> None:
    if not isinstance(model, SpatioTemporalViViT) or model.global_pool != "token":
        raise ValueError(
            f"transformers' ViViT is Model 1 with a class token: {verb} a SpatioTemporalViViT with "
            f"global_pool='token', not {type(model).__name__}(global_pool={getattr(model, 'global_pool', None)!r}); "
            "transformers has no Models 2-4, keep those in vivit's format (save_pretrained)"
        )


def transformers_label_names(config: Mapping[str, Any], num_classes: int) -> tuple[str, ...] | None:
    """`id2label` in index order, or None when absent or transformers' placeholder `LABEL_i`."""
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, Mapping):
        return None
    try:
        names = tuple(str(id2label[i] if i in id2label else id2label[str(i)]) for i in range(num_classes))
    except KeyError:
        return None
    if not names or names == tuple(f"LABEL_{i}" for i in range(num_classes)):
        return None
    return names


def transformers_model_args(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None, fallback: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """Our `SpatioTemporalViViT` arguments (and label names) for a transformers ViViT checkpoint.

    Width, input channels, tubelet, depth, MLP width and class count come from the tensors; heads,
    frame count and image size from its `config.json` (`num_attention_heads`, `num_frames`,
    `image_size`), checked against the position table. Without a config, `fallback` (the registered
    architecture's arguments) supplies the head count and image size, and the frame count follows
    from the position table.

    Args:
        state_dict: transformers 4 or 5 keys.
        config: the checkpoint's `config.json`, or None.
        fallback: arguments of the architecture the user named (`num_heads`, `img_size`).

    Returns:
        `(model_args, label_names)`; `label_names` is None when `id2label` holds only placeholders.

    Raises:
        ValueError: an unreadable or inconsistent checkpoint, or a config asking for numerics we do
            not compute (exact-erf GELU, LayerNorm eps other than 1e-6).
    """
    config = dict(config or {})
    sd, problems = _ours(state_dict)
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            problems.append(f"missing {key}")
    if problems:
        raise ValueError("not a transformers ViViT checkpoint:\n  " + "\n  ".join(problems))
    act = config.get("hidden_act", "gelu_fast")
    if act not in _TANH_GELUS:
        raise ValueError(
            f"the checkpoint's config uses hidden_act={act!r}; vivit's blocks compute the tanh-approximated "
            f"GELU of Scenic (transformers' {', '.join(_TANH_GELUS)}), so its logits would differ"
        )
    eps = float(config.get("layer_norm_eps", _LAYER_NORM_EPS))
    if abs(eps - _LAYER_NORM_EPS) > 1e-12:
        raise ValueError(f"the checkpoint's config uses layer_norm_eps={eps:g}; vivit's LayerNorms use 1e-6 (Scenic's)")
    d, c, t, ph, pw = sd["patch_embed.proj.weight"].shape
    tokens = sd["pos_embed"].shape[1] - 1  # after the class token's slot
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    args: dict[str, Any] = {
        "embed_dim": d,
        "in_chans": c,
        "tubelet_size": t,
        "patch_size": (ph, pw),
        "global_pool": "token",
        "depth": count_blocks(sd, r"blocks\.(\d+)\.", "", "blocks"),  # distinct indices 0..N-1, not the largest + 1
        "mlp_dim": sd["blocks.0.mlp.fc1.weight"].shape[0],
        "num_classes": num_classes,
        "num_heads": int(config.get("num_attention_heads", fallback["num_heads"])),
    }
    size = config.get("image_size", fallback["img_size"])
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    per_frame = (h // ph) * (w // pw)
    if "num_frames" in config:
        num_frames = int(config["num_frames"])
    elif per_frame and tokens % per_frame == 0:
        num_frames = tokens // per_frame * t
    else:
        raise ValueError(
            f"the checkpoint's position table holds {tokens} tubelets, which {h}x{w} frames "
            f"({per_frame} patches each) do not divide; put its config.json beside it"
        )
    if (num_frames // t) * per_frame != tokens:
        raise ValueError(
            f"the checkpoint's position table holds {tokens} tubelets, but its config says {num_frames} frames of "
            f"{h}x{w} with {t}x{ph}x{pw} tubelets ({(num_frames // t) * per_frame}); the files do not belong together"
        )
    args.update(img_size=(h, w), num_frames=num_frames)
    return args, transformers_label_names(config, num_classes)


def _ints(config: Mapping[str, Any], key: str, default: Any, length: int = 0, scalar: bool = True) -> list[int]:
    """A config field that must be an integer (if `scalar`) or, with `length`, a list of that many integers."""
    value = config.get(key, default)
    values = [value] if scalar and not isinstance(value, list) else value
    if (values is value and not (isinstance(value, list) and len(value) == length)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        kinds = (["an integer"] if scalar else []) + ([f"a list of {length} integers"] if length else [])
        raise ValueError(f"its config's {key} is {str(value)[:60]}, expected {' or '.join(kinds)}")
    return values


def model_args_from_transformers_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our `SpatioTemporalViViT` arguments described by a transformers `VivitConfig` (its
    `config.json`), with transformers' defaults for missing fields. The weights, when loaded, are
    the final word (`transformers_model_args`).

    Raises:
        ValueError: A field of the wrong type (`"its config's image_size is [32], expected ..."`).
    """
    t, ph, pw = _ints(config, "tubelet_size", [2, 16, 16], length=3, scalar=False)
    h, w = (_ints(config, "image_size", 224, length=2) * 2)[:2]
    id2label = config.get("id2label") or {}
    architectures = config.get("architectures") or []
    if not isinstance(id2label, Mapping) or not isinstance(architectures, list):
        raise ValueError("its config's id2label must be an object and architectures a list")
    head = "VivitModel" not in architectures
    (labels,) = _ints(config, "num_labels", len(id2label) or 2)
    return {
        "img_size": (h, w),
        "num_frames": _ints(config, "num_frames", 32)[0],
        "tubelet_size": t,
        "patch_size": (ph, pw),
        "in_chans": _ints(config, "num_channels", 3)[0],
        "embed_dim": _ints(config, "hidden_size", 768)[0],
        "depth": _ints(config, "num_hidden_layers", 12)[0],
        "num_heads": _ints(config, "num_attention_heads", 12)[0],
        "mlp_dim": _ints(config, "intermediate_size", 3072)[0],
        "num_classes": labels if head else 0,
        "global_pool": "token",
    }


def data_config_from_transformers(processor: Mapping[str, Any]) -> dict[str, Any]:
    """Our preprocessing keys for an HF `VivitImageProcessor` / `VivitVideoProcessor` config.

    HF computes `((x * rescale_factor - offset) - m) / s` on uint8 `x`; with `u = x / 255`,
    `a = offset / (255 * rescale_factor)` and `b = 1 / (255 * rescale_factor)` that is
    `(u - (a + m * b)) / (b * s)`, i.e. our `mean = a + m * b`, `std = b * s` exactly. HF's defaults
    (rescale 1/127.5 with offset, then mean = std = 0.5) give mean 0.75, std 0.25: inputs in [-3, 1],
    which is what a model fine-tuned with that processor expects.

    Args:
        processor: the parsed `preprocessor_config.json`.

    Returns:
        `resize_size`, `crop_size`, `interpolation`, `mean`, `std` (and `antialias`: HF resizes with
        PIL or torchvision with antialiasing).
    """
    p = dict(processor)
    factor = float(p.get("rescale_factor", 1 / 127.5)) if p.get("do_rescale", True) else 1.0 / 255
    offset = float(p.get("offset", True)) if p.get("do_rescale", True) else 0.0
    a, b = offset / (255 * factor), 1 / (255 * factor)
    m: Any = p.get("image_mean", 0.5) if p.get("do_normalize", True) else 0.0
    s: Any = p.get("image_std", 0.5) if p.get("do_normalize", True) else 1.0
    m = [float(m)] * 3 if isinstance(m, (int, float)) else [float(v) for v in m]
    s = [float(s)] * 3 if isinstance(s, (int, float)) else [float(v) for v in s]
    out: dict[str, Any] = {
        "mean": tuple(a + mi * b for mi in m),
        "std": tuple(b * si for si in s),
        "interpolation": _RESAMPLE.get(int(p.get("resample", 2)), "bilinear"),
        "antialias": True,
    }
    size = p.get("size") or {}
    if "shortest_edge" in size:
        out["resize_size"] = int(size["shortest_edge"])
    crop = p.get("crop_size") or {}
    if "height" in crop and "width" in crop:
        out["crop_size"] = (int(crop["height"]), int(crop["width"]))
    return out


def _processor_config(cfg: Mapping[str, Any], model: ViViT) -> dict[str, Any]:
    """The `VivitImageProcessor` settings that reproduce our preprocessing (inverse of the above)."""
    mean = cfg.get("mean", (0.5,) * model.in_chans)
    std = cfg.get("std", (0.5,) * model.in_chans)
    crop = cfg.get("crop_size", model.img_size)
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    return {
        "image_processor_type": "VivitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": int(cfg.get("resize_size", round(min(ch, cw) * 256 / 224)))},
        "resample": 3 if cfg.get("interpolation") == "bicubic" else 2,
        "do_center_crop": True,
        "crop_size": {"height": int(ch), "width": int(cw)},
        "do_rescale": True,
        "rescale_factor": 1 / 127.5,
        "offset": True,  # pixels to [-1, 1] first; with our mean/std this is the rest of the way
        "do_normalize": True,
        "image_mean": [2 * float(v) - 1 for v in mean],
        "image_std": [2 * float(v) for v in std],
    }


def _transformers_config(model: ViViT) -> dict[str, Any]:
    a = model.model_args
    h, w = model.img_size
    t, ph, pw = model.patch_embed.kernel_size
    config: dict[str, Any] = {
        "architectures": ["VivitForVideoClassification" if model.num_classes else "VivitModel"],
        "model_type": "vivit",
        "image_size": h if h == w else [h, w],  # a pair needs transformers >= 5
        "num_frames": model.num_frames,
        "tubelet_size": [t, ph, pw],
        "num_channels": model.in_chans,
        "hidden_size": model.embed_dim,
        "num_hidden_layers": len(model.blocks),
        "num_attention_heads": a["num_heads"],
        "intermediate_size": model.mlp_dim,
        "hidden_act": "gelu_fast",  # transformers' tanh-approximated GELU, as ours
        "hidden_dropout_prob": a.get("drop_rate", 0.0),
        "attention_probs_dropout_prob": a.get("attn_drop_rate", 0.0),
        "layer_norm_eps": _LAYER_NORM_EPS,
        "qkv_bias": True,
    }
    if model.num_classes:
        names = list(model.pretrained_cfg.get("label_names") or [])
        if len(names) != model.num_classes:
            names = [f"LABEL_{i}" for i in range(model.num_classes)]  # transformers' own placeholders
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
    return config


def _transformers_state_dict(model: ViViT) -> dict[str, torch.Tensor]:
    """Our Model 1 state dict in transformers' stored names (q/k/v split)."""
    prefix = "vivit." if model.num_classes else ""  # VivitForVideoClassification wraps a VivitModel
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        m = re.fullmatch(r"(blocks\.\d+\.attn)\.qkv\.(weight|bias)", key)
        parts = (
            {f"{m[1]}.{w}.{m[2]}": chunk for w, chunk in zip(_QKV, value.chunk(3), strict=True)} if m else {key: value}
        )
        for ours, tensor in parts.items():
            theirs = _translate(ours, _TO_HF)
            if theirs is None:  # cannot happen for a SpatioTemporalViViT; a guard for subclasses
                raise ValueError(f"no transformers name for {ours}")
            name = theirs if theirs.startswith("classifier.") else prefix + theirs
            out[name] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return out


def to_transformers(model: ViViT, directory: str | os.PathLike) -> Path:
    """Write a transformers ViViT folder: `model.safetensors`, `config.json`, `preprocessor_config.json`.

    `transformers.VivitForVideoClassification.from_pretrained(directory)` (or `VivitModel` for a
    model without head, `num_classes=0`) then computes the same logits (features). HF's model takes
    `pixel_values` as `(B, T, C, H, W)`. `id2label` comes from `model.pretrained_cfg['label_names']`;
    the processor config reproduces the model's preprocessing (`VivitImageProcessor` with mean/std
    chosen so that its [-1, 1] rescale plus normalization equals ours). Files are written atomically.

    Args:
        model: a `SpatioTemporalViViT` with `global_pool='token'` (transformers has only that model).
        directory: created if needed.

    Returns:
        The directory.

    Raises:
        ValueError: another model class or pooling.
        vivit.files.WriteError: A file or the folder could not be written (full disk, read-only folder),
            naming it; nothing this call added is left.
    """
    _require_model1(model, "convert from")
    directory = Path(directory)
    files = {
        "config.json": _transformers_config(model),
        "preprocessor_config.json": _processor_config(model.pretrained_cfg or {}, model),
    }
    with new_folder_contents(directory):
        weights = directory / "model.safetensors"
        with writing(weights), atomic_write(weights) as tmp:
            save_file(_transformers_state_dict(model), str(tmp), metadata={"format": "pt"})
        for name, content in files.items():
            with writing(directory / name), atomic_write(directory / name) as tmp:
                tmp.write_text(json.dumps(content, indent=2) + "\n")
    return directory
