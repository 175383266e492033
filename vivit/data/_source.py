"""What the two sources of `vivit.VideoReader` share: their limits, their interface, the PyAV import.

The reader (`vivit.data.video`) sits on top of two sources, `_pyav_source.PyAVSource` (video files)
and `_array_source.ArraySource` (`.npy` / `.npz` frame arrays). Both take a `Limits`, both
implement `VideoSource`, and neither imports the reader: the arrows run reader -> sources -> this
module, which imports nothing from `vivit.data`.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._install import install_hint

__all__ = [
    "DEFAULT_MAX_ARRAY_BYTES",
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_TIMEOUT",
    "Limits",
    "VideoDecoderMissingError",
    "VideoSource",
    "check_input_file",
    "escape_controls",
    "import_av",
]

#: Largest frame accepted, in pixels (width x height): 8192 x 8192, above 8K UHD (7680 x 4320).
#: One RGB frame of this size takes 192 MiB, a 32-frame clip 6 GiB.
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192
#: Largest accepted ratio of a frame's long side to its short side. Cinema scope is 2.4, 32:9
#: monitors 3.6; beyond this a frame is almost certainly broken, and a short-side resize would
#: turn it into a huge image (a 2 x 8192 frame resized to a short side of 256 is 256 x 1048576).
DEFAULT_MAX_ASPECT_RATIO = 16.0
#: Largest `.npz` frame array decompressed into memory (2 GiB); checked against the sizes the
#: archive declares, before anything is decompressed. Uncompressed `.npz` (`np.savez`) and `.npy`
#: files are memory-mapped instead and need no budget.
DEFAULT_MAX_ARRAY_BYTES = 2 * 1024**3
#: Seconds FFmpeg may read a video file without finding the next packet of its video stream
#: before the reader gives up. A local file yields a packet in microseconds; a file whose video is
#: followed by gigabytes of zeros or junk (a download written into a preallocated file, a disk
#: image) makes FFmpeg scan all of it, which took minutes (22 GB: over 5 minutes).
DEFAULT_TIMEOUT = 20.0


class VideoDecoderMissingError(ImportError):
    """A real video file was given but PyAV, the optional video decoder, is not installed."""


class Limits:
    """The reader's limits and the checks that name the file and the limit.

    Args:
        max_frame_pixels: Largest frame, width x height.
        max_aspect_ratio: Largest long side / short side of a frame.
        max_array_bytes: Largest compressed `.npz` frame array, decompressed.
        timeout: Seconds without a packet of the video stream before giving up (None: no limit).

    Raises:
        ValueError: If a limit is not positive.
    """

    def __init__(
        self, max_frame_pixels: int, max_aspect_ratio: float, max_array_bytes: int, timeout: float | None = None
    ) -> None:
        for name, value in (
            ("max_frame_pixels", max_frame_pixels),
            ("max_aspect_ratio", max_aspect_ratio),
            ("max_array_bytes", max_array_bytes),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.max_frame_pixels = max_frame_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.max_array_bytes = max_array_bytes
        self.timeout = None if timeout is None else float(timeout)

    def check_frame(self, path: Path, height: int, width: int) -> None:
        """Raise ValueError (naming `path` and the limit) for frames that are empty or too large."""
        if height < 1 or width < 1:
            raise ValueError(f"{path}: frames of {width}x{height} pixels are empty")
        if height * width > self.max_frame_pixels:
            raise ValueError(
                f"{path}: frames of {width}x{height} pixels ({height * width / 1e6:.1f} MP) exceed the limit of "
                f"{self.max_frame_pixels / 1e6:.1f} MP per frame (max_frame_pixels={self.max_frame_pixels}; "
                "pass a larger max_frame_pixels to vivit.VideoReader to read it anyway)"
            )
        ratio = max(height, width) / min(height, width)
        if ratio > self.max_aspect_ratio:
            raise ValueError(
                f"{path}: frames of {width}x{height} pixels have an aspect ratio of {ratio:.4g}:1, above the limit "
                f"of {self.max_aspect_ratio:g}:1 (max_aspect_ratio; a short-side resize would make them "
                "enormous); pass a larger max_aspect_ratio to vivit.VideoReader to read it anyway"
            )


class VideoSource(Protocol):
    """What `vivit.VideoReader` needs from a source: metadata, then frames by presentation index."""

    path: Path
    rotation: int  # degrees counter-clockwise, already applied to what `read` passes on
    raw_size: tuple[int, int]  # (height, width) of the decoded frames, before rotation
    nominal_fps: float | None
    timestamps: np.ndarray  # float64 (num_frames,), seconds from the first frame
    duration_seconds: float | None

    @property
    def num_frames(self) -> int: ...

    def read(self, unique: np.ndarray, sink: Callable[[int, np.ndarray], None]) -> list[int]:
        """Pass every frame of `unique` (sorted, distinct) to `sink(index, rgb)`; return those replaced."""
        ...

    def close(self) -> None: ...


def import_av() -> Any:
    """Import PyAV, or explain how to install it (VideoDecoderMissingError)."""
    try:
        import av
    except ImportError:
        raise VideoDecoderMissingError(
            f"reading video files needs PyAV: {install_hint('av', 'video')}; "
            "uint8 frame arrays saved as .npy/.npz need no decoder"
        ) from None
    return av


def escape_controls(text: str) -> str:
    """`text` with control characters (C0, DEL, C1) and undecodable bytes written `\\xNN`.

    For messages that quote text read from files (list lines, file names): a NUL byte, an escape
    sequence or a byte that is not UTF-8 never reaches a terminal or a log raw.
    """
    out = []
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def check_input_file(path: Path, what: str = "video file") -> os.stat_result:
    """`os.stat(path)` of a file to read, or one clear error saying why it cannot be.

    Args:
        path: The file.
        what: What the file should be, for messages (`"video file"`, `"list"`).

    Returns:
        Its stat result (symbolic links followed).

    Raises:
        FileNotFoundError: If it does not exist (or a symbolic link points nowhere), or is a directory.
        OSError: If it is a symbolic link loop, or cannot be examined (permissions); the message says which.
        ValueError: If its name holds a NUL byte (no file can have it).
    """
    shown = escape_controls(os.fsdecode(path))
    try:
        return os.stat(path)
    except ValueError:  # "embedded null byte"
        raise ValueError(f"{shown} is not a valid file name (it holds a NUL byte)") from None
    except FileNotFoundError:
        if os.path.islink(path):
            target = escape_controls(os.readlink(path))
            raise FileNotFoundError(f"{shown} is a symbolic link to {target}, which does not exist") from None
        raise FileNotFoundError(f"{shown} does not exist") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"{shown} does not exist (a part of the path is a file, not a folder)") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            loop = OSError(f"{shown} is a symlink loop (symbolic links that lead back to themselves), not a {what}")
            loop.errno = errno.ELOOP
            raise loop from None
        reason = err.strerror or str(err)
        raise type(err)(f"cannot read {shown}: {reason}") from None
