"""What the subcommands share: the parser, argument types, option helpers, and what --model, --weights,
--override, --device and --out mean, checked before any work.

A subcommand module adds its parser with these helpers (`add_model_options`, `add_run_options`,
`add_out_option`, ...) and, in its `run_<cmd>`, turns the options into checked values
(`model_choice`, `device_option`, `out_folder_option`, `require_input`): every mistake is a
`UsageError` (exit status 2) or a `CommandError` (exit status 1) before a model is loaded or a
video decoded.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from ..backends import BACKENDS, OPENVINO_PRECISIONS
from ..distributed import resolve_device
from ..factory import create_model
from ..files import check_output_dir, describe_path_problem
from ..models.registry import ModelEntry, get_entry, list_models
from ..models.vivit import ViViT
from ..predict import UntrainedHeadError, check_classifier, untrained_head_reason

__all__ = [
    "BACKENDS",
    "DEMO_MODEL",
    "DESCRIBED_PREFIXES",
    "PRECISIONS",
    "CommandError",
    "ModelChoice",
    "Parser",
    "UsageError",
    "add_backend_options",
    "add_device_option",
    "add_model_options",
    "add_out_option",
    "add_override_option",
    "add_quiet_option",
    "add_run_options",
    "add_weights_option",
    "add_workers_option",
    "device_option",
    "model_choice",
    "out_folder_option",
    "refuse_untrained_head",
    "require_input",
]

DEMO_MODEL = "vivit_demo"
#: Model names that are checkpoints describing their own architecture (timm's prefixes).
DESCRIBED_PREFIXES = ("local-dir:", "hf-hub:")


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class CommandError(Exception):
    """The command could not do its work for a reason the message explains (exit status 1)."""


# ---------------------------------------------------------------- the parser
def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError (one line, not usage text), with "did you
    mean" for a misspelled subcommand, choice or option."""

    def error(self, message: str) -> NoReturn:
        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            choices = re.findall(r"'([^']*)'", found[2])
            message += _suggestion(found[1], choices)
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(getattr(parsed, "command", None))
            options = [o for action in command._actions for o in action.option_strings]
            for extra in extras:
                if extra.startswith("-"):
                    name = extra.split("=", 1)[0]
                    command.error(f"unrecognized argument: {extra}{_suggestion(name, options)}")
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self


# ---------------------------------------------------------------- argument types
def override_value(text: str) -> tuple[str, Any]:
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


def views_value(text: str) -> tuple[int, int]:
    """Parse `CLIPSxCROPS`, e.g. `4x3`; crops are 1 (centre) or 3 (left/centre/right)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected CLIPSxCROPS such as 4x3 or 1x1, got {text!r}")
    clips, crops = int(match[1]), int(match[2])
    if clips < 1 or crops not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def clip_size_value(text: str) -> tuple[int, int, int]:
    """`16x224x224` -> (16, 224, 224): frames, height, width."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH such as 16x224x224, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def inflation_value(text: str) -> str | dict[str, str]:
    """Parse `--inflation`: a kernel name, or `key=value` pairs separated by commas."""
    if "=" not in text:
        return text
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    if any(not sep or not key.strip() for key, sep, _ in pairs):
        raise argparse.ArgumentTypeError(
            f"expected KERNEL or KEY=VALUE,... (e.g. kernel=average,temporal_init=copy), got {text!r}"
        )
    return {key.strip(): value.strip() for key, _, value in pairs}


# ---------------------------------------------------------------- option helpers
_MODEL_HELP = (
    "registered model name (see 'vivit list'), or a checkpoint that names its architecture: "
    "local-dir:PATH (a .safetensors file or save_pretrained folder) or hf-hub:org/repo"
)


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = None, note: str = "") -> None:
    """--model / --override (the model) and --weights (its weights)."""
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        metavar="NAME",
        help=_MODEL_HELP
        + (f"; default {default} (or the architecture --weights names)" if default else "")
        + (f"; {note}" if note else "; may be left out when --weights names its architecture"),
    )
    add_weights_option(parser)
    add_override_option(parser)


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        "-w",
        metavar="PATH",
        help="checkpoint to load instead of the entry's released weights: a .safetensors file, a "
        "save_pretrained directory, a Scenic checkpoint or hf-hub:org/repo",
    )


