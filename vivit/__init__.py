"""ViViT: Video Vision Transformers in PyTorch (Arnab et al., ICCV 2021).

    import vivit
    model = vivit.create_model("vivit_b_fe", num_classes=10)
    logits = model(video)  # video: float (B, C, T, H, W)
"""

from .models import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    create_model,
    list_models,
)

__version__ = "0.1.0"

__all__ = [
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionViViT",
    "SpatioTemporalViViT",
    "__version__",
    "create_model",
    "list_models",
]
