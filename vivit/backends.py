"""Inference engines besides eager PyTorch: the rules every exported graph shares, and the OpenVINO backend.

Shared by ONNX and OpenVINO (`vivit.export`):

- `export_clip_size`: the (T, H, W) a fixed graph is built for, refusing what a graph cannot follow;
- `deployment_metadata`: what a graph file must carry to be used without vivit's registry (label
  names, mean/std, resize/crop, frames, stride, vivit version), as flat text keys: ONNX
  `metadata_props`, OpenVINO `rt_info` under `"vivit"`.

The OpenVINO backend (`openvino_model`, `OpenVINOModel`; needs `pip install openvino`, int8 also
`nncf`: the `openvino` extra) runs a ViViT through OpenVINO's CPU compiler, which fuses what eager
PyTorch runs as separate kernels (scale + softmax + attention in one kernel, GELU into fc1, bf16
residual stream and LayerNorm). A model is converted once per weights, configuration, clip size,
precision and OpenVINO version, checked against PyTorch, and cached on disk (conversion of a
ViViT-B takes tens of seconds; loading the cached graph and compiling it takes about one):

    backend = vivit.backends.openvino_model(model, "bf16")   # converted or read from the cache
    logits = backend(video)                                   # video: float32 (B, C, T, H, W) like model's

Precisions (OpenVINO's CPU plugin; see README "Speed" for the measured drift):

- `fp32`: f32 inference; logits within `FP32_TOLERANCE` of PyTorch (checked at conversion).
- `bf16`: the same graph compiled with `INFERENCE_PRECISION_HINT=bf16` (GEMMs, attention, the
  residual stream and LayerNorm in bf16 where the CPU has native bf16); drift reported.
- `int8`: static int8 from nncf's post-training quantization (`nncf.quantize`, transformer
  preset: SmoothQuant, per-channel weights, activations quantized with scales calibrated on
  `calibration` clips); drift reported. Calibrate on real clips of the task (100-300 are typical):
  the scales are only as good as the clips they were measured on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._install import install_hint, missing_modules
from .data.transforms import resolve_data_config
from .files import check_file_destination, clean_stale_temp_files
from .version import __version__
from .weights.cache import CacheWarning, cache_dir, cache_lock, cache_write_error
from .weights.validate import check_model_args

__all__ = [
    "BACKENDS",
    "FP32_TOLERANCE",
    "OPENVINO_PRECISIONS",
    "ExportValidationError",
    "OpenVINOModel",
    "build_openvino_graph",
    "default_float_precision",
    "deployment_metadata",
    "export_clip_size",
    "inference_backend",
    "load_openvino",
    "openvino_core",
    "openvino_metadata",
    "openvino_model",
    "parse_deployment_metadata",
    "require_openvino",
    "save_openvino",
]

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4  # max abs logit difference accepted for an fp32 graph (ONNX Runtime or OpenVINO) vs PyTorch
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
# OpenVINO's names for the compile-time precision hint; int8 graphs carry their precision in the graph
_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
_CACHE_FORMAT = "1"  # bump when the cached graph's layout or metadata changes
_VALIDATION_CLIPS = 2
_RT_INFO = "vivit"  # rt_info section of every graph vivit writes
_NOT_CFG = ("validation", "cache_key", "graph_precision")  # rt_info keys that describe the graph, not the data


# ---------------------------------------------------------------- shared by every exported graph
def export_clip_size(model: nn.Module, input_size: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """(T, H, W) to build a fixed graph for, refusing what a graph cannot represent.

    Args:
        model: A vivit model (has `num_frames` and `img_size`).
        input_size: (T, H, W) for a `dynamic_size=True` model; must equal the model's otherwise.

    Raises:
        ValueError: an optimized copy (`vivit.optimize_for_inference`), a module that is not a
            vivit model, a `dynamic_size=True` model without `input_size`, a mismatched size, or one
            beyond the limits of every model built (`vivit.weights.validate.ARCH_LIMITS`: 4,096
            frames, 8,192 pixels, 65,536 tubelets).
    """
    if getattr(model, "optimized_for_inference", None) is not None:
        raise ValueError(
            "this model comes from vivit.optimize_for_inference (inference-only kernels that ONNX or OpenVINO "
            "cannot represent); export the original model"
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
                "clip size while it runs; an exported graph would only be right at the traced size (ONNX Runtime "
                "rejects or mis-computes other sizes). Pass input_size=(T, H, W) (CLI: --input-size TxHxW) to "
                f"export for exactly that clip size (e.g. {own}), or create the model with num_frames=/img_size= "
                "for the size you need and dynamic_size=False"
            )
        return own
    size = tuple(int(s) for s in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (T, H, W) with positive sizes, got {input_size!r}")
    if dynamic:  # a resampled copy is built at this size: the limits of every model built hold for it too
        kernel = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "kernel_size", None)
        if kernel is not None:
            check_model_args(
                {"num_frames": size[0], "img_size": size[1:], "tubelet_size": kernel[0], "patch_size": kernel[1:]},
                f"input_size {size}",
                from_file=False,
            )
    if not dynamic and size != own:
        raise ValueError(
            f"input_size {size} differs from the model's clip size {own} (T, H, W); create the model with "
            "num_frames=/img_size= overrides, or with dynamic_size=True to export a resampled copy for one size"
        )
    return size  # type: ignore[return-value]


def deployment_metadata(model: nn.Module, clip_size: tuple[int, int, int] | None = None) -> dict[str, str]:
    """What a graph needs to be used without vivit: labels, preprocessing, clip, provenance.

    Every value is text (JSON for numbers, lists and pairs), as ONNX `metadata_props` and
    OpenVINO `rt_info` store them. Preprocessing is `vivit.resolve_data_config(model=model)`:
    the weights' own (Scenic: pixels x/255*2-1, i.e. mean = std = 0.5 on [0, 1]) where the model
    has a `pretrained_cfg`, else the defaults completed from the model's clip size.

    Args:
        model: A vivit model.
        clip_size: (T, H, W) the graph takes, if not the model's own (a `dynamic_size=True` export).

    Returns:
        `{"vivit_version", "architecture", "num_frames", "img_size", "in_chans", "num_classes",
        "input_size", "frame_stride", "resize_size", "crop_size", "interpolation", "antialias",
        "mean", "std", "test_views"}` plus `"label_names"` (a JSON list, one per logit) and
        `"class_splits"` when the weights name their classes.
    """
    cfg: Mapping[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    data = resolve_data_config(model=model)
    t, h, w = clip_size if clip_size is not None else export_clip_size(model, None)
    in_chans = int(getattr(model, "in_chans", 3))
    if clip_size is not None and tuple(data["input_size"][1:]) != (t, h, w):
        data["input_size"] = (in_chans, t, h, w)
        data["crop_size"] = (h, w)
    meta: dict[str, Any] = {
        "vivit_version": __version__,
        "architecture": cfg.get("architecture", type(model).__name__),
        "num_frames": t,
        "img_size": [h, w],
        "in_chans": in_chans,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "input_layout": "NCTHW",
        **{key: data[key] for key in sorted(data)},
    }
    if cfg.get("label_names"):
        meta["label_names"] = list(cfg["label_names"])
    if cfg.get("class_splits"):
        meta["class_splits"] = list(cfg["class_splits"])
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()}


def parse_deployment_metadata(meta: Mapping[str, str]) -> dict[str, Any]:
    """`deployment_metadata`'s text values back as Python values (a `pretrained_cfg`-like dict)."""
    out: dict[str, Any] = {}
    for key, text in meta.items():
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key] = tuple(value) if isinstance(value, list) and key != "label_names" else value
    if "label_names" in out:
        out["label_names"] = tuple(out["label_names"])
    return out


