"""Reading videos: `VideoReader` decodes only the frames asked for; `read_video` decodes a whole file.

Two kinds of files are read, through the same reader:

* real videos (`.mp4`, `.webm`, `.mkv`, `.avi`, `.mov`, `.ts`, ...) through PyAV (FFmpeg), an
  optional dependency: `pip install av` (or the `video` extra of an installed vivit). PyAV is imported
  only when such a file is read.
* `.npy` / `.npz` arrays of decoded frames, uint8 `(T, H, W, 3)` RGB (an `.npz` keeps them under
  the key `frames` and may hold a frame rate under `fps`). They need no decoder, so the bundled
  demo clip, tests and pre-decoded datasets work on a bare install.

How a video file is read (the method of torchcodec's `VideoDecoder`, written on PyAV):

1. Opening demuxes the video stream's packets once, without decoding them, into an index:
   presentation timestamps (pts), key-frame flags and decode order. Packets an mp4 edit list hides
   (`discard` flag) are decoded as references but are not frames of the video, exactly as FFmpeg
   presents it. Frame `i` is the `i`-th frame in presentation order.
2. `get_frames_at(indices)` groups the wanted frames into runs; for each run it seeks to the key
   frame that precedes the run's first frame (in decode order, and before it on screen, so an open
   GOP's leading B-frames are never the first frames decoded), decodes forward and keeps the frames
   whose pts are wanted. Nothing else is converted to RGB, so memory is bounded by the frames
   returned, whatever the length of the file. The pixels are those of a full sequential decode.
3. Rotation metadata (the display matrix phones write) is applied as FFmpeg's command-line decoder
   applies it: a portrait phone video comes out portrait.

Files whose packets carry no timestamps (raw `.h264` streams) are read sequentially instead: frames
are counted by one decoding pass at opening and each read decodes from the start (correct, but
slow for long files).

Example:
    >>> with VideoReader("clip.mp4") as reader:
    ...     indices = sample_frame_indices(len(reader), num_frames=32, stride=2)
    ...     frames = reader.get_frames_at(indices)  # uint8 (32, H, W, 3), RGB
"""

from __future__ import annotations

import math
import os
import stat
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._array_source import ArraySource
from ._pyav_source import PyAVSource
from ._source import (
    DEFAULT_MAX_ARRAY_BYTES,
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_TIMEOUT,
    Limits,
    VideoDecoderMissingError,
    VideoSource,
    check_input_file,
    import_av,
)

__all__ = [
    "ARRAY_SUFFIXES",
    "DEFAULT_MAX_ARRAY_BYTES",
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_TIMEOUT",
    "VideoDecoderMissingError",
    "VideoReader",
    "VideoWarning",
    "check_input_file",
    "read_video",
]

#: Suffixes read with numpy rather than a video decoder.
ARRAY_SUFFIXES = (".npy", ".npz")


class VideoWarning(UserWarning):
    """A video was readable, but not as its container promised, or was too short for a clip.

    Issued (with the file name) when a file decodes fewer frames than its container declares
    (a truncated download or damaged data: the frames that exist are read), when frames turn out
    not to decode while reading (damage inside the data: each is replaced by the frame shown
    before it) and, by the inference jobs, when a video is shorter than one clip and its frames
    are repeated (looped). Silence
    them with `warnings.filterwarnings("ignore", category=vivit.VideoWarning)`; the command line
    prints each as one `vivit: warning: ...` line unless `-q` is given.
    """


