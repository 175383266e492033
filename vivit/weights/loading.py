"""The one weight loader: registry entry / path / Hub repo -> a model with its weights.

One function per step:

1. `_locate`: what the user gave (`pretrained=` path, directory or `hf-hub:org/repo`) -> a local
   `_Checkpoint`: the weights file plus the `config.json` / `preprocessor_config.json` beside it;
2. `_convert_checkpoint`: read the weights (safetensors, Flax msgpack or `.npz`; never pickle), tell
   the format apart by its content and convert (`_convert_scenic`, `_convert_transformers`,
   `_convert_vit` (inflation), `_convert_ours`) -> our `state_dict`, the architecture arguments its
   tensors imply, its `pretrained_cfg`. Validation comes before allocation: the header (names,
   shapes, dtypes) is read first, the architecture it implies is capped (`validate.ARCH_LIMITS`,
   depth = distinct block indices 0..N-1), built on the meta device and compared with it, the
   embedded `pretrained_cfg` is checked against ranges, and only then are tensors read (finite,
   floating point). Every failure is a short ValueError naming the file;
3. `_build`: the model with those arguments and the user's overrides;
4. `_finish`: adapt (fresh head for another class count, resampled position tables for another
   frame count or size), then `load_state_dict(strict=True)`.

Registry entries (`pretrained=True`) enter at step 2 through `_source`. Names that describe
themselves (`create_model('hf-hub:org/repo')`, `'local-dir:/path'`) first read the architecture from
the checkpoint's config (`load_described_model`).

Only safetensors, msgpack and `.npz` (with `allow_pickle=False`) are ever read: no pickle, so a
checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file

from ..files import atomic_write
from ..models.pos_embed import resample_pos_embed
from ..models.registry import ModelEntry, get_entry, list_models, matching_architectures
from ..models.vivit import MODEL_CLASSES, FactorizedEncoderViViT, SpatioTemporalViViT, ViViT
from ..version import __version__
from .cache import CacheError, get_or_build, scratch_dir
from .flax_msgpack import FlaxCheckpoint, flatten_params, open_flax_checkpoint
from .formats import (
    SafetensorsHeader,
    cast_finite,
    check_regular_file,
    load_safetensors,
    parse_json,
    read_json_file,
    read_safetensors_header,
)
from .hf_transformers import (
    _label_names,
    data_config_from_transformers,
    from_transformers,
    model_args_from_transformers_config,
    transformers_model_args,
)
from .hub import WeightsDownloadError, cache_dir, download_url, hf_download, is_offline, scenic_base_url
from .inflate import inflate_vit, inflation_settings
from .npz import read_npz
from .scenic import CONVERTER_VERSION, check_scenic_params, from_scenic, scenic_model_args
from .validate import check_model_args, check_parameter_count, count_blocks, short_list, validate_pretrained_cfg

__all__ = ["load_described_model", "load_pretrained_model", "push_to_hub", "save_pretrained", "save_safetensors"]

FORMAT = "vivit"
FORMAT_VERSION = "2"  # 2 adds timm's top-level fields (architecture, num_classes, label_names); 1 still reads
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PROCESSOR_NAME = "preprocessor_config.json"  # transformers' preprocessing, read when present
README_NAME = "README.md"
_CLASSES = {cls.__name__: cls for cls in MODEL_CLASSES.values()}
_DESCRIBED_PREFIXES = ("hf-hub:", "local-dir:")


# ---------------------------------------------------------------- our own format (writing)
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _architecture(model: ViViT) -> str | None:
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


def _config(model: ViViT) -> dict[str, Any]:
    """`config.json`: timm's fields (`architecture`, `num_classes`, `num_features`, `global_pool`,
    `label_names`, `model_args`, `pretrained_cfg`) plus our format marker and the class name."""
    cfg = dict(model.pretrained_cfg or {})
    return {
        "architecture": _architecture(model),
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "label_names": _jsonable(cfg.get("label_names")),
        "model_args": _jsonable(model.model_args),
        "pretrained_cfg": _jsonable(cfg),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vivit_version": __version__,
        "model_class": type(model).__name__,
    }


def _save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: Path, config: Mapping[str, Any], **meta: str
) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {"config": json.dumps(_jsonable(config)), **meta}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_safetensors(model: ViViT, path: str | os.PathLike, **metadata: str) -> Path:
    """Write one self-describing `.safetensors` file (the config travels in its metadata).

    `create_model(<architecture>, pretrained=path)` or `create_model('local-dir:' + path,
    pretrained=True)` rebuilds the model. Extra `metadata` strings (e.g. `converted_from`) are
    stored beside the config.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_safetensors(model.state_dict(), path, _config(model), **metadata)
    return path


