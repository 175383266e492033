"""Multi-view video classification: Scenic's clips x crops test protocol for one video, and a
timeline of predictions over sliding windows of a long video.

A video is a file path, a `vivit.VideoReader` or a decoded uint8 frame array. Frame indices are
chosen first (`vivit.data.sampling`) and only those frames are decoded, one clip at a time, so
memory does not grow with the video's length. The model is never modified: its train/eval mode
and state stay as they are, and one model can serve several threads at once.

Nothing here prints: results are returned, short or damaged videos are reported with
`VideoWarning`, and progress goes to an optional callback `progress(done, total)` (the command
line draws it as a bar). The helpers that the other jobs share (`iter_views`, `sum_view_outputs`,
`window_and_stride`, `check_classifier`) are public.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from .data.sampling import (
    multiview_clip_starts,
    sample_frame_indices,
    sliding_windows,
    sliding_windows_by_time,
    view_frame_indices,
    view_frame_indices_by_time,
    window_seconds,
)
from .data.transforms import as_thwc, complete_cfg_from_model, crop_test_views, resolve_data_config
from .data.video import VideoReader, VideoWarning
from .windows import WindowRunner, shares_slices

__all__ = [
    "ProgressFn",
    "Timeline",
    "UntrainedHeadError",
    "Video",
    "check_classifier",
    "class_probabilities",
    "classify_video",
    "has_untrained_head",
    "inference_model",
    "iter_views",
    "model_data_config",
    "predict_timeline",
    "predict_views",
    "sampled_windows",
    "sum_view_outputs",
    "top_predictions",
    "untrained_head_reason",
    "window_and_stride",
    "window_clip_rows",
]

#: What the inference jobs take as a video: a file path (decoded with `vivit.VideoReader`, only
#: the frames each clip needs), an open `VideoReader`, or decoded uint8 frames `(T, H, W, C)`
#: (numpy or torch; torchvision's `(T, C, H, W)` as a torch tensor).
Video = str | os.PathLike[str] | VideoReader | np.ndarray | torch.Tensor

#: A job's progress callback: called as `progress(done, total)` after each step (a view, a window, a
#: video), `done` counting the steps finished so far out of `total`.
ProgressFn = Callable[[int, int], None]


def _progress_fn(progress: ProgressFn | bool | None) -> ProgressFn | None:
    """The callback, or None; `progress=True` (vivit 0.1 drew a tqdm bar) is refused with what to pass."""
    if progress is None or progress is False:
        return None
    if progress is True or not callable(progress):
        raise TypeError(
            f"progress must be a callable progress(done, total) or None, got {progress!r} (vivit's functions no "
            "longer draw bars: pass e.g. a tqdm bar's update, or use the command line)"
        )
    return progress


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype the model's inputs should have.

    Args:
        model: Any module.

    Returns:
        Device and dtype of the first floating parameter (or buffer); CPU / float32 if none.
    """
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


def inference_model(model: _ModuleT) -> _ModuleT:
    """The model in eval mode without touching it: itself if already in eval mode, else a copy.

    The copy is shallow where it matters: every parameter and buffer is the model's own (no
    memory is duplicated and later weight updates are seen), only the module objects and their
    plain attributes are new, so that `copy.eval()` switches off dropout and drop-path without
    flipping the caller's model out of training mode (which another thread may be using).

    Args:
        model: Any module.

    Returns:
        A module in eval mode computing what `model.eval()` would.

    Raises:
        ValueError: If the model is in training mode and cannot be copied; call `model.eval()`.
    """
    if not any(module.training for module in model.modules()):
        return model
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        twin = copy.deepcopy(model, memo)
    except Exception as err:  # modules holding locks, files, compiled graphs, ...
        raise ValueError(
            f"the model ({type(model).__name__}) is in training mode and could not be copied into an "
            f"eval-mode twin ({type(err).__name__}: {err}); call model.eval() before inference"
        ) from None
    return twin.eval()


class _ClipSource:
    """Frames of one video by index: from a reader (decoding only those) or from an array."""

    def __init__(self, video: Video, channels: int, stack: ExitStack) -> None:
        if isinstance(video, (str, os.PathLike)):
            video = stack.enter_context(VideoReader(video))
        if isinstance(video, VideoReader):
            self.reader: VideoReader | None = video
            self.frames: torch.Tensor | None = None
            self.name = str(video.path)
            self.length = len(video)
            self.timestamps = video.timestamps
            self.end_seconds = video.duration_seconds
        else:
            self.reader = None
            self.frames = as_thwc(video, channels)
            self.name = "the video"
            self.length = int(self.frames.shape[0])
            self.timestamps = np.full(self.length, np.nan)  # frames carry no times: sampling by time refuses them
            self.end_seconds = None

    def window_seconds(self, windows: np.ndarray) -> np.ndarray:
        """`[start, end)` seconds of frame windows `(n, 2)`; NaN for frames without a frame rate."""
        if self.reader is not None:
            return window_seconds(windows, self.reader.timestamps, self.reader.duration_seconds)
        return np.full(windows.shape, np.nan)

    def clip(self, indices: np.ndarray) -> torch.Tensor:
        if self.reader is not None:
            return torch.from_numpy(self.reader.get_frames_at(indices))
        frames = self.frames
        assert frames is not None
        return frames[torch.from_numpy(indices).to(frames.device)]