# ---------------------------------------------------------------- public API
class VideoReader:
    """Random access to the frames of one video, decoding only what is asked for.

    Names follow torchcodec's `VideoDecoder`. Frames are indexed in presentation order, as
    FFmpeg's command-line decoder outputs them (mp4 edit lists and rotation applied); times are
    seconds from the first frame. Opening reads the container's packet index (no pixels, except
    the first frame, decoded to check that the file can be decoded and to read its rotation).

    A reader is a context manager (`close()` releases the file); one reader serves one thread at
    a time (calls are serialised by a lock). It can be pickled (e.g. into DataLoader workers):
    the copy keeps the index and reopens the file when it first decodes.

    Args:
        path: A video file FFmpeg can decode (needs PyAV: `pip install av`), or a
            uint8 `(T, H, W, 3)` frame array saved as `.npy` or `.npz` (key `frames`, optional
            key `fps`).
        max_frame_pixels: Refuse frames with more pixels (width x height) than this
            (default `DEFAULT_MAX_FRAME_PIXELS`, 8192 x 8192).
        max_aspect_ratio: Refuse frames whose long side exceeds this multiple of the short side
            (default `DEFAULT_MAX_ASPECT_RATIO`, 16).
        max_array_bytes: Refuse compressed `.npz` frame arrays that would decompress to more
            bytes than this (default `DEFAULT_MAX_ARRAY_BYTES`, 2 GiB).
        fps: Frame rate of a frame array without an `fps` entry (used by `get_frames_played_at`
            and `duration_seconds`); ignored for video files, which carry timestamps.
        num_threads: FFmpeg decoding threads; 0 (default) lets FFmpeg use one per CPU core. Pass
            1 when many readers decode in parallel (e.g. DataLoader workers).
        timeout: Seconds FFmpeg may read without finding the next packet of the video stream
            before the reader gives up with a ValueError (default `DEFAULT_TIMEOUT`, 20 s; `None`:
            wait for ever). It bounds opening and every read of a file whose video is followed by
            gigabytes of zeros or junk (a download written into a preallocated file), which FFmpeg
            would otherwise scan to the end: 22 GB took over 5 minutes. A healthy local file yields
            a packet in microseconds; raise it for very slow network storage.

    Raises:
        FileNotFoundError: If `path` does not exist (or is a symbolic link to nothing) or is a
            directory.
        OSError: If `path` is a symbolic link loop or cannot be examined (permissions).
        VideoDecoderMissingError: If the file needs PyAV and it is not installed.
        ValueError: If the file is not a regular file (a pipe, socket or device), is empty, is a
            still image (`.png`, `.jpg`, ...), cannot be decoded, has no video stream or no
            frames, exceeds a limit above, or FFmpeg found no video packet for `timeout` seconds;
            the message names the file (and the limit).

    Warns:
        VideoWarning: If the file decodes fewer frames than its container declares (truncated or
            damaged); the frames that exist are readable.
    """

    # Damage inside the data that the container does not reveal is found while reading: see
    # `get_frames_at`. Where damage is concealed by the decoder, the pixels of frames decoded after
    # a seek may differ from a sequential decode's (concealment depends on what was decoded before).

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
        max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
        fps: float | None = None,
        num_threads: int = 0,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._path = Path(path).expanduser()
        self._limits = Limits(int(max_frame_pixels), float(max_aspect_ratio), int(max_array_bytes), timeout)
        if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be a non-negative integer, got {num_threads!r}")
        self._lock = threading.Lock()
        path = self._path
        status = check_input_file(path)
        if stat.S_ISDIR(status.st_mode):
            raise FileNotFoundError(f"{path} is a directory, not a video file")
        if not stat.S_ISREG(status.st_mode):  # a FIFO, socket or device: no size, no seeking, maybe no end
            raise ValueError(
                f"{path} is not a regular file (a pipe, socket or device): the reader seeks in the file; "
                "save the video to a file first"
            )
        if status.st_size == 0:
            raise ValueError(f"{path} is empty (0 bytes)")
        if path.suffix.lower() in ARRAY_SUFFIXES:
            self._source: VideoSource = ArraySource(path, self._limits, fps)
        else:
            source = PyAVSource(path, import_av(), self._limits, num_threads)
            if source.warning:
                warnings.warn(source.warning, VideoWarning, stacklevel=2)
            self._source = source

    # ------------------------------------------------------------ metadata
    @property
    def path(self) -> Path:
        """The file being read."""
        return self._path

    @property
    def num_frames(self) -> int:
        """Frames in the video (counted from the packet index when the container does not say)."""
        return self._source.num_frames

    def __len__(self) -> int:
        return self._source.num_frames

    @property
    def timestamps(self) -> np.ndarray:
        """Presentation time of each frame in seconds from the first frame, float64 `(num_frames,)`.

        For a frame array these are `i / fps` (NaN when the rate is unknown).
        """
        return self._source.timestamps.copy()

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the first frame's presentation to the end of the last frame.

        `None` only for a frame array without a frame rate.
        """
        return self._source.duration_seconds

    @property
    def average_fps(self) -> float | None:
        """`num_frames / duration_seconds` (variable-rate videos: their mean rate); `None` if unknown."""
        duration = self._source.duration_seconds
        if duration is None:
            return None
        if duration <= 0:
            return self._source.nominal_fps
        return self.num_frames / duration

    @property
    def rotation(self) -> int:
        """Degrees (0, 90, 180 or 270, counter-clockwise, as PyAV's `VideoFrame.rotation`) by which
        the decoded frames are turned to display upright, read from the display matrix; already
        applied to the frames returned, as FFmpeg's command-line decoder applies it."""
        return self._source.rotation

    @property
    def height(self) -> int:
        """Height of the returned frames in pixels (as displayed, i.e. after rotation)."""
        h, w = self._source.raw_size
        return w if self._source.rotation in (90, 270) else h

    @property
    def width(self) -> int:
        """Width of the returned frames in pixels (as displayed, i.e. after rotation)."""
        h, w = self._source.raw_size
        return h if self._source.rotation in (90, 270) else w

    # ------------------------------------------------------------ frames
    def get_frames_at(self, indices: Sequence[int] | np.ndarray | Any) -> np.ndarray:
        """Frames by index, in the order asked (repeats and any order allowed).

        Only the frames asked for are converted to RGB; for video files only the key-frame
        intervals that contain them are decoded.

        Args:
            indices: 1-D sequence of frame indices (ints, a numpy or torch integer array, a
                `range`); negative indices count from the end, as in Python.

        Returns:
            uint8 numpy array `(len(indices), height, width, 3)`, RGB, rotation applied.

        Raises:
            IndexError: If an index is outside `[-num_frames, num_frames)`.
            ValueError: If `indices` is not a 1-D integer sequence, the reader is closed, or no
                frame near a wanted one can be decoded (a damaged file); the message names the file.

        Warns:
            VideoWarning: If some wanted frames do not decode (damaged data); each is replaced by
                the frame shown before it, as a player would show, and listed in the message.
        """
        wanted = self._frame_indices(indices)
        out = np.empty((len(wanted), self.height, self.width, 3), dtype=np.uint8)
        if not len(wanted):
            return out
        unique, inverse = np.unique(wanted, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        slots = dict(zip(unique.tolist(), np.split(order, np.cumsum(np.bincount(inverse))[:-1]), strict=True))

        def sink(index: int, frame: np.ndarray) -> None:
            out[slots[index]] = frame

        with self._lock:
            replaced = self._source.read(unique, sink)
        if replaced:
            shown = ", ".join(map(str, replaced[:8])) + (", ..." if len(replaced) > 8 else "")
            warnings.warn(
                f"{self._path}: {len(replaced)} frame(s) could not be decoded (damaged data): {shown}; each was "
                "replaced by the frame shown before it",
                VideoWarning,
                stacklevel=2,
            )
        return out

    def get_frames_played_at(self, seconds: Sequence[float] | np.ndarray | Any) -> np.ndarray:
        """The frame on screen at each time (by presentation timestamps: right for variable-rate videos).

        The frame shown at time `t` is the last one whose timestamp is `<= t` (see `timestamps`).

        Args:
            seconds: 1-D sequence of times in seconds from the first frame, each in
                `[0, duration_seconds)`.

        Returns:
            uint8 numpy array `(len(seconds), height, width, 3)`, as `get_frames_at`.

        Raises:
            IndexError: If a time is outside `[0, duration_seconds)`.
            ValueError: If `seconds` is not a 1-D sequence of numbers, or the frame rate of a
                frame array is unknown (pass `fps=`).
        """
        try:
            times = np.asarray(_to_numpy(seconds), dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"seconds must be a 1-D sequence of times in seconds, got {seconds!r:.80}") from None
        if times.ndim != 1:
            raise ValueError(f"seconds must be a 1-D sequence of times, got shape {times.shape}")
        duration = self.duration_seconds
        if duration is None:
            raise ValueError(
                f"{self._path} is a frame array without a frame rate: pass VideoReader(..., fps=...) "
                "or store an 'fps' entry in the .npz to read frames by time"
            )
        bad = ~((times >= 0) & (times < duration))
        if bad.any():
            raise IndexError(
                f"{self._path}: time {float(times[bad][0])!r} s is outside the video, [0, {duration:.6g}) s"
            )
        indices = np.searchsorted(self._source.timestamps, times, side="right") - 1
        return self.get_frames_at(np.maximum(indices, 0))

    def __getitem__(self, key: int | slice) -> np.ndarray:
        """`reader[i]`: one frame `(H, W, 3)`; `reader[a:b:s]`: frames `(N, H, W, 3)`."""
        if isinstance(key, slice):
            return self.get_frames_at(range(*key.indices(len(self))))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.get_frames_at([key])[0]
        raise TypeError(f"VideoReader indices must be integers or slices, not {type(key).__name__}")

    def _frame_indices(self, indices: Any) -> np.ndarray:
        values = np.asarray(_to_numpy(indices))
        if values.ndim != 1:
            raise ValueError(f"indices must be a 1-D sequence of frame indices, got shape {values.shape}")
        if values.size and (values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer)):
            raise ValueError(f"indices must be integers, got dtype {values.dtype}")
        n = self.num_frames
        # Unsigned values are compared before the cast: 2**64 - 1 would wrap to -1, the last frame.
        bad = values >= n if values.dtype.kind == "u" else (values < -n) | (values >= n)
        if bad.any():
            raise IndexError(f"{self._path}: frame index {int(values[bad][0])} is out of range for {n} frames")
        values = values.astype(np.int64)
        return np.where(values < 0, values + n, values)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the file. Reading afterwards raises ValueError; metadata stays available."""
        with self._lock:
            self._source.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        fps = self.average_fps
        rate = f", {fps:.3g} fps" if fps else ""
        turn = f", rotation {self.rotation}" if self.rotation else ""
        return f"VideoReader('{self._path}', {self.num_frames} frames of {self.width}x{self.height}{rate}{turn})"


def read_video(path: str | os.PathLike[str], **reader_args: Any) -> np.ndarray:
    """Decode a whole video into RGB frames (rotation applied).

    For long videos prefer `VideoReader(path).get_frames_at(indices)`, which decodes only what a
    clip needs: a whole video is held in memory here (about 6 MB per 1080p frame).

    Args:
        path: A video file FFmpeg can decode or a `.npy` / `.npz` uint8 frame array (see
            `VideoReader`).
        **reader_args: Limits passed to `VideoReader` (`max_frame_pixels`, ...).

    Returns:
        uint8 numpy array `(T, H, W, 3)`, RGB, every frame in presentation order.

    Raises:
        FileNotFoundError, VideoDecoderMissingError, ValueError: As `VideoReader`.
    """
    with VideoReader(path, **reader_args) as reader:
        return reader.get_frames_at(np.arange(len(reader)))


# ---------------------------------------------------------------- helpers
def _to_numpy(values: Any) -> Any:
    """Torch tensors (which numpy would treat as objects on some devices) as numpy; others as given."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        return values.detach().cpu().numpy()
    if isinstance(values, range):
        return np.arange(values.start, values.stop, values.step, dtype=np.int64)
    return values