def add_override_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        type=override_value,
        metavar="KEY=VALUE",
        help="constructor argument, JSON value (repeatable), e.g. --override num_frames=16",
    )


def add_run_options(parser: argparse.ArgumentParser, views_help: str) -> None:
    """Options of the commands that run the model on videos (with the inference engine's: `add_backend_options`)."""
    parser.add_argument("--views", type=views_value, metavar="CLIPSxCROPS", help=views_help)
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, metavar="N", help="views per forward pass (default 4)"
    )
    add_device_option(parser)
    add_quiet_option(parser)
    add_backend_options(parser)


PRECISIONS = OPENVINO_PRECISIONS  # both backends take all three


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --precision and --calibration: which engine runs the model (`vivit.backends.inference_backend`)."""
    group = parser.add_argument_group("inference engine (README 'Speed')")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="pytorch",
        help="pytorch (default) or openvino (CPU; needs the openvino extra; the model is converted once per "
        "weights, precision and clip size, checked against PyTorch, and cached)",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default); bf16 or int8 run on the CPU (pytorch: vivit.optimize_for_inference, int8 dynamic; "
        "openvino: int8 static, calibrated on --calibration clips)",
    )
    group.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="VIDEO",
        help="--backend openvino --precision int8: a video (or .npy/.npz frames) of the task whose centre clip "
        "calibrates the activation scales (repeatable; 100-300 are typical)",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)"
    )


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bars, notes or warnings on stderr, only errors (bars are never drawn into a file or pipe)",
    )


MAX_WORKERS = 256  # processes; far beyond what decoding beside one model can use, far below what exhausts memory


def worker_count(text: str) -> int:
    """--workers: an integer in 0..MAX_WORKERS (each worker is a process holding a copy of the decoder)."""
    value = non_negative_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_WORKERS} worker processes, got {value} (each is a process of its own; "
            "about as many as CPU cores is the most that helps)"
        )
    return value


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=2,
        metavar="W",
        help="processes that decode videos while the model runs (default 2; 0: none)",
    )


def add_out_option(parser: argparse.ArgumentParser, help: str, *, required: bool = True, metavar: str = "DIR") -> None:
    parser.add_argument("--out", "-o", required=required, metavar=metavar, help=help)


# ---------------------------------------------------------------- checked values
def device_option(name: str | None) -> torch.device:
    """--device as a torch device this machine can use, else a usage error naming those it can."""
    try:
        return resolve_device(name)
    except ValueError as err:
        raise UsageError(f"--device {err}") from None


def out_folder_option(text: str, option: str = "--out") -> Path:
    """An output folder, checked before any work: not empty, not a file, and it takes files."""
    try:
        return check_output_dir(text, option)
    except ValueError as err:
        raise UsageError(str(err)) from None


def require_input(path: str, what: str) -> None:
    """Fail early and clearly, before any model is built, when an input cannot be opened."""
    if path.startswith("hf-hub:"):
        return
    target = Path(path).expanduser()
    try:
        exists = target.exists()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise CommandError(f"{what} {path} {describe_path_problem(target)}")


def entry_option(name: str) -> ModelEntry:
    """A registered name's entry; an unknown name is a usage error (with the registry's close matches)."""
    try:
        return get_entry(name)
    except ValueError as err:  # the registry's hint names the Python API; point at the command instead
        raise UsageError(str(err).replace("vivit.list_models()", "'vivit list'")) from None


def _constructor_keywords(cls: type) -> set[str]:
    """Keyword arguments a model class accepts, collected over the `__init__`s it forwards to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module) or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names.update(p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    return names - {"self"}


@dataclass
class ModelChoice:
    """The model a command runs, as --model, --weights and --override name it, checked but not loaded.

    Attributes:
        name: What `create_model` is called with: a registered name, or `local-dir:...` /
            `hf-hub:...` (a checkpoint naming its architecture).
        pretrained: `create_model`'s `pretrained`: True (the entry's or the described checkpoint's
            weights) or the --weights path.
        overrides: Constructor overrides.
        weights: The weights when not the entry's own (--weights, or the described checkpoint), else None.
        entry: The registry entry of a registered name (None for a described checkpoint).
        architecture: The registered architecture it builds (known before loading).
    """

    name: str
    pretrained: bool | str
    overrides: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    entry: ModelEntry | None = None
    architecture: str = ""
    backend: str = "pytorch"
    precision: str = "fp32"
    calibration: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """How results name it: the architecture, and where its weights come from when not the entry's."""
        return self.architecture or self.name

    def load(self, device: torch.device | None = None) -> ViViT:
        """Build the model with its weights, in eval mode, on `device` (default: the CPU), and put it on
        the chosen engine (`run_on_backend`): what the jobs run."""
        model = create_model(self.name, pretrained=self.pretrained, **self.overrides)
        model = model.to(device or torch.device("cpu")).eval()
        if device is not None and device.type == "meta":
            return model
        return run_on_backend(self, model)

    @property
    def engine(self) -> str:
        """`pytorch fp32`, `openvino bf16`, ...: what runs the model."""
        return f"{self.backend} {self.precision}"

    def weights_identity(self) -> str:
        """What a features file records as the weights (a path with its size and mtime, or "released"), with
        the engine when it is not PyTorch fp32 (`"released; engine openvino bf16"`): features of another engine
        or precision differ in their last digits, so a resumed job must not count them as done."""
        from ..features import weights_identity

        identity = weights_identity(self.weights.removeprefix("local-dir:") if self.weights else None)
        if self.backend == "pytorch" and self.precision == "fp32":
            return identity
        calibrated = f" calibrated on {', '.join(self.calibration)}" if self.calibration else ""
        return f"{identity}; engine {self.engine}{calibrated}"


def backend_choice(args: argparse.Namespace) -> tuple[str, str, tuple[str, ...]]:
    """--backend / --precision / --calibration, checked before any model is built.

    bf16, int8 and OpenVINO run on the CPU: a job left to choose its device (`--device` not given)
    gets `cpu`, another device is a usage error. A missing openvino (int8: nncf) is reported now.

    Raises:
        UsageError: --calibration without OpenVINO int8, OpenVINO int8 without it, per-frame features
            on OpenVINO, or a device other than the CPU.
        CommandError: openvino (or nncf) is not installed (the message names the install command).
    """
    if not hasattr(args, "backend"):  # a command without these options (`vivit train`'s --precision is autocast)
        return "pytorch", "fp32", ()
    backend = str(getattr(args, "backend", None) or "pytorch")
    precision = str(getattr(args, "precision", None) or "fp32")
    calibration = tuple(getattr(args, "calibration", None) or ())
    int8_static = backend == "openvino" and precision == "int8"
    if calibration and not int8_static:
        raise UsageError(
            "--calibration is for --backend openvino --precision int8 (static int8); "
            f"--backend {backend} --precision {precision} needs none"
        )
    if int8_static and not calibration:
        raise UsageError(
            "--backend openvino --precision int8 is static int8: give --calibration VIDEO (repeatable) with videos of "
            "the task (100-300 are typical) to calibrate its activation scales, or use --precision bf16"
        )
    if backend == "pytorch" and precision == "fp32":
        return backend, precision, calibration
    if backend == "openvino" and getattr(args, "per_frame", False):
        raise UsageError(
            "--per-frame needs per-token outputs, which the OpenVINO graph does not keep; use --backend pytorch"
        )
    device = getattr(args, "device", None)
    try:  # the device's kind, whether or not this machine has it
        kind = torch.device(device).type if device is not None else "cpu"
    except (RuntimeError, ValueError):
        kind = device_option(device).type  # its own usage error
    if kind != "cpu":
        raise UsageError(
            f"--device {device}: --backend {backend} --precision {precision} runs on the CPU; "
            "leave out --device or give --device cpu"
        )
    if hasattr(args, "device"):
        args.device = "cpu"  # the jobs' "auto" would move the model to CUDA where one is present
    if backend == "openvino":
        from ..backends import require_openvino

        try:
            require_openvino(int8=precision == "int8")
        except ImportError as err:
            raise CommandError(str(err)) from None
    for video in calibration:
        require_input(video, "--calibration")
    return backend, precision, calibration


def calibration_clips(videos: Sequence[str], model: nn.Module) -> torch.Tensor:
    """The centre clip, centre crop (1x1 view) of each video, preprocessed for `model`: float32 (N, C, T, H, W)."""
    from ..predict import iter_views, model_data_config

    cfg = model_data_config(model)[0]
    clips = []
    for video in videos:
        try:
            clips += list(iter_views(Path(video).expanduser(), 1, 1, cfg))
        except (ValueError, OSError) as err:
            raise CommandError(f"--calibration {video}: {' '.join(str(err).split())}") from None
    return torch.stack(clips)


def run_on_backend(choice: ModelChoice, model: ViViT) -> ViViT:
    """`model` on `choice`'s engine (`vivit.backends.inference_backend`), with a note while OpenVINO converts.

    A module called like the model: itself (pytorch fp32), an `optimize_for_inference` copy (pytorch
    bf16/int8), or an `OpenVINOModel` (converted once per weights, precision and clip size, checked
    against PyTorch and cached in `<vivit cache>/openvino`).
    """
    if choice.backend == "pytorch" and choice.precision == "fp32":
        return model
    from ..backends import ExportValidationError, inference_backend

    calibration = calibration_clips(choice.calibration, model) if choice.calibration else None
    try:
        runner = inference_backend(model, choice.backend, choice.precision, calibration=calibration)
    except ExportValidationError as err:
        raise CommandError(str(err)) from None
    if getattr(runner, "converted", False):
        from . import console

        checks = getattr(runner, "validation", {})
        drift = ", ".join(
            f"{name} {value['max_abs_diff']:.1e}" for name, value in checks.items() if isinstance(value, dict)
        )
        cached = "reused from the cache next time" if getattr(runner, "path", None) else "not cached (see the warning)"
        console.note(
            f"converted {choice.display} to OpenVINO ({choice.precision}), checked against PyTorch "
            f"(max abs logit difference: {drift}); {cached}"
        )
    return runner  # type: ignore[return-value]  # called like the model: the jobs use its forward/features API


def _described_architecture(spec: str, overrides: Mapping[str, Any], option: str) -> tuple[type, dict[str, Any], str]:
    """(class, model_args, architecture) of a checkpoint that names its architecture, read from its config
    (nothing is allocated: built on the meta device)."""
    try:
        with torch.device("meta"):
            model = create_model(spec, pretrained=False)
    except FileNotFoundError as err:
        raise CommandError(str(err)) from None
    except ValueError as err:
        text = str(err)
        if "which model" in text or "name the architecture" in text:
            raise UsageError(
                f"{option}: {text.split('; name the architecture')[0]}; give --model NAME (see 'vivit list')"
            ) from None
        raise
    arch = str((model.pretrained_cfg or {}).get("architecture") or "")
    return type(model), dict(getattr(model, "model_args", {}) or {}), arch


def model_choice(
    args: argparse.Namespace,
    *,
    default: str | None = None,
    name: str | None = None,
    need_weights: bool = True,
) -> ModelChoice:
    """--model / --weights / --override of a command as a checked `ModelChoice`, before any loading.

    `--model` takes a registered name or `local-dir:PATH` / `hf-hub:org/repo`; left out, the
    model is the architecture that --weights names (a vivit or transformers checkpoint), else
    `default`. Checked here: an unknown name, a weights file that does not exist, a name without
    weights, --weights beside a described checkpoint, and every --override (its name an argument
    of the model, its value one the constructor takes: built on the meta device, nothing allocated).

    Args:
        args: The parsed options (`model`, `weights`, `override`).
        default: The model when neither --model nor --weights is given (None: one is required).
        name: The model name given another way (a positional NAME), instead of --model.
        need_weights: The command runs a trained model (False: `info`, a fresh architecture).

    Raises:
        UsageError: The command line is wrong (exit 2).
        CommandError: A file it names does not exist (exit 1).
    """
    given = name if name is not None else getattr(args, "model", None)
    weights = getattr(args, "weights", None)
    overrides = dict(getattr(args, "override", None) or [])
    if weights is not None:
        require_input(weights, "--weights")
    if given is None and weights is not None:
        if not need_weights:
            raise UsageError("--weights needs --model NAME")
        weights_spec = weights if weights.startswith("hf-hub:") else f"local-dir:{weights}"
        cls, base, arch = _described_architecture(weights_spec, overrides, "--weights")
        choice = ModelChoice(weights_spec, True, overrides, weights, None, arch)
    elif given is None and default is None:
        raise UsageError("give --model NAME (see 'vivit list') or --weights CHECKPOINT that names its architecture")
    elif (given or default or "").startswith(DESCRIBED_PREFIXES):
        spec = str(given or default)
        if weights is not None:
            raise UsageError(f"--weights {weights}: --model {spec} is a checkpoint already, with its own weights")
        if spec.startswith("local-dir:"):
            require_input(spec.removeprefix("local-dir:"), "--model")
        cls, base, arch = _described_architecture(spec, overrides, "--model")
        choice = ModelChoice(spec, bool(need_weights), overrides, spec, None, arch)
    else:
        entry = entry_option(str(given or default))
        if need_weights and weights is None and not entry.has_weights:
            with_weights = list_models(f"{entry.name}_*", pretrained=True)
            hint = f" (entries with weights: {', '.join(with_weights)})" if with_weights else ""
            raise UsageError(
                f"{entry.name} has no pretrained weights{hint}; pass --weights PATH or pick a name from "
                "'vivit list --pretrained'"
            )
        cls, base = entry.model_cls, dict(entry.model_args)
        pretrained: bool | str = (weights if weights is not None else True) if need_weights else False
        choice = ModelChoice(entry.name, pretrained, overrides, weights, entry, entry.name)
    _check_overrides(cls, base, overrides, with_weights=bool(choice.pretrained))
    choice.backend, choice.precision, choice.calibration = backend_choice(args)
    return choice


def _check_overrides(cls: type, base: Mapping[str, Any], overrides: Mapping[str, Any], *, with_weights: bool) -> None:
    """Each --override must name an argument of the model class and carry a value its constructor takes."""
    if not overrides:
        return
    # `inflation` configures how weights load, so it only means something with weights
    allowed = _constructor_keywords(cls) | ({"inflation"} if with_weights else set())
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise UsageError(
            f"--override {', '.join(unknown)}: not an argument of {cls.__name__} (it takes {', '.join(sorted(allowed))})"
        )
    args = {k: v for k, v in overrides.items() if k != "inflation"}
    if not args:
        return
    try:
        with torch.device("meta"):  # nothing is allocated, whatever the sizes
            cls(**{**base, **args})
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        given = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items())
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UsageError(f"--override {given}: {cls.__name__} does not take it ({reason})") from None


