"""`vivit export onnx|openvino`: the model with its weights as an ONNX file (validated in ONNX Runtime) or an
OpenVINO IR (validated in OpenVINO), each checked against PyTorch before it is written."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .._install import install_hint
from ..files import check_file_destination, writing
from . import console
from .options import (
    CommandError,
    ModelChoice,
    UsageError,
    add_override_option,
    add_quiet_option,
    add_weights_option,
    calibration_clips,
    clip_size_value,
    model_choice,
    require_input,
)

_SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
_ResultT = TypeVar("_ResultT")


def _export_format(text: str) -> str:
    """The format comes first; a model name in its place (`vivit export vivit_demo ...`) is told so."""
    if text in _SUFFIX:
        return text
    raise argparse.ArgumentTypeError(
        f"expected the format first, onnx or openvino, got {text!r} (e.g. 'vivit export onnx {text} --out model.onnx')"
    )


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="export a model to ONNX or OpenVINO, validated against PyTorch",
        description="Write the model with its weights as an ONNX file (run in ONNX Runtime) or an OpenVINO IR "
        "(FILE.xml + FILE.bin, run in OpenVINO), compare it with PyTorch on random clips (fp32 fails above 1e-4; "
        "nothing is written then). ONNX needs onnx, onnxruntime and onnxscript: "
        f"{install_hint('onnx onnxruntime onnxscript', 'onnx')}; OpenVINO needs openvino (int8 also nncf): "
        f"{install_hint('openvino nncf', 'openvino')}.",
    )
    p.add_argument(
        "format",
        type=_export_format,
        metavar="{onnx,openvino}",
        help="file format: onnx (FILE.onnx) or openvino (FILE.xml)",
    )
    p.add_argument(
        "model", metavar="NAME", help="registered model name (see 'vivit list'), or local-dir:PATH / hf-hub:org/repo"
    )
    add_weights_option(p)
    add_override_option(p)
    p.add_argument("--out", "-o", required=True, metavar="FILE.onnx|FILE.xml")
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8: onnx quantizes the linear layers dynamically (ONNX Runtime); openvino quantizes statically "
        "(nncf), calibrated on --calibration clips",
    )
    p.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="VIDEO",
        help="openvino --int8: a video (or .npy/.npz frames) of the task whose centre clip calibrates the "
        "activation scales (repeatable; 100-300 are typical)",
    )
    p.add_argument(
        "--input-size",
        type=clip_size_value,
        metavar="TxHxW",
        help="clip size (frames x height x width) for a model with dynamic_size=true",
    )
    p.add_argument("--static-batch", action="store_true", help="onnx: fix the batch dimension to 1 (default: dynamic)")
    add_quiet_option(p)
    p.set_defaults(run=run_export, device="cpu")


def _write(out: Path, missing: list[Path], export: Callable[[], _ResultT]) -> _ResultT:
    """Run one exporter into `out` (a write error names the file); a failed check is a one-line error, and
    folders this run created for a file it could not write are removed."""
    from ..export import ExportValidationError

    try:
        with writing(out):
            return export()
    except ExportValidationError as err:
        raise CommandError(str(err)) from None
    except OSError:
        for folder in missing:  # folders this run created for nothing
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_clip_size, export_onnx, require_onnx

    choice = model_choice(args, name=args.model)
    out = Path(args.out).expanduser()
    suffix = _SUFFIX[args.format]
    if out.suffix != suffix:
        raise UsageError(f"--out {args.out}: expected a file name ending in {suffix} for {args.format}")
    try:
        check_file_destination(out)  # a folder of that name, or one that takes no files: refused now
    except ValueError as err:
        raise UsageError(f"--out: {err}") from None
    if args.format == "openvino":
        return _export_openvino(args, choice, out)
    if args.calibration:
        raise UsageError("--calibration is for openvino --int8 (ONNX's int8 is dynamic: it needs no calibration)")
    require_onnx()  # before any download or model build
    model = choice.load()
    export_clip_size(model, args.input_size)  # a size ONNX cannot represent is refused before the slow part
    console.note(f"exporting {choice.display}{' (int8)' if args.int8 else ''} and validating it in ONNX Runtime")
    missing = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    result = _write(
        out,
        missing,
        lambda: export_onnx(
            model, out, dynamic_batch=not args.static_batch, int8=args.int8, input_size=args.input_size
        ),
    )
    shape = "(" + ", ".join(str(s) for s in result.input_shape) + ")"
    logits = "(" + ", ".join(str(s) for s in result.output_shape) + ")"
    console.out(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {result.opset}{', int8 linear layers' if result.int8 else ''}): "
        f"input 'video' float32 {shape} -> 'logits' float32 {logits}"
    )
    limit = "int8: drift, no limit" if result.int8 else "limit 1e-4"
    console.out(
        f"ONNX Runtime vs PyTorch fp32 on {result.validated} random clips: max abs logit difference "
        f"{result.max_abs_diff:.2e} ({limit}), top-1 agrees on {result.top1_agree}/{result.validated}"
    )
    return 0


def _export_openvino(args: argparse.Namespace, choice: ModelChoice, out: Path) -> int:
    from ..backends import require_openvino
    from ..export import export_clip_size, export_openvino

    if args.static_batch:
        raise UsageError("--static-batch is for onnx; the OpenVINO graph takes any batch")
    if args.calibration and not args.int8:
        raise UsageError("--calibration is for --int8 (static int8); a float graph needs none")
    if args.int8 and not args.calibration:
        raise UsageError(
            "openvino --int8 is static int8: give --calibration VIDEO (repeatable) with videos of the task "
            "(100-300 are typical) to calibrate its activation scales"
        )
    try:
        require_openvino(int8=args.int8)  # before any download or model build
    except ImportError as err:
        raise CommandError(str(err)) from None
    for video in args.calibration:
        require_input(video, "--calibration")
    model = choice.load()
    export_clip_size(model, args.input_size)
    calibration = calibration_clips(args.calibration, model) if args.int8 else None
    precision = "int8" if args.int8 else "fp32"
    console.note(f"exporting {choice.display} ({precision}) and validating it in OpenVINO")
    missing = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    result = _write(
        out,
        missing,
        lambda: export_openvino(model, out, precision=precision, calibration=calibration, input_size=args.input_size),
    )
    size = (out.stat().st_size + out.with_suffix(".bin").stat().st_size) / 2**20
    shape = "(" + ", ".join(str(s) for s in result.input_shape) + ")"
    logits = "(" + ", ".join(str(s) for s in result.output_shape) + ")"
    console.out(
        f"wrote {out} and {out.with_suffix('.bin').name} ({size:.1f} MiB, OpenVINO {result.openvino_version}, "
        f"{'static int8' if args.int8 else 'float: runs as fp32 or bf16'}): input 'video' float32 {shape} -> "
        f"'logits' float32 {logits}, 'pre_logits'"
    )
    clips = "calibration clips" if args.int8 else "random clips"
    limit = "int8: drift, no limit" if args.int8 else "limit 1e-4"
    console.out(
        f"OpenVINO vs PyTorch fp32 on {result.validated} {clips}: max abs logit difference "
        f"{result.max_abs_diff:.2e} ({limit}), top-1 agrees on {result.top1_agree}/{result.validated}"
    )
    return 0