# ---------------------------------------------------------------- OpenVINO
def require_openvino(int8: bool = False) -> None:
    """Raise ImportError with the install command when openvino (int8: also nncf) is missing."""
    missing = missing_modules(("openvino", *(("nncf",) if int8 else ())))
    if missing:
        raise ImportError(
            f"the OpenVINO backend needs {' and '.join(missing)}: {install_hint(' '.join(missing), 'openvino')}"
        )


def _check_precision(precision: str) -> str:
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence tracing warnings and nncf's progress bars (library code never prints)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(name) for name in ("nncf", "openvino", "torch.jit")]
        levels = [lg.level for lg in loggers]
        try:
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class _LogitsAndFeatures(nn.Module):
    """What the graph computes: logits (B, num_classes) and pooled pre-logits features (B, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a ViViT: forward_features / forward_head / head

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(video), pre_logits=True)
        return self.model.head(features), features


def _cpu_fp32_eval(model: nn.Module) -> nn.Module:
    import copy

    ref = next(model.parameters(), None)
    if (ref is not None and (ref.device.type != "cpu" or ref.dtype != torch.float32)) or model.training:
        return copy.deepcopy(model).float().cpu().eval()
    return model


def _convert(model: nn.Module, clip: tuple[int, int, int]) -> Any:
    """The float OpenVINO graph of `model` (CPU fp32, eval mode): input `video` (?, C, T, H, W), outputs
    `logits` and `pre_logits`, dynamic batch."""
    import openvino as ov

    in_chans = int(getattr(model, "in_chans", 3))
    example = torch.rand(2, in_chans, *clip, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with _quiet(), torch.no_grad():
        graph = ov.convert_model(
            _LogitsAndFeatures(model), example_input=example, input=[ov.PartialShape([-1, in_chans, *clip])]
        )
    graph.inputs[0].get_tensor().set_names({"video"})
    graph.outputs[0].get_tensor().set_names({"logits"})
    graph.outputs[1].get_tensor().set_names({"pre_logits"})
    return graph


def _quantize(graph: Any, calibration: list[np.ndarray]) -> Any:
    """nncf's static int8 post-training quantization of a float graph, calibrated on `calibration`."""
    import nncf

    with _quiet():
        return nncf.quantize(
            graph,
            nncf.Dataset(calibration),
            model_type=nncf.ModelType.TRANSFORMER,  # SmoothQuant, no quantizers on LayerNorm/softmax inputs
            subset_size=len(calibration),
        )


