"""Reading `.npz` checkpoints: Google's ViT releases (google-research/vision_transformer, big_vision).

Those files are `numpy.savez` archives of '/'-joined Flax parameter names (`embedding/kernel`,
`Transformer/encoderblock_0/...`, or big_vision's `params/...` and scanned `encoderblock/...`) to
arrays. They are read with `allow_pickle=False`: an archive holding pickled objects is refused, so
reading one cannot run code.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_npz"]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, by name (of big_vision's `params/...`, `opt/...`: the params).

    Args:
        path: a `numpy.savez` / `savez_compressed` archive.

    Returns:
        name -> array (in the file's dtype).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an npz archive (or a truncated one), or one holding pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (numpy.savez's zip of arrays); it may be truncated or corrupted")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npz archive ({err}); it may be truncated or corrupted") from None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{path} holds pickled Python objects, which are never loaded (they can run code)") from None
        raise ValueError(f"{path} is not a readable .npz archive ({err})") from None
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    if any(name.startswith("params/") for name in arrays):  # big_vision: params/..., opt/...
        return {name.removeprefix("params/"): a for name, a in arrays.items() if name.startswith("params/")}
    return arrays
