"""The inference paths `bench.py` compares, built the way a user of each engine would build them.

Each path is a name (`"<engine> <precision>"`), a precision (fp32, bf16, int8) and a builder
`(model, example clip, settings) -> callable(clip) -> logits`. vivit's own paths:

| path | what |
|---|---|
| eager fp32 | the model as created (the default path) |
| optimized fp32/bf16/int8 | `vivit.optimize_for_inference(model, dtype)` (int8: dynamic) |
| compile fp32 / compile bf16 | `torch.compile(model, options={"freezing": True})`; bf16 under `torch.autocast` |
| vivit openvino fp32/bf16/int8 | `vivit.backends.openvino_model(model, precision)` (int8: static, nncf) |

and the engines' own, built without vivit's help:

| path | what |
|---|---|
| onnxruntime fp32/int8 | `vivit.export_onnx` (int8: ONNX Runtime's dynamic quantizer), `InferenceSession` |
| openvino fp32/bf16 | `openvino.convert_model(model, example_input=clip)` compiled with `INFERENCE_PRECISION_HINT` |
| openvino int8 | the same graph through `nncf.quantize` (calibration clips as given), compiled |

ONNX Runtime and OpenVINO get `--threads` intra-op threads, one stream, and ONNX Runtime no spinning
(idle spinning threads would slow the next contender of the alternation).
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PRECISION = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
# every path, in table order (fp32, then bf16, then int8); engine-only paths are the references
PATHS = (
    "eager fp32",
    "optimized fp32",
    "compile fp32",
    "onnxruntime fp32",
    "openvino fp32",
    "vivit openvino fp32",
    "optimized bf16",
    "compile bf16",
    "openvino bf16",
    "vivit openvino bf16",
    "optimized int8",
    "onnxruntime int8",
    "openvino int8",
    "vivit openvino int8",
)
VIVIT_PATHS = tuple(p for p in PATHS if not p.startswith(("onnxruntime", "openvino")))
REFERENCE = {"fp32": "openvino fp32", "bf16": "openvino bf16", "int8": "openvino int8"}  # the targets' yardstick


@dataclass
class Settings:
    threads: int = 2
    tmp: Path = Path(".")
    cache: Path | None = None  # vivit's OpenVINO cache (None: a folder under tmp)
    calibration: torch.Tensor | None = None  # int8 calibration clips (N, C, T, H, W)
    dynamic_batch: bool = False  # ONNX graphs for any batch (accuracy runs in batches of clips)
    keep_files: bool = False  # reuse ONNX files already in `tmp` (section load: one export for every child)
    memo: dict[str, Any] = field(default_factory=dict)  # one OpenVINO conversion for its three precisions


@dataclass
class Built:
    name: str
    precision: str
    run: Callable[[torch.Tensor], torch.Tensor] | None = None
    setup_s: float = 0.0
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def quiet():
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def precision_of(name: str) -> str:
    return name.rsplit(" ", 1)[1]


def _optimized(model, x, s: Settings, precision: str):
    from vivit.optimize import optimize_for_inference

    fast = optimize_for_inference(model, PRECISION[precision], example_input=x)
    return fast


def _compiled(model, x, s: Settings, precision: str):
    torch._dynamo.reset()
    compiled = torch.compile(model, options={"freezing": True})
    if precision == "fp32":
        run = compiled
    else:

        def run(v):
            with torch.autocast("cpu", torch.bfloat16):
                return compiled(v).float()

    with torch.no_grad():
        run(x)  # compiles
    return run


def _onnxruntime(model, x, s: Settings, precision: str):
    import onnxruntime as ort

    from vivit.export import export_onnx

    path = s.tmp / f"model-{precision}.onnx"
    if not (s.keep_files and path.exists()):
        export_onnx(model, path, int8=precision == "int8", dynamic_batch=s.dynamic_batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = s.threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if not s.keep_files:
        path.unlink()
    return lambda v: torch.from_numpy(session.run(None, {"video": v.numpy()})[0])


def _openvino(model, x, s: Settings, precision: str):
    import openvino as ov

    key = f"openvino {id(model)} {tuple(x.shape)}"
    if key not in s.memo:
        with quiet(), torch.no_grad():
            s.memo[key] = ov.convert_model(model, example_input=x)
    graph = s.memo[key]
    if precision == "int8":
        import nncf

        clips = s.calibration if s.calibration is not None else x
        with quiet():
            graph = nncf.quantize(
                graph,
                nncf.Dataset([c.unsqueeze(0).numpy() for c in clips]),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(clips),
            )
    config = {
        "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}[precision],
        "INFERENCE_NUM_THREADS": s.threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core().compile_model(graph, "CPU", config)
    request = compiled.create_infer_request()
    return lambda v: torch.from_numpy(request.infer({0: v.numpy()}, share_inputs=True)[0].copy())


@functools.cache
def core():
    """One OpenVINO Core for the process, as OpenVINO recommends (and see vivit.backends.openvino_core:
    Cores released in creation order leave the thread's signal stack unmapped)."""
    import openvino as ov

    return ov.Core()


def _vivit_openvino(model, x, s: Settings, precision: str):
    from vivit.backends import openvino_model

    calibration = (s.calibration if s.calibration is not None else x) if precision == "int8" else None
    return openvino_model(model, precision, calibration=calibration, cache=s.cache or s.tmp / "openvino")


BUILDERS: dict[str, Callable[..., Callable[[torch.Tensor], torch.Tensor]]] = {
    "eager": lambda model, x, s, p: model,
    "optimized": _optimized,
    "compile": _compiled,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "vivit openvino": _vivit_openvino,
}


def build(name: str, model: torch.nn.Module, x: torch.Tensor, s: Settings) -> Built:
    """Build one path; a failure is recorded (`error`), not raised."""
    engine, precision = name.rsplit(" ", 1)
    built = Built(name, precision)
    t0 = time.perf_counter()
    try:
        built.run = BUILDERS[engine](model, x, s, precision)
    except Exception as e:  # an engine missing or failing here is a row that says so
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        built.error = f"{type(e).__name__}: {first}"[:200]
    built.setup_s = time.perf_counter() - t0
    return built


def logits_of(y: Any) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    return y.float()