def save_pretrained(model: ViViT, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` and `config.json` (timm's Hub layout) to `directory`.

    `create_model('local-dir:' + directory, pretrained=True)`, `create_model(name,
    pretrained=directory)`, or `'hf-hub:org/repo'` after uploading rebuild the same model.
    Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, directory / WEIGHTS_NAME)
    with atomic_write(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(_config(model), indent=2) + "\n")
    return directory


def _cell(text: Any, limit: int = 300) -> str:
    """Text for one Markdown table cell: one line, control characters escaped, '|' escaped."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text)).replace("|", "\\|")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _model_card(model: ViViT, repo_id: str) -> str:
    """README.md for the Hub: what the model is, what it takes, where it came from, how to load it."""
    cfg = model.pretrained_cfg or {}
    arch = _architecture(model) or type(model).__name__
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
        (Path(tmp) / README_NAME).write_text(_model_card(model, repo_id), encoding="utf-8")
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message or "Upload vivit model")
    return f"{api.endpoint}/{repo_id}"


# ---------------------------------------------------------------- step 1: locate
@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint on local disk and the JSON files found beside it."""

    weights: Path | None  # None: only the config was fetched (create_model('hf-hub:...') without weights)
    origin: str  # what the user gave: error messages and pretrained_cfg['source']
    config: dict[str, Any] | None = None  # config.json (ours or transformers')
    processor: dict[str, Any] | None = None  # transformers' preprocessor_config.json


def _read_json(path: Path) -> dict[str, Any]:
    """A config file beside a checkpoint: a regular file, at most 16 MiB, a JSON object without NaN."""
    return read_json_file(path, "JSON")


def _optional_hub_file(repo: str, filename: str, revision: str | None) -> dict[str, Any] | None:
    try:
        return _read_json(hf_download(repo, filename, revision=revision))
    except WeightsDownloadError:
        return None  # optional files: a repo without one is fine


_SAFETENSORS_HOWTO = (
    "get a safetensors copy: timm `timm.models.push_to_hf_hub` / `save_for_hf(model, dir, safe_serialization=True)`, "
    "transformers `model.save_pretrained(dir, safe_serialization=True)`, or vivit's own `model.save_pretrained(dir)`"
)


def _locate(spec: str, *, weights: bool = True) -> _Checkpoint:
    """`pretrained=` value -> local files. Hub files are downloaded (and cached) by huggingface_hub."""
    if spec.startswith("hf-hub:"):
        repo, _, rev = spec.removeprefix("hf-hub:").partition("@")
        revision = rev or None
        config = _optional_hub_file(repo, CONFIG_NAME, revision)
        path = hf_download(repo, WEIGHTS_NAME, revision=revision) if weights else None
        return _Checkpoint(path, spec, config, _optional_hub_file(repo, PROCESSOR_NAME, revision) if weights else None)
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pretrained= takes True, a checkpoint file (.safetensors, Scenic, .npz ViT), "
            "a directory written by save_pretrained (vivit, transformers), or 'hf-hub:org/repo'"
        )
    if path.is_dir():
        if not (path / WEIGHTS_NAME).exists():
            pickled = sorted(p.name for p in path.glob("*") if p.suffix in _PICKLE_SUFFIXES)
            hint = (
                f" (it holds {', '.join(pickled)}, pickled weights, which are never loaded; {_SAFETENSORS_HOWTO})"
                if pickled
                else ""
            )
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME}; expected a directory written by save_pretrained (vivit or transformers){hint}"
            )
        path = path / WEIGHTS_NAME
    check_regular_file(path)  # a FIFO would block the reader forever, a device never end
    beside = path.parent
    config = (
        _read_json(beside / CONFIG_NAME) if path.suffix == ".safetensors" and (beside / CONFIG_NAME).is_file() else None
    )
    processor = (
        _read_json(beside / PROCESSOR_NAME) if config is not None and (beside / PROCESSOR_NAME).is_file() else None
    )
    return _Checkpoint(path, spec, config, processor)


# ---------------------------------------------------------------- step 2: read and convert
class Converted(NamedTuple):
    state_dict: dict[str, torch.Tensor]
    model_args: dict[str, Any]  # the architecture the tensors imply
    pretrained_cfg: dict[str, Any]  # the checkpoint's own; {} = the registry entry's


def _metadata_config(metadata: Mapping[str, str], origin: str) -> dict[str, Any] | None:
    if "config" not in metadata:
        return None
    config = parse_json(metadata["config"], origin, "config")  # size and nesting limits, no NaN
    if not isinstance(config, dict):
        raise ValueError(f"{origin}: its config is not a JSON object; the file may be corrupted")
    return config


def _check_fit(shapes: Mapping[str, tuple[int, ...]], model: ViViT, origin: str) -> None:
    """Tensor names and shapes against the model's, before anything is loaded (a short message)."""
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in target if k not in shapes]
    unexpected = [k for k in shapes if k not in target]
    wrong = [
        f"{k} {tuple(shapes[k])} (model {target[k]})" for k in target if k in shapes and tuple(shapes[k]) != target[k]
    ]
    problems = [
        f"{label} {short_list(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape:", wrong))
        if keys
    ]
    if problems:
        raise ValueError(f"{origin} does not fit {type(model).__name__}: " + "; ".join(problems))


def _tensor_model_args(sd: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Architecture facts read from our tensors (or their header specs); they win over any config that
    disagrees. The depth is the number of distinct block indices, which must run 0..N-1."""
    args: dict[str, Any] = {}
    if "patch_embed.proj.weight" in sd:
        shape = tuple(sd["patch_embed.proj.weight"].shape)
        if len(shape) != 5:
            raise ValueError(f"{origin}: patch_embed.proj.weight has shape {shape}, expected (D, C, t, h, w)")
        d, c, t, h, w = shape
        args.update(embed_dim=d, in_chans=c, tubelet_size=t, patch_size=(h, w))
    for prefix, key in (("blocks", "depth"), ("temporal_blocks", "temporal_depth")):
        depth = count_blocks(sd, rf"{prefix}\.(\d+)\.", origin, prefix)
        if depth:
            args[key] = depth
            fc1 = sd.get(f"{prefix}.0.mlp.fc1.weight")
            if fc1 is not None and len(fc1.shape) == 2:  # absent or odd: the fit check names it
                args["mlp_dim" if prefix == "blocks" else "temporal_mlp_dim"] = fc1.shape[0]
    head = sd.get("head.weight")
    args["num_classes"] = head.shape[0] if head is not None and len(head.shape) == 2 else 0
    args["global_pool"] = "token" if "cls_token" in sd else "avg"
    return args


_SIZE_ARGS = ("img_size", "num_frames")


def _scenic_grid_tokens(params: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Grid tokens in a Scenic checkpoint's position tables (cls slots excluded); None if it has none
    (the parameter check then names what is missing)."""
    flat = flatten_params(params)
    prefix = int(any(k == "cls" or k.startswith("cls_") for k in flat))
    tables = (
        ("SpatialTransformer", "TemporalTransformer")
        if "cls_SpatialTransformer" in flat or any(k.startswith("SpatialTransformer/") for k in flat)
        else ("Transformer",)
    )
    shapes = [
        tuple(flat[f"{t}/posembed_input/pos_embedding"].shape)
        for t in tables
        if f"{t}/posembed_input/pos_embedding" in flat
    ]
    if len(shapes) != len(tables) or any(len(shape) != 3 for shape in shapes):
        return None
    return tuple(shape[1] - prefix for shape in shapes)


def _grid_tokens(args: Mapping[str, Any]) -> tuple[int, ...]:
    nt, nh, nw = _grid(args)
    return (nh * nw, nt) if "temporal_depth" in args else (nt * nh * nw,)


def _convert_scenic(
    flax: FlaxCheckpoint, entry: ModelEntry, origin: str, overrides: Mapping[str, Any] | None = None
) -> Converted:
    """A Scenic checkpoint: architecture from its shapes, checked on the meta device, then read."""
    inferred = scenic_model_args(flax.specs, origin)
    if ("temporal_depth" in inferred) != issubclass(entry.model_cls, FactorizedEncoderViViT):
        kind = "a factorised-encoder (Model 2)" if "temporal_depth" in inferred else "a single-encoder (Model 1/3/4)"
        raise ValueError(f"{origin} holds {kind} ViViT checkpoint, but {entry.name} is a {entry.model_cls.__name__}")
    args = {**entry.model_args, **inferred}
    # A checkpoint stores only its position-token count, not its frames and size: when the entry's
    # grid does not fit that count, the user's size overrides describe the checkpoint.
    sizes = {k: v for k, v in (overrides or {}).items() if k in _SIZE_ARGS}
    stored = _scenic_grid_tokens(flax.specs)
    if sizes and stored is not None and stored != _grid_tokens(args) and stored == _grid_tokens({**args, **sizes}):
        args.update(sizes)
    check_model_args(args, origin)
    model = _build(entry.model_cls, args, device="meta", origin=origin)
    check_parameter_count(model, origin)
    where = f"{origin} does not fit {entry.name}"
    check_scenic_params(flax.specs, model, where)  # names, shapes, dtypes: nothing read yet
    return Converted(from_scenic(flax.read(), model, origin), model.model_args, {})


def _transformers_fit(args: Mapping[str, Any], entry: ModelEntry, overrides: Mapping[str, Any], origin: str) -> None:
    """A transformers ViViT only goes into Model 1 of its own width and head count."""
    d, heads = args["embed_dim"], args["num_heads"]
    fits = matching_architectures(SpatioTemporalViViT, embed_dim=d, num_heads=heads)
    use = (
        f"use {' or '.join(fits)}"
        if fits
        else f"no registered architecture has that; pass embed_dim={d}, num_heads={heads}"
    )
    if not issubclass(entry.model_cls, SpatioTemporalViViT):
        raise ValueError(
            f"{origin} is a transformers ViViT, which is Model 1 (SpatioTemporalViViT), but {entry.name} is a "
            f"{entry.model_cls.__name__}; {use}"
        )
    wanted = {**entry.model_args, **overrides}
    if (wanted.get("embed_dim"), wanted.get("num_heads")) != (d, heads):
        raise ValueError(
            f"{origin} has width {d} with {heads} heads, but {entry.name} has width {wanted.get('embed_dim')} "
            f"with {wanted.get('num_heads')} heads; {use}"
        )


def _convert_transformers(
    hf_sd: Mapping[str, torch.Tensor], ckpt: _Checkpoint, entry: ModelEntry, overrides: Mapping[str, Any]
) -> Converted:
    """An HF ViViT: sizes, classes and labels from its tensors and config.json; preprocessing from
    its preprocessor_config.json when there is one."""
    config = ckpt.config if (ckpt.config or {}).get("model_type") == "vivit" else None
    # Without a config.json the image size is a guess: the user's img_size override when the position
    # table fits it (as for Scenic files), else the registered architecture's.
    guesses = [{**entry.model_args, "img_size": overrides["img_size"]}] if "img_size" in overrides else []
    for i, fallback in enumerate([*guesses, entry.model_args]):
        try:
            args, labels = transformers_model_args(hf_sd, config, fallback)
            break
        except ValueError as err:
            if config is not None or i == len(guesses):
                raise ValueError(f"{ckpt.origin}: {err}") from None
    check_model_args(args, ckpt.origin)
    _transformers_fit(args, entry, overrides, ckpt.origin)
    sd = from_transformers(hf_sd, _build(SpatioTemporalViViT, args, device="meta", origin=ckpt.origin))
    h, w = args["img_size"]
    cfg: dict[str, Any] = {
        "num_classes": args["num_classes"],
        "label_names": labels,
        "input_size": (args["in_chans"], args["num_frames"], h, w),
    }
    if ckpt.processor:
        cfg.update(data_config_from_transformers(ckpt.processor))
    return Converted(sd, args, validate_pretrained_cfg(cfg, ckpt.origin, args["num_classes"]))


def _convert_vit(
    image: Mapping[str, Any], entry: ModelEntry, overrides: Mapping[str, Any], inflation: Any, origin: str
) -> Converted:
    # inflation builds straight into the user's architecture (size, frames, classes)
    model = _build(entry.model_cls, {**entry.model_args, **overrides})
    settings = inflation_settings(inflation, (entry.pretrained_cfg or {}).get("inflation"))
    try:
        state_dict = inflate_vit(image, model, **settings)
    except (ValueError, IndexError, KeyError, RuntimeError) as err:  # a file that is no fitting ViT: one short line
        why = (
            "; ".join(line.strip() for line in str(err).splitlines() if line.strip()).replace(":; ", ": ")
            or type(err).__name__
        )
        raise ValueError(f"{origin}: {why[:400]}{'...' if len(why) > 400 else ''}") from None
    return Converted(state_dict, model.model_args, {})


def _described_class(config: Mapping[str, Any]) -> type[ViViT] | None:
    """The model class a vivit config names (format 2: `architecture`; format 1: `model_class`)."""
    name = config.get("model_class")
    if isinstance(name, str) and name in _CLASSES:
        return _CLASSES[name]
    arch = config.get("architecture")
    if arch and isinstance(arch, str):
        try:
            return get_entry(arch).model_cls
        except ValueError:
            return None
    return None


def _convert_ours(header: SafetensorsHeader, config: Mapping[str, Any], entry: ModelEntry, origin: str) -> Converted:
    """Our own format: the architecture from the header (shapes) and config, checked against caps and
    on the meta device, and only then the tensors read."""
    if config.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{origin}: not a vivit checkpoint (format {str(config.get('format'))[:40]!r})")
    cls = _described_class(config) or entry.model_cls
    if cls is not entry.model_cls:
        raise ValueError(f"{origin} holds a {cls.__name__}, but {entry.name!r} is a {entry.model_cls.__name__}")
    stored_args = config.get("model_args") or {}
    if not isinstance(stored_args, Mapping):
        raise ValueError(
            f"{origin}: its config's model_args is a JSON {type(stored_args).__name__}, expected an object"
        )
    specs = header.tensors
    args = {**entry.model_args, **stored_args, **_tensor_model_args(specs, origin)}
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    check_model_args(args, origin)
    model = _build(entry.model_cls, args, device="meta", origin=origin)
    check_parameter_count(model, origin)
    _check_fit(header.shapes, model, origin)
    stored_cfg = config.get("pretrained_cfg") or {}
    if not isinstance(stored_cfg, Mapping):
        raise ValueError(
            f"{origin}: its config's pretrained_cfg is a JSON {type(stored_cfg).__name__}, expected an object"
        )
    cfg = dict(stored_cfg)
    if config.get("label_names") is not None and cfg.get("label_names") is None:
        cfg["label_names"] = config["label_names"]
    cfg = validate_pretrained_cfg(cfg, origin, args.get("num_classes"))
    return Converted(load_safetensors(header.path, header), args, cfg)


_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")


def _convert_checkpoint(
    ckpt: _Checkpoint, entry: ModelEntry, overrides: Mapping[str, Any], inflation: Any
) -> Converted:
    """Any checkpoint file we can read, identified by its content."""
    path = ckpt.weights
    assert path is not None
    if path.suffix in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: pickled checkpoints (.pt, .pth, .bin, ...) are refused because unpickling can run code; "
            f"{_SAFETENSORS_HOWTO}. Scenic (Flax msgpack) checkpoints and Google's .npz ViTs are read as they are"
        )
    if path.suffix == ".npz":  # Google's ViT releases (vision_transformer, big_vision)
        return _convert_vit(read_npz(path), entry, overrides, inflation, str(path))
    if path.suffix != ".safetensors":
        with open_flax_checkpoint(path) as flax:  # ValueError naming the file if it is not msgpack
            if inflation is not None or _inflates(entry):
                return _convert_vit(flax.read(), entry, overrides, inflation, str(path))
            return _convert_scenic(flax, entry, str(path), overrides)
    header = read_safetensors_header(path)  # names, shapes, dtypes and offsets checked; no tensor read
    kind = _safetensors_kind(header)
    if kind == "vit":  # a 2D image ViT (timm or transformers layout): goes into the entry's architecture
        return _convert_vit(load_safetensors(path, header), entry, overrides, inflation, str(path))
    if kind == "transformers":
        return _convert_transformers(load_safetensors(path, header), ckpt, entry, overrides)
    config = _metadata_config(header.metadata, str(path)) or ckpt.config or {}
    return _convert_ours(header, config, entry, str(path))


def _safetensors_kind(header: SafetensorsHeader) -> str:
    """'vit' (2D patch kernel), 'transformers' (HF ViViT names) or 'vivit', from names and shapes only."""
    path, specs = header.path, header.tensors
    patch = next(
        (v for k, v in specs.items() if k.endswith(("patch_embed.proj.weight", "patch_embeddings.projection.weight"))),
        None,
    )
    if patch is None:
        raise ValueError(f"{path}: no patch-embedding tensor; not a ViViT, ViT or transformers checkpoint")
    if patch.ndim == 4:
        return "vit"
    if any(k.endswith("patch_embeddings.projection.weight") for k in specs):
        count_blocks(specs, r"(?:vivit\.)?(?:encoder\.layer|layers)\.(\d+)\.", str(path), "layer")
        return "transformers"
    return "vivit"


def _inflates(entry: ModelEntry) -> bool:
    return any(src["format"] == "vit" for src in (entry.pretrained_cfg or {}).get("sources", ()))


# ---------------------------------------------------------------- registry sources
def _scenic_url(src: Mapping[str, Any]) -> str:
    return str(src["url"]).replace("{scenic}", scenic_base_url())


def _is_flax_checkpoint(path: Path) -> None:
    """A download check: the file is one complete Flax msgpack object (a cut or garbled body is not)."""
    open_flax_checkpoint(path).close()


def _scenic_source(entry: ModelEntry, src: Mapping[str, Any]) -> Converted:
    """Download the original Scenic file once, convert it, cache our safetensors; later calls read only that.

    The cached file records its source URL, the converter and format versions and the config; one
    that does not match (or cannot be read) is rebuilt. Concurrent processes (torchrun ranks) wait
    for the first one's download and conversion (`vivit.weights.cache.get_or_build`).
    """
    url = _scenic_url(src)
    cached = cache_dir() / "converted" / f"{entry.name}.safetensors"
    expected = {
        "source_url": url,
        "converter_version": str(CONVERTER_VERSION),
        "format_version": FORMAT_VERSION,
        "config": "*",
    }

    def read(path: Path) -> Converted:
        header = read_safetensors_header(path)
        config = _metadata_config(header.metadata, str(path)) or {}
        if not isinstance(config.get("model_args"), Mapping):
            raise ValueError(f"{path}: its config has no model_args")
        return _convert_ours(header, config, entry, str(path))._replace(pretrained_cfg={})

    def build() -> tuple[Converted, str]:
        with scratch_dir() as folder:
            raw = folder / f"{entry.name}.checkpoint"
            try:
                try:
                    sha = download_url(url, raw, expected_sha256=src.get("sha256"), validate=_is_flax_checkpoint)
                except WeightsDownloadError as err:
                    if not is_offline():
                        raise
                    raise WeightsDownloadError(
                        f"offline mode (HF_HUB_OFFLINE) is on and {entry.name} is not in the cache ({cached}); run once "
                        f"with network access, or copy a converted file there (VIVIT_CACHE sets the cache folder)"
                    ) from err
                with open_flax_checkpoint(raw) as flax:
                    converted = _convert_scenic(flax, entry, url)
            finally:
                raw.unlink(missing_ok=True)
        return converted, sha

    def write(result: tuple[Converted, str], path: Path) -> None:
        converted, sha = result
        model = _build(entry.model_cls, converted.model_args, device="meta")
        model.pretrained_cfg = {**entry.pretrained_cfg, "architecture": entry.name} if entry.pretrained_cfg else {}
        metadata = {k: v for k, v in expected.items() if k != "config"}
        tensors = {k: v.detach().contiguous().cpu() for k, v in converted.state_dict.items()}
        save_file(
            tensors,
            str(path),
            metadata={
                "config": json.dumps(_jsonable(_config(model))),
                **metadata,
                "source_sha256": sha,
                "converter": f"vivit.weights.from_scenic {__version__}",
            },
        )

    result = get_or_build(
        cached,
        expected,
        read=lambda path: (read(path), ""),
        build=build,
        write=write,
        what=f"converted weights of {entry.name}",
    )
    return result[0]


def _source(entry: ModelEntry, src: Mapping[str, Any], overrides: Mapping[str, Any], inflation: Any) -> Converted:
    fmt = src["format"]
    if fmt == "scenic":
        return _scenic_source(entry, src)
    if fmt not in ("transformers", "vit", FORMAT):
        raise ValueError(f"unknown source format {fmt!r} in {entry.name}")
    if "file" in src:  # shipped inside the package (the offline demo)
        path = Path(__file__).resolve().parent.parent / src["file"]
    else:
        path = hf_download(
            src["hf_hub"],
            src.get("filename", WEIGHTS_NAME),
            revision=src.get("revision"),
            expected_sha256=src.get("sha256"),
        )
    header = read_safetensors_header(path)
    if fmt == "transformers":  # sizes from the entry (a config.json would only repeat them)
        _safetensors_kind(header)  # the depth rule, before anything is read
        return Converted(
            *_convert_transformers(load_safetensors(path, header), _Checkpoint(path, str(path)), entry, overrides)[:2],
            {},
        )
    if fmt == "vit":
        return _convert_vit(load_safetensors(path, header), entry, overrides, inflation, str(path))
    return _convert_ours(header, _metadata_config(header.metadata, str(path)) or {}, entry, str(path))


# ---------------------------------------------------------------- steps 3 and 4: build, adapt and load
def _build(cls: type[ViViT], args: Mapping[str, Any], device: str | None = None, origin: str | None = None) -> ViViT:
    """The model; with `origin` (arguments read from that file), any refusal names the file."""
    try:
        if device is None:
            return cls(**args)
        with torch.device(device):
            return cls(**args)
    except TypeError as err:
        lead = f"{origin}: " if origin else ""
        raise ValueError(f"{lead}invalid arguments for {cls.__name__}: {str(err)[:300]}") from None
    except ValueError as err:
        if origin is None:
            raise
        raise ValueError(f"{origin}: {str(err)[:300]}") from None


def _grid(args: Mapping[str, Any]) -> tuple[int, int, int]:
    size = args["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    p = args["patch_size"]
    ph, pw = (p, p) if isinstance(p, int) else p
    return args["num_frames"] // args["tubelet_size"], h // ph, w // pw


def _adapt(sd: dict[str, torch.Tensor], ckpt_args: Mapping[str, Any], model: ViViT) -> dict[str, torch.Tensor]:
    """Fresh head for another class count; resampled position tables for another frame count or size."""
    if model.num_classes != ckpt_args.get("num_classes", model.num_classes) or model.num_classes == 0:
        sd = {k: v for k, v in sd.items() if k not in ("head.weight", "head.bias")}
        sd.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
        if model.num_classes:
            sd["head.weight"] = torch.zeros_like(sd["head.weight"])
            sd["head.bias"] = torch.zeros_like(sd["head.bias"])
    old, new = _grid(ckpt_args), model.grid_size
    if old != new:
        prefix = model.num_prefix_tokens
        if isinstance(model, FactorizedEncoderViViT):
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (1, *old[1:]), (1, *new[1:]), prefix)
            sd["temporal_pos_embed"] = resample_pos_embed(
                sd["temporal_pos_embed"], (old[0], 1, 1), (new[0], 1, 1), prefix
            )
        else:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], old, new, prefix)
    return sd


def _finish(model: ViViT, converted: Converted, cfg: Mapping[str, Any], architecture: str) -> ViViT:
    origin = str(cfg.get("source", "the checkpoint"))
    sd = _adapt(converted.state_dict, converted.model_args, model)
    _check_fit({k: tuple(v.shape) for k, v in sd.items()}, model, origin)  # a short message, not torch's list
    sd = cast_finite(sd, {k: v.dtype for k, v in model.state_dict().items()}, origin)  # float64 1e300 is no inf
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"{origin} does not fit {type(model).__name__}: {str(err)[:300]}") from None
    cfg = {**cfg, "architecture": architecture}
    if cfg.get("num_classes") not in (None, model.num_classes):
        cfg.update(num_classes=model.num_classes, label_names=None)  # a fresh head: old labels no longer apply
    if cfg.get("input_size"):
        cfg["input_size"] = (model.in_chans, model.num_frames, *model.img_size)
    model.pretrained_cfg = cfg
    return model.eval()


def _from_entry_sources(entry: ModelEntry, overrides: dict[str, Any], inflation: Any) -> ViViT:
    cfg = entry.pretrained_cfg
    if cfg is None:
        with_weights = ", ".join(n for n in list_models(f"{entry.name}_*", pretrained=True)) or "none"
        raise ValueError(
            f"{entry.name!r} has no pretrained weights; entries with weights for it: {with_weights} "
            "(vivit.list_models(pretrained=True) lists all)"
        )
    errors = []
    for src in cfg["sources"]:
        try:
            converted = _source(entry, src, overrides, inflation)
        except (WeightsDownloadError, CacheError) as err:  # try the next source; other errors are real problems
            where = (
                f"hf-hub:{src['hf_hub']}"
                if "hf_hub" in src
                else _scenic_url(src)
                if "url" in src
                else str(src.get("file"))
            )
            errors.append(str(err) if where in str(err) or src.get("hf_hub", "\0") in str(err) else f"{where}: {err}")
            continue
        model = _build(entry.model_cls, {**entry.model_args, **converted.model_args, **overrides})
        return _finish(model, converted, cfg, entry.name)
    raise WeightsDownloadError(f"could not get weights for {entry.name} from any source:\n  " + "\n  ".join(errors))


def load_pretrained_model(
    entry: ModelEntry, pretrained: bool | str | os.PathLike, overrides: Mapping[str, Any]
) -> ViViT:
    """`create_model(name, pretrained=...)` lands here; see `vivit.create_model` for the arguments."""
    overrides = dict(overrides)
    inflation = overrides.pop("inflation", None)
    inflation_settings(inflation)  # a bad setting fails before any download
    if pretrained is True:
        return _from_entry_sources(entry, overrides, inflation)
    if pretrained is False:
        raise ValueError("pretrained=False loads nothing; build the model with create_model(name) instead")
    ckpt = _locate(os.fspath(pretrained))
    return _load_checkpoint(entry, ckpt, overrides, inflation)


def _load_checkpoint(entry: ModelEntry, ckpt: _Checkpoint, overrides: Mapping[str, Any], inflation: Any) -> ViViT:
    converted = _convert_checkpoint(ckpt, entry, overrides, inflation)
    model = _build(entry.model_cls, {**converted.model_args, **overrides}, origin=ckpt.origin)
    cfg = converted.pretrained_cfg or dict(entry.pretrained_cfg or {})
    return _finish(model, converted, {**cfg, "source": ckpt.origin}, entry.name)


# ---------------------------------------------------------------- names that describe themselves
def _described_entry(config: Mapping[str, Any] | None, origin: str) -> tuple[ModelEntry, dict[str, Any]]:
    """The registry entry a checkpoint's config names, and the arguments it adds.

    vivit configs name their `architecture` (format 2) or class (format 1); a transformers ViViT
    config is Model 1, registered under the architecture of its width and heads when there is one.
    """
    config = dict(config or {})
    if config.get("model_type") == "vivit":  # transformers
        args = model_args_from_transformers_config(config)
        fits = matching_architectures(SpatioTemporalViViT, embed_dim=args["embed_dim"], num_heads=args["num_heads"])
        return get_entry(fits[0] if fits else matching_architectures(SpatioTemporalViViT)[0]), args
    if config.get("format", FORMAT) == FORMAT and (cls := _described_class(config)) is not None:
        arch = config.get("architecture")
        try:
            entry = get_entry(arch) if arch else None
        except ValueError:
            entry = None
        if entry is None or entry.model_cls is not cls:
            entry = get_entry(matching_architectures(cls)[0])
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("model_args") or {}).items()}
        return entry, args
    raise ValueError(
        f"{origin} does not say which model it holds (no vivit or transformers config.json, and no config in the "
        "safetensors metadata); name the architecture: create_model(NAME, pretrained=...)"
    )


def load_described_model(spec: str, pretrained: bool, overrides: Mapping[str, Any]) -> ViViT:
    """`create_model('hf-hub:org/repo' | 'local-dir:/path', pretrained, **overrides)`, as timm.

    The architecture comes from the checkpoint's config (vivit's `config.json` or safetensors
    metadata, or a transformers ViViT `config.json`). `pretrained=True` loads the weights;
    `pretrained=False` builds the architecture with a fresh init (timm's behaviour for these names).
    """
    if not spec.startswith(_DESCRIBED_PREFIXES):
        raise ValueError(f"expected 'hf-hub:org/repo' or 'local-dir:/path', got {spec!r}")
    overrides = dict(overrides)
    inflation = overrides.pop("inflation", None)
    ckpt = _locate(spec, weights=bool(pretrained) or not spec.startswith("hf-hub:"))
    config = ckpt.config
    if (
        ckpt.weights is not None
        and ckpt.weights.suffix == ".safetensors"
        and (config or {}).get("model_type") != "vivit"
    ):
        config = _metadata_config(read_safetensors_header(ckpt.weights).metadata, ckpt.origin) or config
    entry, args = _described_entry(config, ckpt.origin)
    entry = ModelEntry(entry.name, entry.model_cls, {**entry.model_args, **args}, entry.pretrained_cfg)
    if pretrained:
        return _load_checkpoint(entry, ckpt, overrides, inflation)
    check_model_args(entry.model_args, ckpt.origin)  # sizes from the config: capped before anything is built
    model = _build(entry.model_cls, {**entry.model_args, **overrides})
    config = config or {}
    cfg = validate_pretrained_cfg(config.get("pretrained_cfg") or {}, ckpt.origin)
    names = config.get("label_names") if "model_type" not in config else _label_names(config, model.num_classes)
    if cfg.get("label_names") is None and names is not None and len(names) == model.num_classes:
        cfg["label_names"] = tuple(names)
    model.pretrained_cfg = {**cfg, "architecture": entry.name, "source": spec}
    return model
