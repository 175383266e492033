"""The `vivit` command line (also `python -m vivit`).

    vivit list [PATTERN] [--pretrained]          registered model names
    vivit info NAME                              size, compute, input and preprocessing, weights
    vivit predict [VIDEO ...] [--model NAME]     classify videos (no VIDEO: the bundled sample clip)
    vivit predict VIDEO --timeline [--window N] [--stride N] [--plot FILE.png]   what happens when
    vivit features INPUT ... --model NAME --out DIR  sliding-window features, one file per video
    vivit evaluate LIST --model NAME [--views 4x3] [--out DIR]   top-1/top-5 on a labelled set
    vivit convert SRC [--model NAME] --out FILE.safetensors|DIR [--to vivit|transformers]
                                                 any supported checkpoint -> ours (or transformers')
    vivit explain [VIDEO] [--model NAME] --out FILE.{png,gif,mp4}   where the model looks (relevance map)
    vivit export onnx NAME --out FILE.onnx [--int8]                 ONNX file, validated in ONNX Runtime

Every failure prints one line, `vivit: error: ...`, to stderr and exits with status 2 (the command
line was wrong: unknown model, bad option) or 1 (anything else: missing or undecodable file, no
network, corrupted checkpoint). `VIVIT_DEBUG=1` re-raises instead, with the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import numpy as np
import torch
from torch import nn

from ._install import install_hint
from .data.transforms import resolve_data_config
from .data.video import VideoReader, VideoWarning
from .evaluate import evaluate
from .factory import create_model
from .features import FeatureSettings, extract_features, weights_identity
from .files import check_file_destination
from .models.registry import ModelEntry, get_entry, list_models
from .models.vivit import ViViT
from .predict import Timeline, has_untrained_head, model_data_config, predict_timeline, predict_views, top_predictions
from .version import __version__
from .weights.hub import WeightsDownloadError, scenic_base_url

__all__ = ["CommandError", "UsageError", "build_parser", "main"]

PROG = "vivit"
DEBUG_ENV = "VIVIT_DEBUG"
DEMO_MODEL = "vivit_demo"
SAMPLE_CLIP = "sample_clip.npz"

_MODEL_KINDS = {
    "SpatioTemporalViViT": "Model 1: joint space-time attention",
    "FactorizedEncoderViViT": "Model 2: factorized encoder, spatial then temporal",
    "FactorizedSelfAttentionViViT": "Model 3: factorized self-attention, time then space",
    "FactorizedDotProductViViT": "Model 4: factorized dot-product attention, half the heads each",
}


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class CommandError(Exception):
    """The command could not do its work for a reason the message explains (exit status 1)."""


# Errors whose message is enough on its own; anything else is unexpected and also gets its type.
_EXPECTED_ERRORS = (UsageError, CommandError, ValueError, OSError, ImportError, WeightsDownloadError)


# ---------------------------------------------------------------- argument parsing
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError so `main` prints one line, not usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _override(text: str) -> tuple[str, Any]:
    """Parse `key=value`; the value is JSON (`16`, `[224, 224]`, `true`), else a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_frames=16), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # lets `global_pool=avg` work without shell-escaped JSON quotes
    # Sizes are tuples everywhere in the models; JSON only has lists.
    return key, tuple(value) if isinstance(value, list) else value


def _views(text: str) -> tuple[int, int]:
    """Parse `CLIPSxCROPS`, e.g. `4x3`; crops are 1 (centre) or 3 (left/centre/right)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected CLIPSxCROPS such as 4x3 or 1x1, got {text!r}")
    clips, crops = int(match[1]), int(match[2])
    if clips < 1 or crops not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def _clip_size(text: str) -> tuple[int, int, int]:
    """`16x224x224` -> (16, 224, 224): frames, height, width."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH such as 16x224x224, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _inflation(text: str) -> str | dict[str, str]:
    """Parse `--inflation`: a kernel name, or `key=value` pairs separated by commas."""
    if "=" not in text:
        return text
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    if any(not sep or not key.strip() for key, sep, _ in pairs):
        raise argparse.ArgumentTypeError(
            f"expected KERNEL or KEY=VALUE,... (e.g. kernel=average,temporal_init=copy), got {text!r}"
        )
    return {key.strip(): value.strip() for key, _, value in pairs}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_model_options(parser: argparse.ArgumentParser, *, default: str | None, required: bool = True) -> None:
    """--model / --weights / --override, shared by predict, features and convert."""
    parser.add_argument(
        "--model",
        "-m",
        default=default,
        required=default is None and required,
        metavar="NAME",
        help="registered model name (see 'vivit list')"
        + (f"; default {default}" if default else "")
        + ("" if required else "; may be left out when SRC's config names it (vivit or transformers)"),
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        type=_override,
        metavar="KEY=VALUE",
        help="constructor argument, JSON value (repeatable), e.g. --override num_frames=16",
    )


def _add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        "-w",
        metavar="PATH",
        help="checkpoint to load instead of the entry's released weights: a .safetensors file, a "
        "save_pretrained directory, a Scenic checkpoint or hf-hub:org/repo",
    )


def _add_run_options(parser: argparse.ArgumentParser, views_help: str) -> None:
    """Options of the commands that run the model on videos."""
    parser.add_argument("--views", type=_views, metavar="CLIPSxCROPS", help=views_help)
    parser.add_argument(
        "--batch-size", type=_positive_int, default=4, metavar="N", help="views per forward pass (default 4)"
    )
    _add_device_option(parser)
    _add_quiet_option(parser)


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)"
    )


def _add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bars, notes or warnings on stderr, only errors (bars are never drawn into a file or pipe)",
    )


