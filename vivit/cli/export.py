"""`vivit export onnx`: the model with its weights as an ONNX file, validated in ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._install import install_hint
from ..files import check_file_destination, writing
from . import console
from .options import (
    CommandError,
    UsageError,
    add_override_option,
    add_quiet_option,
    add_weights_option,
    clip_size_value,
    model_choice,
)


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="export a model to ONNX, validated in ONNX Runtime",
        description="Write the model with its weights as an ONNX file, run it in ONNX Runtime on random clips and "
        "compare with PyTorch (fp32 fails above 1e-4; nothing is written then). Needs onnx, onnxruntime and "
        f"onnxscript: {install_hint('onnx onnxruntime onnxscript', 'onnx')}.",
    )
    p.add_argument("format", choices=("onnx",), help="file format (onnx)")
    p.add_argument(
        "model", metavar="NAME", help="registered model name (see 'vivit list'), or local-dir:PATH / hf-hub:org/repo"
    )
    add_weights_option(p)
    add_override_option(p)
    p.add_argument("--out", "-o", required=True, metavar="FILE.onnx")
    p.add_argument(
        "--int8", action="store_true", help="quantize the linear layers to int8 (ONNX Runtime dynamic quantization)"
    )
    p.add_argument(
        "--input-size",
        type=clip_size_value,
        metavar="TxHxW",
        help="clip size (frames x height x width) for a model with dynamic_size=true",
    )
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1 (default: dynamic)")
    add_quiet_option(p)
    p.set_defaults(run=run_export, device="cpu")


def run_export(args: argparse.Namespace) -> int:
    from ..export import ExportValidationError, export_clip_size, export_onnx, require_onnx

    choice = model_choice(args, name=args.model)
    out = Path(args.out).expanduser()
    if out.suffix != ".onnx":
        raise UsageError(f"--out {args.out}: expected a file name ending in .onnx")
    try:
        check_file_destination(out)  # a folder of that name, or one that takes no files: refused now
    except ValueError as err:
        raise UsageError(f"--out: {err}") from None
    require_onnx()  # before any download or model build
    model = choice.load()
    export_clip_size(model, args.input_size)  # a size ONNX cannot represent is refused before the slow part
    console.note(f"exporting {choice.display}{' (int8)' if args.int8 else ''} and validating it in ONNX Runtime")
    missing = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        with writing(out):
            result = export_onnx(
                model, out, dynamic_batch=not args.static_batch, int8=args.int8, input_size=args.input_size
            )
    except ExportValidationError as err:
        raise CommandError(str(err)) from None
    except OSError:
        for folder in missing:  # folders this run created for nothing
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
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
