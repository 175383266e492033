"""The one weight loader: registry entry / path / Hub repo -> a model with its weights.

Flow: resolve the source into our `state_dict` plus the architecture arguments the tensors
imply -> build the model with the user's overrides -> adapt (fresh head for another class count,
resampled position tables for another frame count or size) -> `load_state_dict(strict=True)`.

Only safetensors and msgpack are ever read: no pickle, so a checkpoint cannot run code.
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..models.pos_embed import resample_pos_embed
from ..models.registry import ModelEntry
from ..models.vivit import MODEL_CLASSES, FactorizedEncoderViViT, _ViViT
from .flax_msgpack import flatten_params, read_flax_checkpoint
from .hf_transformers import from_transformers
from .hub import WeightsDownloadError, atomic_write, cache_dir, download_url, hf_download, is_offline, scenic_base_url
from .inflate import inflate_vit
from .scenic import from_scenic, scenic_model_args

__all__ = ["load_pretrained_model", "push_to_hub", "save_pretrained", "save_safetensors"]

FORMAT = "vivit"
FORMAT_VERSION = "1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_CLASSES = {cls.__name__: cls for cls in MODEL_CLASSES.values()}
# create_model keywords that configure loading rather than the architecture
_LOAD_OPTIONS = ("inflation",)


# ---------------------------------------------------------------- our own format
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _config(model: _ViViT) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vivit_version": __version__,
        "model_class": type(model).__name__,
        "model_args": _jsonable(model.model_args),
        "pretrained_cfg": _jsonable(getattr(model, "pretrained_cfg", {}) or {}),
    }


def _save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Path, config: Mapping[str, Any], **meta: str) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {"config": json.dumps(_jsonable(config)), **meta}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_safetensors(model: _ViViT, path: str | os.PathLike, **metadata: str) -> Path:
    """Write one self-describing `.safetensors` file (the config travels in its metadata).

    `create_model(<architecture>, pretrained=path)` rebuilds the model. Extra `metadata` strings
    (e.g. `converted_from`) are stored beside the config.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_safetensors(model.state_dict(), path, _config(model), **metadata)
    return path