def _add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_non_negative_int,
        default=2,
        metavar="W",
        help="processes that decode videos while the model runs (default 2; 0: none)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `vivit` command (exposed for documentation tools)."""
    parser = _Parser(prog=PROG, description="ViViT video transformers: list, inspect, run and convert models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="list model names", description="List registered model names, one per line.")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern (vivit_b_*) or substring (fe_k4)")
    p.add_argument("--pretrained", action="store_true", help="only names that come with weights")
    _add_quiet_option(p)
    p.set_defaults(run=_cmd_list)

    p = commands.add_parser(
        "info", help="describe a model", description="Parameters, compute, input, preprocessing and weights of a model."
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        type=_override,
        metavar="KEY=VALUE",
        help="constructor argument (repeatable), e.g. --override num_frames=16",
    )
    _add_quiet_option(p)
    p.set_defaults(run=_cmd_info)

    p = commands.add_parser(
        "predict",
        help="classify videos",
        description="Classify videos with the multi-view test protocol (logits averaged over views). "
        f"Without VIDEO, classifies the sample clip bundled with the package using {DEMO_MODEL}.",
    )
    p.add_argument(
        "videos", nargs="*", metavar="VIDEO", help="video files (needs PyAV) or uint8 .npy/.npz frame arrays"
    )
    _add_model_options(p, default=DEMO_MODEL)
    _add_weights_option(p)
    _add_run_options(p, "test views, e.g. 4x3 (default: the model's test_views; with --timeline 1x1 per window)")
    p.add_argument(
        "--top-k",
        type=_positive_int,
        metavar="K",
        help="classes to show (default 5; with --timeline 3 per window, and the plot's classes)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per video (with --timeline: its windows)")
    timeline = p.add_argument_group("timeline (long videos)")
    timeline.add_argument(
        "--timeline",
        action="store_true",
        help="classify consecutive windows of each video: per window its time span and top-k classes",
    )
    timeline.add_argument(
        "--window",
        type=_positive_int,
        metavar="N",
        help="frames per window (default: the model's clip, frames x frame stride)",
    )
    timeline.add_argument(
        "--stride", type=_positive_int, metavar="N", help="frames between window starts (default: the window)"
    )
    timeline.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the probabilities of the top-k classes over time (needs matplotlib; one VIDEO)",
    )
    p.set_defaults(run=_cmd_predict)

    p = commands.add_parser(
        "features",
        help="extract sliding-window features, one file per video",
        description="Write the features of every window of every video to OUT/<video path relative to its "
        "input>.safetensors (features (windows, D) or (windows, nt, D), window_frames, window_seconds; metadata: "
        "source, model, settings). Resumable: a video whose output matches its file and the settings is skipped. "
        "Runs unchanged under torchrun (the videos are split across ranks).",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders (searched recursively) or list files (.csv/.tsv/.txt, paths relative to the list)",
    )
    _add_model_options(p, default=None)
    _add_weights_option(p)
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (one .safetensors per video)")
    p.add_argument(
        "--window",
        type=_non_negative_int,
        metavar="N",
        help="frames per window (default: the model's clip, frames x frame stride; 0: one clip for the whole video)",
    )
    p.add_argument(
        "--stride", type=_positive_int, metavar="N", help="frames between window starts (default: the window)"
    )
    p.add_argument("--per-frame", action="store_true", help="one feature per temporal token (nt, D) instead of (D,)")
    _add_run_options(p, "views averaged per window (default 1x1: the centre clip, centre crop)")
    _add_workers_option(p)
    p.set_defaults(run=_cmd_features)

    p = commands.add_parser(
        "evaluate",
        help="measure accuracy on a labelled set of videos",
        description="Classify every video of a labelled list or class-folder tree with the multi-view test "
        "protocol and print top-1, top-5 and mean per-class accuracy (EPIC-KITCHENS heads: noun, verb and "
        "action). With --out, write predictions.jsonl and metrics.json. Runs unchanged under torchrun.",
    )
    p.add_argument(
        "source",
        metavar="LIST",
        help="CSV/TSV list (path,label[,start,end]) or a class-folder tree root/<class>/<video>",
    )
    _add_model_options(p, default=None)
    _add_weights_option(p)
    p.add_argument("--out", "-o", metavar="DIR", help="write DIR/predictions.jsonl and DIR/metrics.json")
    _add_run_options(p, "test views, e.g. 4x3 (default: the model's test_views)")
    _add_workers_option(p)
    p.add_argument(
        "--temporal-check",
        action="store_true",
        help="also score the clips with their frames shuffled, reversed and frozen on the middle frame "
        "(does the model use motion, or only what single frames show?)",
    )
    p.set_defaults(run=_cmd_evaluate)

    add_train_parser(commands)

    p = commands.add_parser(
        "convert",
        help="convert a checkpoint to vivit's (or transformers') format",
        description="Load a Scenic (Flax msgpack), transformers ViViT, 2D ViT (safetensors or Google .npz, "
        "inflated) or vivit checkpoint into a registered architecture and save it in vivit's format, or "
        "with --to transformers as a transformers ViViT folder (Model 1 only).",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint file, save_pretrained directory or hf-hub:org/repo")
    _add_model_options(p, default=None, required=False)
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
        type=_inflation,
        metavar="KERNEL|KEY=VALUE,...",
        help="how a 2D ViT is inflated: a tubelet kernel (central, average) or settings such as "
        "kernel=average,temporal_init=copy (temporal_init: identity, copy, zero; posemb: resize_tile, tile); "
        "default: the entry's, else central and identity",
    )
    _add_quiet_option(p)
    p.set_defaults(run=_cmd_convert)

    p = commands.add_parser(
        "explain",
        help="draw where the model looks on a video",
        description="Draw the model's relevance map (attention rollout, or one block's attention) over the "
        "centre clip of a video as the model sees it: a contact sheet of frames (.png) or an animation "
        f"(.gif, .mp4), with a colour bar and the top predictions. Without VIDEO, explains the sample clip "
        f"bundled with the package using {DEMO_MODEL}. Needs matplotlib: {install_hint('matplotlib', 'plot')}.",
    )
    p.add_argument("video", nargs="?", metavar="VIDEO", help="video file (needs PyAV) or uint8 .npy/.npz frame array")
    _add_model_options(p, default=DEMO_MODEL)
    _add_weights_option(p)
    p.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="picture to write: .png (contact sheet), .gif or .mp4"
    )
    p.add_argument(
        "--block",
        type=int,
        metavar="N",
        help="show block N's own attention instead of the rollout (0-based, negative from the end; "
        "Model 2 counts its spatial blocks, then its temporal blocks)",
    )
    p.add_argument("--head", type=int, metavar="H", help="with --block: only head H of that block")
    p.add_argument("--top-k", type=_positive_int, default=3, metavar="K", help="predictions in the title (default 3)")
    p.add_argument(
        "--fps",
        type=_positive_float,
        default=4.0,
        metavar="FPS",
        help="animation speed (default 4; a .gif plays 0.00153 to 50)",
    )
    _add_device_option(p)
    _add_quiet_option(p)
    p.set_defaults(run=_cmd_explain)

    p = commands.add_parser(
        "export",
        help="export a model to ONNX, validated in ONNX Runtime",
        description="Write the model with its weights as an ONNX file, run it in ONNX Runtime on random clips and "
        "compare with PyTorch (fp32 fails above 1e-4; nothing is written then). Needs onnx, onnxruntime and "
        f"onnxscript: {install_hint('onnx onnxruntime onnxscript', 'onnx')}.",
    )
    p.add_argument("format", choices=("onnx",), help="file format (onnx)")
    p.add_argument("model", metavar="NAME", help="registered model name (see 'vivit list')")
    _add_weights_option(p)
    p.add_argument(
        "--override",
        action="append",
        default=[],
        type=_override,
        metavar="KEY=VALUE",
        help="constructor argument (repeatable), e.g. --override num_frames=16",
    )
    p.add_argument("--out", "-o", required=True, metavar="FILE.onnx")
    p.add_argument(
        "--int8", action="store_true", help="quantize the linear layers to int8 (ONNX Runtime dynamic quantization)"
    )
    p.add_argument(
        "--input-size",
        type=_clip_size,
        metavar="TxHxW",
        help="clip size (frames x height x width) for a model with dynamic_size=true",
    )
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1 (default: dynamic)")
    _add_quiet_option(p)
    p.set_defaults(run=_cmd_export, device="cpu")
    return parser


# ---------------------------------------------------------------- shared helpers: what the user sees
# stdout carries only results (predictions, JSON lines, what was written); everything else goes to
# stderr: errors always, warnings, notes, summaries of successful runs and progress bars only
# without -q. Progress bars are drawn only on a terminal, so a log file gets whole lines, never `\r`.
# Every line goes through tqdm.write, which lifts an active bar out of the way and redraws it.

