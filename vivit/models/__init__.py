from . import zoo as _zoo  # noqa: F401  (registers the architectures)
from .layers import Attention, Block, FactorizedDotProductAttention, FactorizedSelfAttentionBlock, Mlp, TubeletEmbed
from .pos_embed import resample_pos_embed, resample_temporal_pos_embed
from .registry import list_models, register_model
from .vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    ViViT,
)

__all__ = [
    "Attention",
    "Block",
    "FactorizedDotProductAttention",
    "FactorizedDotProductViViT",
    "FactorizedEncoderViViT",
    "FactorizedSelfAttentionBlock",
    "FactorizedSelfAttentionViViT",
    "Mlp",
    "SpatioTemporalViViT",
    "TubeletEmbed",
    "ViViT",
    "list_models",
    "register_model",
    "resample_pos_embed",
    "resample_temporal_pos_embed",
]