def _calibration_clips(calibration: torch.Tensor | Iterable[torch.Tensor], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Calibration clips as float32 arrays (1, C, T, H, W), checked against the graph's clip shape."""
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    clips: list[np.ndarray] = []
    for batch in batches:
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
            raise ValueError("calibration must be float video tensors (N, C, T, H, W), preprocessed like the input")
        if batch.ndim == 4:
            batch = batch.unsqueeze(0)
        if tuple(batch.shape[1:]) != shape:
            raise ValueError(
                f"calibration clips must be (N, {', '.join(map(str, shape))}) (N, C, T, H, W) like the model's "
                f"input, got {tuple(batch.shape)}"
            )
        clips += [clip.unsqueeze(0).float().cpu().numpy() for clip in batch]
    if not clips:
        raise ValueError("calibration holds no clips: int8 needs clips of the task to measure activation ranges")
    return clips


def _weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes, values): the weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _cache_key(model: nn.Module, clip: tuple[int, int, int], kind: str, calibration_digest: str) -> dict[str, str]:
    import openvino as ov

    args = getattr(model, "model_args", None)
    return {
        "format": _CACHE_FORMAT,
        "vivit_version": __version__,
        "openvino_version": ov.get_version(),
        "class": type(model).__name__,
        "model_args": json.dumps(args, sort_keys=True, default=str) if args is not None else repr(model),
        "clip_size": json.dumps(list(clip)),
        "kind": kind,  # "float" (serves fp32 and bf16) or "int8"
        "weights_sha256": _weights_digest(model),
        "calibration_sha256": calibration_digest,
    }


