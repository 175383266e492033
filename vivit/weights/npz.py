"""Reading `.npz` checkpoints: Google's ViT releases (google-research/vision_transformer, big_vision).

Those files are `numpy.savez` archives of '/'-joined Flax parameter names (`embedding/kernel`,
`Transformer/encoderblock_0/...`, or big_vision's `params/...` and scanned `encoderblock/...`) to
arrays. They are read with `allow_pickle=False`: an archive holding pickled objects is refused, so
reading one cannot run code.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from .formats import MAX_CHECKPOINT_BYTES, check_regular_file
from .validate import check_finite, short_list

__all__ = ["read_npz"]


# A compressed archive (`numpy.savez_compressed`) may expand at most this much: float weights compress
# to about 90% of their size, while a few MB of zeros can announce gigabytes (a decompression bomb).
# Archives that expand to less than _BOMB_FLOOR bytes are never refused.
MAX_EXPANSION = 50
_BOMB_FLOOR = 64 << 20
# Wrappers around the parameters, as timm's `_load_weights` reads them: big_vision's `params/...` (next
# to `opt/...`), google-research/vision_transformer's train states `opt/target/...`.
_PARAM_PREFIXES = ("params/", "opt/target/")


def _member_specs(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Shape, dtype and stored (compressed) size of every array in the archive, from the zip directory
    and the `.npy` headers only (nothing allocated).

    Each member's size must match its header, so that a small compressed member cannot announce
    (and make numpy allocate) a huge array.
    """
    specs: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
                header = member.tell()
            if dtype.hasobject:
                raise ValueError(f"{path} holds pickled Python objects, which are never loaded (they can run code)")
            size = math.prod(shape) * dtype.itemsize
            if size != info.file_size - header:
                raise ValueError(
                    f"{path}: member {info.filename!r} announces {size:,} bytes but holds {info.file_size - header:,}"
                )
            total += size
            if total > MAX_CHECKPOINT_BYTES:
                raise ValueError(f"{path} holds more than {MAX_CHECKPOINT_BYTES >> 30} GiB of arrays")
            specs[info.filename.removesuffix(".npy")] = (tuple(shape), dtype, info.compress_size)
    return specs


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, by name (of big_vision's `params/...`, `opt/...` and of
    vision_transformer's `opt/target/...`: the parameters, without that prefix).

    The `.npy` headers are checked first (sizes, no pickled objects, compressed members that expand more
    than `MAX_EXPANSION` times), then the parameters are read;
    they must be finite float16/32/64 arrays.

    Args:
        path: a `numpy.savez` / `savez_compressed` archive.

    Returns:
        name -> array (in the file's dtype).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file or not an npz archive (or a truncated one), one holding pickled
            objects, members whose size disagrees with their header, a decompression bomb, or parameters that are not
            finite floats.
    """
    path = check_regular_file(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not an .npz archive (numpy.savez's zip of arrays); it may be truncated or corrupted"
        )
    try:
        specs = _member_specs(path)
        prefix = next((p for p in _PARAM_PREFIXES if f"{p}embedding/kernel" in specs), "")
        if not prefix and any(n.startswith("params/") for n in specs):
            prefix = "params/"  # big_vision without a ViT embedding: still only the parameters
        names = [n for n in specs if n.startswith(prefix)]
        expanded = sum(math.prod(specs[n][0]) * specs[n][1].itemsize for n in names)
        stored = sum(specs[n][2] for n in names)
        if expanded > max(_BOMB_FLOOR, MAX_EXPANSION * stored):
            raise ValueError(
                f"{path}: its arrays expand to {expanded:,} bytes from {stored:,} compressed bytes (more than "
                f"{MAX_EXPANSION}x); float weights do not compress like that: a corrupt file or a decompression bomb"
            )
        not_float = [f"{n} ({specs[n][1]})" for n in names if specs[n][1].kind != "f" or specs[n][1].itemsize > 8]
        if not_float:
            raise ValueError(
                f"{path}: parameters must be float16, float32 or float64 arrays; {len(not_float)} are not: {short_list(not_float)}"
            )
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name[len(prefix) :]: archive[name] for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, struct.error) as err:
        raise ValueError(f"{path} is not a readable .npz archive ({err}); it may be truncated or corrupted") from None
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        if "allow_pickle" in str(err):
            raise ValueError(
                f"{path} holds pickled Python objects, which are never loaded (they can run code)"
            ) from None
        raise ValueError(f"{path} is not a readable .npz archive ({str(err)[:200]})") from None
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    check_finite(str(path), arrays, "arrays")
    return arrays
