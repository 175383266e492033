"""Reading videos into uint8 frame arrays, the input `vivit.predict_views` and the transforms take.

Two kinds of files are read:

* `.npy` / `.npz` arrays of decoded frames, uint8 `(T, H, W, 3)` (an `.npz` keeps them under the
  key `frames`). They need no decoder, so tests, the bundled demo clip and pre-decoded datasets
  work on a bare install.
* real videos (`.mp4`, `.avi`, `.webm`, `.mkv`, ...) through PyAV (FFmpeg), an optional dependency:
  `pip install 'vivit[video]'`. PyAV is imported only when such a file is read.

Example:
    >>> frames = read_video("clip.mp4")  # uint8 (T, H, W, 3), RGB
    >>> logits = vivit.predict_views(model, frames)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARRAY_SUFFIXES", "VideoDecoderMissingError", "read_video"]

#: Suffixes read with numpy rather than a video decoder.
ARRAY_SUFFIXES = (".npy", ".npz")
_INSTALL_HINT = "pip install 'vivit[video]'"


class VideoDecoderMissingError(ImportError):
    """A real video file was given but PyAV, the optional video decoder, is not installed."""


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a whole video into RGB frames.

    Args:
        path: A `.npy` / `.npz` array of uint8 frames `(T, H, W, 3)` (`.npz`: key `frames`), or
            any video file FFmpeg can decode (needs PyAV, `pip install 'vivit[video]'`).

    Returns:
        uint8 numpy array `(T, H, W, 3)`, RGB, every frame of the first video stream in order.
        A whole video is held in memory (about 6 MB per 1080p frame).

    Raises:
        FileNotFoundError: If `path` does not exist or is a directory.
        VideoDecoderMissingError: If the file needs PyAV and it is not installed.
        ValueError: If the file cannot be read or decoded, or holds no frames; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a video file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    frames = _read_array(path) if path.suffix.lower() in ARRAY_SUFFIXES else _decode_with_pyav(path)
    return _check_frames(frames, path)


def _read_array(path: Path) -> np.ndarray:
    """Load pre-decoded frames from `.npy` or `.npz` (key `frames`) without unpickling anything."""
    try:
        # allow_pickle=False: an array file from elsewhere must not be able to run code.
        loaded: Any = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        # numpy reports a file without its magic header as "pickled data" and suggests unpickling
        # it; that advice is unsafe and the real problem is a file that is not an array at all.
        reason = "not a numpy array file" if "pickle" in str(err) else str(err)
        raise ValueError(f"{path} is not a readable {path.suffix} frame array ({reason})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if "frames" not in loaded.files:
            raise ValueError(f"{path} has no 'frames' array (it holds {sorted(loaded.files)})")
        try:
            return loaded["frames"]
        except (OSError, ValueError, EOFError) as err:  # a damaged member surfaces only when read
            raise ValueError(f"{path}: cannot read its 'frames' array ({err})") from None


def _import_av() -> Any:
    """Import PyAV, or explain how to install it."""
    try:
        import av
    except ImportError:
        raise VideoDecoderMissingError(
            f"reading video files needs PyAV: {_INSTALL_HINT} (or pip install av); "
            "uint8 frame arrays saved as .npy/.npz need no decoder"
        ) from None
    return av


def _decode_with_pyav(path: Path) -> np.ndarray:
    """Decode every frame of the first video stream to RGB with PyAV."""
    av = _import_av()
    errors = (av.error.FFmpegError, OSError, ValueError, EOFError)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame- and slice-threaded decoding; same pixels, faster
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except errors as err:
        # FFmpeg errors carry "[Errno N] ...: 'path'"; its plain reason reads better after our prefix.
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(f"cannot decode {path}: {reason}") from None
    if not frames:
        raise ValueError(f"cannot decode {path}: no frames were decoded")
    return np.stack(frames)


def _check_frames(frames: np.ndarray, path: Path) -> np.ndarray:
    """Ensure uint8 `(T, H, W, 3)`, naming the file and what was found instead."""
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 frames, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: expected frames of shape (T, H, W, 3) (RGB, channels last), got {frames.shape}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"{path}: the video is empty (shape {frames.shape})")
    return frames