def save_pretrained(model: _ViViT, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` and `config.json` (architecture + pretrained_cfg) to `directory`.

    `create_model(<architecture>, pretrained=directory)` or `pretrained='hf-hub:org/repo'` after
    uploading rebuilds the same model. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, directory / WEIGHTS_NAME)
    config = _config(model)
    with atomic_write(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return directory


def push_to_hub(model: _ViViT, repo_id: str, *, private: bool | None = None, commit_message: str | None = None) -> str:
    """Upload `model.safetensors` + `config.json` to a Hub model repo (created if needed); returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message or "Upload vivit model")
    return f"{api.endpoint}/{repo_id}"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupted: "
            "delete it and download or convert it again"
        ) from None


def _tensor_model_args(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture facts read from our tensors; they win over any config that disagrees."""
    args: dict[str, Any] = {}
    if "patch_embed.proj.weight" in sd:
        d, c, t, h, w = sd["patch_embed.proj.weight"].shape
        args.update(embed_dim=d, in_chans=c, tubelet_size=t, patch_size=(h, w))
    for prefix, key in (("blocks", "depth"), ("temporal_blocks", "temporal_depth")):
        ids = {int(m[1]) for k in sd if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        if ids:
            args[key] = max(ids) + 1
            fc1 = sd.get(f"{prefix}.0.mlp.fc1.weight")
            if fc1 is not None:  # absent in a corrupted file: load_state_dict names the missing key
                args["mlp_dim" if prefix == "blocks" else "temporal_mlp_dim"] = fc1.shape[0]
    args["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    args["global_pool"] = "token" if "cls_token" in sd else "avg"
    return args


# ---------------------------------------------------------------- converters (payload in memory)
Converted = tuple[dict[str, torch.Tensor], dict[str, Any]]  # our state_dict, the args its tensors imply


_SIZE_ARGS = ("img_size", "num_frames")


def _scenic_grid_tokens(params: Mapping[str, Any]) -> tuple[int, ...]:
    """Grid tokens in a Scenic checkpoint's position tables (cls slots excluded)."""
    flat = flatten_params(params)
    prefix = int(any(k == "cls" or k.startswith("cls_") for k in flat))
    tables = ("SpatialTransformer", "TemporalTransformer") if "cls_SpatialTransformer" in flat or any(
        k.startswith("SpatialTransformer/") for k in flat) else ("Transformer",)  # fmt: skip
    return tuple(flat[f"{t}/posembed_input/pos_embedding"].shape[1] - prefix for t in tables)


def _grid_tokens(args: Mapping[str, Any]) -> tuple[int, ...]:
    nt, nh, nw = _grid(args)
    return (nh * nw, nt) if "temporal_depth" in args else (nt * nh * nw,)


def _convert_scenic(
    params: Mapping[str, Any], entry: ModelEntry, origin: str, overrides: Mapping[str, Any] | None = None
) -> Converted:
    inferred = scenic_model_args(params)
    if ("temporal_depth" in inferred) != issubclass(entry.model_cls, FactorizedEncoderViViT):
        kind = "a factorised-encoder (Model 2)" if "temporal_depth" in inferred else "a single-encoder (Model 1/3/4)"
        raise ValueError(f"{origin} holds {kind} ViViT checkpoint, but {entry.name} is a {entry.model_cls.__name__}")
    args = {**entry.model_args, **inferred}
    # A checkpoint stores only its position-token count, not its frames and size: when the entry's
    # grid does not fit that count, the user's size overrides describe the checkpoint.
    sizes = {k: v for k, v in (overrides or {}).items() if k in _SIZE_ARGS}
    stored = _scenic_grid_tokens(params)
    if sizes and stored != _grid_tokens(args) and stored == _grid_tokens({**args, **sizes}):
        args.update(sizes)
    model = _build(entry.model_cls, args, device="meta")
    try:
        return from_scenic(params, model), model.model_args
    except ValueError as err:
        raise ValueError(f"{origin} does not fit {entry.name}: {err}") from None


def _convert_transformers(hf_sd: Mapping[str, torch.Tensor], entry: ModelEntry) -> Converted:
    layers = {int(m[1]) for k in hf_sd if (m := re.search(r"(?:encoder\.layer|layers)\.(\d+)\.", k))}
    args = {**entry.model_args, "depth": max(layers, default=-1) + 1}
    sd = from_transformers(hf_sd, _build(entry.model_cls, args, device="meta"))
    return sd, {**args, **_tensor_model_args(sd)}


def _convert_vit(image: Mapping[str, Any], entry: ModelEntry, overrides: Mapping[str, Any], inflation: str | None) -> Converted:
    # inflation builds straight into the user's architecture (size, frames, classes)
    model = _build(entry.model_cls, {**entry.model_args, **overrides})
    settings = dict((entry.pretrained_cfg or {}).get("inflation", {}))
    if inflation is not None:
        settings["kernel"] = inflation
    return inflate_vit(image, model, **settings), model.model_args


def _convert_ours(sd: dict[str, torch.Tensor], config: Mapping[str, Any], entry: ModelEntry, origin: str) -> Converted:
    if config.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{origin}: not a vivit checkpoint (format {config.get('format')!r})")
    cls = _CLASSES.get(config.get("model_class", ""), entry.model_cls)
    if cls is not entry.model_cls:
        raise ValueError(f"{origin} holds a {cls.__name__}, but {entry.name!r} is a {entry.model_cls.__name__}")
    not_float = [f"{k} ({v.dtype})" for k, v in sd.items() if not v.is_floating_point()]
    if not_float:
        raise ValueError(f"{origin}: weights must be floating point, got {', '.join(not_float)}; the file may be corrupted")
    args = {**entry.model_args, **config.get("model_args", {}), **_tensor_model_args(sd)}
    return sd, {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")


def _convert_file(path: Path, entry: ModelEntry, overrides: Mapping[str, Any], inflation: str | None) -> tuple[Converted, dict]:
    """Any checkpoint file we can read, identified by its content -> (converted, its pretrained_cfg)."""
    if path.suffix in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: pickled checkpoints (.pt, .pth, .bin, ...) are refused because unpickling can run code; "
            "use a .safetensors file, a directory written by save_pretrained, or a Scenic (Flax msgpack) checkpoint"
        )
    if path.suffix != ".safetensors":
        params = read_flax_checkpoint(path)  # ValueError naming the file if it is not msgpack
        is_image_vit = inflation is not None or _inflates(entry)
        return (_convert_vit(params, entry, overrides, inflation) if is_image_vit
                else _convert_scenic(params, entry, str(path), overrides)), {}  # fmt: skip
    sd, metadata = _read_safetensors(path)
    try:
        config = json.loads(metadata["config"]) if "config" in metadata else {}
        if not config and (path.parent / CONFIG_NAME).exists():
            config = json.loads((path.parent / CONFIG_NAME).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its config is not valid JSON ({err}); the file may be corrupted") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: its config is not a JSON object; the file may be corrupted")
    patch = next((v for k, v in sd.items() if k.endswith(("patch_embed.proj.weight", "patch_embeddings.projection.weight"))), None)
    if patch is None:
        raise ValueError(f"{path}: no patch-embedding tensor; not a ViViT, ViT or transformers checkpoint")
    if patch.ndim == 4:  # a 2D image ViT (timm or transformers layout)
        return _convert_vit(sd, entry, overrides, inflation), {}
    if any(k.endswith("patch_embeddings.projection.weight") for k in sd):
        return _convert_transformers(sd, entry), {}
    return _convert_ours(sd, config, entry, str(path)), config.get("pretrained_cfg") or {}


def _inflates(entry: ModelEntry) -> bool:
    return any(src["format"] == "vit" for src in (entry.pretrained_cfg or {}).get("sources", ()))


# ---------------------------------------------------------------- registry sources
def _scenic_source(entry: ModelEntry, src: Mapping[str, Any]) -> Converted:
    """Download the original Scenic file once, convert it, cache our safetensors; later calls read only that."""
    url = src["url"].replace("{scenic}", scenic_base_url())
    cached = cache_dir() / "converted" / f"{entry.name}.safetensors"
    if cached.exists():
        try:
            sd, meta = _read_safetensors(cached)
            if meta.get("source_url") == url:
                return sd, json.loads(meta["config"])["model_args"]
        except ValueError:
            pass  # unreadable cache: convert again (the write below is atomic)
    download_dir = cache_dir() / "downloads"
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir) as tmp:
        raw = Path(tmp) / "checkpoint"
        try:
            sha = download_url(url, raw)
        except WeightsDownloadError as err:
            if not is_offline():
                raise
            raise WeightsDownloadError(
                f"offline mode (HF_HUB_OFFLINE) is on and {entry.name} is not in the cache ({cached}); "
                "run once with network access, or copy a converted file there"
            ) from err
        params = read_flax_checkpoint(raw)
    sd, args = _convert_scenic(params, entry, url)
    config = {**_config(_build(entry.model_cls, args, device="meta")), "pretrained_cfg": _jsonable(entry.pretrained_cfg)}
    _save_safetensors(
        sd, cached, config, source_url=url, source_sha256=sha, converter=f"vivit.weights.from_scenic {__version__}"
    )
    return sd, config["model_args"]


def _source(entry: ModelEntry, src: Mapping[str, Any], overrides: Mapping[str, Any], inflation: str | None) -> Converted:
    fmt = src["format"]
    if fmt == "scenic":
        return _scenic_source(entry, src)
    if fmt not in ("transformers", "vit", FORMAT):
        raise ValueError(f"unknown source format {fmt!r} in {entry.name}")
    if "file" in src:  # shipped inside the package (the offline demo)
        path = Path(__file__).resolve().parent.parent / src["file"]
    else:
        path = hf_download(src["hf_hub"], src.get("filename", WEIGHTS_NAME), revision=src.get("revision"))
    sd, metadata = _read_safetensors(path)
    if fmt == "transformers":
        return _convert_transformers(sd, entry)
    if fmt == "vit":
        return _convert_vit(sd, entry, overrides, inflation)
    config = json.loads(metadata["config"]) if "config" in metadata else {}
    return _convert_ours(sd, config, entry, str(path))


# ---------------------------------------------------------------- build and adapt
def _build(cls: type[nn.Module], args: Mapping[str, Any], device: str | None = None) -> _ViViT:
    try:
        if device is None:
            return cls(**args)
        with torch.device(device):
            return cls(**args)
    except TypeError as err:
        raise ValueError(f"invalid arguments for {cls.__name__}: {err}") from None


def _grid(args: Mapping[str, Any]) -> tuple[int, int, int]:
    size = args["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    p = args["patch_size"]
    ph, pw = (p, p) if isinstance(p, int) else p
    return args["num_frames"] // args["tubelet_size"], h // ph, w // pw


def _adapt(sd: dict[str, torch.Tensor], ckpt_args: Mapping[str, Any], model: _ViViT) -> dict[str, torch.Tensor]:
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
            sd["temporal_pos_embed"] = resample_pos_embed(sd["temporal_pos_embed"], (old[0], 1, 1), (new[0], 1, 1), prefix)
        else:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], old, new, prefix)
    return sd


def _finish(model: _ViViT, sd: dict[str, torch.Tensor], ckpt_args: Mapping[str, Any], cfg: Mapping[str, Any]) -> _ViViT:
    sd = _adapt(sd, ckpt_args, model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: a corrupted or foreign file
        raise ValueError(f"{cfg.get('source', 'the checkpoint')} does not fit {type(model).__name__}: {err}") from None
    cfg = dict(cfg)
    if cfg.get("num_classes") not in (None, model.num_classes):
        cfg.update(num_classes=model.num_classes, label_names=None)  # a fresh head: old labels no longer apply
    if cfg.get("input_size"):
        cfg["input_size"] = (model.in_chans, model.num_frames, *model.img_size)
    model.pretrained_cfg = cfg
    return model.eval()


def _from_entry_sources(entry: ModelEntry, overrides: dict[str, Any], inflation: str | None) -> _ViViT:
    cfg = entry.pretrained_cfg
    if cfg is None:
        with_weights = ", ".join(n for n in _with_weights(entry.name)) or "none"
        raise ValueError(
            f"{entry.name!r} has no pretrained weights; entries with weights for it: {with_weights} "
            "(vivit.list_models(pretrained=True) lists all)"
        )
    errors = []
    for src in cfg["sources"]:
        try:
            sd, ckpt_args = _source(entry, src, overrides, inflation)
        except WeightsDownloadError as err:  # try the next source; other errors are real problems
            errors.append(f"{src.get('hf_hub') or src.get('url') or src.get('file')}: {err}")
            continue
        return _finish(_build(entry.model_cls, {**entry.model_args, **ckpt_args, **overrides}), sd, ckpt_args, cfg)
    raise WeightsDownloadError(f"could not get weights for {entry.name} from any source:\n  " + "\n  ".join(errors))


def _with_weights(arch: str) -> list[str]:
    from ..models.registry import list_models

    return list_models(f"{arch}_*", pretrained=True)


def load_pretrained_model(entry: ModelEntry, pretrained: bool | str | os.PathLike, overrides: Mapping[str, Any]) -> _ViViT:
    """`create_model(..., pretrained=...)` lands here; see `vivit.create_model` for the arguments."""
    overrides = dict(overrides)
    inflation = overrides.pop("inflation", None)
    if inflation not in (None, "central", "average"):
        raise ValueError(f"inflation must be 'central' or 'average', got {inflation!r}")
    if pretrained is True:
        return _from_entry_sources(entry, overrides, inflation)
    spec = os.fspath(pretrained)
    if spec.startswith("hf-hub:"):
        repo, _, revision = spec.removeprefix("hf-hub:").partition("@")
        path = hf_download(repo, WEIGHTS_NAME, revision=revision or None)
        try:  # config.json is optional beside a model.safetensors that carries its config
            hf_download(repo, CONFIG_NAME, revision=revision or None)
        except WeightsDownloadError:
            pass
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist; pretrained= takes True, a checkpoint file (.safetensors or Scenic), "
                "a directory written by save_pretrained, or 'hf-hub:org/repo'"
            )
        if path.is_dir():
            if not (path / WEIGHTS_NAME).exists():
                raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}; expected a directory written by save_pretrained")
            path = path / WEIGHTS_NAME
    (sd, ckpt_args), cfg = _convert_file(path, entry, overrides, inflation)
    model = _build(entry.model_cls, {**ckpt_args, **overrides})
    cfg = cfg or dict(entry.pretrained_cfg or {})
    return _finish(model, sd, ckpt_args, {**cfg, "source": spec})
