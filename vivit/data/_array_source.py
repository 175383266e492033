"""The frame-array source of `vivit.VideoReader`: uint8 `(T, H, W, 3)` frames in `.npy` / `.npz` files.

`.npy` files and uncompressed `.npz` members (what `np.savez` writes) are memory-mapped, so only the
frames read are copied into memory; compressed `.npz` members (`np.savez_compressed`) are
decompressed whole, within the reader's `max_array_bytes` budget, which is checked against the
sizes the archive and the array header declare before anything is decompressed. Nothing is ever
unpickled.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._source import Limits

__all__ = ["ArraySource"]


class _ArrayError(ValueError):
    """A frame array problem whose message is complete (no "not a readable array" prefix)."""


def _check_layout(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Ensure uint8 `(T, H, W, 3)`, naming the file and what was found instead."""
    if dtype.hasobject:
        raise _ArrayError(
            f"{path} is not a readable {path.suffix} frame array (not a numpy array file: it holds Python objects)"
        )
    if dtype != np.uint8:
        raise _ArrayError(f"{path}: expected uint8 frames, got dtype {dtype}")
    if len(shape) != 4 or shape[-1] != 3:
        raise _ArrayError(f"{path}: expected frames of shape (T, H, W, 3) (RGB, channels last), got {shape}")
    if min(shape[:3]) < 1:
        raise _ArrayError(f"{path}: the video is empty (shape {shape})")


class ArraySource:
    """Frames from `.npy` (memory-mapped) or `.npz` (key `frames`; memory-mapped when stored
    uncompressed, as `np.savez` does, decompressed within `max_array_bytes` otherwise)."""

    rotation: int = 0
    nominal_fps: float | None = None

    def __init__(self, path: Path, limits: Limits, fps: float | None) -> None:
        self.path = path
        self._limits = limits
        self._closed = False
        frames, stored_fps = self._load()
        self.num_frames = int(frames.shape[0])
        self.raw_size = (int(frames.shape[1]), int(frames.shape[2]))
        self.fps = float(fps) if fps is not None else stored_fps
        if self.fps is None:
            self.timestamps = np.full(self.num_frames, np.nan)
            self.duration_seconds: float | None = None
        else:
            self.timestamps = np.arange(self.num_frames) / self.fps
            self.duration_seconds = self.num_frames / self.fps
        self._frames: np.ndarray | None = frames

    def _load(self) -> tuple[np.ndarray, float | None]:
        path = self.path
        try:
            if path.suffix.lower() == ".npy":
                with open(path, "rb") as f:
                    dtype, shape, _ = _npy_header(f, path)
                self._check(dtype, shape)
                # allow_pickle=False: an array file from elsewhere must not be able to run code.
                return np.load(path, mmap_mode="r", allow_pickle=False), None
            return self._load_npz()
        except _ArrayError as err:
            raise ValueError(str(err)) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            # numpy reports a file without its magic header as "pickled data" and suggests
            # unpickling it; that advice is unsafe and the real problem is a file that is not an
            # array at all.
            reason = "not a numpy array file" if "pickle" in str(err) or "magic" in str(err) else str(err)
            raise ValueError(f"{path} is not a readable {path.suffix} frame array ({reason})") from None

    def _check(self, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        _check_layout(self.path, dtype, shape)
        try:
            self._limits.check_frame(self.path, shape[1], shape[2])
        except ValueError as err:
            raise _ArrayError(str(err)) from None

    def _load_npz(self) -> tuple[np.ndarray, float | None]:
        path = self.path
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "frames.npy" not in names:
                held = sorted(n.removesuffix(".npy") for n in names)
                raise _ArrayError(f"{path} has no 'frames' array (it holds {held})")
            fps = _npz_fps(archive, path) if "fps.npy" in names else None
            info = archive.getinfo("frames.npy")
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                return self._memmap_member(info), fps
            budget = self._limits.max_array_bytes
            if info.file_size > budget:  # the size the archive declares, before decompressing
                raise _ArrayError(
                    f"{path}: its 'frames' array decompresses to {info.file_size / 2**20:.1f} MiB, above the "
                    f"limit of {budget / 2**20:.1f} MiB (max_array_bytes; pass a larger max_array_bytes to "
                    "vivit.VideoReader, or save the frames uncompressed with np.savez to have them memory-mapped)"
                )
            with archive.open(info) as member:
                dtype, shape, _ = _npy_header(member, path)
            self._check(dtype, shape)
            if math.prod(shape) > budget:  # a header that claims more than the archive entry
                raise _ArrayError(f"{path}: its 'frames' header declares shape {shape}, above max_array_bytes={budget}")
            with archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False), fps

    def _memmap_member(self, info: zipfile.ZipInfo) -> np.ndarray:
        """Memory-map an uncompressed `.npy` member of a zip archive where it lies in the file."""
        path = self.path
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)  # the zip local file header; its name and extra fields follow
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise _ArrayError(f"{path}: damaged zip archive (bad local header for 'frames')")
            name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_length + extra_length
            f.seek(start)
            dtype, shape, fortran = _npy_header(f, path)
            offset = f.tell()
        self._check(dtype, shape)
        if offset - start + math.prod(shape) > info.file_size:
            raise _ArrayError(f"{path}: its 'frames' entry is shorter than its header declares (damaged file)")
        return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")

    def read(self, unique: np.ndarray, sink: Callable[[int, np.ndarray], None]) -> list[int]:
        if self._frames is None:
            if self._closed:
                raise ValueError(f"{self.path}: the reader is closed")
            self._frames = self._load()[0]  # reopened after unpickling
        block = np.asarray(self._frames[unique])  # one fancy-indexing copy of just these frames
        for index, frame in zip(unique.tolist(), block, strict=True):
            sink(index, frame)
        return []  # (an array has no undecodable frames)

    def close(self) -> None:
        self._frames = None
        self._closed = True

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frames": None}


def _npz_fps(archive: zipfile.ZipFile, path: Path) -> float | None:
    with archive.open("fps.npy") as member:
        value = np.lib.format.read_array(member, allow_pickle=False)
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise _ArrayError(f"{path}: its 'fps' entry must be one number, got {value!r}") from None
    if not (math.isfinite(fps) and fps > 0):
        raise _ArrayError(f"{path}: its 'fps' entry must be a positive number, got {fps!r}")
    return fps


def _npy_header(stream: Any, path: Path) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape and Fortran order from an `.npy` header, reading nothing else."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _ArrayError(f"{path}: unsupported .npy format version {version}")
    except _ArrayError:
        raise
    except (ValueError, EOFError, OSError) as err:
        reason = f"not a numpy array file: {err}"
        raise _ArrayError(f"{path} is not a readable {path.suffix} frame array ({reason})") from None
    return np.dtype(dtype), tuple(int(s) for s in shape), bool(fortran)