# -q of the running command, set by `main` for the duration of one command: every helper below
# sees it without passing it around, and an in-process caller (a test, a notebook) gets it reset.
_QUIET: ContextVar[bool] = ContextVar("vivit_cli_quiet", default=False)

_T = TypeVar("_T")


def _quiet() -> bool:
    """Whether the running command was given -q (informational lines and progress are silenced)."""
    return _QUIET.get()


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # a replaced stream without isatty, or a closed one
        return False


def _progress_enabled() -> bool:
    """Draw progress bars? Only for a person watching: not with -q, not into a file or a pipe."""
    return not _quiet() and _stderr_is_terminal()


def _progress(
    iterable: Iterable[_T] | None = None, *, desc: str, unit: str, total: int | None = None, leave: bool = True
) -> Any:
    """A tqdm progress bar on stderr, disabled with -q or when stderr is not a terminal.

    Iterate over it as over `iterable` (or call `.update(n)` with `total`); print other lines
    meanwhile with `_out`, `_note`, `_warn` or `_error`, which keep the bar intact.

    Args:
        iterable: What to iterate over (its `len` is the total when it has one).
        desc: Label in front of the bar, e.g. "videos".
        unit: What one step is, e.g. "video", "view".
        total: Steps, when `iterable` has no `len` or is None.
        leave: Keep the finished bar on screen (False for a bar nested inside another).

    Returns:
        A `tqdm.tqdm` instance (a plain pass-through iterator when disabled).
    """
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        disable=not _progress_enabled(),
        dynamic_ncols=True,
    )


def _write(line: str, stream: IO[str]) -> None:
    """One line to `stream`, above any progress bar; flushed, so that pipes see it at once."""
    from tqdm import tqdm

    tqdm.write(line, file=stream)
    stream.flush()


def _out(line: str) -> None:
    """A result line on stdout (kept whole while a progress bar is drawn on the terminal)."""
    _write(line, sys.stdout)


def _note(message: str) -> None:
    """An informational line on stderr, `vivit: MESSAGE`; silenced by -q."""
    if not _quiet():
        _write(f"{PROG}: {message}", sys.stderr)


def _warn(message: str) -> None:
    """A warning line on stderr, `vivit: warning: MESSAGE`; silenced by -q (as the README says)."""
    if not _quiet():
        _write(f"{PROG}: warning: {message}", sys.stderr)


def _summary(total: int, failed: Sequence[str], *, noun: str = "video", done: str = "done") -> None:
    """The last lines of a run over several inputs: the counts, then each input that failed.

    `vivit: 2 of 3 videos classified, 1 failed:` followed by one indented line per failed input
    (as given on the command line), so that the end of a long log says what to look at. Printed
    whenever something failed, even with -q (it reports errors); a clean run's one line is
    informational (silenced by -q).

    Args:
        total: Inputs the run was asked to process.
        failed: The inputs that failed, in order.
        noun: What an input is (singular; an "s" is added for counts other than 1).
        done: The past participle of the job, e.g. "classified", "written".
    """
    nouns = noun if total == 1 else f"{noun}s"
    if not failed:
        _note(f"{total - len(failed)} of {total} {nouns} {done}")
        return
    _write(f"{PROG}: {total - len(failed)} of {total} {nouns} {done}, {len(failed)} failed:", sys.stderr)
    for item in failed:
        _write(f"  {item}", sys.stderr)


@contextmanager
def _video_warnings(quiet: bool = False, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Print each `VideoWarning` raised inside as one `vivit: warning: ...` line (none with -q).

    Other warnings are shown as Python would show them.

    Args:
        quiet: Silence the warnings (they are silenced anyway when the command runs with -q).
        say: Where a warning line goes (default: stderr, above any progress bar).
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VideoWarning)
            yield
    finally:  # also when reading failed after a warning (a truncated file that then breaks)
        for warning in caught:
            if not issubclass(warning.category, VideoWarning):
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
            elif not (quiet or _quiet()):
                line = f"{PROG}: warning: {warning.message}"
                say(line) if say else _write(line, sys.stderr)


@contextmanager
def _download_progress() -> Iterator[None]:
    """Download bars (huggingface_hub's, which vivit's Scenic downloads share) follow `_progress`:
    off with -q or when stderr is not a terminal; restored afterwards."""
    if _progress_enabled():
        yield
        return
    from huggingface_hub import utils as hf_utils

    was_disabled = hf_utils.are_progress_bars_disabled()
    hf_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            hf_utils.enable_progress_bars()


def _entry(name: str) -> ModelEntry:
    if name.startswith(("hf-hub:", "local-dir:")):  # a checkpoint naming its own architecture (timm's form)
        return ModelEntry(name, ViViT, {}, {})
    try:
        return get_entry(name)
    except ValueError as err:  # the registry's hint names the Python API; point at the command instead
        raise UsageError(str(err).replace("vivit.list_models()", "'vivit list'")) from None


def _require_file(path: str, what: str) -> None:
    """Fail early and clearly, before any model is built, when an input does not exist."""
    if path.startswith("hf-hub:"):
        return
    if not Path(path).expanduser().exists():
        raise CommandError(f"{what} {path} does not exist")


