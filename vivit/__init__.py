"""ViViT: Video Vision Transformers in PyTorch (Arnab et al., ICCV 2021).

    import vivit
    model = vivit.create_model("vivit_b_fe_k400", pretrained=True)
    logits = model(video)  # video: float (B, C, T, H, W)
"""

__version__ = "0.1.0"

from .data import create_transform, multiview_clip_starts, read_video, sample_frame_indices
from .export import export_onnx
from .factory import create_model
from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    list_models,
)
from .optimize import optimize_for_inference
from .predict import predict_views
from .weights import push_to_hub

__all__ = [
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionViViT",
    "SpatioTemporalViViT",
    "__version__",
    "create_model",
    "create_transform",
    "export_onnx",
    "list_models",
    "multiview_clip_starts",
    "optimize_for_inference",
    "predict_views",
    "push_to_hub",
    "read_video",
    "sample_frame_indices",
]
