"""ViViT: Video Vision Transformers in PyTorch (Arnab et al., ICCV 2021).

    import vivit
    model = vivit.create_model("vivit_b_fe_k400", pretrained=True)
    logits = model(video)  # video: float (B, C, T, H, W)
"""

__version__ = "0.1.0"

from .inference import predict_views
from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    create_model,
    list_models,
)
from .transforms import create_transform, multiview_clip_starts, sample_frame_indices
from .weights import push_to_hub

__all__ = [
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionViViT",
    "SpatioTemporalViViT",
    "__version__",
    "create_model",
    "create_transform",
    "list_models",
    "multiview_clip_starts",
    "predict_views",
    "push_to_hub",
    "sample_frame_indices",
]