def iter_views(
    video: Video,
    clips: int,
    crops: int,
    pretrained_cfg: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Yields the `clips x crops` test views of one video, one at a time, clip-major.

    Each clip is `input_size[1]` frames every `frame_stride` frames, started as in
    `multiview_clip_starts` (evenly spaced; the centred clip when `clips == 1`; videos shorter
    than a clip loop, with a `VideoWarning`). With a `sample_fps` in the cfg (sampling by time),
    a clip's frames are instead `1 / sample_fps` seconds apart by their timestamps and the clips
    placed by `vivit.data.sampling.view_frame_indices_by_time`, so a clip spans
    `input_size[1] / sample_fps` seconds whatever the file's rate (a frame array has no times: it
    is refused). Only the current clip's frames are decoded (for a
    path or a `VideoReader`), resized and cropped (`three_crops` when `crops == 3`, one
    `center_crop` when `crops == 1`) and normalized, so memory does not grow with the video.

    Args:
        video: A path, a `vivit.VideoReader` or uint8 frames (see `Video`). A path is opened
            here (errors are raised at once) and closed when the iterator is exhausted or
            garbage collected.
        clips: Number of temporal clips.
        crops: Spatial crops per clip, 1 or 3.
        pretrained_cfg: Preprocessing cfg (see `vivit.data.transforms.resolve_data_config`).
        device: Where the views are built (default: where the frames are; the CPU for files).

    Returns:
        An iterator of float32 `(C, T, h, w)` views.

    Raises:
        ValueError: For bad arguments or frames, a file that cannot be read (see
            `vivit.VideoReader`; also FileNotFoundError), or a cfg `sample_fps` for frames without
            timestamps (a frame array).

    Warns:
        VideoWarning: If the video has fewer frames (seconds) than one clip spans, so frames repeat.
    """
    cfg = resolve_data_config(pretrained_cfg)
    channels, num_frames = cfg["input_size"][:2]
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 (centre) or 3 (left/centre/right), got {crops!r}")
    if isinstance(clips, bool) or not isinstance(clips, (int, np.integer)) or clips < 1:
        raise ValueError(f"clips must be a positive integer, got {clips!r}")
    stack = ExitStack()
    try:
        source = _ClipSource(video, channels, stack)
    except BaseException:
        stack.close()
        raise
    span = (num_frames - 1) * cfg["frame_stride"] + 1
    if cfg["sample_fps"] is not None:
        try:
            rows = _time_rows(source, cfg, clips)  # refuses frames without times now, not at the first view
        except BaseException:
            stack.close()
            raise
        duration = (source.end_seconds or math.nan) - float(source.timestamps[0])
        if duration < num_frames / cfg["sample_fps"]:
            warnings.warn(
                f"{source.name} lasts {duration:.3g} s, less than one clip spans ({num_frames} frames at "
                f"{cfg['sample_fps']:g} per second = {num_frames / cfg['sample_fps']:.3g} s); its frames are repeated "
                "(looped), as DMVR does",
                VideoWarning,
                stacklevel=2,
            )
        return _generate_views(source, stack, int(clips), crops, cfg, num_frames, device, rows)
    if source.length < span:
        frames = f"{source.length} frame{'' if source.length == 1 else 's'}"
        warnings.warn(
            f"{source.name} has {frames}, fewer than one clip spans ({num_frames} frames every "
            f"{cfg['frame_stride']} = {span}); its frames are repeated (looped), as DMVR does",
            VideoWarning,
            stacklevel=2,
        )
    return _generate_views(source, stack, int(clips), crops, cfg, num_frames, device)


def _time_rows(source: _ClipSource, cfg: Mapping[str, Any], clips: int) -> np.ndarray:
    """The test clips of a whole video sampled by time, `(clips, num_frames)` (`view_frame_indices_by_time`)."""
    try:
        return view_frame_indices_by_time(
            source.timestamps, cfg["input_size"][1], cfg["sample_fps"], clips, end_seconds=source.end_seconds
        )
    except ValueError as err:
        raise ValueError(f"{source.name}: {err}") from None


def _generate_views(
    source: _ClipSource,
    stack: ExitStack,
    clips: int,
    crops: int,
    cfg: Mapping[str, Any],
    num_frames: int,
    device: torch.device | str | None,
    rows: np.ndarray | None = None,
) -> Iterator[torch.Tensor]:
    """The generator behind `iter_views` (kept separate so argument errors raise eagerly).

    Args:
        source: Where the clips' frames come from.
        stack: Closes a reader opened for a path, when the generator ends.
        clips: Number of temporal clips.
        crops: 1 or 3.
        cfg: Resolved preprocessing cfg.
        num_frames: Frames per clip.
        device: Where the views are built.
        rows: The clips' frames `(clips, num_frames)` when chosen by time; None: DMVR's index sampling.

    Yields:
        float32 `(C, T, h, w)` views.
    """
    with stack:
        stride = cfg["frame_stride"]
        if rows is None:
            starts = multiview_clip_starts(source.length, num_frames, stride, clips)
            rows = np.stack([sample_frame_indices(source.length, num_frames, stride, start=start) for start in starts])
        for row in rows:
            clip_frames = source.clip(row)
            if device is not None:
                # Moving uint8 before resizing keeps the transfer 4x smaller and resizes on device.
                clip_frames = clip_frames.to(device)
            yield from crop_test_views(clip_frames, crops, cfg)
            del clip_frames


_ItemT = TypeVar("_ItemT")


def _batched(views: Iterator[_ItemT], size: int) -> Iterator[list[_ItemT]]:
    """Groups an iterator into lists of at most `size` items, pulling lazily.

    Args:
        views: Source iterator.
        size: Maximum group length.

    Yields:
        Lists of up to `size` items.
    """
    batch: list[_ItemT] = []
    for view in views:
        batch.append(view)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_views(
    model: nn.Module,
    video: Video,
    clips: int | None = None,
    crops: int | None = None,
    *,
    pretrained_cfg: Mapping[str, Any] | None = None,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    sample_fps: float | None = None,
) -> torch.Tensor:
    """Classifies one video with Scenic's multi-view test protocol and averages the raw logits.

    Builds `clips x crops` views (see `iter_views`), runs the model on them in batches of
    `batch_size` under `torch.inference_mode()` in eval mode, and returns the mean of the
    logits over all views. Scenic averages logits, not probabilities; apply softmax (or, for the
    Epic-Kitchens heads, split nouns/verbs) afterwards. Views are built lazily, so at most
    `batch_size` of them (plus one clip's frames) exist at a time; for a path or a reader only
    the frames of the clips are decoded.

    The model is left untouched: a model in training mode is run through an eval-mode copy that
    shares its parameters (`inference_model`), so its mode never flips and several threads may
    call this on one model at the same time.

    Example:
        >>> model = vivit.create_model("vivit_b_st_k400", pretrained=True)
        >>> logits = predict_views(model, "clip.mp4")  # 4 clips x 3 crops
        >>> top5 = logits.softmax(-1).topk(5)

    Args:
        model: A ViViT classifier mapping `(B, C, T, H, W)` to `(B, num_classes)` logits.
        video: One video: a file path, a `vivit.VideoReader`, or its decoded uint8 frames
            `(T, H, W, C)` (numpy or torch, any device; see `Video`). For a batch of videos,
            call once per video (their lengths and views differ).
        clips: Temporal clips (default: `test_views[0]` of the cfg; 4 for the released models).
        crops: Spatial crops per clip, 1 (centre) or 3 (default: `test_views[1]`).
        pretrained_cfg: Preprocessing cfg; default `resolve_data_config(model=model)`: the
            model's `pretrained_cfg`, completed from its own `num_frames` / `img_size` when it has
            no `input_size`, then `vivit.data.transforms.DEFAULT_DATA_CFG` for missing keys.
        batch_size: Views per forward pass.
        progress: Called as `progress(views_done, total_views)` after each batch (e.g. to draw a bar).
        sample_fps: Choose frames by presentation time, `sample_fps` per second (a clip spans
            `num_frames / sample_fps` seconds in any file; `vivit.data.sampling.*_by_time`), instead
            of every `frame_stride`-th frame. Default: the cfg's `sample_fps` (None in the released
            Kinetics models' cfgs: index sampling, as Scenic evaluated them). Above the file's rate,
            frames repeat (each sample is the frame nearest its time).

    Returns:
        float32 tensor `(num_classes,)` of view-averaged logits, on the model's device.

    Raises:
        ValueError: For bad arguments, frames or model outputs, a file that cannot be read
            (see `vivit.VideoReader`; also FileNotFoundError), a `sample_fps` that is not a
            positive number, or sampling by time on frames without timestamps (a frame array).
        TypeError: `progress` is not a callable.

    Warns:
        VideoWarning: For a truncated file, or a video shorter than one clip (looped).
    """
    report = _progress_fn(progress)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    cfg = (
        resolve_data_config(pretrained_cfg, sample_fps=sample_fps)
        if pretrained_cfg is not None
        else resolve_data_config(model=model, sample_fps=sample_fps)  # the model's own sizes when its cfg has none
    )
    clips = cfg["test_views"][0] if clips is None else clips
    crops = cfg["test_views"][1] if crops is None else crops
    device, dtype = _model_device_dtype(model)
    views = iter_views(video, clips, crops, cfg, device)
    total = clips * crops
    logit_sum = sum_view_outputs(
        inference_model(model), views, batch_size=int(batch_size), dtype=dtype, total=total, progress=report
    )
    return logit_sum / total


def classify_video(
    model: nn.Module,
    video: Video,
    views: tuple[int, int] | None = None,
    *,
    pretrained_cfg: Mapping[str, Any] | None = None,
    top_k: int = 5,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    sample_fps: float | None = None,
) -> dict[str, Any]:
    """One video's answer as `vivit predict` gives it: the test views' averaged logits, then the top-k.

    Args:
        model: A ViViT classifier.
        video: A file path, a `vivit.VideoReader` or uint8 frames (see `Video`).
        views: `(clips, crops)`; default the cfg's `test_views`.
        pretrained_cfg: Preprocessing cfg and label names; default `model_data_config(model)`.
        top_k: Classes (per split) in `predictions`.
        batch_size: Views per forward pass.
        progress: Called as `progress(views_done, total_views)`.
        sample_fps: Frames by presentation time (see `predict_views`).

    Returns:
        `{"views": [clips, crops], "predictions": top_predictions(...), "logits": float32 (num_classes,)
        CPU tensor}`.

    Raises:
        ValueError, FileNotFoundError: As `predict_views`.
    """
    cfg = dict(pretrained_cfg) if pretrained_cfg is not None else model_data_config(model)[0]
    clips, crops = views or resolve_data_config(cfg)["test_views"]
    logits = predict_views(
        model, video, clips, crops, pretrained_cfg=cfg, batch_size=batch_size, progress=progress, sample_fps=sample_fps
    ).cpu()
    return {"views": [int(clips), int(crops)], "predictions": top_predictions(logits, cfg, top_k), "logits": logits}


def window_and_stride(cfg: Mapping[str, Any], window: int | None, stride: int | None) -> tuple[int, int]:
    """Frames per window and between window starts, defaults filled in (`predict_timeline`, `vivit.features`).

    `window=None`: one model clip, `num_frames x frame_stride` frames (a clip's frames with the
    gap after its last one, so that consecutive windows tile the video); with a `sample_fps` in the
    cfg (sampling by time) windows count frames at that rate, so one clip is `num_frames` of them.
    `stride=None`: the window (no overlap). `window=0` (the whole video, for features) stays 0.

    Args:
        cfg: A preprocessing cfg (`input_size`, `frame_stride` are read).
        window: Frames per window, or None.
        stride: Frames between window starts, or None.

    Returns:
        `(window, stride)` in frames.
    """
    resolved = resolve_data_config(cfg)
    num_frames, frame_stride = resolved["input_size"][1], resolved["frame_stride"]
    if resolved["sample_fps"] is not None:  # frames at the sampling rate: one clip is num_frames of them
        frame_stride = 1
    window = num_frames * frame_stride if window is None else int(window)
    return window, int(stride) if stride else window


def sampled_windows(
    cfg: Mapping[str, Any],
    window: int,
    stride: int,
    count: int,
    timestamps: np.ndarray | None = None,
    end_seconds: float | None = None,
) -> np.ndarray:
    """The windows of one video as `[first, last)` source frames, int64 `(num_windows, 2)`.

    Index sampling (the cfg has no `sample_fps`): `sliding_windows(count, window, stride)`. By time:
    `window` and `stride` count frames at the sampling rate F, so windows are `window / F` seconds
    long every `stride / F` seconds (`sliding_windows_by_time`): the same seconds in any file.

    Args:
        cfg: A preprocessing cfg (`sample_fps` is read).
        window: Frames per window (`window_and_stride`).
        stride: Frames between window starts.
        count: Frames in the video.
        timestamps: float `(count,)` presentation times (`VideoReader.timestamps`); needed by time.
        end_seconds: `VideoReader.duration_seconds`.

    Raises:
        ValueError: Sampling by time without timestamps (a frame array), or a bad window or stride.
    """
    rate = resolve_data_config(cfg)["sample_fps"]
    if rate is None:
        return sliding_windows(count, window, stride)
    times = np.full(count, np.nan) if timestamps is None else timestamps
    return sliding_windows_by_time(times, window / rate, stride / rate, end_seconds=end_seconds)


def window_clip_rows(
    cfg: Mapping[str, Any],
    clips: int,
    count: int,
    timestamps: np.ndarray | None = None,
    end_seconds: float | None = None,
) -> Callable[[int, int], np.ndarray]:
    """Which source frames the `clips` test clips of window `[first, last)` read: `(first, last) -> (clips, T)`.

    Index sampling: `view_frame_indices` (`num_frames` frames `frame_stride` apart); with a
    `sample_fps` in the cfg: `view_frame_indices_by_time`, frames `1 / sample_fps` seconds apart.
    It is the `clip_rows=` of `vivit.windows.WindowRunner`.

    Args:
        cfg: A preprocessing cfg (`input_size`, `frame_stride`, `sample_fps` are read).
        clips: Test clips per window.
        count: Frames in the video.
        timestamps: Presentation times (needed by time).
        end_seconds: `VideoReader.duration_seconds`.
    """
    resolved = resolve_data_config(cfg)
    num_frames, frame_stride, rate = resolved["input_size"][1], resolved["frame_stride"], resolved["sample_fps"]
    if rate is None:
        return lambda first, last: view_frame_indices(count, num_frames, frame_stride, clips, first=first, last=last)
    times = np.full(count, np.nan) if timestamps is None else timestamps
    return lambda first, last: view_frame_indices_by_time(
        times, num_frames, rate, clips, first=first, last=last, end_seconds=end_seconds
    )


@dataclass(frozen=True)
class Timeline:
    """Predictions of a model on consecutive windows of one video (`predict_timeline`).

    Window `i` covers source frames `[window_frames[i, 0], window_frames[i, 1])`, presented from
    `window_seconds[i, 0]` until `window_seconds[i, 1]` seconds (when the frame after it is
    presented, or the video ends), so for a constant frame rate a span is its frames / fps.

    Attributes:
        window_frames: int64 numpy `(num_windows, 2)`: first and one-past-last frame of each window.
        window_seconds: float64 numpy `(num_windows, 2)`: the same in seconds from the first frame
            (NaN for decoded frames or a frame array without a frame rate).
        logits: float32 `(num_windows, num_classes)` CPU tensor, each window's logits averaged over
            its views (Scenic averages logits, not probabilities).
        probabilities: float32 `(num_windows, num_classes)`: softmax of `logits` (per class split).
        predictions: Per window, its top-k as `top_predictions` gives them.
        labels: The name of every class (`"split: name"` for split heads such as Epic-Kitchens').
        video_frames: Frames in the video.
        video_fps: Its average frame rate (`VideoReader.average_fps`); None when unknown.
        window: Frames per window (the last window is cut short at the end of the video).
        stride: Frames between the starts of consecutive windows.
        views: `(clips, crops)` classified per window.
        sample_fps: None: index sampling (window and stride are source frames); else frames were
            chosen by time at this rate, and window and stride count frames at this rate
            (`window / sample_fps` seconds every `stride / sample_fps`).
    """

    window_frames: np.ndarray
    window_seconds: np.ndarray
    logits: torch.Tensor
    probabilities: torch.Tensor
    predictions: list[list[dict[str, Any]]]
    labels: list[str]
    video_frames: int
    video_fps: float | None
    window: int
    stride: int
    views: tuple[int, int]
    sample_fps: float | None = None

    def __len__(self) -> int:
        return len(self.window_frames)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per window: `window` (its index), `start_frame`, `end_frame` (one past
        the last), `start_seconds`, `end_seconds` (NaN when unknown) and `predictions` (top-k)."""
        return [
            {
                "window": i,
                "start_frame": int(frames[0]),
                "end_frame": int(frames[1]),
                "start_seconds": float(seconds[0]),
                "end_seconds": float(seconds[1]),
                "predictions": top,
            }
            for i, (frames, seconds, top) in enumerate(
                zip(self.window_frames, self.window_seconds, self.predictions, strict=True)
            )
        ]


def _check_count(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


def predict_timeline(
    model: nn.Module,
    video: Video,
    window: int | None = None,
    stride: int | None = None,
    *,
    views: tuple[int, int] = (1, 1),
    pretrained_cfg: Mapping[str, Any] | None = None,
    top_k: int = 5,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    reuse: bool | None = None,
    sample_fps: float | None = None,
) -> Timeline:
    """Classifies every window of a video: what happens when, along a long video.

    The video is cut into windows of `window` frames starting every `stride` frames
    (`vivit.data.sampling.sliding_windows`: the last window reaches the end of the video and is
    cut short there; a video shorter than a window is one window). Each window is classified as
    `predict_views` classifies a whole video, with the window as the video: its `clips` test
    clips placed by `view_frame_indices` (one clip: the centred one), `crops` crops each, logits
    averaged over the views. Windows and names follow `vivit features` (same defaults, same
    `window_frames` / `window_seconds`), so a timeline lines up with a features file.

    Dense windows at the cost of their new frames: for Model 2 the windows run through
    `vivit.windows.WindowRunner`, which encodes each tubelet slice once per video and crop and runs
    only the temporal encoder per window (see `reuse`); a 64-frame window every 8 frames then costs
    about an eighth of computing it from its pixels.

    Memory does not grow with the video: only the frames of the current windows' clips are
    decoded (for a path or a `VideoReader`), at most about `batch_size` clips of views exist at a
    time, and Model 2's slice cache holds one window's slice embeddings. The model is used in eval
    mode without being modified (`inference_model`).

    Example:
        >>> timeline = predict_timeline(model, "match.mp4", window=64, stride=32)
        >>> for record in timeline.records():
        ...     print(record["start_seconds"], record["predictions"][0]["label"])

    Args:
        model: A ViViT classifier mapping `(B, C, T, H, W)` to `(B, num_classes)` logits.
        video: A file path, a `vivit.VideoReader` or uint8 frames (see `Video`; frames carry no
            times, so their `window_seconds` are NaN).
        window: Frames per window (default: one model clip, `num_frames x frame_stride`).
        stride: Frames between window starts (default: the window, i.e. no overlap; less than
            the window: overlapping windows; more: gaps).
        views: `(clips, crops)` per window, crops 1 or 3 (default `(1, 1)`: the centred clip, centre
            crop, as `vivit features` does; a window of one clip span holds one distinct clip).
        pretrained_cfg: Preprocessing cfg and label names; default `model_data_config(model)`.
        top_k: Classes per window (per split) in `predictions`.
        batch_size: Views per forward pass.
        progress: Called as `progress(windows_done, total_windows)` as windows are finished.
        reuse: Model 2 (`FactorizedEncoderViViT`) only: encode each tubelet slice once per video and
            crop and run only the temporal encoder per window (`vivit.windows.WindowRunner`; equal to
            recomputing within 1e-5 in fp32). None (default): when windows share slices
            (`vivit.windows.shares_slices`: a stride that is a multiple of `frame_stride x tubelet_size`
            frames, overlapping windows); False: every window from its pixels. Models 1, 3 and 4 attend
            across time in every block, so they always compute every window whole.
        sample_fps: Sampling by time (default: the cfg's `sample_fps`, None for the released models):
            `window` and `stride` count frames at this rate, so windows are `window / sample_fps`
            seconds long every `stride / sample_fps` seconds (`sliding_windows_by_time`), and each
            window's clips read frames `1 / sample_fps` seconds apart (`view_frame_indices_by_time`):
            the same seconds whatever the file's frame rate. Default window: one clip, `num_frames`.

    Returns:
        A `Timeline`.

    Raises:
        ValueError: For a window, stride, views, top_k or batch_size that is not a positive
            integer (crops not 1 or 3), bad frames or model outputs, a file that cannot be read
            (see `vivit.VideoReader`; also FileNotFoundError), a `sample_fps` that is not a positive
            number, or sampling by time on frames without timestamps.
        TypeError: `progress` is not a callable.

    Warns:
        VideoWarning: When the video is shorter than one window (it is one window), when the
            windows are shorter than one clip spans (a window's frames repeat to fill its clip),
            or for a truncated file.
    """
    report = _progress_fn(progress)
    _check_count("window", window, optional=True)
    _check_count("stride", stride, optional=True)
    _check_count("top_k", top_k)
    _check_count("batch_size", batch_size)
    if not (isinstance(views, (tuple, list)) and len(views) == 2):
        raise ValueError(f"views must be (clips, crops), got {views!r}")
    clips, crops = views
    _check_count("clips", clips)
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 (centre) or 3 (left/centre/right), got {crops!r}")
    label_cfg = dict(pretrained_cfg) if pretrained_cfg is not None else model_data_config(model)[0]
    cfg = resolve_data_config(label_cfg, sample_fps=sample_fps)
    channels, num_frames = cfg["input_size"][:2]
    frame_stride = cfg["frame_stride"]
    window, stride = window_and_stride(cfg, window, stride)
    runner = inference_model(model)
    with ExitStack() as stack:
        source = _ClipSource(video, channels, stack)
        count = source.length
        if cfg["sample_fps"] is not None:
            return _timeline_by_time(
                runner, source, cfg, label_cfg, window, stride, views, top_k, batch_size, report, reuse
            )
        windows = sliding_windows(count, window, stride)
        span = (num_frames - 1) * frame_stride + 1
        if count < window:
            warnings.warn(
                f"{source.name} has {count} frame{'' if count == 1 else 's'}, fewer than one window ({window}): "
                f"the timeline is one window, frames [0, {count})",
                VideoWarning,
                stacklevel=2,
            )
        if min(window, count) < span:
            warnings.warn(
                f"{'the window' if count < window else f'windows of {window} frames'} of {source.name} "
                f"{'is' if count < window else 'are'} shorter than one clip spans ({num_frames} frames every "
                f"{frame_stride} = {span}): the frames of a window are repeated (looped) to fill its clip, as DMVR "
                "does for short videos",
                VideoWarning,
                stacklevel=2,
            )
        seconds = source.window_seconds(windows)
        fps = source.reader.average_fps if source.reader is not None else None
        logits = _window_logits(runner, source, windows, cfg, (int(clips), crops), int(batch_size), report, reuse)
    return _timeline(logits, label_cfg, windows, seconds, top_k, count, fps, window, stride, (int(clips), crops), None)


def _timeline(
    logits: torch.Tensor,
    label_cfg: Mapping[str, Any],
    windows: np.ndarray,
    seconds: np.ndarray,
    top_k: int,
    count: int,
    fps: float | None,
    window: int,
    stride: int,
    views: tuple[int, int],
    sample_fps: float | None,
) -> Timeline:
    probabilities = class_probabilities(logits, label_cfg)
    names = _class_labels(label_cfg, logits.shape[1])
    sizes, split_names = _class_splits(label_cfg, logits.shape[1])
    splits = [split for size, split in zip(sizes, split_names, strict=True) for _ in range(size)]
    return Timeline(
        window_frames=windows.astype(np.int64),
        window_seconds=seconds,
        logits=logits,
        probabilities=probabilities,
        predictions=[_top_of_probabilities(row, label_cfg, top_k) for row in probabilities],
        labels=[f"{split}: {name}" if split else name for split, name in zip(splits, names, strict=True)],
        video_frames=count,
        video_fps=fps,
        window=window,
        stride=stride,
        views=views,
        sample_fps=sample_fps,
    )


def _timeline_by_time(
    runner: nn.Module,
    source: _ClipSource,
    cfg: Mapping[str, Any],
    label_cfg: Mapping[str, Any],
    window: int,
    stride: int,
    views: tuple[int, int],
    top_k: int,
    batch_size: int,
    progress: ProgressFn | None,
    reuse: bool | None,
) -> Timeline:
    """`predict_timeline` with frames chosen by presentation time (the cfg's `sample_fps`)."""
    rate, num_frames = cfg["sample_fps"], cfg["input_size"][1]
    clips, crops = int(views[0]), int(views[1])
    try:
        windows = sampled_windows(cfg, window, stride, source.length, source.timestamps, source.end_seconds)
    except ValueError as err:
        raise ValueError(f"{source.name}: {err}") from None
    duration = (source.end_seconds or math.nan) - float(source.timestamps[0])
    if len(windows) == 1 and duration < window / rate:
        warnings.warn(
            f"{source.name} lasts {duration:.3g} s, less than one window ({window} frames at {rate:g} per second = "
            f"{window / rate:.3g} s): the timeline is one window",
            VideoWarning,
            stacklevel=3,
        )
    if window < num_frames:
        warnings.warn(
            f"windows of {window} frames at {rate:g} per second are shorter than one clip ({num_frames} frames): "
            "the frames of a window are repeated (looped) to fill its clip, as DMVR does for short videos",
            VideoWarning,
            stacklevel=3,
        )
    rows = window_clip_rows(cfg, clips, source.length, source.timestamps, source.end_seconds)
    logits = _window_logits(runner, source, windows, cfg, (clips, crops), int(batch_size), progress, reuse, rows)
    seconds = source.window_seconds(windows)
    fps = source.reader.average_fps if source.reader is not None else None
    return _timeline(
        logits, label_cfg, windows, seconds, top_k, source.length, fps, window, stride, (clips, crops), rate
    )


def _window_logits(
    runner: nn.Module,
    source: _ClipSource,
    windows: np.ndarray,
    cfg: Mapping[str, Any],
    views: tuple[int, int],
    batch_size: int,
    progress: ProgressFn | None,
    reuse: bool | None = None,
    clip_rows: Callable[[int, int], np.ndarray] | None = None,
) -> torch.Tensor:
    """The model over every window of one video: float32 `(num_windows, num_classes)` CPU logits, each
    window's averaged over its `clips x crops` views.

    The one place `predict_timeline` runs the model: `vivit.windows.WindowRunner`, so Model 2 encodes
    each tubelet slice once per video and crop when windows share slices (`reuse=None`: when
    `shares_slices` says so; False: every window from its pixels, as before reuse). Windows finish in
    order; `progress(windows_done, total)`.
    """
    if reuse is None:
        reuse = shares_slices(runner, windows, views=views, pretrained_cfg=cfg, clip_rows=clip_rows)
    engine = WindowRunner(
        runner,
        output="logits",
        views=views,
        pretrained_cfg=cfg,
        batch_size=batch_size,
        reuse=bool(reuse),
        clip_rows=clip_rows,
    )
    outs: list[torch.Tensor] = []
    for out in engine.run(windows, lambda indices: source.clip(np.asarray(indices))):
        outs.append(out)
        if progress is not None:
            progress(len(outs), len(windows))
    return torch.stack(outs).cpu()


def _check_logits(logits: Any, batch: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        got = f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
        raise ValueError(f"expected the model to return logits of shape ({batch}, num_classes); got {got}")
    return logits


def sum_view_outputs(
    forward: Callable[[torch.Tensor], Any],
    views: Iterator[torch.Tensor],
    *,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    total: int | None = None,
    progress: ProgressFn | None = None,
    logits: bool = True,
) -> torch.Tensor:
    """Runs `forward` on batches of views under inference mode; returns the float32 sum of its outputs.

    The views are stacked `batch_size` at a time, cast to `dtype` (the model's), and the outputs
    summed in float32, which keeps low-precision (bf16/fp16) models from losing the average. This
    is `predict_views`' reduction; `vivit.features` shares it so that a feature is reduced exactly
    as a prediction is.

    Args:
        forward: The model (or a feature function), `(B, C, T, H, W) -> (B, ...)`.
        views: float32 `(C, T, H, W)` views, e.g. from `iter_views`.
        batch_size: Views per call.
        dtype: The dtype the views are cast to.
        total: The number of views, for `progress` (None: unknown).
        progress: Called as `progress(views_done, total)` after each batch.
        logits: Check that `forward` returns `(B, num_classes)` logits.

    Returns:
        float32 `(...)`: the sum over the views of `forward`'s outputs, on their device.

    Raises:
        ValueError: No views, or (with `logits`) outputs that are not `(B, num_classes)`.
    """
    out_sum: torch.Tensor | None = None
    done = 0
    with torch.inference_mode():
        for batch in _batched(views, batch_size):
            out = forward(torch.stack(batch).to(dtype))
            if logits:
                out = _check_logits(out, len(batch))
            batch_sum = out.float().sum(0)
            out_sum = batch_sum if out_sum is None else out_sum + batch_sum
            done += len(batch)
            if progress is not None:
                progress(done, total if total is not None else done)
    if out_sum is None:
        raise ValueError("no views to run the model on")
    return out_sum


def has_untrained_head(model: nn.Module) -> bool:
    """Whether the model's classifier head is untrained: a linear `head` whose weights are all zero.

    Such a head maps every video to the same logits (its bias), so its "predictions" say nothing
    about the input. It is what a new task starts from: `create_model(..., num_classes=N)` and
    `reset_classifier` zero the head (Scenic's init), as does ViT inflation (the `*_in21k` entries,
    `vivit.weights.inflate_vit`). Use such a model for features, or fine-tune it first.

    Args:
        model: Any module; one without a linear `head` (e.g. `num_classes=0`) is not "untrained".

    Returns:
        True when `model.head.weight` exists, is not empty, and is exactly zero everywhere.
    """
    weight = getattr(getattr(model, "head", None), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.numel() == 0 or weight.is_meta:
        return False
    with torch.no_grad():
        return not bool(weight.any())


class UntrainedHeadError(ValueError):
    """A model asked for predictions it cannot give: it has no classifier head, or an untrained one.

    Attributes:
        reason: Why, in words (e.g. "its weights are all zero, ...").
        no_head: True when there is no head at all (`num_classes=0`: a backbone).
    """

    def __init__(self, reason: str, no_head: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_head = no_head


def untrained_head_reason(
    pretrained_cfg: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None, *, weights_given: bool = False
) -> str | None:
    """Why weights about to be loaded will have an untrained head, known before any download; else None.

    An entry whose weights are an image ViT (every source of format `"vit"`: the `*_in21k`
    entries) gets a zero head from inflation; `num_classes=` other than the weights' replaces the
    trained head with a new, zero one. A checkpoint given instead (`weights_given`) is judged only
    once loaded (`check_classifier`).

    Args:
        pretrained_cfg: The registry entry's pretrained cfg (`sources`, `num_classes` are read).
        overrides: Constructor overrides (`num_classes` is read).
        weights_given: Other weights than the entry's will be loaded.

    Returns:
        The reason, or None.
    """
    cfg = pretrained_cfg or {}
    if weights_given:
        return None
    sources = cfg.get("sources") or ()
    if sources and all(src.get("format") == "vit" for src in sources):
        return "its weights are an image ViT inflated to video, a start for fine-tuning: the head is zero"
    classes = (overrides or {}).get("num_classes")
    if classes is not None and classes != cfg.get("num_classes", classes):
        return f"num_classes={classes} replaces the trained {cfg['num_classes']}-class head with a new one, all zero"
    return None


def check_classifier(model: nn.Module) -> None:
    """Refuse a model whose predictions would mean nothing: no classifier head, or an untrained one.

    Raises:
        UntrainedHeadError: The model has no linear `head` (`num_classes=0`), or its weights are all
            zero (`has_untrained_head`: what `num_classes=`, `reset_classifier` and ViT inflation give).
    """
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise UntrainedHeadError("it has no classifier head (num_classes=0: a backbone)", no_head=True)
    if has_untrained_head(model):
        raise UntrainedHeadError("its weights are all zero, as a fresh head from num_classes= or ViT inflation is")


def model_data_config(model: nn.Module) -> tuple[dict[str, Any], bool]:
    """The model's preprocessing cfg, completed from the model when its checkpoint carried none.

    Without an `input_size` the transforms would fall back to 32 frames of 224x224, which a model
    built for another size rejects; its own frames and size are the only sensible default. The
    resize keeps Kinetics' 256:224 ratio between short side and crop.

    Args:
        model: A ViViT model (its `pretrained_cfg`, `img_size`, `num_frames`, `in_chans` are read).

    Returns:
        `(cfg, defaulted)`: a new cfg dict, and whether the input size had to come from the model.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    completed = complete_cfg_from_model(model, cfg)  # the same completion as resolve_data_config(model=...)
    return completed, "input_size" not in cfg and "input_size" in completed


def _class_splits(cfg: Mapping[str, Any], num_classes: int) -> tuple[list[int], list[str | None]]:
    """Sizes and names of the head's separately normalised class groups (one group for most heads)."""
    sizes = list(cfg.get("class_splits") or [num_classes])
    split_names = list(cfg.get("split_names") or [None] * len(sizes))
    if sum(sizes) != num_classes or len(split_names) != len(sizes):
        return [num_classes], [None]
    return sizes, split_names


def class_probabilities(logits: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
    """Softmax over the classes, per class split (Epic-Kitchens nouns and verbs separately).

    Args:
        logits: float `(..., num_classes)`.
        cfg: The model's `pretrained_cfg` (`class_splits` is read; absent: one softmax).

    Returns:
        float32 `(..., num_classes)` on the CPU; each split sums to 1.
    """
    logits = logits.float().cpu()
    sizes, _ = _class_splits(cfg, logits.shape[-1])
    return torch.cat([part.softmax(-1) for part in logits.split(sizes, dim=-1)], dim=-1)


def top_predictions(logits: torch.Tensor, cfg: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """Softmax and top-k, per class split (Epic-Kitchens nouns and verbs are separate softmaxes).

    Args:
        logits: float `(num_classes,)` (e.g. from `predict_views`).
        cfg: The model's `pretrained_cfg` (`label_names`, `class_splits`, `split_names` are read).
        k: Classes per split.

    Returns:
        Dicts `{"index", "label", "probability"}` (plus `"split"` for split heads), best first.
    """
    return _top_of_probabilities(class_probabilities(logits, cfg), cfg, k)


def _top_of_probabilities(probs: torch.Tensor, cfg: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """`top_predictions` of probabilities `(num_classes,)` already computed by `class_probabilities`."""
    names = _class_labels(cfg, probs.numel())
    sizes, split_names = _class_splits(cfg, probs.numel())
    out = []
    start = 0
    for size, split in zip(sizes, split_names, strict=True):
        top = probs[start : start + size].topk(min(k, size))
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            index = start + i
            item = {"index": index, "label": names[index], "probability": p}
            out.append({"split": split, **item} if split else item)
        start += size
    return out


def _class_labels(cfg: Mapping[str, Any], num_classes: int) -> list[str]:
    """The name of every class: the cfg's `label_names`, or the class index as text (also when the
    names do not match the head, e.g. a fresh head from `--override num_classes=...`)."""
    names = cfg.get("label_names")
    if names is None or len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return [str(name) for name in names]
