"""Export to other inference engines, validated against PyTorch: `export_onnx`, `export_openvino`.

ONNX: the graph comes from PyTorch's `torch.export`-based ONNX exporter (`torch.onnx.export(...,
dynamo=True)`, which needs `onnxscript`); int8 models from ONNX Runtime's dynamic quantizer
(`onnxruntime.quantization.quantize_dynamic`) applied to that graph. Every export is run in ONNX
Runtime on a random clip and compared with PyTorch before the file appears at its destination.
Needs onnx, onnxruntime and onnxscript (the `onnx` extra).

OpenVINO: IR files (.xml + .bin) from `vivit.backends` (OpenVINO's converter; int8: nncf's static
quantization), validated the same way (the `openvino` extra).

Both carry what a user of the file needs without vivit (`vivit.backends.deployment_metadata`:
label names, mean/std, resize/crop, frames, stride, vivit version): ONNX in `metadata_props`,
OpenVINO in `rt_info["vivit"]`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._install import install_hint, missing_modules
from .backends import (
    FP32_TOLERANCE,
    OPENVINO_PRECISIONS,
    ExportValidationError,
    build_openvino_graph,
    deployment_metadata,
    export_clip_size,
    openvino_metadata,
    save_openvino,
)
from .files import check_file_destination

__all__ = [
    "ExportValidationError",
    "OnnxExport",
    "OpenVINOExport",
    "export_clip_size",
    "export_onnx",
    "export_openvino",
    "read_onnx_metadata",
]

ONNX_OPSET = 20  # the first opset with Gelu(approximate="tanh") as one op (ONNX 1.15)
_VALIDATION_BATCH = 2  # > 1, so a dynamic batch axis is exercised (on other values than the traced ones)
_TRACE_BATCH = 2  # torch.export specialises a dimension of size 1, so trace with 2 and mark it dynamic
# weights above this go to `<file>.data` beside the .onnx (protobuf cannot hold a message over 2 GB)
_EXTERNAL_DATA_BYTES = int(1.8 * 2**30)


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
        metadata: What the file's `metadata_props` carry (`vivit.backends.deployment_metadata`).
    """

    path: Path
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    int8: bool
    max_abs_diff: float
    top1_agree: int
    validated: int
    opset: int
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


def require_onnx() -> None:
    missing = missing_modules(("onnx", "onnxruntime", "onnxscript"))
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


def _write_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set the model's `metadata_props` (replacing keys of the same name), leaving external data in place."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)  # tensors in a .data file stay referenced, not loaded
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `metadata_props` of an .onnx file (vivit's: `vivit.backends.deployment_metadata`), as text.

    `vivit.backends.parse_deployment_metadata` turns the values back into numbers and lists. ONNX
    Runtime reads the same map: `session.get_modelmeta().custom_metadata_map`.

    Raises:
        ImportError: onnx is missing.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


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
            metadata = deployment_metadata(model, (t, h, w))
            _write_onnx_metadata(final, metadata)
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
        metadata=metadata,
    )


@dataclass(frozen=True)
class OpenVINOExport:
    """What `export_openvino` wrote and how it was validated.

    Attributes:
        path: The .xml file (its weights in the .bin beside it).
        precision: "fp32", "bf16" (a float graph, compiled for bf16 when loaded) or "int8" (static, nncf).
        input_shape: Of input `video`, float32 `("batch", C, T, H, W)` (dynamic batch).
        output_shape: Of output `logits`, float32 `("batch", num_classes)` (output `pre_logits`: the
            pooled features before the head).
        max_abs_diff: Max abs logit difference OpenVINO (at `precision`) vs PyTorch fp32 on the
            validation clips (random U(-1, 1) for float graphs; the first calibration clips for int8).
        top1_agree: Validation clips whose top-1 class agrees, out of `validated`.
        validated: Number of validation clips.
        openvino_version: The OpenVINO that converted it (a graph is read by that version or later).
        metadata: What the graph's `rt_info["vivit"]` carries (`vivit.backends.deployment_metadata`).
    """

    path: Path
    precision: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    max_abs_diff: float
    top1_agree: int
    validated: int
    openvino_version: str
    metadata: dict[str, str]


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
    input_size: tuple[int, int, int] | None = None,
    atol: float = FP32_TOLERANCE,
) -> OpenVINOExport:
    """Export a vivit model to OpenVINO IR (`path` .xml + .bin), checked in OpenVINO against PyTorch.

    The graph takes input `video`, float32 `(batch, C, T, H, W)` preprocessed as for the PyTorch
    model (`vivit.create_transform`), and returns `logits` `(batch, num_classes)` and
    `pre_logits` `(batch, D)`. Read it back with `vivit.backends.load_openvino(path)` (a module
    with the model's call signature) or OpenVINO itself (`openvino.Core().read_model(path)`).
    For a converted-once, cached graph without choosing a path, use `vivit.backends.openvino_model`.

    Validation: the fp32 graph must match PyTorch within `atol` on random clips U(-1, 1); the
    drift at `precision` is measured and returned (bf16: on the same clips; int8: on the first
    calibration clips) and stored in the graph (`rt_info["vivit"]["validation"]`). The files appear
    complete or not at all.

    Args:
        model: A vivit model (any device/dtype: a CPU fp32 copy is converted).
        path: Destination `.xml` file; the `.bin` goes beside it; parent folders are created.
        precision: "fp32", "bf16" (one float graph serves both; the precision is chosen when
            compiling) or "int8" (nncf's static post-training quantization, needs `calibration`).
        calibration: int8 only: clips of the task `(N, C, T, H, W)` preprocessed like the input.
        input_size: (T, H, W) for a `dynamic_size=True` model; must match the model's otherwise.
        atol: Max abs logit difference accepted for fp32.

    Returns:
        An `OpenVINOExport` with the path, shapes, validation figures and metadata.

    Raises:
        ImportError: openvino (int8: nncf) is missing.
        ValueError: a bad precision, clip size or path (not .xml, a folder, under a file), or int8
            without calibration clips.
        ExportValidationError: OpenVINO's fp32 logits differ from PyTorch's by more than `atol`.
    """
    import json

    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    dest = Path(path).expanduser()
    if dest.suffix != ".xml":
        raise ValueError(
            f"expected a file name ending in .xml (OpenVINO IR; the weights go to .bin beside it), got {dest}"
        )
    check_file_destination(dest)  # before the slow conversion
    graph = build_openvino_graph(model, precision, calibration=calibration, input_size=input_size, atol=atol)
    save_openvino(graph, dest)
    import openvino as ov

    meta = openvino_metadata(graph)
    figures = json.loads(meta["validation"])[precision]
    shape = graph.inputs[0].get_partial_shape()
    return OpenVINOExport(
        path=dest,
        precision=precision,
        input_shape=("batch", *(int(d.get_length()) for d in list(shape)[1:])),
        output_shape=("batch", int(graph.outputs[0].get_partial_shape()[1].get_length())),
        max_abs_diff=float(figures["max_abs_diff"]),
        top1_agree=int(figures["top1_agree"]),
        validated=int(json.loads(meta["validation"])["clips"]),
        openvino_version=ov.get_version(),
        metadata={k: v for k, v in meta.items() if k not in ("validation", "graph_precision")},
    )
