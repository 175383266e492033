"""vivit's own checkpoint format, written: `model.safetensors` + `config.json` (timm's Hub layout).

`save_pretrained` is also `ViViT.save_pretrained`: this module registers it with the models (which
never import the weights package). `push_to_hub` uploads the folder with a model card.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write, new_folder_contents, writing
from ..models.registry import get_entry, matching_architectures
from ..models.vivit import MODEL_CLASSES, ViViT, register_saver
from ..version import __version__

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_CLASSES_BY_NAME",
    "PROCESSOR_NAME",
    "WEIGHTS_NAME",
    "aligned_metadata",
    "architecture_name",
    "jsonable",
    "model_card",
    "model_config",
    "push_to_hub",
    "save_pretrained",
    "save_safetensors",
    "write_safetensors",
]

FORMAT = "vivit"
FORMAT_VERSION = "2"  # 2 adds timm's top-level fields (architecture, num_classes, label_names); 1 still reads
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PROCESSOR_NAME = "preprocessor_config.json"  # transformers' preprocessing, read when present
README_NAME = "README.md"
MODEL_CLASSES_BY_NAME = {cls.__name__: cls for cls in MODEL_CLASSES.values()}


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def architecture_name(model: ViViT) -> str | None:
    """The registered name that rebuilds `model`'s class: the one it was created from, else one of
    the same class (its saved `model_args` carry the actual sizes)."""
    cls = type(model)
    name = (model.pretrained_cfg or {}).get("architecture")
    try:
        if name and get_entry(name).model_cls is cls:
            return str(name)
    except ValueError:
        pass
    fits = matching_architectures(cls, embed_dim=model.embed_dim, num_heads=model.model_args["num_heads"])
    fits = fits or matching_architectures(cls)
    return fits[0] if fits else None  # None: a class vivit does not register (loads by model_class only)


def model_config(model: ViViT) -> dict[str, Any]:
    """`config.json`: timm's fields (`architecture`, `num_classes`, `num_features`, `global_pool`,
    `label_names`, `model_args`, `pretrained_cfg`) plus our format marker and the class name."""
    cfg = dict(model.pretrained_cfg or {})
    return {
        "architecture": architecture_name(model),
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "label_names": jsonable(cfg.get("label_names")),
        "model_args": jsonable(model.model_args),
        "pretrained_cfg": jsonable(cfg),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vivit_version": __version__,
        "model_class": type(model).__name__,
    }


_CODES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}


def aligned_metadata(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """`metadata` plus an `alignment` entry of spaces that makes the data section start at a multiple of
    64 bytes (safetensors aligns it to 8).

    CPU kernels take other, not bit-identical, paths on memory that is not 64-byte aligned, so the
    loader copies such tensors; with this padding (and tensors whose sizes are multiples of 64 bytes, as
    every ViT width is) it uses the file's memory map as it is. The header's length is computed as
    safetensors writes it (compact JSON, tensors by dtype size then name); were it ever off, the file
    would only be unaligned, and copied when loaded.
    """
    if any(t.dtype not in _CODES for t in tensors.values()):
        return dict(metadata)
    header: dict[str, Any] = {"__metadata__": {**metadata, "alignment": ""}}
    offset = 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        tensor = tensors[name]
        end = offset + tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _CODES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    length = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode())
    return {**metadata, "alignment": " " * ((56 - length) % 64)}  # 8-byte length + header = 64 k


def write_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: Path, config: Mapping[str, Any], **meta: str
) -> None:
    """Write tensors and a config atomically (`vivit.files.atomic_write`), data 64-byte aligned."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = aligned_metadata(tensors, {"config": json.dumps(jsonable(config)), **meta})
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_safetensors(model: ViViT, path: str | os.PathLike, **metadata: str) -> Path:
    """Write one self-describing `.safetensors` file (the config travels in its metadata).

    `create_model(<architecture>, pretrained=path)` or `create_model('local-dir:' + path,
    pretrained=True)` rebuilds the model. Extra `metadata` strings (e.g. `converted_from`) are
    stored beside the config.
    """
    path = Path(path)
    with new_folder_contents(path.parent), writing(path):
        write_safetensors(model.state_dict(), path, model_config(model), **metadata)
    return path


