"""The weight loader: one straight pipeline, as timm's (resolve -> fetch -> read -> filter -> load).

1. locate (`locate`): what the user gave (`pretrained=` path, folder, `hf-hub:org/repo`, or a registry
   entry's sources) -> a local `Checkpoint`: the weights file and the `config.json` /
   `preprocessor_config.json` beside it;
2. identify (`formats.identify_format`): safetensors, Flax msgpack, `.npz` or pickle, from the
   file's first bytes (pickle is refused: it can run code; other kinds are named);
3. read the header: names, shapes and dtypes (safetensors header, Flax specs), and the config;
4. convert (`convert_checkpoint`): the pure converters (`from_scenic`, `from_transformers`,
   `inflate_vit`, vivit's own names) -> our state dict, the architecture its tensors imply (capped:
   `validate.ARCH_LIMITS`, checked against a model built on the meta device before any tensor is
   read) and its `pretrained_cfg`;
5. adapt (`vivit.models.adapt.checkpoint_filter_fn`, beside the model): a fresh head for another
   class count, position tables resampled for another frame count or size;
6. build (`build_model`): the limits checked, then the model built on the meta device: nothing is
   allocated or randomly initialised only to be overwritten;
7. load: `load_state_dict(strict=True, assign=True)`: the parameters are the checkpoint's tensors
   (safetensors: the file's memory map, copy-on-write).

Only safetensors, msgpack and `.npz` (with `allow_pickle=False`) are ever read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file

from ..models.adapt import checkpoint_filter_fn, token_grid
from ..models.registry import ModelEntry, get_entry, list_models, matching_architectures
from ..models.vivit import FactorizedEncoderViViT, SpatioTemporalViViT, ViViT
from .cache import CacheError, get_or_build, scratch_dir, tensors_digest, tensors_match_digest
from .flax_msgpack import (
    ArraySpec,
    FlaxCheckpoint,
    check_flax_file,
    flatten_params,
    open_flax_checkpoint,
    require_msgpack,
)
from .formats import (
    ACCEPTED,
    SafetensorsHeader,
    cast_finite,
    check_regular_file,
    identify_format,
    load_safetensors,
    parse_json,
    read_json_file,
    read_safetensors_header,
)
from .hf_transformers import (
    data_config_from_transformers,
    from_transformers,
    model_args_from_transformers_config,
    transformers_label_names,
    transformers_model_args,
)
from .hub import DownloadLimits, WeightsDownloadError, cache_dir, download_url, hf_download, is_offline, scenic_base_url
from .inflate import inflate_vit, inflation_settings
from .npz import read_npz
from .saving import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    MODEL_CLASSES_BY_NAME,
    PROCESSOR_NAME,
    WEIGHTS_NAME,
    aligned_metadata,
    jsonable,
    model_config,
    push_to_hub,
    save_pretrained,
    save_safetensors,
)
from .scenic import CONVERTER_VERSION, check_scenic_params, from_scenic, scenic_model_args
from .validate import (
    check_model_args,
    check_parameter_count,
    count_blocks,
    short_list,
    validate_pretrained_cfg,
)

__all__ = [
    "Checkpoint",
    "Converted",
    "build_model",
    "convert_checkpoint",
    "load_described_model",
    "load_pretrained_model",
    "locate",
    "manual_download_path",
    "push_to_hub",
    "save_pretrained",
    "save_safetensors",
]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_SAFETENSORS_HOWTO = (
    "get a safetensors copy: timm `timm.models.push_to_hf_hub` / `save_for_hf(model, dir, safe_serialization=True)`, "
    "transformers `model.save_pretrained(dir, safe_serialization=True)`, or vivit's own `model.save_pretrained(dir)`"
)
_SIZE_ARGS = ("img_size", "num_frames")


# ---------------------------------------------------------------- step 6: build (used by every step that builds)
def build_model(
    cls: type[ViViT], args: Mapping[str, Any], where: str, *, from_file: bool = True, device: str | None = "meta"
) -> ViViT:
    """A model of `cls` with `args`, its size within the limits checked before anything is allocated.

    The arguments are checked (`check_model_args`: types and ranges), the model is built on the meta
    device and its parameters counted (`check_parameter_count`); with `device=None` it is then built
    for real (random init), else returned on `device`.

    Args:
        cls: One of the four model classes.
        args: Constructor arguments.
        where: Their source (a file, or the model name and overrides), named in every error.
        from_file: Whether they come from a file (errors then say it may be corrupt).
        device: 'meta' (default) for a model whose weights are about to be loaded (nothing allocated),
            or None for a model built for real, randomly initialised (Scenic's init: zero heads).

    Raises:
        ValueError: Arguments of the wrong type or outside the limits, or refused by the constructor.
    """
    check_model_args(args, where, from_file=from_file)
    try:
        with torch.device("meta"):
            model = cls(**args)
    except (TypeError, ValueError) as err:
        text = str(err)[:300]
        if isinstance(err, TypeError) or not from_file or where not in text:
            raise ValueError(f"{where}: invalid arguments for {cls.__name__}: {text}") from None
        raise
    check_parameter_count(model, where, from_file=from_file)
    return cls(**args) if device is None else model


# ---------------------------------------------------------------- step 1: locate
@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on local disk and the JSON files found beside it.

    Attributes:
        weights: The weights file (None: only the config was fetched, `create_model('hf-hub:...')`).
        origin: What the user gave, for messages and `pretrained_cfg['source']`.
        config: `config.json` (vivit's or transformers'), or None.
        config_file: Where `config` came from, for messages.
        processor: transformers' `preprocessor_config.json`, or None.
    """

    weights: Path | None
    origin: str
    config: dict[str, Any] | None = None
    config_file: str | None = None
    processor: dict[str, Any] | None = None


def _optional_hub_json(repo: str, filename: str, revision: str | None) -> tuple[dict[str, Any] | None, str | None]:
    try:
        path = hf_download(repo, filename, revision=revision)
    except WeightsDownloadError:
        return None, None  # optional files: a repo without one is fine
    return read_json_file(path, "JSON"), f"hf-hub:{repo}/{filename}"


def locate(spec: str, *, weights: bool = True) -> Checkpoint:
    """`pretrained=` value (a path, `local-dir:PATH` or `hf-hub:org/repo[@revision]`) -> local files.

    Raises:
        FileNotFoundError: A path that does not exist, or a folder without `model.safetensors`.
        ValueError: Not a regular file, an unreadable config.
        WeightsDownloadError: A Hub file that could not be downloaded.
    """
    if spec.startswith("hf-hub:"):
        repo, _, rev = spec.removeprefix("hf-hub:").partition("@")
        revision = rev or None
        config, config_file = _optional_hub_json(repo, CONFIG_NAME, revision)
        path = hf_download(repo, WEIGHTS_NAME, revision=revision) if weights else None
        processor = _optional_hub_json(repo, PROCESSOR_NAME, revision)[0] if weights else None
        return Checkpoint(path, spec, config, config_file, processor)
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pretrained= takes True, 'hf-hub:org/repo', or {ACCEPTED}")
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
    config_path, processor_path = path.parent / CONFIG_NAME, path.parent / PROCESSOR_NAME
    config = read_json_file(config_path, "JSON") if path.suffix == ".safetensors" and config_path.is_file() else None
    processor = read_json_file(processor_path, "JSON") if config is not None and processor_path.is_file() else None
    return Checkpoint(path, spec, config, str(config_path) if config is not None else None, processor)


# ---------------------------------------------------------------- steps 2-4: identify, read, convert
class Converted(NamedTuple):
    """A checkpoint in vivit's names: tensors, the architecture they imply, their pretrained_cfg ({}: the entry's)."""

    state_dict: dict[str, torch.Tensor]
    model_args: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    model: ViViT | None = None  # the checkpoint's architecture on the meta device, if it was built


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


def _tensor_model_args(specs: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Architecture facts read from vivit-named tensors (or header specs); they win over any config
    that disagrees. The depth is the number of distinct block indices, which must run 0..N-1."""
    args: dict[str, Any] = {}
    if "patch_embed.proj.weight" in specs:
        shape = tuple(specs["patch_embed.proj.weight"].shape)
        if len(shape) != 5:
            raise ValueError(f"{origin}: patch_embed.proj.weight has shape {shape}, expected (D, C, t, h, w)")
        d, c, t, h, w = shape
        args.update(embed_dim=d, in_chans=c, tubelet_size=t, patch_size=(h, w))
    for prefix, key in (("blocks", "depth"), ("temporal_blocks", "temporal_depth")):
        depth = count_blocks(specs, rf"{prefix}\.(\d+)\.", origin, prefix)
        if depth:
            args[key] = depth
            fc1 = specs.get(f"{prefix}.0.mlp.fc1.weight")
            if fc1 is not None and len(fc1.shape) == 2:  # absent or odd: the fit check names it
                args["mlp_dim" if prefix == "blocks" else "temporal_mlp_dim"] = fc1.shape[0]
    head = specs.get("head.weight")
    args["num_classes"] = head.shape[0] if head is not None and len(head.shape) == 2 else 0
    args["global_pool"] = "token" if "cls_token" in specs else "avg"
    return args


def _scenic_grid_tokens(flat: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Grid tokens of a Scenic checkpoint's position tables (class slots excluded), or None."""
    prefix = int(any(k == "cls" or k.startswith("cls_") for k in flat))
    factorized = "cls_SpatialTransformer" in flat or any(k.startswith("SpatialTransformer/") for k in flat)
    tables = ("SpatialTransformer", "TemporalTransformer") if factorized else ("Transformer",)
    shapes = [
        tuple(flat[f"{t}/posembed_input/pos_embedding"].shape)
        for t in tables
        if f"{t}/posembed_input/pos_embedding" in flat
    ]
    if len(shapes) != len(tables) or any(len(shape) != 3 for shape in shapes):
        return None
    return tuple(shape[1] - prefix for shape in shapes)


def _grid_tokens(args: Mapping[str, Any]) -> tuple[int, ...]:
    nt, nh, nw = token_grid(args)
    return (nh * nw, nt) if "temporal_depth" in args else (nt * nh * nw,)


def _is_image_vit(specs: Mapping[str, ArraySpec], args: Mapping[str, Any]) -> bool:
    """Whether a Flax checkpoint is a 2D image ViT (Scenic, big_vision, vision_transformer) rather than a
    ViViT: a 2-D patch kernel, one encoder, and an image ViT's names (scanned or `_1`-numbered blocks,
    a `head`) or a position table of one frame of the model's grid."""
    kernel = specs.get("embedding/kernel")
    if (
        kernel is None
        or kernel.ndim != 4
        or any(k.startswith(("SpatialTransformer/", "TemporalTransformer/")) for k in specs)
    ):
        return False
    if any(
        re.match(r"(Transformer/encoderblock/|head/|pre_logits/|MAPHead_\d+/)", k) or "DotProductAttention_1/" in k
        for k in specs
    ):
        return True
    pos = specs.get("Transformer/posembed_input/pos_embedding") or specs.get("pos_embedding")
    if (
        pos is None
        or pos.ndim != 3
        or not all(k in args for k in ("img_size", "patch_size", "num_frames", "tubelet_size"))
    ):
        return False
    nt, nh, nw = token_grid(args)
    return nt > 1 and pos.shape[1] - int("cls" in specs) == nh * nw


def _convert_scenic(flax: FlaxCheckpoint, entry: ModelEntry, origin: str, overrides: Mapping[str, Any]) -> Converted:
    """A Scenic ViViT: the architecture from its shapes, checked on the meta device, then read."""
    inferred = scenic_model_args(flax.specs, origin)
    if ("temporal_depth" in inferred) != issubclass(entry.model_cls, FactorizedEncoderViViT):
        kind = "a factorised-encoder (Model 2)" if "temporal_depth" in inferred else "a single-encoder (Model 1/3/4)"
        raise ValueError(f"{origin} holds {kind} ViViT checkpoint, but {entry.name} is a {entry.model_cls.__name__}")
    args = {**entry.model_args, **inferred}
    # A checkpoint stores only its position-token count, not its frames and size: when the entry's
    # grid does not fit that count, the user's size overrides describe the checkpoint.
    sizes = {k: v for k, v in overrides.items() if k in _SIZE_ARGS}
    stored = _scenic_grid_tokens(flatten_params(flax.specs))
    if sizes and stored is not None and stored != _grid_tokens(args) and stored == _grid_tokens({**args, **sizes}):
        args.update(sizes)
    model = build_model(entry.model_cls, args, origin)
    check_scenic_params(flax.specs, model, f"{origin} does not fit {entry.name}")  # nothing read yet
    return Converted(from_scenic(flax.read(), model, origin), model.model_args, {}, model)


def _convert_transformers(
    hf_sd: Mapping[str, torch.Tensor], ckpt: Checkpoint, entry: ModelEntry, overrides: Mapping[str, Any]
) -> Converted:
    """An HF ViViT (Model 1 only): sizes, classes and labels from its tensors and config.json,
    preprocessing from its preprocessor_config.json."""
    config = ckpt.config if (ckpt.config or {}).get("model_type") == "vivit" else None
    if config is not None:  # every field, even those the tensors decide
        where = ckpt.config_file or ckpt.origin
        try:
            check_model_args(model_args_from_transformers_config(config), where)
        except ValueError as err:
            raise ValueError(str(err) if str(err).startswith(where) else f"{where}: {err}") from None
    # Without a config.json the image size is a guess: the user's img_size override when the position
    # table fits it (as for Scenic files), else the registered architecture's.
    guesses = [{**entry.model_args, "img_size": overrides["img_size"]}] if "img_size" in overrides else []
    for i, fallback in enumerate([*guesses, entry.model_args]):
        try:
            args, labels = transformers_model_args(hf_sd, config, fallback)
            break
        except (ValueError, TypeError) as err:
            if config is not None or i == len(guesses):
                raise ValueError(f"{ckpt.config_file or ckpt.origin}: {str(err)[:300]}") from None
    d, heads = args["embed_dim"], args["num_heads"]
    fits = matching_architectures(SpatioTemporalViViT, embed_dim=d, num_heads=heads)
    use = (
        f"use {' or '.join(fits)}"
        if fits
        else f"no registered architecture has that; pass embed_dim={d}, num_heads={heads}"
    )
    if not issubclass(entry.model_cls, SpatioTemporalViViT):
        raise ValueError(
            f"{ckpt.origin} is a transformers ViViT, which is Model 1 (SpatioTemporalViViT), but {entry.name} is a "
            f"{entry.model_cls.__name__}; {use}"
        )
    wanted = {**entry.model_args, **overrides}
    if (wanted.get("embed_dim"), wanted.get("num_heads")) != (d, heads):
        raise ValueError(
            f"{ckpt.origin} has width {d} with {heads} heads, but {entry.name} has width {wanted.get('embed_dim')} "
            f"with {wanted.get('num_heads')} heads; {use}"
        )
    sd = from_transformers(hf_sd, build_model(SpatioTemporalViViT, args, ckpt.origin))
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
    """A 2D image ViT, inflated straight into the user's architecture (size, frames, classes).

    Built for real (random init): what the ViT does not provide (Model 2's temporal encoder) keeps it.
    """
    model = build_model(entry.model_cls, {**entry.model_args, **overrides}, origin, from_file=False, device=None)
    settings = inflation_settings(inflation, (entry.pretrained_cfg or {}).get("inflation"))
    try:
        state_dict = inflate_vit(image, model, **settings)
    except (ValueError, IndexError, KeyError, RuntimeError) as err:  # a file that is no fitting ViT: one short line
        why = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()).replace(":; ", ": ")
        why = why or type(err).__name__
        raise ValueError(f"{origin}: {why[:400]}{'...' if len(why) > 400 else ''}") from None
    return Converted(state_dict, model.model_args, {})


def _config_problem(where: str, field: str, value: Any, expected: str) -> ValueError:
    shown = repr(value)
    return ValueError(
        f"{where}: its config's {field} is {shown[:60]}{'...' if len(shown) > 60 else ''}, expected {expected}; "
        "the file is corrupt or was written by another tool"
    )


def _config_fields(config: Mapping[str, Any], where: str) -> tuple[type[ViViT] | None, str | None, dict[str, Any]]:
    """A vivit config's `model_class` (format 1), `architecture` (format 2) and `model_args`, each checked
    for type: (the class it names or None, the architecture name or None, the arguments)."""
    fmt = config.get("format", FORMAT)
    if fmt != FORMAT:
        raise ValueError(f"{where}: not a vivit checkpoint (format {str(fmt)[:40]!r})")
    name, arch, args = config.get("model_class"), config.get("architecture"), config.get("model_args")
    if name is not None and name not in MODEL_CLASSES_BY_NAME:
        raise _config_problem(where, "model_class", name, f"one of {', '.join(MODEL_CLASSES_BY_NAME)}")
    if arch is not None and not isinstance(arch, str):
        raise _config_problem(where, "architecture", arch, "a registered model name (a string)")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise _config_problem(where, "model_args", args, "a JSON object of constructor arguments")
    cls = MODEL_CLASSES_BY_NAME.get(name) if name is not None else None
    if cls is None and arch is not None:
        try:
            cls = get_entry(arch).model_cls
        except ValueError:
            cls = None
    return cls, arch, {str(k): tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def _convert_ours(header: SafetensorsHeader, config: Mapping[str, Any], entry: ModelEntry, origin: str) -> Converted:
    """vivit's own format: the architecture from the header's shapes and the config, checked against
    the limits and on the meta device, and only then the tensors read."""
    cls, _, stored_args = _config_fields(config, origin)
    check_model_args(stored_args, origin)  # the config's own values, even those the tensors will override
    cls = cls or entry.model_cls
    if cls is not entry.model_cls:
        raise ValueError(f"{origin} holds a {cls.__name__}, but {entry.name!r} is a {entry.model_cls.__name__}")
    args = {**entry.model_args, **stored_args, **_tensor_model_args(header.tensors, origin)}
    model = build_model(entry.model_cls, args, origin)
    _check_fit(header.shapes, model, origin)
    stored_cfg = config.get("pretrained_cfg") or {}
    if not isinstance(stored_cfg, Mapping):
        raise _config_problem(origin, "pretrained_cfg", stored_cfg, "a JSON object")
    cfg = dict(stored_cfg)
    if config.get("label_names") is not None and cfg.get("label_names") is None:
        cfg["label_names"] = config["label_names"]
    cfg = validate_pretrained_cfg(cfg, origin, args.get("num_classes"))
    return Converted(load_safetensors(header.path, header), args, cfg, model)


def _safetensors_kind(header: SafetensorsHeader) -> str:
    """'vit' (2D patch kernel), 'transformers' (HF ViViT names) or 'vivit', from names and shapes only."""
    path, specs = header.path, header.tensors
    ends = ("patch_embed.proj.weight", "patch_embeddings.projection.weight")
    patch = next((v for k, v in specs.items() if k.endswith(ends)), None)
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


def _refuse_pickle(path: Path, kind: str) -> None:
    if kind == "pickle" or path.suffix in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: pickled checkpoints (.pt, .pth, .bin, ...) are refused because unpickling can run code; "
            f"{_SAFETENSORS_HOWTO}. Scenic (Flax msgpack) checkpoints and Google's .npz ViTs are read as they are"
        )


def _identify(path: Path) -> str:
    """`identify_format`, by content; a file named `.safetensors` whose content is no clear other kind (cut
    inside its first bytes, binary of no kind, or only a first byte that msgpack would read as a map, as a
    safetensors header length can be) is read as one, so that the safetensors reader says what is wrong."""
    try:
        kind = identify_format(path)
    except ValueError:
        if path.suffix == ".safetensors" and path.stat().st_size <= 8:  # empty or cut in the length field
            return "safetensors"
        raise
    return "safetensors" if kind in ("unknown", "msgpack") and path.suffix == ".safetensors" else kind


def convert_checkpoint(ckpt: Checkpoint, entry: ModelEntry, overrides: Mapping[str, Any], inflation: Any) -> Converted:
    """Steps 2-4 for a file: identify it by its content, read and check its header, convert it.

    Raises:
        ValueError: Pickle, a file of another kind (named), or any problem with the checkpoint (naming it).
    """
    path = ckpt.weights
    assert path is not None
    kind = _identify(path)  # by content: a web page saved as model.safetensors is named as one
    _refuse_pickle(path, kind)
    if kind == "unknown":
        with open(path, "rb") as handle:
            head = handle.read(8)
        raise ValueError(
            f"{path} is no checkpoint format vivit knows (it starts with bytes {head.hex(' ')}); expected {ACCEPTED}"
        )
    if kind == "npz":  # Google's ViT releases (vision_transformer, big_vision)
        return _convert_vit(read_npz(path), entry, overrides, inflation, str(path))
    if kind == "msgpack":
        with open_flax_checkpoint(path) as flax:
            if (
                inflation is not None
                or _inflates(entry)
                or _is_image_vit(flax.specs, {**entry.model_args, **overrides})
            ):
                return _convert_vit(flax.read(), entry, overrides, inflation, str(path))
            return _convert_scenic(flax, entry, str(path), overrides)
    header = read_safetensors_header(path)  # names, shapes, dtypes; no tensor read
    kind = _safetensors_kind(header)
    if kind == "vit":  # a 2D image ViT (timm or transformers layout)
        return _convert_vit(load_safetensors(path, header), entry, overrides, inflation, str(path))
    if kind == "transformers":
        return _convert_transformers(load_safetensors(path, header), ckpt, entry, overrides)
    config = _metadata_config(header.metadata, str(path)) or ckpt.config or {}
    return _convert_ours(header, config, entry, str(path))


# ---------------------------------------------------------------- registry sources
def _scenic_url(src: Mapping[str, Any]) -> str:
    return str(src["url"]).replace("{scenic}", scenic_base_url())


def manual_download_path(name: str) -> Path:
    """Where a Scenic checkpoint downloaded by hand for registry entry `name` is picked up (and converted)."""
    return cache_dir() / "downloads" / f"{name}.checkpoint"


def _scenic_source(entry: ModelEntry, src: Mapping[str, Any]) -> Converted:
    """Download the original Scenic file once (or take the one saved by hand at `manual_download_path`),
    convert it and cache our safetensors; later calls read only that.

    The cached file records its source URL, the converter and format versions and the config; one
    that does not match (or cannot be read) is rebuilt, with a warning. Concurrent processes
    (torchrun ranks) wait for the first one's download and conversion (`cache.get_or_build`).
    """
    require_msgpack()  # before any download
    url = _scenic_url(src)
    cached = cache_dir() / "converted" / f"{entry.name}.safetensors"
    expected = {
        "source_url": url,
        "converter": f"vivit.weights.from_scenic v{CONVERTER_VERSION}",
        "converter_version": str(CONVERTER_VERSION),
        "format_version": FORMAT_VERSION,
        "config": "*",
        "tensors_sha256": "*",
    }

    def read(path: Path) -> Converted:
        header = read_safetensors_header(path)
        config = _metadata_config(header.metadata, str(path)) or {}
        if not isinstance(config.get("model_args"), Mapping):
            raise ValueError(f"{path}: its config has no model_args")
        converted = _convert_ours(header, config, entry, str(path))._replace(pretrained_cfg={})
        # Metadata that matches says nothing of the data after it: blocks zeroed by a crash or a disk
        # error would load without a word (found by attack 22b).
        if not tensors_match_digest(path, converted.state_dict, header.metadata.get("tensors_sha256", "")):
            raise ValueError("its tensors changed after it was written (their SHA-256 differs from the recorded one)")
        return converted

    def build() -> tuple[Converted, str]:
        manual = manual_download_path(entry.name)
        with scratch_dir() as folder:
            raw = folder / manual.name
            try:
                if raw.is_file():  # saved there by hand (see the offline message)
                    sha = _check_manual(raw, src)
                else:
                    limits = DownloadLimits.from_env()
                    sha = download_url(
                        url, raw, expected_sha256=src.get("sha256"), limits=limits, validate=check_flax_file
                    )
                with open_flax_checkpoint(raw) as flax:
                    converted = _convert_scenic(flax, entry, url, {})
            finally:
                raw.unlink(missing_ok=True)
        return converted, sha

    def write(result: tuple[Converted, str], path: Path) -> None:
        converted, sha = result
        model = converted.model or build_model(entry.model_cls, converted.model_args, url)
        model.pretrained_cfg = {**entry.pretrained_cfg, "architecture": entry.name} if entry.pretrained_cfg else {}
        tensors = {k: v.detach().contiguous().cpu() for k, v in converted.state_dict.items()}
        metadata = {k: v for k, v in expected.items() if v != "*"}
        metadata |= {
            "config": json.dumps(jsonable(model_config(model))),
            "source_sha256": sha,
            "tensors_sha256": tensors_digest(tensors),
        }
        save_file(tensors, str(path), metadata=aligned_metadata(tensors, metadata))

    limits = DownloadLimits.from_env()
    result = get_or_build(
        cached,
        expected,
        read=lambda path: (read(path), ""),
        build=build,
        write=write,
        what=f"converted weights of {entry.name}",
        lock_timeout_s=limits.deadline_s + 600,
    )
    return result[0]


def _check_manual(path: Path, src: Mapping[str, Any]) -> str:
    """A Scenic checkpoint saved by hand: its pinned SHA-256 (if any) and its format, checked."""
    from .hub import sha256_file

    sha = sha256_file(path)
    if src.get("sha256") and sha != str(src["sha256"]).lower():
        raise ValueError(f"{path}: its SHA-256 is {sha}, expected {src['sha256']}; download it again")
    check_flax_file(path)
    return sha


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
        converted = _convert_transformers(load_safetensors(path, header), Checkpoint(path, str(path)), entry, overrides)
        return converted._replace(pretrained_cfg={})
    if fmt == "vit":
        return _convert_vit(load_safetensors(path, header), entry, overrides, inflation, str(path))
    return _convert_ours(header, _metadata_config(header.metadata, str(path)) or {}, entry, str(path))


def _where(src: Mapping[str, Any]) -> str:
    if "hf_hub" in src:
        return f"hf-hub:{src['hf_hub']}"
    return _scenic_url(src) if "url" in src else str(src.get("file"))


def _no_network_message(entry: ModelEntry) -> str:
    """One short line for an entry none of whose sources can be reached (or offline mode): where to put
    a file downloaded by hand, and under which name."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    sources = list((entry.pretrained_cfg or {}).get("sources", ()))
    hub = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    hosts = sorted(
        {urlsplit(_scenic_url(s) if "url" in s else hub).netloc for s in sources if "url" in s or "hf_hub" in s}
    )
    why = "offline mode is on (HF_HUB_OFFLINE)" if is_offline() else f"no network (cannot reach {', '.join(hosts)})"
    scenic = [s for s in sources if "url" in s]
    if scenic:
        todo = (
            f"download {_scenic_url(scenic[0])} elsewhere and save it as {manual_download_path(entry.name)} "
            "(VIVIT_CACHE sets the cache folder), or pass"
        )
    else:
        src = sources[0] if sources else {}
        todo = f"download {src.get('filename', WEIGHTS_NAME)} of {_where(src)} elsewhere and pass"
    return f"could not get weights for {entry.name}: {why}; {todo} a local checkpoint (pretrained=PATH, vivit --weights PATH)"


def _from_entry_sources(entry: ModelEntry, overrides: dict[str, Any], inflation: Any) -> ViViT:
    cfg = entry.pretrained_cfg
    if cfg is None:
        with_weights = ", ".join(n for n in list_models(f"{entry.name}_*", pretrained=True)) or "none"
        raise ValueError(
            f"{entry.name!r} has no pretrained weights; entries with weights for it: {with_weights} "
            "(vivit.list_models(pretrained=True) lists all)"
        )
    errors: list[WeightsDownloadError] = []
    messages = []
    for src in cfg["sources"]:
        try:
            converted = _source(entry, src, overrides, inflation)
        except (WeightsDownloadError, CacheError) as err:  # try the next source; other errors are real problems
            where = _where(src)
            messages.append(str(err) if where in str(err) or src.get("hf_hub", "\0") in str(err) else f"{where}: {err}")
            if isinstance(err, WeightsDownloadError):
                errors.append(err)
            continue
        return _finish(entry, converted, overrides, cfg, entry.name, source=None)
    if errors and len(errors) == len(messages) and all(err.no_network for err in errors):
        raise WeightsDownloadError(_no_network_message(entry), no_network=True)
    raise WeightsDownloadError(f"could not get weights for {entry.name} from any source:\n  " + "\n  ".join(messages))


# ---------------------------------------------------------------- steps 5-7: adapt, build, load
def _finish(
    entry: ModelEntry,
    converted: Converted,
    overrides: Mapping[str, Any],
    cfg: Mapping[str, Any],
    architecture: str,
    source: str | None,
) -> ViViT:
    origin = source or str(cfg.get("source", entry.name))
    args = {**entry.model_args, **converted.model_args, **overrides}
    where = origin if not overrides else f"{origin} with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}"
    # the model the converter built for the checkpoint is the one to load when nothing is overridden
    model = converted.model if converted.model is not None and not overrides else None
    model = model or build_model(entry.model_cls, args, where, from_file=not overrides)
    sd = checkpoint_filter_fn(converted.state_dict, model, converted.model_args)
    _check_fit({k: tuple(v.shape) for k, v in sd.items()}, model, origin)  # a short message, not torch's list
    sd = cast_finite(sd, {k: v.dtype for k, v in model.state_dict().items()}, origin)  # float64 1e300 is no inf
    # safetensors aligns tensors to 8 bytes only; CPU kernels take other (not bit-identical) paths on memory
    # that is not 64-byte aligned, so such tensors are copied once (a model and its saved copy agree exactly)
    sd = {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"{origin} does not fit {type(model).__name__}: {str(err)[:300]}") from None
    device = torch.get_default_device()  # `with torch.device("cuda"):` builds there, as a plain constructor would
    if device.type != "cpu":
        model = model.to(device)
    cfg = {**cfg, "architecture": architecture}
    if source is not None:
        cfg["source"] = source
    if cfg.get("num_classes") not in (None, model.num_classes):
        cfg.update(num_classes=model.num_classes, label_names=None)  # a fresh head: old labels no longer apply
    if cfg.get("input_size"):
        cfg["input_size"] = (model.in_chans, model.num_frames, *model.img_size)
    model.pretrained_cfg = cfg
    return model.eval()


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
    ckpt = locate(os.fspath(pretrained))
    converted = convert_checkpoint(ckpt, entry, overrides, inflation)
    cfg = converted.pretrained_cfg or dict(entry.pretrained_cfg or {})
    return _finish(entry, converted, overrides, cfg, entry.name, source=ckpt.origin)


# ---------------------------------------------------------------- names that describe themselves
def _described_entry(config: Mapping[str, Any] | None, where: str) -> tuple[ModelEntry, dict[str, Any]]:
    """The registry entry a checkpoint's config names, and the arguments it adds.

    vivit configs name their `architecture` (format 2) or class (format 1); a transformers ViViT
    config is Model 1, registered under the architecture of its width and heads when there is one.
    """
    config = dict(config or {})
    if config.get("model_type") == "vivit":  # transformers
        try:
            args = model_args_from_transformers_config(config)
        except ValueError as err:
            raise ValueError(f"{where}: {str(err)[:300]}") from None
        fits = matching_architectures(SpatioTemporalViViT, embed_dim=args["embed_dim"], num_heads=args["num_heads"])
        return get_entry(fits[0] if fits else matching_architectures(SpatioTemporalViViT)[0]), args
    cls, arch, args = _config_fields(config, where)
    if cls is None:
        raise ValueError(
            f"{where} does not say which model it holds (no vivit or transformers config.json, and no config in the "
            "safetensors metadata); name the architecture: create_model(NAME, pretrained=...)"
        )
    try:
        entry = get_entry(arch) if arch else None
    except ValueError:
        entry = None
    if entry is None or entry.model_cls is not cls:
        entry = get_entry(matching_architectures(cls)[0])
    return entry, args


def load_described_model(spec: str, pretrained: bool, overrides: Mapping[str, Any]) -> ViViT:
    """`create_model('hf-hub:org/repo' | 'local-dir:/path', pretrained, **overrides)`, as timm.

    The architecture comes from the checkpoint's config (vivit's `config.json` or safetensors
    metadata, or a transformers ViViT `config.json`), every field checked. `pretrained=True` loads the
    weights; `pretrained=False` builds the architecture with a fresh init (timm's behaviour).
    """
    if not spec.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(f"expected 'hf-hub:org/repo' or 'local-dir:/path', got {spec!r}")
    overrides = dict(overrides)
    inflation = overrides.pop("inflation", None)
    ckpt = locate(spec, weights=bool(pretrained) or not spec.startswith("hf-hub:"))
    local = ckpt.weights is not None and spec.startswith("local-dir:")
    config, where = ckpt.config, ckpt.config_file or (str(ckpt.weights) if local else spec)
    kind = _identify(ckpt.weights) if ckpt.weights is not None else None  # a CSV or an image: named as such
    if ckpt.weights is not None and kind is not None:
        _refuse_pickle(ckpt.weights, kind)  # before asking for a model name it could not load anyway
    if kind == "safetensors" and (config or {}).get("model_type") != "vivit":
        assert ckpt.weights is not None
        embedded = _metadata_config(read_safetensors_header(ckpt.weights).metadata, str(ckpt.weights))
        if embedded is not None:
            config, where = embedded, str(ckpt.weights)
    entry, args = _described_entry(config, where)
    check_model_args(args, where)  # the config's own values, even those the tensors will override
    entry = ModelEntry(entry.name, entry.model_cls, {**entry.model_args, **args}, entry.pretrained_cfg)
    if pretrained:
        converted = convert_checkpoint(ckpt, entry, overrides, inflation)
        cfg = converted.pretrained_cfg or dict(entry.pretrained_cfg or {})
        return _finish(entry, converted, overrides, cfg, entry.name, source=spec)
    described = where if not overrides else f"{where} with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}"
    model = build_model(
        entry.model_cls, {**entry.model_args, **overrides}, described, from_file=not overrides, device=None
    )
    config = config or {}
    stored = config.get("pretrained_cfg") or {}
    cfg = validate_pretrained_cfg(stored, where)
    names = (
        config.get("label_names") if "model_type" not in config else transformers_label_names(config, model.num_classes)
    )  # a list from vivit's JSON, a tuple from transformers' id2label
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise _config_problem(where, "label_names", names, "a list of strings")
    if cfg.get("label_names") is None and names is not None and len(names) == model.num_classes:
        cfg["label_names"] = tuple(names)
    model.pretrained_cfg = {**cfg, "architecture": entry.name, "source": spec}
    return model
