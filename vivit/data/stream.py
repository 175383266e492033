"""Live video sources: standard input, pipes, named pipes (FIFOs), V4L2 cameras and network streams.

`vivit.VideoReader` reads files: it indexes the packets first and seeks, so it refuses anything
it cannot seek in (a FIFO, a device, standard input). A live source is the opposite: frames come
once, in order, for as long as the stream runs. `open_stream` opens one with PyAV (FFmpeg) and
`LiveVideo.frames` decodes it sequentially; nothing is indexed and nothing is kept here (the live
job, `vivit.live`, keeps the frames its windows need).

Kinds of source (`source_kind`), and whether the source waits for a slow reader:

| kind | given as | waits |
|---|---|---|
| `stdin` | `"-"` (any stream FFmpeg reads, e.g. `ffmpeg ... -f mpegts -`) | yes: the writer blocks |
| `pipe` | a binary file object, e.g. a subprocess's stdout | yes |
| `fifo` | the path of a named pipe (`mkfifo`) | yes (opening waits for a writer) |
| `file` | the path of a regular file (read once, in order) | yes |
| `device` | a V4L2 character device, `/dev/video0` | no: the camera keeps capturing |
| `url` | `rtsp://`, `udp://`, `http(s)://`, `rtmp://`, `srt://`, ... | no: the sender keeps sending |

Frame `i` is the `i`-th frame the decoder outputs (presentation order, as `VideoReader` numbers
a file's frames); its time is its timestamp minus the first frame's, in seconds. Frames are
returned upright (display-matrix rotation applied) at the first frame's size, as `VideoReader` does.
"""

from __future__ import annotations

import errno
import math
import os
import re
import select
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from .._install import install_hint
from .video import VideoDecoderMissingError

__all__ = [
    "WAITING_KINDS",
    "LiveVideo",
    "SourceKind",
    "StreamFrame",
    "open_stream",
    "source_kind",
]

SourceKind = Literal["stdin", "pipe", "fifo", "file", "device", "url"]
#: Kinds whose writer blocks while the reader is busy: nothing is ever lost there.
WAITING_KINDS: frozenset[str] = frozenset({"stdin", "pipe", "fifo", "file"})

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_V4L2 = "video4linux2"


@dataclass(frozen=True)
class StreamFrame:
    """One decoded frame of a live source (pixels not converted yet: `LiveVideo.to_rgb`).

    Attributes:
        index: Position in the stream, from 0.
        seconds: Presentation time from the stream's first frame.
        duration: Seconds until the next frame as the stream declares it (None when unknown).
        arrival: `time.monotonic()` when the decoder returned it.
        frame: The decoded `av.VideoFrame`.
    """

    index: int
    seconds: float
    duration: float | None
    arrival: float
    frame: Any


def source_kind(source: str | os.PathLike[str] | BinaryIO) -> SourceKind:
    """The kind of a live source (see the module docstring); does not open it.

    Raises:
        FileNotFoundError: For a path that does not exist (a device: "no such device").
        ValueError: For a directory, a socket, or another kind of file.
    """
    if not isinstance(source, (str, os.PathLike)):
        if not callable(getattr(source, "read", None)):
            raise ValueError(
                f"a live source is '-', a path, a URL or a binary file object; got {type(source).__name__}"
            )
        return "pipe"
    text = os.fspath(source)
    if text == "-":
        return "stdin"
    if _URL.match(text) and not text.lower().startswith("file://"):
        return "url"
    path = Path(text.removeprefix("file://")).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if str(path).startswith("/dev/"):
            raise FileNotFoundError(
                f"{path}: no such device (is the camera plugged in? list them with `ls /dev/video*`)"
            ) from None
        raise FileNotFoundError(f"{path} does not exist") from None
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "device"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a directory, not a video stream")
    raise ValueError(f"{path} is not a video stream (not a file, named pipe or video device)")


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoDecoderMissingError(f"live video needs PyAV: {install_hint('av', 'video')}") from None
    return av


class _PipeInput:
    """A pipe's file descriptor read for FFmpeg through PyAV's Python I/O, waking every 0.2 s to see
    whether the reader was asked to stop (`LiveVideo.stop`).

    FFmpeg's own `pipe:` protocol blocks in `read(2)` while the writer is silent, holding the
    decoding thread (and, at exit, the end of the program) until the writer sends or closes; here a
    stop request ends the stream instead. The descriptor is not closed (its owner closes it).
    """

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self.fd = fd
        self._stop = stop

    def read(self, size: int) -> bytes:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if ready:
                    return os.read(self.fd, size)
            except (BlockingIOError, InterruptedError):
                continue
        return b""