def save_pretrained(model: ViViT, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` and `config.json` (timm's Hub layout) to `directory`.

    `create_model('local-dir:' + directory, pretrained=True)`, `create_model(name,
    pretrained=directory)`, or `'hf-hub:org/repo'` after uploading rebuild the same model.
    Returns the directory.

    Raises:
        vivit.files.WriteError: A file or the folder could not be written (full disk, read-only folder),
            naming it; nothing this call added is left (no weights without their config, no empty folder).
    """
    directory = Path(directory)
    with new_folder_contents(directory):
        save_safetensors(model, directory / WEIGHTS_NAME)
        with writing(directory / CONFIG_NAME), atomic_write(directory / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(model_config(model), indent=2) + "\n")
    return directory


def _cell(text: Any, limit: int = 300) -> str:
    """Text for one Markdown table cell: one line, control characters escaped, '|' escaped."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text)).replace("|", "\\|")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def model_card(model: ViViT, repo_id: str) -> str:
    """README.md for the Hub: what the model is, what it takes, where it came from, how to load it."""
    cfg = model.pretrained_cfg or {}
    arch = architecture_name(model) or type(model).__name__
    a = model.model_args
    license_ = str(cfg.get("license") or "unknown")
    # the front matter takes a licence identifier (apache-2.0, mit, ...); anything else is 'other'
    license_id = license_.lower() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license_.lower()) else "other"
    params = sum(p.numel() for p in model.parameters())
    t, ph, pw = model.patch_embed.kernel_size
    labels = list(cfg.get("label_names") or [])
    shown = _cell(", ".join(map(str, labels[:10])) + (", ..." if len(labels) > 10 else ""), limit=1000)
    sources = "; ".join(str(s.get("url") or s.get("hf_hub") or s.get("file")) for s in cfg.get("sources", ()))
    source = cfg.get("source") or sources or "trained or converted with vivit"
    pre = (
        f"short side resized to {cfg['resize_size']}, centre crop {cfg.get('crop_size')}, "
        f"`(x / 255 - mean) / std` with mean {tuple(cfg.get('mean', ()))}, std {tuple(cfg.get('std', ()))}"
        if "resize_size" in cfg
        else "not recorded (vivit.resolve_data_config(model=model) uses the model's own size)"
    )
    lines = [
        "---",
        "library_name: vivit",
        f"license: {license_id}",
        "tags:",
        "- video-classification",
        "- vivit",
        "---",
        "",
        f"# {repo_id}",
        "",
        (
            "A ViViT video transformer (Arnab et al., ICCV 2021, arXiv 2103.15691) for the "
            f"[vivit](https://pypi.org/project/vivit/) package: `{type(model).__name__}` (registered "
            f"architecture `{arch}`)."
        ),
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {params / 1e6:.2f}M ({params:,}) |",
        f"| width, depth, heads, MLP | {model.embed_dim}, {a['depth']}, {a['num_heads']}, {model.mlp_dim} |",
        (
            f"| input | float `(B, {model.in_chans}, {model.num_frames}, {model.img_size[0]}, {model.img_size[1]})` "
            f"(B, C, T, H, W); tubelet {t}x{ph}x{pw} |"
        ),
        f"| preprocessing | {_cell(pre)} |",
        f"| outputs | {model.num_classes} logits" + (f": {shown}" if labels else "") + " |",
        f"| dataset | {_cell(cfg.get('dataset', 'not recorded'))} |",
        f"| source | {_cell(source)} |",
        f"| licence | {_cell(license_)} |",
        "",
        "## Usage",
        "",
        "```python",
        "import vivit",
        "",
        f'model = vivit.create_model("hf-hub:{repo_id}", pretrained=True)',
        "transform = vivit.create_transform(**vivit.resolve_data_config(model=model))",
        "logits = model(transform(frames)[None])  # frames: uint8 (T, H, W, C)",
        "```",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(model: ViViT, repo_id: str, *, private: bool | None = None, commit_message: str | None = None) -> str:
    """Upload `model.safetensors`, `config.json` and a model card (`README.md`) to a Hub model repo
    (created if needed); returns its URL. `create_model('hf-hub:' + repo_id, pretrained=True)` loads it."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        (Path(tmp) / README_NAME).write_text(model_card(model, repo_id), encoding="utf-8")
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message or "Upload vivit model")
    return f"{api.endpoint}/{repo_id}"


register_saver(save_pretrained)
