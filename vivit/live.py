"""Live video classification: one prediction per sliding window, as soon as the window has played.

`predict_stream(model, source)` reads a live source (`vivit.data.stream`: standard input, a pipe,
a named pipe, a V4L2 camera, a network URL) in order and yields a record per window of `window`
frames every `stride` frames, the windows and records of `vivit.predict_timeline` on the same
frames. A decoding thread reads the source into a small store that keeps only the frames some
window still needs; the model runs in the caller's thread through `vivit.windows.WindowRunner`,
so Model 2 encodes each tubelet slice once and a window costs its new frames.

Falling behind. A source that waits for its reader (standard input, pipes, FIFOs, files) is
paused while two complete windows wait for the model, so nothing is lost and the records are
exactly the timeline's. A source that cannot wait (a camera, a network stream) is read at its
own pace; when the model falls behind, waiting windows are skipped whole (only the newest
complete window is kept), never single frames inside a window, and each record says how many
windows were skipped just before it (`skipped`; the total is in `LiveStream.summary`).

The end. When the stream ends, the window that reaches its end is cut short there, as
`sliding_windows` cuts a file's last window: it is reported (not dropped), with `"partial": true`,
its clips placed inside the frames it has (looped when shorter than a clip). Ctrl-C
(KeyboardInterrupt) while the stream is read or a window computed ends the iteration cleanly, and
so does one anywhere inside `with predict_stream(...) as stream:`: the decoding thread stops, the
source is closed and `summary.interrupted` is set.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np
from torch import nn

from .data.sampling import sliding_windows, view_frame_indices
from .data.stream import LiveVideo, open_stream
from .data.transforms import resolve_data_config
from .data.video import VideoWarning
from .predict import inference_model, model_data_config, top_predictions
from .windows import WindowRunner, shares_slices

__all__ = ["LiveStream", "LiveSummary", "predict_stream"]

# Complete windows that may wait for the model before a source that can wait is paused.
_MAX_READY = 2
# How often a consumer waiting for frames wakes up (lets Ctrl-C through promptly).
_POLL_S = 0.2


@dataclass
class LiveSummary:
    """What a `predict_stream` run did so far (final once the iteration has ended).

    Attributes:
        source: The source as shown in messages.
        kind: Its kind (`vivit.data.stream.source_kind`).
        skip_late: Whether windows are skipped when the model falls behind.
        window, stride: Frames per window and between window starts.
        reuse: Whether Model 2's slice encodings are reused across windows.
        frames: Frames decoded.
        windows: Records yielded.
        skipped: Windows skipped because the model fell behind (never with `skip_late=False`).
        partial: Whether the last record is a window cut short by the end of the stream.
        interrupted: Ended by KeyboardInterrupt (Ctrl-C).
        end: Why it ended: "end of stream", "read error: ...", "interrupted", "closed" ("" while running).
        peak_frames: The most decoded frames held at once (the memory bound, in frames).
    """

    source: str
    kind: str
    skip_late: bool
    window: int
    stride: int
    reuse: bool
    frames: int = 0
    windows: int = 0
    skipped: int = 0
    partial: bool = False
    interrupted: bool = False
    end: str = ""
    peak_frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Window:
    index: int
    first: int
    last: int
    start_seconds: float
    end_seconds: float
    arrival: float  # when its last frame was decoded (or the stream ended, for a cut window)
    partial: bool


class LiveStream(Iterator[dict[str, Any]]):
    """The iterator `predict_stream` returns: records, window after window, as the stream plays.

    Each record has the keys of `vivit.predict.Timeline.records()` (`window`: its index on the
    stream's window grid, `start_frame`, `end_frame`, `start_seconds`, `end_seconds`,
    `predictions`) and `partial` (cut short by the end of the stream), `skipped` (windows skipped
    just before this one) and `latency_seconds` (from the decoding of the window's last frame to
    the record). `summary` says what happened so far. Close it (or use it as a context manager)
    to stop early; it is closed when exhausted, interrupted, or garbage collected.

    Ctrl-C: a KeyboardInterrupt while the iterator waits for frames or computes a window ends the
    iteration (no exception); one raised in the caller's own loop body propagates as usual, unless
    the loop runs inside `with predict_stream(...) as stream:`, whose exit ends it cleanly too.
    Either way `summary.interrupted` is set.
    """

    def __init__(
        self,
        video: LiveVideo,
        runner: WindowRunner,
        label_cfg: Mapping[str, Any],
        window: int,
        stride: int,
        top_k: int,
        skip_late: bool,
    ) -> None:
        self._video = video
        self._runner = runner
        self._label_cfg = label_cfg
        self._window, self._stride = window, stride
        self._top_k = top_k
        self._skip_late = skip_late
        self.summary = LiveSummary(
            source=video.name,
            kind=video.kind,
            skip_late=skip_late,
            window=window,
            stride=stride,
            reuse=runner.reuse,
        )
        # Which offsets inside a full window its views read: frames at no such offset of any
        # window are kept undecoded, and only while the window cut by the end may need them.
        rows = view_frame_indices(window, runner.num_frames, runner.frame_stride, runner.views[0])
        self._offsets = frozenset(rows.ravel().tolist())
        self._cond = threading.Condition()
        self._rgb: dict[int, np.ndarray] = {}  # frames full windows read, as RGB
        self._raw: dict[int, Any] = {}  # other frames (av.VideoFrame), for a window cut by the end
        self._times: dict[int, float] = {}
        self._last_duration: float | None = None  # of the newest frame: ends a window cut by the end
        self._ready: deque[_Window] = deque()
        self._next_full = 0  # the first window whose last frame has not arrived
        self._pending_skips = 0
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="vivit-live-decoder", daemon=True)
        self._generator = self._generate()
        self._thread.start()

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> LiveStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._generator)

    def close(self) -> None:
        """Stop reading: the decoding thread ends (at its next frame) and the source is closed."""
        self._generator.close()
        self._shutdown("closed")

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        """Closes the stream; a KeyboardInterrupt (Ctrl-C) anywhere in the `with` block ends it cleanly."""
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.summary.interrupted = True
            self._shutdown("interrupted")
        self.close()
        return self.summary.interrupted and exc_type is not None and issubclass(exc_type, KeyboardInterrupt)

    def __del__(self) -> None:
        self._stop.set()

    def _generate(self) -> Generator[dict[str, Any], None, None]:
        try:
            while True:
                with self._cond:
                    while not self._ready and not self._ended and self._error is None:
                        self._cond.wait(_POLL_S)
                    if self._error is not None:
                        raise self._error
                    if not self._ready:
                        break
                    win = self._ready.popleft()
                    skipped, self._pending_skips = self._pending_skips, 0
                    rows = np.unique(self._runner.clip_rows(win.first, win.last))
                    frames = {i: self._rgb.get(i, self._raw.get(i)) for i in rows.tolist()}
                    self._prune()
                    self._cond.notify_all()
                logits = self._runner.step(win.first, win.last, functools.partial(self._pixels, frames))
                del frames
                logits = logits.float().cpu()
                self.summary.windows += 1
                self.summary.partial = win.partial
                yield {
                    "window": win.index,
                    "start_frame": win.first,
                    "end_frame": win.last,
                    "start_seconds": win.start_seconds,
                    "end_seconds": win.end_seconds,
                    "predictions": top_predictions(logits, self._label_cfg, self._top_k),
                    "partial": win.partial,
                    "skipped": skipped,
                    "latency_seconds": time.monotonic() - win.arrival,
                }
            self._shutdown(self._video.end_reason or "end of stream")
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._shutdown("interrupted")
        finally:
            self._shutdown("closed")

    def _pixels(self, frames: dict[int, Any], indices: np.ndarray) -> np.ndarray:
        out = [
            frames[i] if isinstance(frames[i], np.ndarray) else self._video.to_rgb(frames[i]) for i in indices.tolist()
        ]
        return np.stack(out)

    def _shutdown(self, reason: str) -> None:
        if self.summary.end:  # done before
            return
        self.summary.end = reason
        self._stop.set()
        self._video.stop()
        with self._cond:
            self._cond.notify_all()
            self._rgb.clear()
            self._raw.clear()
            self._ready.clear()
        if threading.current_thread() is not self._thread:
            # Pipes wake within 0.2 s (`LiveVideo.stop`); a silent device or URL holds a read up to its
            # timeout: the daemon thread then closes the source itself when the read returns.
            self._thread.join(timeout=1.0)

    # ------------------------------------------------------------ the decoding thread
    def _needed(self, index: int) -> bool:
        """Whether some full window reads frame `index`."""
        k = index // self._stride
        while k >= 0 and index - k * self._stride < self._window:
            if index - k * self._stride in self._offsets:
                return True
            k -= 1
        return False

    def _produce(self) -> None:
        video = self._video
        window, stride = self._window, self._stride
        try:
            for item in video.frames():
                if self._stop.is_set():
                    break
                image = video.to_rgb(item.frame) if self._needed(item.index) else None
                with self._cond:
                    i = item.index
                    if image is not None:
                        self._rgb[i] = image
                    else:
                        self._raw[i] = item.frame
                    self._times[i] = item.seconds
                    self._last_duration = item.duration
                    self.summary.frames = i + 1
                    while self._next_full * stride + window <= i + 1:
                        first = self._next_full * stride
                        end = item.seconds + (item.duration if item.duration is not None else math.nan)
                        self._add_ready(
                            _Window(
                                self._next_full, first, first + window, self._times[first], end, item.arrival, False
                            )
                        )
                        self._next_full += 1
                    self._prune()
                    self.summary.peak_frames = max(self.summary.peak_frames, len(self._rgb) + len(self._raw))
                    self._cond.notify_all()
                    while not self._skip_late and len(self._ready) >= _MAX_READY and not self._stop.is_set():
                        self._cond.wait(_POLL_S)
                del item, image
            else:
                self._finish_stream()
        except BaseException as err:  # handed to the consumer thread, which raises it
            with self._cond:
                self._error = err
                self._cond.notify_all()
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            video.close()

    def _finish_stream(self) -> None:
        """At the end of the stream: the window that reaches it, cut short, as `sliding_windows` has it."""
        with self._cond:
            count = self.summary.frames
            if not count:
                return
            cut = sliding_windows(count, self._window, self._stride)[self._next_full :]
            last_time = self._times.get(count - 1, math.nan)
            duration = self._last_duration if self._last_duration is not None else math.nan
            for k, (first, last) in enumerate(cut.tolist(), start=self._next_full):
                self._add_ready(
                    _Window(k, first, last, self._times[first], last_time + duration, time.monotonic(), True)
                )
            if count < self._window:
                warnings.warn(
                    f"{self._video.name} ended after {count} frame{'' if count == 1 else 's'}, fewer than one window "
                    f"({self._window}): the only window is frames [0, {count})",
                    VideoWarning,
                    stacklevel=2,
                )

    def _add_ready(self, win: _Window) -> None:
        self._ready.append(win)
        if self._skip_late:  # the model is behind: only the newest complete window is kept
            while len(self._ready) > 1:
                self._ready.popleft()
                self._pending_skips += 1
                self.summary.skipped += 1

    def _prune(self) -> None:
        """Drop frames no window to come can read (called with the lock held)."""
        incomplete = self._next_full * self._stride  # the first window still filling (maybe cut at the end)
        low = min([w.first for w in self._ready] + [incomplete])
        for store, bound in ((self._rgb, low), (self._raw, incomplete), (self._times, incomplete)):
            for i in [i for i in store if i < bound]:  # dicts keep insertion (= frame) order
                del store[i]


def predict_stream(
    model: nn.Module,
    source: str | os.PathLike[str] | BinaryIO,
    window: int | None = None,
    stride: int | None = None,
    *,
    views: tuple[int, int] = (1, 1),
    pretrained_cfg: Mapping[str, Any] | None = None,
    top_k: int = 5,
    batch_size: int = 4,
    skip_late: bool | None = None,
    timeout: float = 10.0,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
) -> LiveStream:
    """Classifies a live video window by window, yielding each window's record as soon as it has played.

    The windows, their clips and views, and each record's fields are those of
    `vivit.predict_timeline` (window `window` frames every `stride`, the last one cut short at
    the end of the stream), so a file piped in gives the timeline of the file. Times are seconds
    from the stream's first frame; a window ends when its last frame does (its timestamp plus its
    duration, or one frame at the stream's rate). See the module docstring for slow models,
    the end of the stream and Ctrl-C.

    Example:
        >>> # ffmpeg -i rtsp://camera/stream -f mpegts - | python watch.py
        >>> with vivit.predict_stream(model, "-", window=64, stride=8) as stream:
        ...     for record in stream:
        ...         print(record["start_seconds"], record["predictions"][0]["label"])
        ...     print(stream.summary)

    Args:
        model: A ViViT classifier (any of the four models; Model 2 reuses slice encodings). It is
            used in eval mode without being modified (`vivit.predict.inference_model`).
        source: `"-"` (standard input), the path of a named pipe, a V4L2 device (`/dev/video0`) or a
            regular file, a URL PyAV opens (`rtsp://`, `udp://`, `http://`, ...) or a binary file
            object (see `vivit.data.stream.open_stream`).
        window: Frames per window (default: one model clip, `num_frames x frame_stride`).
        stride: Frames between window starts (default: the window).
        views: `(clips, crops)` per window, crops 1 or 3 (default `(1, 1)`).
        pretrained_cfg: Preprocessing cfg and label names; default the model's.
        top_k: Classes per window (per split) in `predictions`.
        batch_size: Clips per forward pass.
        skip_late: Skip windows when the model falls behind; default: for sources that cannot wait
            (devices, URLs), not for pipes, FIFOs, standard input and files.
        timeout: Seconds a device or URL may take to open and between two reads.
        format: FFmpeg input format, when probing cannot tell (e.g. `"mpegts"`).
        options: FFmpeg input options (e.g. `{"rtsp_transport": "tcp"}`).

    Returns:
        A `LiveStream`: iterate it for records; `summary` for the counts.

    Raises:
        ValueError: An unsupported model (not a module, no classifier head), bad window, stride,
            views, top_k or batch size, or a source that cannot be opened (one line saying why;
            see `open_stream`).
        FileNotFoundError: A path or device that does not exist.

    Warns:
        VideoWarning: Windows shorter than one clip spans (frames are looped), or a stream that
            ended before one window.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a vivit model (torch.nn.Module), got {type(model).__name__}")
    if getattr(model, "num_classes", 1) == 0 or isinstance(getattr(model, "head", None), nn.Identity):
        raise ValueError(
            "the model has no classifier head (num_classes=0): live prediction needs class logits; "
            "create it with a head (e.g. the released weights) or use vivit.windows for features"
        )
    for name, value, optional in (("window", window, True), ("stride", stride, True), ("top_k", top_k, False)):
        if (value is not None or not optional) and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")
    label_cfg = dict(pretrained_cfg) if pretrained_cfg is not None else model_data_config(model)[0]
    cfg = resolve_data_config(label_cfg)
    num_frames, frame_stride = cfg["input_size"][1], cfg["frame_stride"]
    window = num_frames * frame_stride if window is None else int(window)
    stride = window if stride is None else int(stride)
    runner_model = inference_model(model)
    grid = [(k * stride, k * stride + window) for k in range(window // stride + 2)]
    reuse = shares_slices(runner_model, grid, views=views, pretrained_cfg=cfg)
    runner = WindowRunner(
        runner_model, output="logits", views=views, pretrained_cfg=cfg, batch_size=batch_size, reuse=reuse
    )
    span = (num_frames - 1) * frame_stride + 1
    video = open_stream(source, timeout=timeout, format=format, options=options)
    if window < span:
        warnings.warn(
            f"windows of {window} frames of {video.name} are shorter than one clip spans ({num_frames} frames every "
            f"{frame_stride} = {span}): the frames of a window are repeated (looped) to fill its clip, as DMVR does "
            "for short videos",
            VideoWarning,
            stacklevel=2,
        )
    late = (not video.can_wait) if skip_late is None else bool(skip_late)
    return LiveStream(video, runner, label_cfg, window, stride, int(top_k), late)