class LiveVideo:
    """An open live source, decoded once, in order. Use `open_stream` to get one.

    Attributes:
        name: The source as given (`"-"` is shown as "standard input").
        kind: Its `SourceKind`.
        can_wait: Whether the writer waits for a slow reader (`stdin`, `pipe`, `fifo`, `file`).
        fps: The stream's declared frame rate (None when unknown).
        height, width: Size of the returned frames (the first frame's, upright).
        rotation: Degrees the frames are turned to display upright (0, 90, 180, 270).
    """

    def __init__(
        self,
        name: str,
        kind: SourceKind,
        container: Any,
        stream: Any,
        first: Any,
        av: Any,
        stop: threading.Event,
        own_fd: int | None = None,
    ) -> None:
        self.name = name
        self.kind: SourceKind = kind
        self.can_wait = kind in WAITING_KINDS
        self._av = av
        self._container = container
        self._stream = stream
        self._first = first
        self._time_base = float(stream.time_base) if stream.time_base else 0.0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps: float | None = float(rate) if rate else None
        self._raw_size = (first.height, first.width)
        self.rotation = _right_angle(first.rotation)
        turned = self.rotation in (90, 270)
        self.height, self.width = (first.width, first.height) if turned else (first.height, first.width)
        #: Why `frames` stopped: "end of stream", "stopped", or the read error that ended it.
        self.end_reason: str | None = None
        self._stop = stop
        self._own_fd = own_fd  # a FIFO opened here: closed with the container

    def frames(self) -> Iterator[StreamFrame]:
        """Decodes the stream from its first frame to its end (or a read error: see `end_reason`).

        Packets the decoder rejects are skipped, as FFmpeg's command line does. Call from one
        thread at a time.

        Yields:
            `StreamFrame`s, index 0, 1, 2, ...
        """
        av = self._av
        first_pts = self._first.pts
        index = 0

        def make(frame: Any) -> StreamFrame:
            nonlocal index
            if frame.pts is not None and first_pts is not None and self._time_base:
                seconds = (frame.pts - first_pts) * self._time_base
            else:  # no timestamps: the nominal rate
                seconds = index / self.fps if self.fps else math.nan
            duration = frame.duration * self._time_base if frame.duration and self._time_base else None
            if duration is None and self.fps:
                duration = 1.0 / self.fps
            item = StreamFrame(index, float(seconds), duration, time.monotonic(), frame)
            index += 1
            return item

        yield make(self._first)
        self._first = None  # not kept: the caller decides what to keep
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = self._stream.decode(packet)
                except av.error.InvalidDataError:
                    continue
                for frame in decoded:
                    yield make(frame)
        except (av.error.FFmpegError, OSError, EOFError) as err:
            self.end_reason = f"read error: {_reason(err)}"
            try:  # the frames the decoder still holds came from data that did arrive
                flushed = self._stream.decode(None)
            except av.error.FFmpegError:
                flushed = []
            for frame in flushed:
                yield make(frame)
            return
        self.end_reason = "stopped" if self._stop.is_set() else "end of stream"

    def to_rgb(self, frame: Any) -> np.ndarray:
        """uint8 RGB `(height, width, 3)` of a decoded frame, upright, at the first frame's size."""
        height, width = self._raw_size
        if (frame.height, frame.width) != (height, width):  # a mid-stream resolution change
            image = frame.to_ndarray(format="rgb24", width=width, height=height)
        else:
            image = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.rot90(image, self.rotation // 90)) if self.rotation else image

    def stop(self) -> None:
        """Ask `frames` to end soon, from any thread: a pipe, FIFO or standard input ends within 0.2 s
        even when its writer is silent; a device or URL at its next frame or read timeout; a file at
        its next frame."""
        self._stop.set()

    def close(self) -> None:
        """Close the source (call from the thread that decodes, or once it has stopped)."""
        if self._container is not None:
            self._container.close()
            self._container = None
            if self._own_fd is not None:
                os.close(self._own_fd)
                self._own_fd = None

    def __enter__(self) -> LiveVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        rate = f", {self.fps:.3g} fps" if self.fps else ""
        return f"LiveVideo({self.name!r}, {self.kind}, {self.width}x{self.height}{rate})"


def open_stream(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    timeout: float = 10.0,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
) -> LiveVideo:
    """Opens a live source and decodes its first frame (see the module docstring for the kinds).

    Standard input, FIFOs and file objects with a file descriptor are read through `_PipeInput`
    (which `LiveVideo.stop` can end while the writer is silent); opening a FIFO waits until a writer
    opens it, as `cat` does. Devices are opened as V4L2 (`format="video4linux2"`) unless `format`
    says otherwise; files and URLs are read by FFmpeg itself.

    Args:
        source: `"-"` (standard input), a path (named pipe, video device, regular file), a URL
            PyAV opens, or a readable binary file object.
        timeout: Seconds a device or network source may take to open and between two reads
            (PyAV's open/read timeouts); pipes, FIFOs and files wait for their writer without limit.
        format: FFmpeg input format, when probing cannot tell (e.g. `"mpegts"`, `"v4l2"`).
        options: FFmpeg options for the input (e.g. `{"rtsp_transport": "tcp"}`,
            `{"video_size": "1280x720"}` for a camera).

    Returns:
        The open `LiveVideo`.

    Raises:
        FileNotFoundError: A path or device that does not exist.
        ValueError: One line saying why the source cannot be read: standard input is a terminal,
            not video, no video stream, a device that is busy or is not a camera, a URL that
            refuses or does not answer within `timeout` seconds.
        VideoDecoderMissingError: PyAV is not installed.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    kind = source_kind(source)
    av = _import_av()
    name = {"stdin": "standard input", "pipe": "the input pipe"}.get(kind) or os.fspath(source)  # type: ignore[arg-type]
    stop = threading.Event()
    target: Any = source
    if kind == "stdin":
        if os.isatty(0):
            raise ValueError(
                "standard input is a terminal: pipe a video stream into it, e.g. "
                "`ffmpeg -i CAMERA_OR_FILE -f mpegts - | vivit predict - --live`"
            )
        target = _PipeInput(0, stop)
    elif kind == "pipe":
        try:
            target = _PipeInput(source.fileno(), stop)  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            target = source  # a file object without a descriptor: read as it is
    elif kind == "fifo":
        # Opening waits for a writer, as `cat` does (Ctrl-C interrupts it); reads then go through
        # `_PipeInput`, like standard input. The descriptor is closed with the container.
        target = _PipeInput(os.open(name.removeprefix("file://"), os.O_RDONLY), stop)
    elif kind in ("file", "device"):
        target = name.removeprefix("file://")
    if kind == "device" and format is None:
        format = _V4L2
    kwargs: dict[str, Any] = {"options": dict(options or {})}
    if format is not None:
        kwargs["format"] = format
    if kind in ("device", "url"):
        kwargs["timeout"] = (float(timeout), float(timeout))
    started = time.monotonic()
    try:
        container = av.open(target, **kwargs)
    except Exception as err:  # FFmpeg's errors, OSError, ValueError (unknown format), ...
        _close_fifo(kind, target)
        raise ValueError(_open_error(name, kind, err, time.monotonic() - started, float(timeout), av)) from None
    try:
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise ValueError(f"{name} has no video stream (it holds {', '.join(kinds)})")
        best = container.streams.best("video")
        stream = best if best in videos else videos[0]
        if stream.codec_context is None:
            raise ValueError(f"cannot decode {name}: FFmpeg has no decoder for its {stream.codec.name!r} video")
        stream.thread_type = "AUTO"
        first = _first_frame(container, stream, av, name)
    except BaseException:
        container.close()
        _close_fifo(kind, target)
        raise
    return LiveVideo(name, kind, container, stream, first, av, stop, target.fd if kind == "fifo" else None)


def _close_fifo(kind: SourceKind, target: Any) -> None:
    """Close the descriptor of a FIFO opened by `open_stream` (when opening it as video failed)."""
    if kind == "fifo":
        os.close(target.fd)


def _first_frame(container: Any, stream: Any, av: Any, name: str) -> Any:
    try:
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.InvalidDataError:
                continue
            if frames:
                return frames[0]
    except (av.error.FFmpegError, OSError, EOFError) as err:
        raise ValueError(f"{name}: the stream ended before its first frame could be decoded ({_reason(err)})") from None
    raise ValueError(f"{name}: the stream ended before its first video frame")


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _open_error(name: str, kind: SourceKind, err: BaseException, elapsed: float, timeout: float, av: Any) -> str:
    """One line saying why a live source did not open."""
    code = getattr(err, "errno", None)
    if kind in ("url", "device") and (isinstance(err, av.error.ExitError) or elapsed >= 0.9 * timeout):
        return f"{name} did not answer within {timeout:g} s (is the stream running? a longer timeout may help)"
    if kind == "device":
        if code == errno.EBUSY:
            return f"{name} is busy: another program is using the camera"
        if code in (errno.EACCES, errno.EPERM):
            return f"{name}: permission denied (add your user to the 'video' group)"
        if code in (errno.ENOTTY, errno.EINVAL, errno.ENODEV, errno.EIO):
            return f"{name} is not a video capture device ({_reason(err)})"
    if code == errno.ECONNREFUSED:
        return f"cannot connect to {name}: connection refused (is the server running?)"
    if isinstance(err, av.error.InvalidDataError):
        return f"{name} is not a video stream FFmpeg can read ({_reason(err)})"
    return f"cannot open {name}: {_reason(err)}"


def _right_angle(degrees: float | int | None) -> int:
    """A display-matrix rotation as 0/90/180/270 counter-clockwise degrees (others: not applied)."""
    if not degrees:
        return 0
    quarter = round(float(degrees) / 90.0)
    if abs(float(degrees) - 90.0 * quarter) > 1.0:
        return 0
    return int(quarter % 4) * 90
