"""ONNX export, validated in ONNX Runtime: `export_onnx(model, path)`.

The graph comes from PyTorch's `torch.export`-based ONNX exporter (`torch.onnx.export(...,
dynamo=True)`, which needs `onnxscript`); int8 models from ONNX Runtime's dynamic quantizer
(`onnxruntime.quantization.quantize_dynamic`) applied to that graph. Every export is run in ONNX
Runtime on a random clip and compared with PyTorch before the file appears at its destination.
Needs onnx, onnxruntime and onnxscript (the `onnx` extra).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._install import install_hint
from .files import check_file_destination

__all__ = ["ExportValidationError", "OnnxExport", "export_onnx"]

ONNX_OPSET = 20  # the first opset with Gelu(approximate="tanh") as one op (ONNX 1.15)
FP32_TOLERANCE = 1e-4  # max abs logit difference ONNX Runtime vs PyTorch accepted for fp32
_VALIDATION_BATCH = 2  # > 1, so a dynamic batch axis is exercised (on other values than the traced ones)
_TRACE_BATCH = 2  # torch.export specialises a dimension of size 1, so trace with 2 and mark it dynamic
# weights above this go to `<file>.data` beside the .onnx (protobuf cannot hold a message over 2 GB)
_EXTERNAL_DATA_BYTES = int(1.8 * 2**30)


class ExportValidationError(RuntimeError):
    """The exported model's output in ONNX Runtime differs from PyTorch's beyond the tolerance."""


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote and how it was validated.

    Attributes:
        path: The .onnx file (with `path.onnx.data` beside it for models over 2 GB).
        input_shape: Of input `video`, float32 `(batch, C, T, H, W)`; "batch" when dynamic.
        output_shape: Of output `logits`, float32 `(batch, num_classes)`.
        int8: Whether the linear layers were quantized to int8 (dynamic).
        max_abs_diff: Max abs logit difference ONNX Runtime vs PyTorch fp32 on the validation clips
            (NaN when not validated).
        top1_agree: Validation clips whose top-1 class agrees, out of `validated`.
        validated: Number of validation clips (0 when not validated).
        opset: ONNX opset of the graph.
    """

    path: Path
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    int8: bool
    max_abs_diff: float
    top1_agree: int
    validated: int
    opset: int


