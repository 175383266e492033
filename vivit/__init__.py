"""ViViT: Video Vision Transformers in PyTorch (Arnab et al., ICCV 2021).

import vivit
model = vivit.create_model("vivit_b_fe_k400", pretrained=True)
logits = model(video)  # video: float (B, C, T, H, W)

`import vivit` loads the models, the data path and the classifying job (`predict_views`); the other
jobs and tools (`vivit.features`, `vivit.evaluate`, `vivit.explain`, `vivit.export`, `vivit.optim`,
...) are imported the first time they are used (PEP 562), so that starting up stays quick.
"""

from __future__ import annotations

# ruff: noqa: E402 - the OpenMP wait policy must be chosen before the imports below load torch
# First, before anything imports torch: OpenMP reads its wait policy once, when torch loads it, and its
# default (spinning) costs 3-9x on a busy machine (vivit/threads.py).
from .threads import prefer_passive_openmp

prefer_passive_openmp()

import importlib
from typing import TYPE_CHECKING, Any

from .data import (
    VideoDataset,
    VideoReader,
    VideoWarning,
    create_transform,
    multiview_clip_starts,
    read_video,
    resolve_data_config,
    sample_frame_indices,
)
from .factory import create_model
from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    ViViT,
    list_models,
)
from .predict import predict_timeline, predict_views
from .version import __version__

if TYPE_CHECKING:  # imported lazily at run time (see __getattr__)
    from .explain import attention_maps
    from .export import export_onnx, export_openvino
    from .live import predict_stream
    from .optimize import optimize_for_inference
    from .weights import push_to_hub

__all__ = [
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionViViT",
    "SpatioTemporalViViT",
    "ViViT",
    "VideoDataset",
    "VideoReader",
    "VideoWarning",
    "__version__",
    "attention_maps",
    "create_model",
    "create_transform",
    "export_onnx",
    "export_openvino",
    "list_models",
    "multiview_clip_starts",
    "optimize_for_inference",
    "predict_stream",
    "predict_timeline",
    "predict_views",
    "push_to_hub",
    "read_video",
    "resolve_data_config",
    "sample_frame_indices",
]

#: Top-level names that live in a module imported on first use: name -> module.
_LAZY_NAMES = {
    "attention_maps": "explain",
    "export_onnx": "export",
    "export_openvino": "export",
    "predict_stream": "live",
    "optimize_for_inference": "optimize",
    "push_to_hub": "weights",
}

#: Submodules reachable as attributes after a plain `import vivit` (`vivit.optim.param_groups_layer_decay`),
#: imported on first use. A new public module is one more name here.
_SUBMODULES = (
    "backends",
    "data",
    "distributed",
    "evaluate",
    "explain",
    "export",
    "factory",
    "features",
    "files",
    "info",
    "live",
    "loss",
    "models",
    "optim",
    "optimize",
    "predict",
    "recipes",
    "render",
    "threads",
    "train",
    "version",
    "weights",
    "windows",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    # the API and the submodules, not the names this file imports for itself (`importlib`, `Any`, ...)
    return sorted({n for n in globals() if n.startswith("__")} | set(__all__) | set(_SUBMODULES))