def _constructor_keywords(cls: type) -> set[str]:
    """Keyword arguments a model class accepts, collected over the `__init__`s it forwards to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module) or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names.update(p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    return names - {"self"}


def _create(name: str, pretrained: bool | str, overrides: Mapping[str, Any]) -> ViViT:
    """`create_model`, with a misspelled --override reported as a usage error before any loading."""
    entry = _entry(name)
    # `inflation` configures how weights load, so it only means something with weights
    allowed = _constructor_keywords(entry.model_cls) | ({"inflation"} if pretrained else set())
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise UsageError(
            f"--override {', '.join(unknown)}: not an argument of {entry.model_cls.__name__} "
            f"(it takes {', '.join(sorted(allowed))})"
        )
    return create_model(name, pretrained=pretrained, **overrides)


def _load_model(args: argparse.Namespace, device: torch.device | None = None) -> ViViT:
    """The model named by --model with --weights (or the entry's own), on `device` (default --device), in eval mode."""
    entry = _entry(args.model)
    device = device or _device(args.device)  # a bad --device is reported before any download
    if args.weights is not None:
        _require_file(args.weights, "--weights")
        pretrained: bool | str = args.weights
    elif entry.has_weights:
        pretrained = True
    else:
        with_weights = list_models(f"{entry.name}_*", pretrained=True)
        hint = f" (entries with weights: {', '.join(with_weights)})" if with_weights else ""
        raise UsageError(
            f"{entry.name} has no pretrained weights{hint}; pass --weights PATH or pick a name from "
            "'vivit list --pretrained'"
        )
    model = _create(entry.name, pretrained, dict(args.override))
    return model.to(device).eval()


def _data_cfg(model: nn.Module) -> dict[str, Any]:
    cfg, defaulted = model_data_config(model)
    if defaulted:
        _note("the weights carry no preprocessing config: using Kinetics defaults at the model's input size")
    return cfg


def _available_devices() -> list[str]:
    """The devices this torch build can use on this machine, as --device values."""
    devices = ["cpu"]
    if torch.cuda.is_available():  # NVIDIA, or AMD under ROCm (also "cuda" in torch)
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{i}" for i in range(xpu.device_count())]
    return devices


def _device(name: str | None) -> torch.device:
    """--device as a torch device this machine can use, else a usage error naming those it can."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def refuse(why: str) -> NoReturn:
        raise UsageError(f"--device {name}: {why}; devices available here: {', '.join(_available_devices())}")

    try:
        device = torch.device(name)
    except RuntimeError:
        refuse("not a torch device name (e.g. cpu, cuda, cuda:1, mps)")
    if device.type == "meta":
        refuse("the meta device holds no data, so nothing can run on it")
    if device.type == "cuda" and not torch.cuda.is_available():
        built = torch.backends.cuda.is_built()
        refuse(f"this torch ({torch.__version__}) " + ("sees no CUDA device" if built else "was built without CUDA"))
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        refuse(f"this machine has {_plural(torch.cuda.device_count(), 'CUDA device')}")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        built = mps is not None and mps.is_built()
        refuse(
            f"this torch ({torch.__version__}) "
            + ("sees no MPS device" if built else "was built without MPS (Apple GPUs)")
        )
    try:  # the one question every backend answers: can a tensor live there?
        torch.empty(0, device=device)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        refuse(f"not usable with this torch ({torch.__version__}: {reason})")
    return device


# ---------------------------------------------------------------- list
def _cmd_list(args: argparse.Namespace) -> int:
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = list_models(pattern, pretrained=args.pretrained)
    if not names:
        kind = "pretrained model" if args.pretrained else "model"
        raise CommandError(f"no {kind} name matches {args.pattern!r}")
    print("\n".join(names))
    return 0


# ---------------------------------------------------------------- info
def _count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Multiply-adds of one forward pass (the paper's "FLOPs"), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(input_shape))
    return counter.get_total_flops() / 2


def _giga(count: float) -> str:
    """Billions with one decimal, or three significant digits for small models (0.0117, not 0.0)."""
    value = count / 1e9
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def _info_lines(name: str, model: ViViT, entry: ModelEntry) -> Iterator[tuple[str, str]]:
    """(field, text) pairs describing a model built on the meta device."""
    a = model.model_args
    cls = type(model).__name__
    yield "class", f"{cls} ({_MODEL_KINDS.get(cls, 'custom')})"
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
    macs = _count_macs(model, shape)
    t, ph, pw = model.patch_embed.kernel_size
    nt, nh, nw = model.grid_size
    cfg = dict(entry.pretrained_cfg or {})
    line = f"{_giga(macs)} per view of {'x'.join(map(str, shape))}"
    if cfg:
        clips, crops = resolve_data_config(cfg)["test_views"]
        line += f"; {_giga(clips * crops * macs)} per video with {clips}x{crops} views"
    yield "GMACs", line
    yield (
        "input",
        (
            f"{model.num_frames} frames of {height}x{width}, {model.in_chans} channels; "
            f"tubelet {t}x{ph}x{pw} (t x h x w) -> {nt}x{nh}x{nw} tokens"
        ),
    )
    if not cfg:
        with_weights = list_models(f"{name}_*", pretrained=True)
        yield (
            "weights",
            "no pretrained weights" + (f" (entries with weights: {', '.join(with_weights)})" if with_weights else ""),
        )
        return
    d = resolve_data_config(cfg)
    yield "frame stride", str(d["frame_stride"])
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
    for key in ("license", "paper"):
        if cfg.get(key):
            yield key, str(cfg[key])


def _cmd_info(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    # The meta device allocates nothing: even ViViT-H is described instantly.
    with torch.device("meta"):
        model = _create(entry.name, False, dict(args.override))
    print(entry.name)
    for field, text in _info_lines(entry.name, model, entry):
        print(f"  {field:<14} {text}")
    return 0


# ---------------------------------------------------------------- predict
@contextmanager
def _sample_clip() -> Iterator[tuple[Path, str | None]]:
    """The sample clip bundled in `vivit/assets` and its true label, as a real file path."""
    ref = resources.files("vivit") / "assets" / SAMPLE_CLIP
    if not ref.is_file():
        raise CommandError(
            f"no VIDEO given and the bundled sample clip (vivit/assets/{SAMPLE_CLIP}) is missing from this "
            "install; pass a video file: vivit predict VIDEO"
        )
    with resources.as_file(ref) as path:
        with np.load(path, allow_pickle=False) as data:
            label = str(data["label"].item()) if "label" in data.files else None
        yield path, label


def _printable(text: Any) -> str:
    """Text from a file or a checkpoint (a path, a label) for the terminal: control characters escaped.

    A label such as `"\x1b[2J"` would otherwise clear the screen; it prints as `\x1b[2J`.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _json_safe(value: Any) -> Any:
    """`value` with non-finite floats as null, so that `json.dumps(..., allow_nan=False)` succeeds."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_line(value: Any) -> str:
    """One line of strict JSON (RFC 8259: no NaN or Infinity, which most parsers reject)."""
    return json.dumps(_json_safe(value), allow_nan=False)


def _print_predictions(shown: str, result: Mapping[str, Any]) -> None:
    header = f"{_printable(shown)} ({result['model']}, {result['views'][0]}x{result['views'][1]} views)"
    if result.get("true_label") is not None:
        header += f", true label: {_printable(result['true_label'])}"
    _out(header)
    if result.get("note"):
        _out(f"  note: {_printable(result['note'])}")
    split = None
    for item in result["predictions"]:
        if item.get("split") != split:
            split = item["split"]
            _out(f"  {_printable(split)}:")
        indent = "    " if split else "  "
        _out(f"{indent}{item['probability'] * 100:6.2f}%  {_printable(item['label'])}")


def _synthetic_note(name: str, cfg: Mapping[str, Any]) -> str | None:
    """The line shown beside an answer of a model trained on synthetic data only (the demo), if it is one."""
    if not cfg.get("synthetic_data"):
        return None
    return f"{name} was trained on synthetic clips only; on a real video this answer means nothing"


def _untrained_head_error(args: argparse.Namespace, why: str) -> UsageError:
    weights = f" --weights {args.weights}" if args.weights else ""
    return UsageError(
        f"{args.model}: the classifier head is untrained ({why}), so every video would get the same "
        f"answer; for video embeddings use 'vivit features VIDEO --model {args.model}{weights} --out "
        "features/', or fine-tune the model first"
    )


def _refuse_untrained_head(entry: ModelEntry, args: argparse.Namespace, model: nn.Module | None = None) -> None:
    """Refuse to classify with a head that was never trained: from the entry before any download, then
    from the loaded weights (`has_untrained_head`: all zero)."""
    cfg = entry.pretrained_cfg or {}
    classes = dict(args.override).get("num_classes")
    if model is None:
        if args.weights is None and cfg.get("sources") and all(src.get("format") == "vit" for src in cfg["sources"]):
            raise _untrained_head_error(
                args, "its weights are an image ViT inflated to video, a start for fine-tuning: the head is zero"
            )
        if args.weights is None and classes is not None and classes != cfg.get("num_classes", classes):
            raise _untrained_head_error(
                args,
                f"--override num_classes={classes} replaces the trained {cfg['num_classes']}-class head with a new one, all zero",
            )
        return
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise UsageError(
            f"{args.model} has no classifier head (num_classes=0: a backbone), so there is nothing to predict; "
            f"for video embeddings use 'vivit features VIDEO --model {args.model} --out features/'"
        )
    if has_untrained_head(model):
        raise _untrained_head_error(
            args, "its weights are all zero, as a fresh head from num_classes= or ViT inflation is"
        )


def _check_timeline_args(args: argparse.Namespace) -> None:
    """Timeline options without --timeline, or a --plot that could not be written: usage errors,
    reported before any model is loaded; a missing matplotlib too (exit 1, with the install line)."""
    if not args.timeline:
        given = [name for name in ("window", "stride", "plot") if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--{given[0]} belongs to a timeline: add --timeline")
        return
    if args.plot is None:
        return
    from .render import check_output_suffix, require_matplotlib

    if len(args.videos) > 1:
        raise UsageError(f"--plot draws one video's timeline; give one VIDEO, not {len(args.videos)}")
    try:
        check_output_suffix(args.plot, (".png",))
    except ValueError as err:
        raise UsageError(f"--plot: {err}") from None
    plot = Path(args.plot).expanduser()
    if plot.is_dir():
        raise UsageError(f"--plot {args.plot} is a folder; give a file name ending in .png")
    if not plot.parent.is_dir():
        raise UsageError(f"--plot {args.plot}: the folder {plot.parent} does not exist")

    try:
        check_file_destination(plot)  # a folder that takes no files: refused now, not after the whole video
    except ValueError as err:
        raise UsageError(f"--plot: {err}") from None
    require_matplotlib()


def _cmd_predict(args: argparse.Namespace) -> int:
    entry = _entry(args.model)  # an unknown name is reported before any file is touched
    _check_timeline_args(args)
    _refuse_untrained_head(entry, args)  # before any download
    with ExitStack() as stack:
        if args.videos:
            inputs: list[tuple[Path, str, str | None]] = [(Path(v), v, None) for v in args.videos]
            for video in args.videos:
                _require_file(video, "video")
        else:
            path, label = stack.enter_context(_sample_clip())
            inputs = [(path, str(path), label)]
        model = _load_model(args)
        _refuse_untrained_head(entry, args, model)
        cfg = _data_cfg(model)
        # The bundled sample clip comes from the demo's own (synthetic) test set: its answer is a real one.
        note = _synthetic_note(args.model, cfg) if args.videos else None
        if args.timeline:
            return _predict_timelines(args, model, cfg, inputs, note)
        views = args.views or resolve_data_config(cfg)["test_views"]
        top_k = args.top_k or 5
        failed: list[str] = []
        several = len(inputs) > 1
        for path, shown, label in _progress(inputs, desc="videos", unit="video") if several else inputs:
            try:  # only the frames of the views' clips are decoded, whatever the video's length
                with _video_warnings(), VideoReader(path) as reader:
                    logits = predict_views(
                        model,
                        reader,
                        *views,
                        pretrained_cfg=cfg,
                        batch_size=args.batch_size,
                        progress=_progress_enabled(),
                    )
            except ValueError as err:  # one bad file must not lose the others' results
                _error(err if shown in str(err) or str(path) in str(err) else ValueError(f"{shown}: {err}"))
                failed.append(shown)
                continue
            result: dict[str, Any] = {
                "video": shown,
                "model": args.model,
                "views": list(views),
                "predictions": top_predictions(logits, cfg, top_k),
            }
            if label is not None:
                result["true_label"] = label
            if note is not None:
                result["note"] = note
            if args.json:
                _out(_json_line(result))
            else:
                _print_predictions(shown, result)
        if several:
            _summary(len(inputs), failed, done="classified")
    return 1 if failed else 0


def _predict_timelines(
    args: argparse.Namespace,
    model: nn.Module,
    cfg: Mapping[str, Any],
    inputs: Sequence[tuple[Path, str, str | None]],
    note: str | None,
) -> int:
    """`predict --timeline`: each video's windows classified (`predict_timeline`), printed as they are
    ready video by video; with --plot, the one video's timeline drawn."""
    views = args.views or (1, 1)
    top_k = args.top_k or 3
    failed: list[str] = []
    several = len(inputs) > 1
    for path, shown, label in _progress(inputs, desc="videos", unit="video") if several else inputs:
        try:  # only the frames of each window's clips are decoded, window after window
            with _video_warnings(), VideoReader(path) as reader:
                timeline = predict_timeline(
                    model,
                    reader,
                    args.window,
                    args.stride,
                    views=views,
                    pretrained_cfg=cfg,
                    top_k=top_k,
                    batch_size=args.batch_size,
                    progress=_progress_enabled(),
                )
        except ValueError as err:  # one bad file must not lose the others' results
            _error(err if shown in str(err) or str(path) in str(err) else ValueError(f"{shown}: {err}"))
            failed.append(shown)
            continue
        result: dict[str, Any] = {
            "video": shown,
            "model": args.model,
            "views": list(timeline.views),
            "window": timeline.window,
            "stride": timeline.stride,
            "video_frames": timeline.video_frames,
            "video_fps": timeline.video_fps,
        }
        if label is not None:
            result["true_label"] = label
        if note is not None:
            result["note"] = note
        if args.json:
            _out(_json_line({**result, "windows": timeline.records()}))
        else:
            _print_timeline(shown, result, timeline)
        if args.plot is not None:
            _plot_timeline(args, shown, timeline, note)
    if several:
        _summary(len(inputs), failed, done="classified")
    return 1 if failed else 0


def _span(record: Mapping[str, Any]) -> str:
    """`12.50-13.57 s  frames [300, 332)`, the seconds left out when the video has no frame rate."""
    frames = f"frames [{record['start_frame']}, {record['end_frame']})"
    start, end = record["start_seconds"], record["end_seconds"]
    if np.isnan(start) or np.isnan(end):  # a frame array without a frame rate
        return frames
    return f"{start:.2f}-{end:.2f} s  {frames}"


def _print_timeline(shown: str, result: Mapping[str, Any], timeline: Timeline) -> None:
    windows = _plural(len(timeline), "window")
    header = (
        f"{_printable(shown)} ({result['model']}, {windows} of {timeline.window} frames every {timeline.stride}, "
        f"{result['views'][0]}x{result['views'][1]} views each)"
    )
    if result.get("true_label") is not None:
        header += f", true label: {_printable(result['true_label'])}"
    _out(header)
    if result.get("note"):
        _out(f"  note: {_printable(result['note'])}")
    records = timeline.records()
    spans = [_span(record) for record in records]
    width = max(len(span) for span in spans)
    for span, record in zip(spans, records, strict=True):
        top = ", ".join(
            f"{_printable(item['split']) + ' ' if item.get('split') else ''}{_printable(item['label'])} "
            f"{item['probability'] * 100:.1f}%"
            for item in record["predictions"]
        )
        _out(f"  {span.ljust(width)}  {top}")


def _plot_timeline(args: argparse.Namespace, shown: str, timeline: Timeline, note: str | None) -> None:
    from .render import plot_timeline

    seconds = timeline.window_seconds
    timed = bool(np.isfinite(seconds).all())
    title = f"{Path(shown).name}: {args.model}, windows of {timeline.window} frames every {timeline.stride}"
    title += " (trained on synthetic data only)" if note else ""
    plot_timeline(
        Path(args.plot).expanduser(),
        seconds if timed else timeline.window_frames,
        timeline.probabilities.numpy(),
        timeline.labels,
        classes=args.top_k or 3,
        title=title,
        unit="s" if timed else "frames",
    )
    _note(f"wrote {args.plot}")


# ---------------------------------------------------------------- features
def _check_weights_available(args: argparse.Namespace) -> None:
    """Report a missing --weights file or a name without weights now, not after planning the work."""
    entry = _entry(args.model)
    if args.weights is not None:
        _require_file(args.weights, "--weights")
    elif not entry.has_weights:
        with_weights = list_models(f"{entry.name}_*", pretrained=True)
        hint = f" (entries with weights: {', '.join(with_weights)})" if with_weights else ""
        raise UsageError(
            f"{entry.name} has no pretrained weights{hint}; pass --weights PATH or pick a name from 'vivit list --pretrained'"
        )
    if args.device is not None:
        _device(args.device)


def _cmd_features(args: argparse.Namespace) -> int:
    _entry(args.model)
    out = Path(args.out).expanduser()
    if out.suffix == ".safetensors" or out.is_file():
        raise UsageError(
            f"--out {args.out}: features are now written one file per video into a folder "
            "(DIR/<video>.safetensors, with window_frames and window_seconds); give a folder, e.g. --out features/"
        )
    if args.stride is not None and args.window == 0:
        raise UsageError("--stride needs windows: --window 0 is one clip for the whole video")
    _check_weights_available(args)
    settings = FeatureSettings(
        model=args.model,
        weights=weights_identity(args.weights),
        overrides=json.dumps(sorted(dict(args.override).items())),
        per_frame=args.per_frame,
        window=args.window,
        stride=args.stride,
        views=args.views,
    )
    summary = extract_features(
        args.inputs,
        out,
        lambda: _load_job_model(args),
        settings,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device or "auto",
        progress=_progress_enabled(),
        verbose=not _quiet(),
    )
    return 1 if summary.failed else 0


def _load_job_model(args: argparse.Namespace) -> ViViT:
    """The model of a dataset job, on the CPU (the job moves it to this rank's device), with the note
    about a missing preprocessing config printed once per job (by rank 0 under torchrun)."""
    model = _load_model(args, torch.device("cpu"))
    if model_data_config(model)[1] and os.environ.get("RANK", "0") == "0":
        _note("the weights carry no preprocessing config: using Kinetics defaults at the model's input size")
    return model


# ---------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    entry = _entry(args.model)
    _refuse_untrained_head(entry, args)  # accuracy of a head that never learned means nothing
    _check_weights_available(args)
    _require_file(args.source, "LIST")
    model = _load_job_model(args)
    _refuse_untrained_head(entry, args, model)
    metrics = evaluate(
        args.source,
        model,
        views=args.views,
        batch_size=args.batch_size,
        workers=args.workers,
        out_dir=args.out,
        device=args.device or "auto",
        model_name=args.model,
        progress=_progress_enabled(),
        verbose=not _quiet(),
        temporal_check=args.temporal_check,
    )
    return 1 if metrics["num_failed"] else 0


# ---------------------------------------------------------------- train (one self-contained block)
def _setting_value(kind: str) -> Callable[[str], Any]:
    """A parser for one recipe setting's command-line text (`none` turns optional settings off)."""

    def parse(text: str) -> Any:
        lowered = text.strip().lower()
        if kind.endswith("?") and lowered in ("none", "off"):
            return None
        try:
            if kind.startswith("float"):
                value = float(text)
                if math.isfinite(value):
                    return value
            elif kind == "int":
                return int(text)
            else:  # a pair
                parts = [p for p in re.split(r"[,x]", lowered) if p]
                if len(parts) == 2:
                    return tuple((float if kind == "pair" else int)(p) for p in parts)
        except ValueError:
            pass
        hint = {"pair": "two numbers such as 0.9,1.33", "pair?": "two integers such as 2,15, or none"}
        raise argparse.ArgumentTypeError(
            f"expected {hint.get(kind, 'a number or none' if kind == 'float?' else kind)}, got {text!r}"
        )

    return parse


# Recipe setting -> (command-line kind, metavar); `vivit train --help` shows them all, `--show` their values.
_TRAIN_SETTINGS: dict[str, tuple[str, str]] = {
    "lr": ("float", "LR"),
    "epochs": ("int", "N"),
    "optimizer": ("str", "sgd|adamw"),
    "momentum": ("float", "M"),
    "weight_decay": ("float", "WD"),
    "layer_decay": ("float?", "D|none"),
    "grad_clip": ("float?", "NORM|none"),
    "global_batch": ("int", "N"),
    "warmup_epochs": ("float", "E"),
    "frame_stride": ("int", "S"),
    "resize_size": ("int", "PX"),
    "crop_size": ("int", "PX"),
    "scale": ("pair", "LOW,HIGH"),
    "hflip": ("float", "P"),
    "color_prob": ("float", "P"),
    "color_drop_prob": ("float", "P"),
    "randaugment": ("pair?", "N,M|none"),
    "drop_path_rate": ("float", "R"),
    "label_smoothing": ("float", "A"),
    "mixup_alpha": ("float", "ALPHA"),
    "cutmix_alpha": ("float", "ALPHA"),
    "ema_decay": ("float", "DECAY"),
    "test_views": ("views", "CLIPSxCROPS"),
    "eval_every": ("int", "EPOCHS"),
}


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    """`vivit train`: its options, registered on the `vivit` subcommands."""
    from .recipes import RECIPES, list_recipes

    p = commands.add_parser(
        "train",
        help="fine-tune a model on a labelled set of videos (Scenic's recipes, resumable)",
        description="Fine-tune a model on TRAIN (a class-folder tree or a CSV/TSV list), scoring it on VAL as "
        "'vivit evaluate' does. --recipe sets Scenic's values for a dataset family (--recipe NAME --show lists "
        "them with their sources); every value can be changed with its option. Writes OUT/log.jsonl, "
        "OUT/checkpoint.pt, OUT/last/ and OUT/best/ (load with --model local-dir:OUT/best). Re-running the same "
        "command resumes from the checkpoint; other settings in the same OUT are refused. Runs under torchrun.",
    )
    p.add_argument("train", nargs="?", metavar="TRAIN", help="class-folder tree root/<class>/<video> or a list file")
    p.add_argument("--val", metavar="VAL", help="validation set, as TRAIN (default: none, no best/)")
    p.add_argument(
        "--model",
        "-m",
        metavar="NAME",
        help="model name (e.g. vivit_b_fe_in21k, vivit_b_fe_k400, local-dir:PATH, hf-hub:org/repo)",
    )
    p.add_argument(
        "--pretrained",
        metavar="PATH|none",
        help="weights to start from (default: the entry's own; none: a fresh init)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        type=_override,
        metavar="KEY=VALUE",
        help="constructor argument, JSON value (repeatable), e.g. --override num_frames=16",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="the run's folder (created; re-run to resume)")
    p.add_argument("--recipe", default="k400", choices=list_recipes(), help="Scenic's settings (default k400)")
    p.add_argument("--show", action="store_true", help="print the recipe's settings with their sources and exit")
    p.add_argument(
        "--batch-size", type=_positive_int, default=8, metavar="N", help="clips per forward pass (default 8)"
    )
    p.add_argument(
        "--accum-steps",
        type=_positive_int,
        metavar="N",
        help="micro-batches per update (default: global batch / (batch size x ranks))",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample order, augmentation and init (default 0)")
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="fp32, bf16 autocast, fp16 (GPU)"
    )
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward (less memory)")
    p.add_argument("--log-every", type=_positive_int, default=10, metavar="STEPS", help="log lines (default 10)")
    p.add_argument(
        "--checkpoint-every", type=_positive_int, default=500, metavar="STEPS", help="besides each epoch (default 500)"
    )
    p.add_argument("--eval-batch-size", type=_positive_int, default=4, metavar="N", help="views per forward pass")
    p.add_argument("--no-temporal-check", action="store_true", help="skip the shuffled/reversed/frozen-frame check")
    p.add_argument(
        "--no-tensorboard", action="store_true", help="no OUT/tensorboard even when TensorBoard is installed"
    )
    _add_device_option(p)
    _add_workers_option(p)
    _add_quiet_option(p)
    recipe = p.add_argument_group("recipe settings (default: the recipe's; see --show)")
    defaults = RECIPES["k400"]
    for name, (kind, metavar) in _TRAIN_SETTINGS.items():
        flag = "--views" if name == "test_views" else "--" + name.replace("_", "-")
        parse = _views if kind == "views" else (_setting_value(kind) if kind != "str" else str)
        recipe.add_argument(
            flag,
            dest=f"set_{name}",
            type=parse,
            default=argparse.SUPPRESS,  # absent unless given: "none" is a value (off), not "not given"
            metavar=metavar,
            help=f"{name} (k400: {getattr(defaults, name)})",
        )
    p.set_defaults(run=run_train)
    return p


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, f"set_{name}") for name in _TRAIN_SETTINGS if hasattr(args, f"set_{name}")}


