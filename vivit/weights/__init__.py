"""Weights: file formats, converters (Scenic, transformers, 2D-ViT inflation), download and cache, loading.

The modules, in the order the loader uses them (each imports only those before it):
`validate` (limits and checks) -> `formats` (identifying files, safetensors headers, JSON) ->
`flax_msgpack`, `npz` (readers) -> `scenic`, `hf_transformers`, `inflate` (pure converters) ->
`cache`, `hub` (download) -> `saving` (vivit's own format) -> `loading` (the pipeline).

Only safetensors, msgpack and `.npz` (without pickle) files are read; pickle never is, so loading
cannot run code.
"""

from .flax_msgpack import read_flax_checkpoint
from .hf_transformers import from_transformers, to_transformers
from .hub import WeightsDownloadError
from .inflate import inflate_vit
from .npz import read_npz
from .saving import push_to_hub, save_pretrained, save_safetensors
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
