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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "multiview_clip_starts",
    "sample_frame_indices",
    "scenic_uniform_frame_indices",
    "sliding_windows",
    "view_frame_indices",
    "window_seconds",
]


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
