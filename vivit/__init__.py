"""ViViT: Video Vision Transformers in PyTorch (Arnab et al., ICCV 2021).

import vivit
model = vivit.create_model("vivit_b_fe_k400", pretrained=True)
logits = model(video)  # video: float (B, C, T, H, W)
"""

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
from .explain import attention_maps
from .export import export_onnx
from .factory import create_model
from .live import predict_stream
from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    ViViT,
    list_models,
)
from .optimize import optimize_for_inference
from .predict import predict_timeline, predict_views
from .version import __version__
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