def run_train(args: argparse.Namespace) -> int:
    """`vivit train`: parse, hand over to `vivit.train.train`, draw its progress, print its result."""
    from .recipes import get_recipe
    from .train import DistributedTrainingError, train

    try:
        recipe = get_recipe(args.recipe).replace(**_train_settings(args))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.show:
        _out(f"recipe {recipe.name}: {recipe.description}")
        _out(f"source: {recipe.reference} (google-research/scenic) unless another file is named")
        for name, value, source in recipe.rows():
            _out(f"  {name:<18} {value!s:<12} {source.removeprefix(recipe.reference + ': ')}")
        return 0
    missing = [
        flag for flag, value in (("TRAIN", args.train), ("--model", args.model), ("--out", args.out)) if not value
    ]
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (or --show)")
    if not args.model.startswith(("hf-hub:", "local-dir:")):
        _entry(args.model)
    device = _device(args.device)
    _require_file(args.train, "TRAIN")
    if args.val:
        _require_file(args.val, "VAL")
    pretrained: bool | str | None = None
    if args.pretrained is not None:
        pretrained = False if args.pretrained.lower() == "none" else args.pretrained
        if pretrained:
            _require_file(args.pretrained, "--pretrained")
    rank0 = os.environ.get("RANK", "0") == "0"
    bar: Any = None

    def progress(event: Mapping[str, Any]) -> None:
        nonlocal bar
        kind = event["event"]
        if kind == "start":
            what = "resuming at step {step}" if event["resumed"] else "training"
            _note(
                f"{what.format(step=event['step'])}: {event['train_videos']} videos ({event['classes']} classes), "
                f"{event['val_videos']} held out; {event['total_steps']} steps of {event['global_batch']} clips "
                f"({event['steps_per_epoch']} per epoch, {event['accum_steps']} micro-batches x {event['world_size']} "
                f"rank(s) on {event['device']}), base lr {event['lr']:g}"
            )
            bar = _progress(desc="train", unit="step", total=event["total_steps"])
            bar.update(event["step"])
        elif kind == "step" and bar is not None:
            bar.update(event["step"] - bar.n)
        elif kind == "log":
            norm = "" if event.get("grad_norm") is None else f"  grad norm {event['grad_norm']:.3f}"
            _note(
                f"step {event['step']}  epoch {event['epoch']:.2f}  loss {event['loss']:.4f}  lr {event['lr']:.3g}"
                f"{norm}  {event['clips_per_s']:.1f} clips/s"
            )
        elif kind == "eval":
            _note(f"epoch {event['epoch']}: {_train_metrics(event)}" + ("  (best so far)" if event.get("best") else ""))

    try:
        with _video_warnings():
            result = train(
                args.train,
                args.val,
                args.model,
                args.out,
                recipe=recipe,
                pretrained=pretrained,
                model_args=dict(args.override),
                batch_size=args.batch_size,
                accum_steps=args.accum_steps,
                seed=args.seed,
                workers=args.workers,
                device=device,
                precision=args.precision,
                grad_checkpointing=args.grad_checkpointing,
                eval_batch_size=args.eval_batch_size,
                log_every=args.log_every,
                checkpoint_every=args.checkpoint_every,
                temporal_check=not args.no_temporal_check,
                tensorboard=False if args.no_tensorboard else None,
                progress=progress if rank0 else None,
            )
    except (DistributedTrainingError, FloatingPointError) as err:
        raise CommandError(str(err)) from None
    finally:
        if bar is not None:
            bar.close()
    if not rank0:
        return 0
    out = Path(args.out)
    if result.already_complete:
        _note(f"{out} holds a finished run with these settings: nothing to do")
    if result.metrics:
        _out(f"last: {_train_metrics(result.metrics)}  ({out / 'last'})")
    if result.best:
        _out(
            f"best: {result.best['metric'].replace('top', 'top-')} {result.best['value']:.2f}% at epoch "
            f"{result.best['epoch']}  ({out / 'best'})"
        )
    elif not args.val:
        _out(f"model: {out / 'last'}")
    if result.temporal_check:
        shown = ", ".join(
            f"{name.replace('_', ' ')} {value:.2f}%"
            for name, value in result.temporal_check.items()
            if value is not None
        )
        _out(f"temporal check, top-1: {shown}")
    if result.num_failed:
        _warn(f"{result.num_failed} videos could not be decoded and were skipped:")
        for path in result.failed:
            _warn(f"  {_printable(path)}")
    return 0