def refuse_untrained_head(choice: ModelChoice, model: nn.Module | None = None, *, command: str = "predict") -> None:
    """Refuse to classify with a head that never learned: from the entry before any download, then from
    the loaded weights (`vivit.predict.check_classifier`)."""
    features = (
        f"'vivit features VIDEO --model {choice.name}{f' --weights {choice.weights}' if choice.entry and choice.weights else ''} "
        "--out features/'"
    )
    if model is None:
        reason = untrained_head_reason(
            choice.entry.pretrained_cfg if choice.entry else None,
            choice.overrides,
            weights_given=choice.entry is None or choice.weights is not None,
        )
        if reason is None:
            return
        reason = reason.replace("num_classes=", "--override num_classes=", 1)
    else:
        try:
            check_classifier(model)
            return
        except UntrainedHeadError as err:
            if err.no_head:
                raise UsageError(
                    f"{choice.display} has no classifier head (num_classes=0: a backbone), so there is nothing to "
                    f"{command}; for video embeddings use {features}"
                ) from None
            reason = err.reason
    raise UsageError(
        f"{choice.display}: the classifier head is untrained ({reason}), so every video would get the same "
        f"answer; for video embeddings use {features}, or fine-tune the model first"
    )


# ---------------------------------------------------------------- sampling by time (branch jobsdense, issue 20)
def sample_fps_value(text: str) -> float:
    """`--sample-fps F`: a positive, finite number of frames per second (the data layer's rule)."""
    from ..data.sampling import check_sample_fps

    try:
        return check_sample_fps(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of frames per second, got {text!r}") from None


def add_sample_fps_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--sample-fps: choose frames by presentation time instead of every frame_stride-th frame."""
    parser.add_argument(
        "--sample-fps",
        type=sample_fps_value,
        metavar="F",
        help="choose frames by presentation time, F per second, so a clip spans the same seconds whatever the "
        "file's frame rate (--window/--stride then count frames at F; above a file's rate frames repeat). "
        "Default: the model's cfg (index sampling, frame_stride apart, for the released Kinetics models, as "
        "Scenic evaluated them)",
    )
