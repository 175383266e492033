"""Which frames a clip reads: DMVR/Scenic temporal sampling, as plain index arithmetic.

Everything here maps frame counts to frame indices (int64 numpy arrays); nothing decodes or
touches pixels, so a reader can decode only the frames a clip needs:

* `sample_frame_indices`, `multiview_clip_starts` follow `dmvr/processors.py`
  (`sample_sequence`, `sample_linspace_sequence`, `sample_or_pad_sequence_indices`): fixed
  stride, short videos loop around;
* `scenic_uniform_frame_indices` is Scenic's `sample_frames_uniformly`
  (`scenic/common_lib/video_utils.py`) including its float32 arithmetic;
* `sliding_windows` and `view_frame_indices` cut a video into windows (segments) and place the
  test clips of one segment, for dataset-scale feature extraction, evaluation and timelines;
  `window_seconds` gives the windows' spans in seconds from the frames' timestamps.

Sampling by time (`sample_fps`): the same three choices made on the frames' presentation
timestamps instead of their indices, so that a clip of `num_frames` frames spans
`num_frames / sample_fps` seconds in any file, whatever its frame rate (variable rates included):

* `sample_frame_indices_by_time` - one clip: the frames nearest to `start + i / sample_fps`;
* `view_frame_indices_by_time` - the evenly spaced test clips of a video or a segment;
* `sliding_windows_by_time` - windows every `stride` seconds, `window` seconds long.

They return source frame indices like their index counterparts, so the reader decodes only those
frames and records keep the `frame_indices` they used. With `sample_fps = fps / frame_stride` on
a constant-rate file they choose the frames index sampling chooses, up to where the two round a
clip's start. A `sample_fps` above the file's rate repeats frames (each sample is still the frame
whose timestamp is nearest). Index sampling, not these, is what Scenic evaluated the released
models with, and stays the default.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_sample_fps",
    "multiview_clip_starts",
    "sample_frame_indices",
    "sample_frame_indices_by_time",
    "scenic_uniform_frame_indices",
    "sliding_windows",
    "sliding_windows_by_time",
    "view_frame_indices",
    "view_frame_indices_by_time",
    "window_seconds",
]

# Timestamps closer than this are the same instant: a sample time that falls exactly between two
# frames goes to the earlier one, whatever the last bits of the float arithmetic say.
_SAME_INSTANT_SECONDS = 1e-9


def _positive_ints(**values: Any) -> list[int]:
    """Validates that every keyword is a positive integer and returns them as ints, in order.

    Args:
        **values: Name to value.

    Returns:
        The values as Python ints.
    """
    out = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        out.append(int(value))
    return out


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    stride: int,
    start: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Indices of one clip of `num_frames` frames taken every `stride` frames (DMVR convention).

    Index `i` is `(start + stride * i) % num_video_frames`: a video shorter than the clip's span
    loops back to its first frame, as DMVR's `sample_or_pad_sequence_indices(repeat_sequence=True)`
    does by tiling the video. The start is, in order of precedence:

    * `start` if given;
    * with a `generator` (training), uniform in `[0, max(num_video_frames - (num_frames - 1) *
      stride, 1))` so the whole clip fits when it can (DMVR `_get_random_sampling_offset`); pass
      `torch.default_generator` to use torch's global seed;
    * otherwise the centred clip, `max(0, (num_video_frames - num_frames * stride) // 2)`
      (DMVR `sample_sequence(random=False)`, which Scenic uses for single-clip evaluation).

    Args:
        num_video_frames: Frames in the decoded video.
        num_frames: Frames in the clip.
        stride: Distance between sampled frames.
        start: First frame index (>= 0; may exceed the video, it wraps).
        generator: Random source for a random start; ignored when `start` is given.

    Returns:
        int64 numpy array of shape `(num_frames,)`, for indexing a `(T, H, W, C)` array.
    """
    num_video_frames, num_frames, stride = _positive_ints(
        num_video_frames=num_video_frames, num_frames=num_frames, stride=stride
    )
    if start is None:
        if generator is not None:
            high = max(num_video_frames - (num_frames - 1) * stride, 1)
            start = int(torch.randint(high, (1,), generator=generator))
        else:
            start = max(0, (num_video_frames - num_frames * stride) // 2)
    elif isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    steps = int(start) + stride * np.arange(num_frames, dtype=np.int64)
    return steps % num_video_frames


def multiview_clip_starts(num_video_frames: int, num_frames: int, stride: int, num_clips: int) -> list[int]:
    """First frames of the `num_clips` evenly spaced test clips (DMVR/Scenic multi-clip testing).

    For `num_clips > 1` this is DMVR's `sample_linspace_sequence`: starts are
    `linspace(0, max(num_video_frames - num_frames * stride, 0), num_clips)` truncated to ints.
    Note the span DMVR subtracts is `num_frames * stride`, one stride more than the frames a clip
    really covers, and that its linspace runs in float32 (TF's `linspace`: `i * delta` with
    `delta` in float32, last value exactly the stop); both are mirrored here (the float32 rounding
    has not been seen to move a start for realistic lengths, but mirroring it costs nothing).
    Clips that do not fit wrap around (see `sample_frame_indices`).

    For `num_clips == 1` DMVR does not use the linspace (which would give start 0) but the centred
    clip of `sample_frame_indices`; this function returns that start so one call covers both.

    Args:
        num_video_frames: Frames in the decoded video.
        num_frames: Frames per clip.
        stride: Distance between sampled frames.
        num_clips: Number of clips.

    Returns:
        `num_clips` start indices, ascending.
    """
    num_video_frames, num_frames, stride, num_clips = _positive_ints(
        num_video_frames=num_video_frames, num_frames=num_frames, stride=stride, num_clips=num_clips
    )
    if num_clips == 1:
        return [max(0, (num_video_frames - num_frames * stride) // 2)]
    max_offset = max(0, num_video_frames - num_frames * stride)
    delta = np.float32(max_offset) / np.float32(num_clips - 1)
    inner = [int(delta * np.float32(i)) for i in range(1, num_clips - 1)]
    return [0, *inner, max_offset]


def scenic_uniform_frame_indices(num_frames: int, n: int) -> np.ndarray:
    """Frames kept by Scenic's uniform frame sampling (`video_utils.sample_frames_uniformly`).

    For `n < num_frames` Scenic takes `jnp.arange(T / (n + 1), T, T / (n + 1))` (float32, JAX's
    default), rounds half to even and clips to `T - 1`. Because the arange length comes from a
    float division it can hold `n + 1` entries (T=8, n=2 gives `[3, 5, 7]`), and the float32
    values differ from exact ones in places (T=13, n=11 keeps frame 7, not 6). For
    `n >= num_frames` every frame is kept, in order (Scenic does not repeat frames), so the result
    then has `num_frames` entries, not `n`.

    JAX builds a concrete float arange with `np.arange(..., dtype=float32)`, which is what this
    function calls, so the indices are identical to Scenic's, not an approximation.

    Args:
        num_frames: Frames in the input clip (T).
        n: Requested number of frames (Scenic's `n_sampled_frames`).

    Returns:
        int64 numpy array of frame indices (length `n`, occasionally `n + 1`, or `num_frames`).
    """
    num_frames, n = _positive_ints(num_frames=num_frames, n=n)
    if n >= num_frames:
        return np.arange(num_frames, dtype=np.int64)
    step = num_frames / (n + 1)
    positions = np.arange(step, num_frames, step, dtype=np.float32)
    indices = np.round(positions).astype(np.int64)
    return np.minimum(indices, num_frames - 1)


def sliding_windows(num_video_frames: int, window: int, stride: int) -> np.ndarray:
    """Consecutive windows `[start, end)` of source frames that cover a whole video.

    Windows start at frames `0, stride, 2 * stride, ...` and are `window` frames long; they stop
    with the first window that reaches the end of the video, which is cut short there (so every
    frame is in some window when `stride <= window`, and a video shorter than one window is a
    single window `[0, num_video_frames)`). This is the regular grid that per-window feature
    files (v-iashin/video_features, action-localisation inputs) use, with the tail kept rather
    than dropped; the cut window is recorded as it is, so a consumer can drop it.

    Args:
        num_video_frames: Frames in the video.
        window: Frames per window.
        stride: Frames between the starts of consecutive windows (`stride == window`: no
            overlap; `stride < window`: overlapping windows; `stride > window`: gaps).

    Returns:
        int64 numpy array `(num_windows, 2)`: first and one-past-last frame of each window.

    Raises:
        ValueError: If an argument is not a positive integer.
    """
    num_video_frames, window, stride = _positive_ints(num_video_frames=num_video_frames, window=window, stride=stride)
    # A window or stride past the end acts as one reaching the end (one window; no second start);
    # capping them keeps the int64 arithmetic below from overflowing on a huge value.
    window, stride = min(window, num_video_frames), min(stride, num_video_frames)
    # The last window is the first that reaches the end: start + window >= num_video_frames.
    count = max(0, -(-(num_video_frames - window) // stride)) + 1
    starts = stride * np.arange(count, dtype=np.int64)
    starts = starts[starts < num_video_frames]  # stride > window can step past the end
    return np.stack([starts, np.minimum(starts + window, num_video_frames)], axis=1)


def view_frame_indices(
    num_video_frames: int,
    num_frames: int,
    stride: int,
    clips: int,
    *,
    first: int = 0,
    last: int | None = None,
) -> np.ndarray:
    """Frame indices of the `clips` test clips of the segment `[first, last)` of a video.

    The segment is treated as a video of its own: its clips start as `multiview_clip_starts`
    places them (evenly spaced, or the centred clip when `clips == 1`) and are read as
    `sample_frame_indices` reads them (every `stride` frames, looping inside the segment when it
    is shorter than a clip). For the whole video (`first=0, last=None`) these are exactly the
    clips `vivit.predict_views` classifies.

    Args:
        num_video_frames: Frames in the video.
        num_frames: Frames per clip.
        stride: Distance between sampled frames.
        clips: Number of clips in the segment.
        first: First frame of the segment.
        last: One past the last frame of the segment (default: the end of the video).

    Returns:
        int64 numpy array `(clips, num_frames)` of frame indices into the video.

    Raises:
        ValueError: If a count is not a positive integer or the segment is empty or outside
            the video.
    """
    num_video_frames, num_frames, stride, clips = _positive_ints(
        num_video_frames=num_video_frames, num_frames=num_frames, stride=stride, clips=clips
    )
    end = num_video_frames if last is None else int(last)
    if not 0 <= int(first) < end <= num_video_frames:
        raise ValueError(
            f"segment [{first}, {last}) must be a non-empty range inside the video's {num_video_frames} frames"
        )
    length = end - int(first)
    starts = multiview_clip_starts(length, num_frames, stride, clips)
    rows = [sample_frame_indices(length, num_frames, stride, start=start) for start in starts]
    return np.stack(rows) + int(first)


def window_seconds(windows: np.ndarray, timestamps: np.ndarray, end_seconds: float | None) -> np.ndarray:
    """`[start, end)` of each window in seconds, from its `[start, end)` frames.

    A window starts when its first frame is presented and ends when the frame after it is (for
    the last frame of the video: at the end of the video), so consecutive windows share their
    boundary and a constant-rate video's spans are exactly `frames / fps`.

    Args:
        windows: int `(num_windows, 2)` first and one-past-last frame (e.g. `sliding_windows`).
        timestamps: float `(num_video_frames,)` presentation time of each frame in seconds
            (`vivit.VideoReader.timestamps`; NaN where unknown).
        end_seconds: When the last frame stops being shown (`VideoReader.duration_seconds`);
            None: unknown (NaN ends for windows that reach the end).

    Returns:
        float64 numpy array `(num_windows, 2)`.

    Raises:
        ValueError: If `windows` is not `(num_windows, 2)` or reaches past the timestamps.
    """
    windows = np.asarray(windows)
    times = np.asarray(timestamps, dtype=np.float64)
    if (
        windows.ndim != 2
        or windows.shape[1] != 2
        or (
            windows.size
            and not (windows.min() >= 0 and windows[:, 0].max() < len(times) and windows[:, 1].max() <= len(times))
        )
    ):
        raise ValueError(
            f"windows must be [start, end) frames (num_windows, 2) inside {len(times)} frames, got {windows.shape}"
        )
    ends = np.append(times, np.nan if end_seconds is None else end_seconds)
    return np.stack([times[windows[:, 0]], ends[windows[:, 1]]], axis=1).astype(np.float64)


# ---------------------------------------------------------------- sampling by time
def check_sample_fps(sample_fps: Any) -> float:
    """`sample_fps` as a float, or ValueError unless it is a finite positive number of frames per second."""
    if (
        isinstance(sample_fps, bool)
        or not isinstance(sample_fps, (int, float, np.integer, np.floating))
        or not math.isfinite(sample_fps)
        or sample_fps <= 0
    ):
        raise ValueError(f"sample_fps must be a positive number of frames per second, got {sample_fps!r}")
    return float(sample_fps)


def _frame_times(timestamps: Any) -> np.ndarray:
    """Validated presentation times: float64, 1-D, non-empty, finite, non-decreasing."""
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or not len(times):
        raise ValueError(f"timestamps must be a non-empty 1-D array of seconds, got shape {times.shape}")
    if not np.isfinite(times).all():
        raise ValueError(
            "the video has no timestamps (a frame array without a frame rate), so it cannot be sampled by time: "
            "store an 'fps' entry in the .npz or pass VideoReader(..., fps=...)"
        )
    if (np.diff(times) < 0).any():
        raise ValueError("timestamps must be in presentation order (non-decreasing)")
    return times


def _end_of(times: np.ndarray, end_seconds: float | None) -> float:
    """When the last frame stops being shown: `end_seconds`, else the last timestamp plus the median gap."""
    if end_seconds is not None:
        end = float(end_seconds)
        if not math.isfinite(end) or end < times[-1]:
            raise ValueError(f"end_seconds must be at or after the last timestamp {times[-1]:.6g}, got {end_seconds!r}")
        if end > times[-1]:
            return end
    gaps = np.diff(times)
    gap = float(np.median(gaps)) if len(gaps) else 0.0
    return float(times[-1] + gap) if gap > 0 else float(times[-1])


def _nearest_frames(times: np.ndarray, targets: np.ndarray, end: float) -> np.ndarray:
    """Index of the frame whose timestamp is nearest to each target time (ties: the earlier frame).

    Targets at or past `end` loop back to the first frame, as index sampling loops a short video.
    """
    first = times[0]
    period = end - first
    if period > 0:
        targets = first + np.mod(targets - first, period)
    if len(times) == 1:
        return np.zeros(len(targets), dtype=np.int64)
    right = np.clip(np.searchsorted(times, targets, side="left"), 1, len(times) - 1)
    left = right - 1
    earlier = (targets - times[left]) <= (times[right] - targets) + _SAME_INSTANT_SECONDS
    return np.where(earlier, left, right).astype(np.int64)


def sample_frame_indices_by_time(
    timestamps: Any,
    num_frames: int,
    sample_fps: float,
    start: float | None = None,
    *,
    end_seconds: float | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Indices of one clip of `num_frames` frames `1 / sample_fps` seconds apart, by presentation time.

    Sample `i` is the frame whose timestamp is nearest to `start + i / sample_fps` (ties go to
    the earlier frame), so the clip spans the same seconds whatever the file's frame rate, and
    follows a variable-rate video's real time. A `sample_fps` above the file's rate repeats frames.
    Sample times past the end of the video loop back to its start, as `sample_frame_indices`
    loops a short video (DMVR). The start is, in order of precedence (DMVR's rules, in seconds):

    * `start` if given;
    * with a `generator` (training), uniform in `[t0, max(t_last - (num_frames - 1) / sample_fps, t0)]`
      so the whole clip fits when it can (`t0`, `t_last`: the first and last timestamps);
    * otherwise the centred clip, `t0 + max(0, (duration - num_frames / sample_fps) / 2)`.

    Args:
        timestamps: float `(num_video_frames,)` presentation time of each frame in seconds, in
            order (`vivit.VideoReader.timestamps`: from the packet index, variable rates exact).
        num_frames: Frames in the clip.
        sample_fps: Samples per second (F): consecutive frames of the clip are `1 / F` s apart.
        start: Time of the first sample, in seconds on the clock of `timestamps` (>= 0).
        end_seconds: When the last frame stops being shown (`VideoReader.duration_seconds`);
            default: the last timestamp plus the median gap between frames.
        generator: Random source for a random start; ignored when `start` is given.

    Returns:
        int64 numpy array `(num_frames,)` of source frame indices.

    Raises:
        ValueError: If `sample_fps` is not a positive finite number, `num_frames` not a positive
            integer, `start` negative or not finite, or the timestamps are unknown (NaN: a frame
            array without a frame rate), not 1-D, or out of order.
    """
    times = _frame_times(timestamps)
    (num_frames,) = _positive_ints(num_frames=num_frames)
    rate = check_sample_fps(sample_fps)
    end = _end_of(times, end_seconds)
    first = float(times[0])
    if start is None:
        if generator is not None:
            room = max(float(times[-1]) - first - (num_frames - 1) / rate, 0.0)
            start = first + room * float(torch.rand((), generator=generator, dtype=torch.float64))
        else:
            start = first + max(0.0, (end - first - num_frames / rate) / 2)
    elif isinstance(start, bool) or not isinstance(start, (int, float, np.integer, np.floating)):
        raise ValueError(f"start must be a time in seconds, got {start!r}")
    elif not (math.isfinite(start) and start >= 0):
        raise ValueError(f"start must be a non-negative number of seconds, got {start!r}")
    with np.errstate(over="ignore"):
        targets = float(start) + np.arange(num_frames, dtype=np.float64) / rate
    if not np.isfinite(targets).all():
        raise ValueError(f"sample_fps {sample_fps!r} is too small: the clip would span more seconds than a float holds")
    return _nearest_frames(times, targets, end)


def view_frame_indices_by_time(
    timestamps: Any,
    num_frames: int,
    sample_fps: float,
    clips: int,
    *,
    first: int = 0,
    last: int | None = None,
    end_seconds: float | None = None,
) -> np.ndarray:
    """Frame indices of the `clips` test clips of the segment `[first, last)`, sampled by time.

    `view_frame_indices` by time: the segment (frames `[first, last)`, from the presentation of
    frame `first` to that of frame `last`, or the end of the video) is treated as a video of its
    own. One clip is centred in it; several start evenly spaced from its start to
    `duration - num_frames / sample_fps` (DMVR's multi-clip testing, in seconds); each is read as
    `sample_frame_indices_by_time` reads a clip (looping inside the segment when it is shorter).

    Args:
        timestamps: float `(num_video_frames,)` presentation times in seconds (`VideoReader.timestamps`).
        num_frames: Frames per clip.
        sample_fps: Samples per second of each clip.
        clips: Number of clips in the segment.
        first: First frame of the segment.
        last: One past the last frame of the segment (default: the end of the video).
        end_seconds: When the video's last frame stops being shown (`VideoReader.duration_seconds`);
            used when the segment reaches the end. Default as in `sample_frame_indices_by_time`.

    Returns:
        int64 numpy array `(clips, num_frames)` of frame indices into the video.

    Raises:
        ValueError: As `sample_frame_indices_by_time`, or if `clips` is not a positive integer or
            the segment is empty or outside the video.
    """
    times = _frame_times(timestamps)
    count = len(times)
    (num_frames, clips) = _positive_ints(num_frames=num_frames, clips=clips)
    rate = check_sample_fps(sample_fps)
    stop = count if last is None else int(last)
    if not 0 <= int(first) < stop <= count:
        raise ValueError(f"segment [{first}, {last}) must be a non-empty range inside the video's {count} frames")
    segment = times[int(first) : stop]
    end = _end_of(times, end_seconds) if stop == count else float(times[stop])
    if end <= segment[-1]:
        end = _end_of(segment, None)
    room = max(end - float(segment[0]) - num_frames / rate, 0.0)
    offsets = [room / 2] if clips == 1 else np.linspace(0.0, room, clips).tolist()
    rows = [
        sample_frame_indices_by_time(segment, num_frames, rate, float(segment[0]) + offset, end_seconds=end)
        for offset in offsets
    ]
    return np.stack(rows) + int(first)


def sliding_windows_by_time(
    timestamps: Any, window: float, stride: float, *, end_seconds: float | None = None
) -> np.ndarray:
    """Windows `[start, end)` of source frames every `stride` seconds, `window` seconds long.

    `sliding_windows` in seconds: window `k` holds the frames presented in
    `[t0 + k * stride, t0 + k * stride + window)`; the windows stop with the first that reaches
    the end of the video, cut short there. A window in which no frame is presented (a gap of a
    variable-rate video longer than the window) is left out. To give the window and stride as
    frames at the sampling rate F, as the command line's `--window` / `--stride` do with
    `--sample-fps`, pass `window / F` and `stride / F`.

    Args:
        timestamps: float `(num_video_frames,)` presentation times in seconds (`VideoReader.timestamps`).
        window: Seconds per window.
        stride: Seconds between the starts of consecutive windows.
        end_seconds: When the last frame stops being shown (`VideoReader.duration_seconds`);
            default as in `sample_frame_indices_by_time`.

    Returns:
        int64 numpy array `(num_windows, 2)`: first and one-past-last frame of each window (give
        it to `window_seconds` for their spans in seconds, to `view_frame_indices_by_time` as a
        segment).

    Raises:
        ValueError: If `window` or `stride` is not a positive finite number of seconds, the stride
            is so short that the windows would outnumber the frames a hundredfold, or the
            timestamps are unknown or out of order.
    """
    times = _frame_times(timestamps)
    for name, value in (("window", window), ("stride", stride)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    end = _end_of(times, end_seconds)
    origin, duration = float(times[0]), end - float(times[0])
    # The last window is the first that reaches the end: start + window >= end.
    steps = max(duration - window, 0.0) / stride
    limit = 100 * len(times) + 1000  # (a stride far below the frames' spacing: an absurd request)
    if not steps < limit:
        raise ValueError(
            f"a stride of {stride:g} s cuts {duration:.6g} s into more than {limit} windows, for {len(times)} "
            "frames; give a longer stride"
        )
    count = math.ceil(steps - _SAME_INSTANT_SECONDS) + 1 if steps > 0 else 1
    starts = origin + stride * np.arange(count, dtype=np.float64)
    starts = starts[starts < end - _SAME_INSTANT_SECONDS]
    # A frame presented within a nanosecond before a boundary is on it (float rounding of k / F).
    first = np.searchsorted(times, starts - _SAME_INSTANT_SECONDS, side="left")
    last = np.searchsorted(times, starts + window - _SAME_INSTANT_SECONDS, side="left")
    keep = last > first
    return np.stack([first[keep], last[keep]], axis=1).astype(np.int64)