def _train_metrics(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in ("top1", "top5", "action_top1", "action_top5") if metrics.get(k) is not None]
    keys = keys or [k for k in metrics if k.endswith("top1") and metrics[k] is not None]
    shown = "  ".join(f"{k.replace('top', 'top-')} {metrics[k]:.2f}%" for k in keys)
    return f"{shown}  ({metrics.get('num_videos', 0)} videos)"


# ---------------------------------------------------------------- convert
def _described_name(src: str) -> str:
    """`--model` left out: SRC must name its own architecture (create_model's 'hf-hub:' / 'local-dir:')."""
    if src.startswith("hf-hub:"):
        return src
    path = Path(src).expanduser()
    if path.is_dir() or path.suffix == ".safetensors":
        return f"local-dir:{path}"
    raise UsageError(f"--model is required for {src}: only vivit and transformers checkpoints name their architecture")


def _check_convert_out(text: str, to: str) -> Path:
    """--out of convert: a .safetensors file (vivit format only) or a directory, existing or new.

    A new name must have no suffix to become a directory: `conv.pt` or `model.bin` is refused rather
    than silently created as a directory of that name (nothing here writes pickle files).
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
    if to == "vivit" and out.suffix == ".safetensors":
        if out.is_dir():
            raise UsageError(f"--out {text} is a directory; {accepted}")
        return out
    if out.is_dir():
        return out
    if out.exists():
        raise UsageError(f"--out {text} is an existing file, not a directory; {accepted}")
    if out.suffix:
        raise UsageError(f"--out {text}: {accepted}")
    return out


def _cmd_convert(args: argparse.Namespace) -> int:
    from .weights.hf_transformers import to_transformers
    from .weights.loading import save_pretrained, save_safetensors

    out = _check_convert_out(args.out, args.to)  # a usage error is reported before any loading
    _require_file(args.src, "checkpoint")
    overrides = dict(args.override)
    if args.inflation is not None:
        overrides["inflation"] = args.inflation
    if args.model is not None:
        model = _create(_entry(args.model).name, args.src, overrides)
    else:
        model = create_model(_described_name(args.src), pretrained=True, **overrides)
    name = model.pretrained_cfg.get("architecture", args.model)
    if args.to == "transformers":
        to_transformers(model, out)
        load = f"transformers.VivitForVideoClassification.from_pretrained({str(out)!r})"
    elif out.suffix == ".safetensors":
        # One self-describing file: the config travels in the safetensors metadata.
        source = args.src if args.src.startswith("hf-hub:") else Path(args.src).name
        save_safetensors(model, out, converted_from=source, converter=f"vivit convert {__version__}")
        load = f"vivit.create_model({name!r}, pretrained={str(out)!r})"
    else:
        save_pretrained(model, out)
        load = f"vivit.create_model({'local-dir:' + str(out)!r}, pretrained=True)"
    params = sum(p.numel() for p in model.parameters())
    _out(f"wrote {out}: {type(model).__name__}, {params / 1e6:.1f}M parameters")
    _out(f"load it with {load}")
    return 0


# ---------------------------------------------------------------- explain
def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import check_block_head, explain_video
    from .render import check_animation_fps, require_writer

    _entry(args.model)
    if args.head is not None and args.block is None:
        raise UsageError("--head selects one head of one block: give --block too")
    try:
        require_writer(args.out)  # a wrong suffix or path, or a missing extra, is reported before any work
    except ValueError as err:
        raise UsageError(f"--out: {err}") from None
    try:
        check_animation_fps(args.out, args.fps)
    except ValueError as err:
        raise UsageError(f"--fps: {err}") from None
    with ExitStack() as stack:
        if args.video:
            _require_file(args.video, "video")
            path, label = Path(args.video), None
        else:
            path, label = stack.enter_context(_sample_clip())
        model = _load_model(args)
        try:
            check_block_head(model, args.block, args.head)
        except ValueError as err:
            raise UsageError(f"--block/--head: {err}") from None
        cfg = _data_cfg(model)
        # The map does not depend on the head (rollout from the class or mean token), so an untrained
        # head is no reason to refuse; the title and the answer line say it instead of a prediction.
        untrained = not isinstance(getattr(model, "head", None), nn.Linear) or has_untrained_head(model)
        note = _synthetic_note(args.model, cfg) if args.video else None  # the sample clip: in its test set
        title = args.model + (" (untrained head: no real prediction)" if untrained else "")
        title += " (trained on synthetic data only)" if note else ""
        with _video_warnings():
            result = explain_video(
                model,
                path,
                args.out,
                pretrained_cfg=cfg,
                block=args.block,
                head=args.head,
                top_k=args.top_k,
                true_label=label,
                fps=args.fps,
                name=title,
            )
    top = result["predictions"][0]
    answer = "untrained head, no prediction" if untrained else f"{top['label']} {top['probability'] * 100:.1f}%"
    _out(f"wrote {args.out} ({result['frames']} frames): {answer}")
    if note:
        _out(f"  note: {note}")
    return 0


# ---------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportValidationError, export_clip_size, export_onnx, require_onnx

    out = Path(args.out).expanduser()
    if out.suffix != ".onnx":
        raise UsageError(f"--out {args.out}: expected a file name ending in .onnx")
    try:
        check_file_destination(out)  # a folder of that name: refused now, not after the export
    except ValueError as err:
        raise UsageError(f"--out: {err}") from None
    require_onnx()  # before any download or model build
    model = _load_model(args)
    export_clip_size(model, args.input_size)  # a size ONNX cannot represent is refused before the slow part
    _note(f"exporting {args.model}{' (int8)' if args.int8 else ''} and validating it in ONNX Runtime")
    try:
        result = export_onnx(
            model, out, dynamic_batch=not args.static_batch, int8=args.int8, input_size=args.input_size
        )
    except ExportValidationError as err:
        raise CommandError(str(err)) from None
    shape = "(" + ", ".join(str(s) for s in result.input_shape) + ")"
    logits = "(" + ", ".join(str(s) for s in result.output_shape) + ")"
    _out(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {result.opset}{', int8 linear layers' if result.int8 else ''}): "
        f"input 'video' float32 {shape} -> 'logits' float32 {logits}"
    )
    limit = "int8: drift, no limit" if result.int8 else "limit 1e-4"
    _out(
        f"ONNX Runtime vs PyTorch fp32 on {result.validated} random clips: max abs logit difference "
        f"{result.max_abs_diff:.2e} ({limit}), top-1 agrees on {result.top1_agree}/{result.validated}"
    )
    return 0


# ---------------------------------------------------------------- entry point
def _error_line(err: BaseException) -> str:
    """One line for any exception: multi-line messages are joined, unexpected types are named."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    text = _printable(text)  # a message may quote a hostile file's tensor names or labels
    if not isinstance(err, _EXPECTED_ERRORS):
        text = f"{type(err).__name__}: {text} (set {DEBUG_ENV}=1 for a traceback)"
    return f"{PROG}: error: {text}"


