"""`vivit convert`: any supported checkpoint (or a registered name's weights) to vivit's or transformers' format."""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
from pathlib import Path

from ..factory import create_model
from ..files import WriteError, check_file_destination, check_name_fits, check_output_dir, writing
from ..models.registry import get_entry, list_models
from ..models.vivit import ViViT
from ..version import __version__
from . import console
from .options import (
    DESCRIBED_PREFIXES,
    CommandError,
    UsageError,
    add_override_option,
    add_quiet_option,
    entry_option,
    inflation_value,
    model_choice,
    require_input,
)


def add_convert_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "convert",
        help="convert a checkpoint to vivit's (or transformers') format",
        description="Load a Scenic (Flax msgpack), transformers ViViT, 2D ViT (safetensors or Google .npz, "
        "inflated) or vivit checkpoint, or a registered name's released weights, into a registered architecture "
        "and save it in vivit's format, or with --to transformers as a transformers ViViT folder (Model 1 only).",
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="checkpoint file, save_pretrained directory, hf-hub:org/repo, or a registered name with weights",
    )
    p.add_argument(
        "--model",
        "-m",
        metavar="NAME",
        help="registered architecture to load SRC into (see 'vivit list'); may be left out when SRC's config "
        "names it (vivit or transformers) or SRC is a registered name",
    )
    add_override_option(p)
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="FILE.safetensors|DIR",
        help="a .safetensors file, or a directory (model.safetensors + config.json)",
    )
    p.add_argument(
        "--to",
        choices=("vivit", "transformers"),
        default="vivit",
        help="output format (default vivit); transformers writes a VivitForVideoClassification folder",
    )
    p.add_argument(
        "--inflation",
        type=inflation_value,
        metavar="KERNEL|KEY=VALUE,...",
        help="how a 2D ViT is inflated: a tubelet kernel (central, average) or settings such as "
        "kernel=average,temporal_init=copy (temporal_init: identity, copy, zero; posemb: resize_tile, tile); "
        "default: the entry's, else central and identity",
    )
    add_quiet_option(p)
    p.set_defaults(run=run_convert)


def _check_convert_out(text: str, to: str) -> Path:
    """--out of convert: a .safetensors file (vivit format only) or a directory, existing or new.

    A new name must have no suffix to become a directory: `conv.pt` or `model.bin` is refused rather
    than silently created as a directory of that name (nothing here writes pickle files). The place
    is probed (a folder that takes no files) before any loading.
    """
    out = Path(text).expanduser()
    if to == "transformers":
        accepted = (
            "--to transformers writes a directory (model.safetensors, config.json, preprocessor_config.json): "
            "give an existing directory or a new directory name without a suffix"
        )
    else:
        accepted = (
            "convert writes a .safetensors file (one file, its config in the metadata) or a directory "
            "(model.safetensors + config.json): give a name ending in .safetensors, an existing directory, "
            "or a new directory name without a suffix"
        )
    if not text.strip():
        raise UsageError(f"--out is empty; {accepted}")
    try:  # a name too long for the file system makes even `is_dir` fail with a raw [Errno 36]
        check_name_fits(out if out.suffix else out / "model.safetensors")
    except WriteError as err:
        raise UsageError(f"--out: {err.reason}") from None
    if to == "vivit" and out.suffix == ".safetensors":
        if out.is_dir():
            raise UsageError(f"--out {text} is a directory; {accepted}")
        try:
            check_file_destination(out)
        except ValueError as err:
            raise UsageError(f"--out: {err}") from None
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {text} is an existing file, not a directory; {accepted}")
    if not out.is_dir() and out.suffix:
        raise UsageError(f"--out {text}: {accepted}")
    try:
        check_output_dir(out, "--out")
    except ValueError as err:
        raise UsageError(str(err)) from None
    return out


def _registered_source(src: str, model: str | None) -> str | None:
    """SRC as a registered name whose released weights are converted, when it is one (and no file)."""
    if os.path.lexists(os.path.expanduser(src)) or src.startswith(DESCRIBED_PREFIXES):
        return None
    try:
        entry = get_entry(src)
    except ValueError:
        return None
    if model is not None and model != entry.name:
        raise UsageError(f"SRC {src} is a registered model; --model {model} would name another architecture")
    if not entry.has_weights:
        raise UsageError(f"{src} has no released weights to convert; pick a name from 'vivit list --pretrained'")
    return entry.name


def _load(args: argparse.Namespace) -> ViViT:
    overrides = dict(args.override)
    if args.inflation is not None:
        overrides["inflation"] = args.inflation
    registered = _registered_source(args.src, args.model)
    if registered is not None:
        model_choice(argparse.Namespace(model=registered, weights=None, override=args.override))
        return create_model(registered, pretrained=True, **overrides)
    if not args.src.startswith(DESCRIBED_PREFIXES):
        try:
            require_input(args.src, "checkpoint")
        except CommandError as err:
            if "does not exist" in str(err):
                close = difflib.get_close_matches(args.src, list_models(pretrained=True), n=3, cutoff=0.85)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise CommandError(
                    f"{err} (nor is it a registered model name with weights: see 'vivit list --pretrained'){hint}"
                ) from None
            raise
    if args.model is not None:
        choice = model_choice(argparse.Namespace(model=args.model, weights=args.src, override=args.override))
        return create_model(entry_option(args.model).name, pretrained=choice.pretrained, **overrides)
    spec = args.src if args.src.startswith(DESCRIBED_PREFIXES) else f"local-dir:{Path(args.src).expanduser()}"
    src = Path(args.src).expanduser()
    if not args.src.startswith(DESCRIBED_PREFIXES) and not (src.is_dir() or src.suffix == ".safetensors"):
        raise UsageError(
            f"--model is required for {args.src}: only vivit and transformers checkpoints name their architecture"
        )
    return create_model(spec, pretrained=True, **overrides)


def _remove_new(out: Path, existed: set[str] | None) -> None:
    """Undo a failed write: the folder if this run created it, else the files it added to it."""
    if existed is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir() if out.is_dir() else ():
        if child.name not in existed:
            try:
                child.unlink()
            except OSError:
                pass


def run_convert(args: argparse.Namespace) -> int:
    from ..weights.hf_transformers import to_transformers
    from ..weights.loading import save_pretrained, save_safetensors

    out = _check_convert_out(args.out, args.to)  # a usage error is reported before any loading
    model = _load(args)
    name = model.pretrained_cfg.get("architecture", args.model)
    existed = {p.name for p in out.iterdir()} if out.is_dir() else None
    try:
        with writing(out):
            if args.to == "transformers":
                to_transformers(model, out)
                load = f"transformers.VivitForVideoClassification.from_pretrained({str(out)!r})"
            elif out.suffix == ".safetensors" and not out.is_dir():
                # One self-describing file: the config travels in the safetensors metadata.
                source = args.src if args.src.startswith(DESCRIBED_PREFIXES) else Path(args.src).name
                save_safetensors(model, out, converted_from=source, converter=f"vivit convert {__version__}")
                load = f"vivit.create_model({name!r}, pretrained={str(out)!r})"
            else:
                save_pretrained(model, out)
                load = f"vivit.create_model({'local-dir:' + str(out)!r}, pretrained=True)"
    except WriteError:
        if out.suffix != ".safetensors" or out.is_dir():
            _remove_new(out, existed)
        raise
    params = sum(p.numel() for p in model.parameters())
    console.out(f"wrote {out}: {type(model).__name__}, {params / 1e6:.1f}M parameters")
    console.out(f"load it with {load}")
    return 0
