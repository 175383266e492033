"""Weights: Scenic / transformers / 2D-ViT converters, download and cache, our safetensors format."""

from .hf_transformers import from_transformers
from .scenic import from_scenic

__all__ = ["from_scenic", "from_transformers"]
