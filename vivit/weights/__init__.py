"""Weights: converters (Scenic, transformers, 2D-ViT inflation), download and cache, our format.

Only safetensors, msgpack and `.npz` (without pickle) files are read; pickle never is, so loading
cannot run code.
"""

from .flax_msgpack import read_flax_checkpoint
from .hf_transformers import from_transformers, to_transformers
from .hub import WeightsDownloadError
from .inflate import inflate_vit
from .loading import push_to_hub, save_pretrained, save_safetensors
from .npz import read_npz
from .scenic import from_scenic

__all__ = [
    "WeightsDownloadError",
    "from_scenic",
    "from_transformers",
    "inflate_vit",
    "push_to_hub",
    "read_flax_checkpoint",
    "read_npz",
    "save_pretrained",
    "save_safetensors",
    "to_transformers",
]