def _error(err: BaseException) -> None:
    """`vivit: error: ...` on stderr (never silenced), above any progress bar."""
    _write(_error_line(err), sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Warnings (e.g. a cache that could not be written) as one `vivit: warning: ...` line (none with -q)."""
    _warn(_printable(message))


class _LogHandler(logging.Handler):
    """vivit's log lines (download retries, waiting for another process's download, a cache rebuilt)
    as `vivit: ...` lines above any progress bar; silenced by -q."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        _note(_printable(record.getMessage()))


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `vivit` command; returns the exit status (the console script exits with it).

    Args:
        argv: Arguments without the program name (default `sys.argv[1:]`).
    """
    shown = warnings.showwarning
    if not _debug():
        warnings.showwarning = _show_warning
    handler = _LogHandler()
    logger = logging.getLogger("vivit")
    logger.addHandler(handler)
    quiet = _QUIET.set(False)
    try:
        args = build_parser().parse_args(argv)
        _QUIET.set(bool(getattr(args, "quiet", False)))
        with _download_progress():
            return int(args.run(args))
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except UsageError as err:
        _error(err)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vivit list | head`: the reader left; stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 1
    except Exception as err:
        if _debug():
            raise
        _error(err)
        return 1
    finally:
        _QUIET.reset(quiet)
        logger.removeHandler(handler)
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