def _array_digest(clips: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(clip.tobytes())
    return digest.hexdigest()


def _set_metadata(graph: Any, meta: Mapping[str, str]) -> None:
    for key, value in meta.items():
        graph.set_rt_info(value, [_RT_INFO, key])


def openvino_metadata(graph: Any) -> dict[str, str]:
    """The `rt_info["vivit"]` section of an OpenVINO graph (`openvino.Model`) as text: the
    `deployment_metadata` keys plus `graph_precision`, `validation` (JSON) and, for cached graphs,
    `cache_key`. Empty for a graph vivit did not write."""
    if not graph.has_rt_info([_RT_INFO]):
        return {}
    section = graph.get_rt_info()[_RT_INFO]
    return {key: str(value.astype(str)) for key, value in section.items()}


@functools.cache
def openvino_core() -> Any:
    """The one `openvino.Core` of this process, kept until it exits.

    One Core, not one per call: OpenVINO's CPU plugin (2026.4) gives the calling thread a new alternate
    signal stack per Core and, when the Core goes, puts back the one it found. Two Cores released in the
    order they were made leave the thread on the first one's stack after it was unmapped, and the next
    signal (Ctrl-C, a child process ending under a DataLoader's SIGCHLD handler) kills the process with
    SIGSEGV (measured: tests/test_openvino.py). A Core that lives as long as the process is never released.
    """
    import openvino as ov

    return ov.Core()


def _compile(graph: Any, precision: str, threads: int | None) -> Any:
    config = {
        "INFERENCE_PRECISION_HINT": _HINT[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
    }
    return openvino_core().compile_model(graph, "CPU", config)


def _drift(compiled: Any, clips: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    got = compiled(clips)["logits"]
    diff = float(np.abs(got - expected).max()) if np.isfinite(got).all() else math.inf
    return diff, int((got.argmax(-1) == expected.argmax(-1)).sum())


def _validation(model: nn.Module, graph: Any, precisions: tuple[str, ...], clips: np.ndarray) -> dict[str, Any]:
    """Max abs logit difference and top-1 agreement of each precision vs PyTorch fp32 on `clips`."""
    with torch.no_grad():
        expected = model(torch.from_numpy(clips)).float().numpy()
    out: dict[str, Any] = {"clips": len(clips)}
    for precision in precisions:
        diff, agree = _drift(_compile(graph, precision, None), clips, expected)
        out[precision] = {"max_abs_diff": diff, "top1_agree": agree}
    return out


class ExportValidationError(RuntimeError):
    """An exported graph's output differs from PyTorch's beyond the tolerance."""


def build_openvino_graph(
    model: nn.Module,
    precision: str = "fp32",
    *,
    calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
    input_size: tuple[int, int, int] | None = None,
    atol: float = FP32_TOLERANCE,
) -> Any:
    """Convert `model` to an OpenVINO graph (`openvino.Model`) with vivit's metadata, validated.

    fp32 and bf16 share one float graph (bf16 is chosen when compiling); int8 is nncf's static
    quantization of it, calibrated on `calibration`. The fp32 graph must match PyTorch within
    `atol` on random clips U(-1, 1); the drift of every precision the graph serves is measured and
    stored in its `rt_info` (`vivit/validation`, JSON), int8's on the first calibration clips.

    Raises:
        ImportError: openvino (int8: nncf) is missing.
        ValueError: see `export_clip_size`; int8 without `calibration`, or clips of the wrong shape.
        ExportValidationError: the fp32 graph differs from PyTorch by more than `atol`.
    """
    _check_precision(precision)
    require_openvino(int8=precision == "int8")
    clip = export_clip_size(model, input_size)
    in_chans = int(getattr(model, "in_chans", 3))
    clips = None
    if precision == "int8":
        if calibration is None:
            raise ValueError(
                "int8 (static) needs calibration clips: pass calibration=a float tensor (N, C, T, H, W) of clips of "
                "the task, preprocessed like the input (100-300 clips are typical)"
            )
        clips = _calibration_clips(calibration, (in_chans, *clip))
    model = _cpu_fp32_eval(model)
    graph = _convert(model, clip)
    check = (torch.rand(_VALIDATION_CLIPS, in_chans, *clip, generator=torch.Generator().manual_seed(1)) * 2 - 1).numpy()
    validation = _validation(model, graph, ("fp32", "bf16"), check)
    if not validation["fp32"]["max_abs_diff"] <= atol:
        raise ExportValidationError(
            f"OpenVINO's fp32 logits differ from PyTorch's by {validation['fp32']['max_abs_diff']:.3g} (> {atol:g}); "
            "please report this with the model's configuration"
        )
    if clips is not None:
        graph = _quantize(graph, clips)
        int8_check = np.concatenate(clips[:_VALIDATION_CLIPS])
        validation = {**_validation(model, graph, ("int8",), int8_check), "calibration_clips": len(clips)}
    _set_metadata(graph, deployment_metadata(model, clip))
    graph.set_rt_info("int8" if clips is not None else "float", [_RT_INFO, "graph_precision"])
    graph.set_rt_info(json.dumps(validation), [_RT_INFO, "validation"])
    return graph


def save_openvino(graph: Any, path: str | os.PathLike[str]) -> Path:
    """Write an OpenVINO graph as IR (`path` .xml + its .bin beside it), atomically: the .bin is moved
    into place first and the .xml last, so a reader never finds an .xml without its weights."""
    import openvino as ov

    dest = Path(path).expanduser()
    if dest.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR file name ends in .xml (its weights go to .bin beside it), got {dest}")
    check_file_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        xml = Path(tmp) / dest.name
        ov.save_model(graph, str(xml), compress_to_fp16=False)  # fp16 weights would break the fp32 bound
        os.replace(xml.with_suffix(".bin"), dest.with_suffix(".bin"))
        os.replace(xml, dest)
    return dest


class OpenVINOModel(nn.Module):
    """A ViViT compiled by OpenVINO, with the call signature of the PyTorch model it came from.

    `backend(video)` takes a float video `(B, C, T, H, W)` of the clip size it was converted for
    (any batch; a graph is compiled per batch size at its first use) and returns float32 logits
    `(B, num_classes)` on the CPU; `forward_pre_logits(video)` the pooled features `(B, D)` before
    the head. Its first parameter is an empty CPU float32 tensor (so `next(backend.parameters())`
    names the input's device and dtype) and it is always in eval mode; `pretrained_cfg` (labels,
    preprocessing) comes from the graph's metadata, so a job can use it in place of the model.

    The feature API of the jobs works too, on pooled features only (the graph pools):
    `forward_features(video)` is `forward_pre_logits(video)` `(B, D)` and
    `forward_head(features, pre_logits=True)` returns them unchanged, so
    `forward_head(forward_features(x), pre_logits=True)` is what it is for a PyTorch ViViT.
    Per-token outputs (`forward_intermediates`, per-frame features) are not in the graph.
    `head` is a CPU fp32 copy of the source model's linear head when it was built from one
    (`openvino_model`; a job's untrained-head check reads it), else None; `forward_head(features)`
    applies it.

    Attributes:
        precision: "fp32", "bf16" or "int8".
        path: The .xml file it was read from (None when built in memory).
        metadata: The graph's vivit metadata as text (`deployment_metadata`).
        validation: Drift vs PyTorch measured at conversion (`{precision: {"max_abs_diff", "top1_agree"}, "clips"}`).
    """

    def __init__(
        self,
        graph: Any,
        precision: str,
        *,
        path: Path | None = None,
        threads: int | None = None,
        head: nn.Module | None = None,
        converted: bool = False,
    ) -> None:
        super().__init__()
        self.precision = _check_precision(precision)
        self.path = path
        self.threads = threads
        self.metadata = openvino_metadata(graph)
        kind = self.metadata.get("graph_precision", "float")
        if (kind == "int8") != (precision == "int8"):
            raise ValueError(
                f"this graph is {'an int8' if kind == 'int8' else 'a float'} graph; it runs as "
                f"{'int8' if kind == 'int8' else 'fp32 or bf16'}, not {precision}"
            )
        cfg = parse_deployment_metadata({k: v for k, v in self.metadata.items() if k not in _NOT_CFG})
        self.validation: dict[str, Any] = json.loads(self.metadata.get("validation", "{}"))
        self.pretrained_cfg: dict[str, Any] = cfg
        shape = graph.inputs[0].get_partial_shape()
        self.input_shape = tuple(int(d.get_length()) for d in list(shape)[1:])  # (C, T, H, W)
        self.in_chans, self.num_frames = self.input_shape[0], self.input_shape[1]
        self.img_size = (self.input_shape[2], self.input_shape[3])
        self.num_classes = int(graph.outputs[0].get_partial_shape()[1].get_length())
        self._graph = graph
        # Empty, never used: jobs that ask `next(model.parameters())` for the input's device and dtype get
        # CPU float32, which is what the graph takes.
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self.head: nn.Module | None = None
        if isinstance(head, nn.Linear):
            self.head = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
            self.head.load_state_dict({k: v.detach().float().cpu() for k, v in head.state_dict().items()})
            self.head.requires_grad_(False)
        #: Whether this call converted (and validated) the graph, rather than reading it from the cache.
        self.converted = converted
        self._compiled: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.eval()

    def extra_repr(self) -> str:
        return f"precision={self.precision}, input=(B, {', '.join(map(str, self.input_shape))}), path={self.path}"

    def train(self, mode: bool = True) -> OpenVINOModel:
        return super().train(False)  # inference only: there is nothing to train

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("an OpenVINOModel holds compiled native code and cannot be copied or pickled; load it again")

    def _check(self, video: torch.Tensor) -> np.ndarray:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor video (B, C, T, H, W), got {type(video).__name__}")
        if video.ndim != 5 or tuple(video.shape[1:]) != self.input_shape:
            raise ValueError(
                f"this OpenVINO graph takes (B, {', '.join(map(str, self.input_shape))}) (B, C, T, H, W) clips, got "
                f"shape {tuple(video.shape)}; convert the model again for another clip size"
            )
        if not video.is_floating_point():
            raise ValueError(
                f"expected a floating-point video, got dtype {video.dtype}; preprocess uint8 frames first "
                "(vivit.create_transform(backend.pretrained_cfg))"
            )
        return video.detach().to("cpu", torch.float32).contiguous().numpy()

    def _run(self, video: torch.Tensor, output: str) -> torch.Tensor:
        clips = self._check(video)
        batch = clips.shape[0]
        with self._lock:  # one infer request per batch size, reused: creating one allocates its buffers
            ready = self._compiled.get(batch)
            if ready is None:
                graph = self._graph.clone()
                graph.reshape({0: [batch, *self.input_shape]})  # static shapes compile to faster kernels
                compiled = _compile(graph, self.precision, self.threads)
                ready = self._compiled[batch] = (compiled.create_infer_request(), compiled)
            request = ready[0]
            request.infer({0: clips}, share_inputs=True)
            out = ready[1].output(output)
            return torch.from_numpy(request.get_tensor(out).data.copy())  # the request's buffer is reused

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) float -> logits (B, num_classes) float32 (CPU)."""
        return self._run(video, "logits")

    def forward_pre_logits(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) float -> pooled features before the head (B, D) float32 (CPU)."""
        return self._run(video, "pre_logits")

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) float -> pooled features (B, D) float32: `forward_pre_logits` (the graph pools, so
        unlike a PyTorch ViViT's token grid these are already what `forward_head(..., pre_logits=True)` gives)."""
        return self._run(video, "pre_logits")

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (B, D) -> themselves (`pre_logits=True`) or logits (B, num_classes) through `head`.

        Raises:
            ValueError: `pre_logits=False` on a backend read from a file (no head; call the backend instead).
        """
        if pre_logits:
            return features
        if self.head is None:
            raise ValueError("this OpenVINO backend was read from a file and holds no head; call it for logits")
        return self.head(features.float())

    def forward_intermediates(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: the graph keeps only pooled features and logits."""
        raise ValueError(
            "the OpenVINO graph holds only logits and pooled features, not per-token outputs (forward_intermediates, "
            "per-frame features); use the PyTorch model for those"
        )


def load_openvino(
    path: str | os.PathLike[str], precision: str | None = None, *, threads: int | None = None
) -> OpenVINOModel:
    """Read an OpenVINO IR written by vivit (`save_openvino`, `vivit.export.export_openvino`).

    Args:
        path: The .xml file (its .bin beside it).
        precision: "fp32" or "bf16" for a float graph (default bf16 where the CPU has native bf16,
            else fp32), "int8" for an int8 graph (the default for one).
        threads: OpenVINO inference threads (default `torch.get_num_threads()` at the first call).

    Raises:
        ImportError: openvino is missing.
        FileNotFoundError: no such file.
        ValueError: a precision the graph cannot run as.
    """
    require_openvino()

    xml = Path(path).expanduser()
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"no OpenVINO IR at {xml} (the .xml and its .bin are needed)")
    graph = openvino_core().read_model(str(xml))
    kind = openvino_metadata(graph).get("graph_precision", "float")
    if precision is None:
        precision = "int8" if kind == "int8" else default_float_precision()
    return OpenVINOModel(graph, precision, path=xml, threads=threads)


def default_float_precision() -> str:
    """ "bf16" where OpenVINO's CPU plugin computes bf16 natively (AVX512-BF16, AMX), else "fp32"."""

    return "bf16" if "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "fp32"


def openvino_model(
    model: nn.Module,
    precision: str = "bf16",
    *,
    calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
    input_size: tuple[int, int, int] | None = None,
    cache: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> OpenVINOModel:
    """`model` compiled by OpenVINO: converted and validated once, then read from the cache.

    The cache key is the weights (sha256 of every tensor), the class and constructor arguments,
    the clip size, the graph kind (float: fp32 and bf16; int8: also the calibration clips' sha256),
    vivit's and OpenVINO's versions. One process converts while others wait (a file lock); a
    cache that cannot be written gives a `CacheWarning` and the graph is used from memory.

    Args:
        model: A vivit model (any device/dtype: a CPU fp32 copy is converted).
        precision: "fp32" (within `FP32_TOLERANCE` of PyTorch), "bf16" or "int8" (static, nncf).
        calibration: int8 only: clips of the task `(N, C, T, H, W)` preprocessed like the input
            (a tensor or an iterable of such batches).
        input_size: (T, H, W) for a `dynamic_size=True` model (see `export_clip_size`).
        cache: The cache folder (default `<vivit cache>/openvino`, see `vivit.weights.cache.cache_dir`).
        threads: OpenVINO inference threads (default `torch.get_num_threads()`).

    Returns:
        An `OpenVINOModel` (call it like the model).

    Raises:
        ImportError: openvino (int8: nncf) is missing.
        ValueError: a bad precision, clip size, or int8 without calibration clips.
        ExportValidationError: the fp32 graph differs from PyTorch beyond `FP32_TOLERANCE`.
    """
    _check_precision(precision)
    require_openvino(int8=precision == "int8")

    clip = export_clip_size(model, input_size)
    in_chans = int(getattr(model, "in_chans", 3))
    calibration_digest = ""
    if precision == "int8":
        if calibration is None:
            raise ValueError(
                "int8 (static) needs calibration clips: pass calibration=a float tensor (N, C, T, H, W) of clips of "
                "the task, preprocessed like the input (100-300 clips are typical)"
            )
        calibration = [torch.from_numpy(c) for c in _calibration_clips(calibration, (in_chans, *clip))]
        calibration_digest = _array_digest([c.numpy() for c in calibration])
    kind = "int8" if precision == "int8" else "float"
    key = _cache_key(model, clip, kind, calibration_digest)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache).expanduser() if cache is not None else cache_dir() / "openvino"
    xml = folder / f"{type(model).__name__}-{'x'.join(map(str, clip))}-{kind}-{name}.xml"

    def read() -> Any | None:
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            return None
        try:
            graph = openvino_core().read_model(str(xml))
        except Exception as err:  # a truncated or foreign file: rebuilt below
            logger.warning("rebuilding the cached OpenVINO graph %s: it cannot be read (%s)", xml, err)
            return None
        if openvino_metadata(graph).get("cache_key") != json.dumps(key, sort_keys=True):
            logger.warning("rebuilding the cached OpenVINO graph %s: its key differs", xml)
            return None
        return graph

    head = getattr(model, "head", None)
    converted = False
    graph = read()
    if graph is None:
        with cache_lock(xml, f"converting {type(model).__name__} to OpenVINO") as locked:
            graph = read() if locked else None
            if graph is None:
                if locked:
                    clean_stale_temp_files(folder, name=xml.name)
                logger.info("converting %s to OpenVINO (%s), once for this cache: %s", type(model).__name__, kind, xml)
                graph = build_openvino_graph(model, precision, calibration=calibration, input_size=input_size)
                graph.set_rt_info(json.dumps(key, sort_keys=True), [_RT_INFO, "cache_key"])
                try:
                    save_openvino(graph, xml)
                except (OSError, ValueError) as err:
                    oserr = err if isinstance(err, OSError) else OSError(str(err))
                    warnings.warn(
                        f"{cache_write_error(oserr, folder, 'the OpenVINO graph')}; it is used now but will be "
                        "converted again next time",
                        CacheWarning,
                        stacklevel=2,
                    )
                    return OpenVINOModel(graph, precision, threads=threads, head=head, converted=True)
                converted = True
    return OpenVINOModel(graph, precision, path=xml, threads=threads, head=head, converted=converted)


BACKENDS = ("pytorch", "openvino")


def inference_backend(
    model: nn.Module,
    backend: str = "pytorch",
    precision: str = "fp32",
    *,
    calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
    threads: int | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """What a job runs in place of `model` for a `--backend` and `--precision`: one entry point.

    | backend | fp32 | bf16 | int8 |
    |---|---|---|---|
    | pytorch | `model` itself | `optimize_for_inference(model, bfloat16)` | `optimize_for_inference(model, int8)` (dynamic) |
    | openvino | `openvino_model(model, "fp32")` | `openvino_model(model, "bf16")` | `openvino_model(model, "int8", calibration=...)` (static) |

    Every result is called like the model (`(B, C, T, H, W)` float video -> `(B, num_classes)` float32
    logits); the OpenVINO ones take only the clip size they were converted for, run on the CPU, and
    give pooled features only (`forward_pre_logits`, or `forward_head(forward_features(x), pre_logits=True)`
    as for a ViViT), not per-token outputs. The command line's `--backend` / `--precision` /
    `--calibration` (`vivit predict`, `features`, `evaluate`) call this.

    Args:
        model: A vivit model in eval mode.
        backend: "pytorch" or "openvino".
        precision: "fp32", "bf16" or "int8".
        calibration: OpenVINO int8 only: clips of the task `(N, C, T, H, W)`, preprocessed.
        threads: OpenVINO inference threads (PyTorch's are `torch.set_num_threads`, see `vivit.threads`).
        cache: OpenVINO cache folder (default `<vivit cache>/openvino`).

    Raises:
        ValueError: an unknown backend or precision, or int8 on OpenVINO without calibration clips.
        ImportError: openvino (int8: nncf) is missing for backend "openvino".
    """
    _check_precision(precision)
    if backend == "openvino":
        return openvino_model(model, precision, calibration=calibration, threads=threads, cache=cache)
    if backend != "pytorch":
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision == "fp32":
        return model
    from .optimize import optimize_for_inference

    return optimize_for_inference(model, torch.bfloat16 if precision == "bf16" else torch.int8)