def require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)} (onnxscript: torch.onnx's exporter; onnxruntime: the "
            f"check of every export): {install_hint(' '.join(missing), 'onnx')}"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's advisory chatter (warnings, INFO/WARNING log lines)."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_clip_size(model: nn.Module, input_size: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """(T, H, W) to export for, refusing what an ONNX graph cannot represent."""
    if getattr(model, "optimized_for_inference", None) is not None:
        raise ValueError(
            "this model comes from vivit.optimize_for_inference (inference-only kernels that ONNX cannot "
            "represent); export the original model"
        )
    if not hasattr(model, "num_frames") or not hasattr(model, "img_size"):
        raise ValueError(f"expected a vivit model (with num_frames and img_size), got {type(model).__name__}")
    img_size: tuple[int, int] = getattr(model, "img_size")  # noqa: B009 - nn.Module attributes are untyped
    own = (int(getattr(model, "num_frames")), int(img_size[0]), int(img_size[1]))  # noqa: B009
    dynamic = bool(getattr(model, "dynamic_size", False))
    if input_size is None:
        if dynamic:
            raise ValueError(
                "this model was built with dynamic_size=True, which resamples its position tables for each "
                "clip size while it runs; an ONNX graph would only be right at the traced size (ONNX Runtime "
                "rejects or mis-computes other sizes). Pass input_size=(T, H, W) (CLI: --input-size TxHxW) to "
                f"export for exactly that clip size (e.g. {own}), or create the model with num_frames=/img_size= "
                "for the size you need and dynamic_size=False"
            )
        return own  # type: ignore[return-value]
    size = tuple(int(s) for s in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (T, H, W) with positive sizes, got {input_size!r}")
    if not dynamic and size != own:
        raise ValueError(
            f"input_size {size} differs from the model's clip size {own} (T, H, W); create the model with "
            "num_frames=/img_size= overrides, or with dynamic_size=True to export a resampled copy for one size"
        )
    return size  # type: ignore[return-value]


def _cpu_fp32_eval(model: nn.Module) -> nn.Module:
    ref = next(model.parameters(), None)
    if ref is not None and (ref.device.type != "cpu" or ref.dtype != torch.float32):
        return copy.deepcopy(model).float().cpu().eval()
    return model


def _ort_session(path: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare(path: Path, video: torch.Tensor, expected: torch.Tensor) -> tuple[float, int]:
    session = _ort_session(path)
    got = session.run(None, {session.get_inputs()[0].name: video.numpy()})[0]
    ref = expected.numpy()
    diff = float(np.abs(got - ref).max()) if np.isfinite(got).all() else math.inf
    return diff, int((got.argmax(-1) == ref.argmax(-1)).sum())


def _quantize_int8(src: Path, dst: Path, large: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul with a constant weight only: the linear layers of the blocks (and the head). Attention's
    # activation x activation MatMuls and the tubelet Conv stay fp32, as in optimize_for_inference(int8).
    quantize_dynamic(
        src,
        dst,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=large,
        extra_options={"MatMulConstBOnly": True},
    )


def _move_into_place(files: list[Path], dest: Path) -> None:
    """Rename the finished files next to `dest`: the external data first, the .onnx last, so a reader
    never finds an .onnx whose data is missing."""
    data = [f for f in files if f.name != dest.name]
    for f in data:
        os.replace(f, dest.parent / f.name)
    os.replace(files[[f.name for f in files].index(dest.name)], dest)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    int8: bool = False,
    input_size: tuple[int, int, int] | None = None,
    validate: bool = True,
    atol: float = FP32_TOLERANCE,
) -> OnnxExport:
    """Export a vivit model to ONNX and check it in ONNX Runtime against PyTorch.

    The graph takes input `video`, float32 `(batch, C, T, H, W)` preprocessed as for the PyTorch
    model (`vivit.create_transform`), and returns `logits` float32 `(batch, num_classes)`. T, H, W
    are fixed (the model's clip size); the batch is dynamic unless `dynamic_batch=False`. The file
    is written atomically: it appears complete or not at all (also when validation fails).

    Validation runs `_VALIDATION_BATCH` random clips U(-1, 1) through ONNX Runtime and PyTorch (fp32,
    eval mode): an fp32 export fails above `atol`; an int8 export checks the fp32 graph first, then
    reports the int8 drift (max abs difference, top-1 agreement) without a limit.

    Models built with `dynamic_size=True` resample their position tables per clip size while they
    run, which a graph with fixed tables cannot follow: they export only with an explicit
    `input_size`, for exactly that size.

    Args:
        model: A vivit model (any of the four), on any device and dtype (a CPU fp32 copy is exported).
        path: Destination .onnx file; parent folders are created. Models whose weights exceed 2 GB
            (protobuf's limit) also write `<path>.data` beside it.
        dynamic_batch: Make the batch dimension dynamic (else fixed to 1).
        int8: Quantize the linear layers to int8 (weights per output channel, activations per
            tensor at run time) with ONNX Runtime's dynamic quantizer.
        input_size: (T, H, W) for a `dynamic_size=True` model; must match the model's otherwise.
        validate: Run the check in ONNX Runtime (default True).
        atol: Max abs logit difference accepted for fp32.

    Returns:
        An `OnnxExport` with the path, shapes and validation figures.

    Raises:
        ImportError: onnx, onnxruntime or onnxscript is missing.
        ValueError: a `dynamic_size=True` model without `input_size`, a mismatched `input_size`,
            a module that is not a vivit model, or a `path` that is a folder or lies under a file.
        ExportValidationError: ONNX Runtime's fp32 logits differ from PyTorch's by more than `atol`.
    """
    require_onnx()
    from torch.export import Dim

    dest = Path(path).expanduser()
    check_file_destination(dest)  # before the slow export: a folder would fail only at the final rename
    t, h, w = export_clip_size(model, input_size)
    was_training = model.training
    model = _cpu_fp32_eval(model)
    in_chans = int(getattr(model, "in_chans", 3))
    g = torch.Generator().manual_seed(0)
    trace_batch = _TRACE_BATCH if dynamic_batch else 1
    example = torch.rand(trace_batch, in_chans, t, h, w, generator=g) * 2 - 1
    check_batch = _VALIDATION_BATCH if dynamic_batch else 1
    video = torch.rand(check_batch, in_chans, t, h, w, generator=g) * 2 - 1
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > _EXTERNAL_DATA_BYTES

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.eval()
        with torch.no_grad():
            expected = model(video).float()
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            fp32_path = Path(tmp) / (dest.name if not int8 else "fp32.onnx")
            dynamic_shapes = ({0: Dim("batch", min=1, max=1 << 16)},) if dynamic_batch else None
            with _quiet():
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    input_names=["video"],
                    output_names=["logits"],
                    dynamic_shapes=dynamic_shapes,
                    opset_version=ONNX_OPSET,
                    external_data=large,
                    verbose=False,
                )
                assert program is not None  # dynamo=True always returns the program
                program.save(str(fp32_path), external_data=large)
            diff, agree = (math.nan, 0)
            if validate:
                diff, agree = _compare(fp32_path, video, expected)
                if not diff <= atol:
                    raise ExportValidationError(
                        f"ONNX Runtime's logits differ from PyTorch's by {diff:.3g} (> {atol:g}); nothing was "
                        f"written to {dest}. Please report this with the model's configuration."
                    )
            final = fp32_path
            if int8:
                final = Path(tmp) / dest.name
                with _quiet():
                    _quantize_int8(fp32_path, final, large)
                if validate:
                    diff, agree = _compare(final, video, expected)
            _move_into_place([f for f in Path(tmp).iterdir() if f.name.startswith(dest.name)], dest)
    finally:
        model.train(was_training)
    num_classes = int(expected.shape[-1])
    batch: int | str = "batch" if dynamic_batch else 1
    return OnnxExport(
        path=dest,
        input_shape=(batch, in_chans, t, h, w),
        output_shape=(batch, num_classes),
        int8=int8,
        max_abs_diff=diff,
        top1_agree=agree,
        validated=check_batch if validate else 0,
        opset=ONNX_OPSET,
    )
