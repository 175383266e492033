"""Feature extraction over whole datasets: one file of sliding-window features per video.

`extract_features(inputs, out_dir, model)` is the job behind `vivit features`. Per video it
writes `out_dir/<path relative to its input root>.safetensors` holding

* `features`: float32 `(num_windows, D)` pooled pre-logits features, or with `per_frame`
  `(num_windows, nt, D)` (one per temporal token);
* `window_frames`: int64 `(num_windows, 2)`, first and one-past-last source frame of each window;
* `window_seconds`: float64 `(num_windows, 2)`, the same as presentation times in seconds (NaN
  for a frame array without a frame rate);

and metadata (strings): the resolved source path, its size and mtime, the model, window, stride,
views and the package version (see `read_features`). Windows follow `sliding_windows` (default:
one model clip, `num_frames x frame_stride` frames, no overlap; `window=0`: the whole video as
one window); each window's feature is the mean over its `clips x crops` test views, placed in
the window as `vivit.predict_views` places them in a video (`view_frame_indices`).

Work and writes are per video, so the cost per video is constant and a run can be stopped at
any time: outputs are written atomically (temporary file, then rename), and a re-run skips every
video whose output records the same source (resolved path, size, mtime) and the same settings,
without loading the model; everything else is recomputed. The same call under `torchrun`
splits the remaining videos across ranks (see `vivit.distributed`); each rank writes only its
own videos, and the union is bit for bit what one process writes (on CPU), because every
video's windows are batched and reduced the same way whatever process computes them.

Decoding and preprocessing run in DataLoader worker processes (`workers`), so they overlap
the model; within a video, windows are batched `batch_size` views at a time.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .data.datasets import (
    LIST_SUFFIXES,
    VIDEO_SUFFIXES,
    find_videos,
    read_video_list,
    share_in_worker,
    shown_path,
)
from .data.sampling import sliding_windows, view_frame_indices, window_seconds
from .data.transforms import crop_test_views, resolve_data_config
from .data.video import VideoReader, VideoWarning
from .distributed import DistributedContext, distributed_context, local_device
from .files import atomic_write
from .models.vivit import FactorizedEncoderViViT, ViViT
from .predict import (
    Video,
    _iter_views,
    _sum_over_views,
    _window_and_stride,
    inference_model,
    model_data_config,
)
from .version import __version__

__all__ = [
    "FEATURES_FORMAT",
    "FeatureFn",
    "FeatureSettings",
    "FeaturesSummary",
    "extract_features",
    "feature_fn",
    "read_features",
    "video_features",
]

#: `format` entry of the metadata of every features file this module writes.
FEATURES_FORMAT = "vivit-features"
_FORMAT_VERSION = "2"
_SUFFIX = ".safetensors"
_DECODE_BUDGET_BYTES = 512 * 1024**2  # decoded frames held at once per decoding process

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_fn(model: ViViT, per_frame: bool) -> FeatureFn:
    """(B, C, T, H, W) -> (B, D) pooled pre-logits features, or (B, nt, D) per temporal token.

    The model is used in eval mode without being modified (see `vivit.predict.inference_model`).
    """
    runner: Any = inference_model(model)  # the same class as `model`, in eval mode
    if not per_frame:
        return lambda x: runner.forward_head(runner.forward_features(x), pre_logits=True)
    if isinstance(runner, FactorizedEncoderViViT):  # Model 2: its spatial encoder's per-frame output
        return runner.forward_frame_features

    def frames(x: torch.Tensor) -> torch.Tensor:
        (grid,) = runner.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        return grid.mean(dim=(3, 4)).transpose(1, 2)  # (B, D, nt, nh, nw) -> (B, nt, D)

    return frames


def video_features(
    video: Video,
    extract: FeatureFn,
    views: tuple[int, int],
    cfg: Mapping[str, Any],
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Features of one video (a path, a `VideoReader` or uint8 frames), averaged over its views.

    Returns a contiguous float32 CPU tensor. Only the frames of the views' clips are decoded.
    """
    view_iter = _iter_views(video, views[0], views[1], cfg, device, stacklevel=3)
    total = views[0] * views[1]
    summed = _sum_over_views(extract, view_iter, batch_size, torch.float32, total, False, lambda out, _: out)
    return (summed / total).cpu().contiguous()


# ---------------------------------------------------------------- settings and outputs
@dataclass(frozen=True)
class FeatureSettings:
    """What a features file depends on besides its video; a re-run recomputes when any differs.

    Attributes:
        model: Names the model and its weights for resuming (a registry name; the CLI adds the
            weights path and overrides). Two different checkpoints need two different names.
        weights: Identity of the weights (`"released"`, or a path with its size and mtime).
        overrides: Constructor overrides, canonical JSON.
        per_frame: One feature per temporal token instead of a pooled one.
        window: Frames per window as requested (`None`: the model's clip; 0: the whole video).
        stride: Frames between window starts as requested (`None`: the window).
        views: `(clips, crops)` averaged per window as requested (`None`: 1x1).
    """

    model: str
    weights: str = "released"
    overrides: str = "[]"
    per_frame: bool = False
    window: int | None = None
    stride: int | None = None
    views: tuple[int, int] | None = None

    def key(self) -> str:
        """Canonical JSON of the settings, stored in every file and compared on resume."""
        return json.dumps(asdict(self), sort_keys=True)


def weights_identity(path: str | os.PathLike[str] | None) -> str:
    """`"released"`, or a weights path (absolute) with size and mtime of the file(s) it names.

    A checkpoint overwritten in place (fine-tuned further) then changes the identity, so its
    features are recomputed. `hf-hub:` names are kept as given (the Hub revision pins them).
    """
    if path is None:
        return "released"
    text = os.fspath(path)
    if text.startswith("hf-hub:"):
        return text
    target = Path(text).expanduser().absolute()
    files = sorted(target.iterdir()) if target.is_dir() else [target]
    stamps = []
    for item in files:
        try:
            st = item.stat()
        except OSError:
            continue
        stamps.append(f"{item.name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{shown_path(target)} ({', '.join(stamps)})"


def read_features(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load one features file written by `extract_features`.

    Args:
        path: `out_dir/<video>.safetensors`.

    Returns:
        `(tensors, metadata)`: tensors `features`, `window_frames`, `window_seconds`; metadata
        strings `source_path`, `source_size`, `source_mtime_ns`, `model`, `weights`,
        `overrides`, `per_frame`, `window`, `stride`, `views`, `clip_frames`, `frame_stride`,
        `video_frames`, `video_fps`, `settings`, `vivit_version`, `format`, `format_version`.

    Raises:
        ValueError: If the file is not a vivit features file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    # Read through Python, not safetensors' own file functions, which refuse non-UTF-8 file names.
    data = Path(path).read_bytes()
    try:
        metadata = _header_metadata(data[:8], lambda n: data[8 : 8 + n])
        tensors = load(data)
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{shown_path(path)} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != FEATURES_FORMAT:
        raise ValueError(f"{shown_path(path)} is not a vivit features file (format {metadata.get('format')!r})")
    return tensors, metadata


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Video:
    path: Path  # as found
    output: Path  # out_dir / relative name + .safetensors
    where: str  # for messages: the input or list line it came from


@dataclass
class _Plan:
    todo: list[tuple[_Video, os.stat_result]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def _relative_output(path: Path, root: Path) -> Path:
    """Output name of `path` found under `root`: relative to it, else the absolute path below the out dir."""
    try:
        return path.absolute().relative_to(root.absolute())
    except ValueError:
        return Path(*path.absolute().parts[1:])


def _collect(inputs: Sequence[str | os.PathLike[str]], out_dir: Path, plan: _Plan) -> list[_Video]:
    """Videos named by the inputs (files, folders searched recursively, list files), in order."""
    videos: list[_Video] = []
    for item in inputs:
        path = Path(item).expanduser()
        shown = shown_path(item)
        if path.is_dir():
            found = find_videos(path)
            if not found:
                plan.failed.append(
                    (shown, f"no videos in this folder (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
                )
            videos += [_Video(p, out_dir / f"{_relative_output(p, path)}{_SUFFIX}", shown) for p in found]
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            try:
                records = read_video_list(path)
            except ValueError as err:
                plan.failed.append((shown, str(err)))
                continue
            if not records:  # an empty list is a mistake upstream, not a clean run
                plan.failed.append(
                    (shown, "lists no videos (expected one path per line, or CSV/TSV rows path[,label,...])")
                )
            videos += [
                _Video(r.path, out_dir / f"{_relative_output(r.path, path.parent)}{_SUFFIX}", r.where) for r in records
            ]
        elif path.exists() or path.suffix.lower() not in LIST_SUFFIXES:
            videos.append(_Video(path, out_dir / f"{path.name}{_SUFFIX}", shown))
        else:
            plan.failed.append((shown, "list file does not exist"))
    return videos


def _header_metadata(prefix: bytes, read: Callable[[int], bytes]) -> dict[str, str]:
    """The `__metadata__` of a safetensors file from its first 8 bytes (header length) and header.

    Raises:
        ValueError: If it is not a safetensors header.
    """
    if len(prefix) != 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(prefix, "little")
    if not 2 <= size <= 100_000_000:
        raise ValueError(f"a header of {size} bytes is not a safetensors header")
    try:
        header = json.loads(read(size))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"its header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _output_state(output: Path, source: Path, stat: os.stat_result, key: str) -> tuple[str, str]:
    """`("absent" | "done" | "stale" | "foreign", reason)` of an existing output for this source and settings.

    Only the header is read (a few hundred bytes), so checking thousands of finished videos is quick.
    """
    try:
        with open(output, "rb") as f:
            metadata = _header_metadata(f.read(8), f.read)
    except FileNotFoundError:
        return "absent", ""
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return (
            "foreign",
            f"{shown_path(output)} exists but is not a readable safetensors file ({reason}); not overwritten",
        )
    if metadata.get("format") != FEATURES_FORMAT:
        return "foreign", f"{shown_path(output)} exists and is not a vivit features file; not overwritten"
    if (
        metadata.get("source_path") == shown_path(source.resolve())
        and metadata.get("source_size") == str(stat.st_size)
        and metadata.get("source_mtime_ns") == str(stat.st_mtime_ns)
        and metadata.get("settings") == key
    ):
        return "done", ""
    return "stale", ""


def _plan(inputs: Sequence[str | os.PathLike[str]], out_dir: Path, settings: FeatureSettings) -> _Plan:
    """Every input video's fate: to do, up to date, failed (missing, collisions), or a duplicate."""
    plan = _Plan()
    key = settings.key()
    seen_files: dict[tuple[int, int], str] = {}
    seen_outputs: dict[Path, str] = {}
    for video in _collect(inputs, out_dir, plan):
        shown = shown_path(video.path)
        try:
            stat = video.path.stat()
        except OSError as err:
            reason = "does not exist" if isinstance(err, FileNotFoundError) else err.strerror or str(err)
            plan.failed.append((shown, reason + (f" (listed at {video.where})" if ":" in video.where else "")))
            continue
        if not video.path.is_file():
            plan.failed.append((shown, "is not a file"))
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen_files:  # the same file reached twice (symlink, ../, a list and a folder)
            plan.duplicates.append(f"{shown} is the same file as {seen_files[identity]}; computed once")
            continue
        seen_files[identity] = shown
        if video.output in seen_outputs:
            clash = (
                f"its output {shown_path(video.output)} is already that of {seen_outputs[video.output]} "
                "(same relative name under two inputs); run it with its own --out"
            )
            plan.failed.append((shown, clash))
            continue
        seen_outputs[video.output] = shown
        state, reason = _output_state(video.output, video.path, stat, key)
        if state == "done":
            plan.skipped.append(shown)
        elif state == "foreign":
            plan.failed.append((shown, reason))
        else:
            plan.todo.append((video, stat))
    return plan


# ---------------------------------------------------------------- decoding in workers
@dataclass(frozen=True)
class _Geometry:
    cfg: Mapping[str, Any]
    window: int  # 0: the whole video
    stride: int
    views: tuple[int, int]
    batch_size: int


class _WindowStream(IterableDataset):
    """Batches of window views, video after video; each DataLoader worker takes every n-th video.

    Yields dicts: `index` (position in `paths`), and either `error` (the video cannot be read),
    or `views` float32 `(b, C, T, H, W)`, `window` int64 `(b,)` (window of each view) and `last`
    (the video's final batch); the first batch of a video also carries `windows`, `seconds`,
    `frames`, `fps`. Warnings raised while reading travel as text in `warnings`. A worker that
    cannot put its tensors in shared memory yields `fatal` (the message) and stops.
    """

    def __init__(self, paths: Sequence[Path], geometry: _Geometry) -> None:
        self.paths = list(paths)
        self.geometry = geometry

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(worker, len(self.paths), workers):
            for item in self._video(index, threads=1 if info is not None else 0):
                if info is not None:
                    try:
                        share_in_worker(item.values())
                    except OSError as err:  # /dev/shm full: stop the job with a clear message
                        yield {"index": index, "fatal": str(err)}
                        return
                yield item

    def _video(self, index: int, threads: int) -> Iterator[dict[str, Any]]:
        path = self.paths[index]
        g = self.geometry
        clips, crops = g.views
        num_frames = g.cfg["input_size"][1]
        frame_stride = g.cfg["frame_stride"]
        notes: list[str] = []
        try:
            reader = _caught(notes, lambda: VideoReader(path, num_threads=threads))
        except (ValueError, OSError, IndexError, EOFError) as err:
            yield {"index": index, "error": _reason(err, path), "warnings": notes}
            return
        with reader:
            count = len(reader)
            windows = np.array([[0, count]]) if g.window == 0 else sliding_windows(count, g.window, g.stride)
            span = (num_frames - 1) * frame_stride + 1
            if count < span:
                notes.append(
                    f"{shown_path(path)} has {count} frames, fewer than one clip spans ({num_frames} frames every "
                    f"{frame_stride} = {span}); its frames are repeated (looped), as DMVR does"
                )
            header = {
                "windows": torch.from_numpy(windows.astype(np.int64)),
                "seconds": torch.from_numpy(window_seconds(windows, reader.timestamps, reader.duration_seconds)),
                "frames": count,
                "fps": float(reader.average_fps or math.nan),
            }
            per_window = clips * crops
            # Enough windows per decode for one batch: their frames come from one pass over the file
            # (one seek), within a memory budget for the decoded frames (a 720p frame is 2.8 MB).
            frame_bytes = reader.height * reader.width * 3
            budget = max(1, _DECODE_BUDGET_BYTES // (frame_bytes * clips * num_frames))
            group = max(1, min(-(-g.batch_size // per_window), budget))
            pending: list[torch.Tensor] = []
            owners: list[int] = []
            for first in range(0, len(windows), group):
                chosen = range(first, min(first + group, len(windows)))
                rows = [
                    view_frame_indices(
                        count, num_frames, frame_stride, clips, first=int(windows[w][0]), last=int(windows[w][1])
                    )
                    for w in chosen
                ]
                wanted = np.concatenate(rows).reshape(-1)
                try:
                    frames = _caught(notes, functools.partial(reader.get_frames_at, wanted))
                except (ValueError, OSError, IndexError, EOFError) as err:
                    yield {"index": index, "error": _reason(err, path), "warnings": notes}
                    return
                clip_frames = torch.from_numpy(frames).unflatten(0, (-1, num_frames))  # (windows * clips, T, H, W, 3)
                for k, w in enumerate(chosen):
                    for c in range(clips):
                        pending += crop_test_views(clip_frames[k * clips + c], crops, g.cfg)
                        owners += [w] * crops
                del frames, clip_frames
                while len(pending) >= g.batch_size or (pending and chosen.stop == len(windows)):
                    take = min(g.batch_size, len(pending))
                    last = chosen.stop == len(windows) and take == len(pending)
                    item = {
                        "index": index,
                        "views": torch.stack(pending[:take]),
                        "window": torch.tensor(owners[:take], dtype=torch.int64),
                        "last": last,
                        "warnings": notes,
                    }
                    if header:
                        item.update(header)
                        header = {}
                    notes = []
                    del pending[:take], owners[:take]
                    yield item


def _caught(notes: list[str], call: Callable[[], Any]) -> Any:
    """Run `call`, collecting its VideoWarnings as text (they cross from workers to the main process)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VideoWarning)
        try:
            return call()
        finally:
            for w in caught:
                if issubclass(w.category, VideoWarning):
                    notes.append(str(w.message))
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _reason(err: BaseException, path: Path) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    shown = shown_path(path)
    return text if shown in text or str(path) in text else f"{shown}: {text}"


# ---------------------------------------------------------------- the job
@dataclass
class FeaturesSummary:
    """What `extract_features` did, over all ranks.

    Attributes:
        written: Videos whose features were computed and written.
        skipped: Videos whose output was already up to date.
        failed: `(video, reason)` for every video (or input) that failed.
        duplicates: Inputs that named a file already given (computed once), as messages.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


ModelSource = nn.Module | Callable[[], nn.Module]


def extract_features(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    model: ModelSource,
    settings: FeatureSettings,
    *,
    batch_size: int = 4,
    workers: int = 2,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    verbose: bool = True,
    silent: bool = False,
) -> FeaturesSummary:
    """Write sliding-window features of every video named by `inputs`, one file per video.

    Runs in one process, or split across the ranks of a `torchrun` job (every rank calls it with
    the same arguments); see the module docstring for the files and the resume rule.

    Example:
        >>> settings = FeatureSettings(model="vivit_b_fe_k400", window=64, stride=32)
        >>> extract_features(["videos/"], "features/", lambda: create_model("vivit_b_fe_k400", pretrained=True),
        ...                  settings)

    Args:
        inputs: Video files, folders (searched recursively for `VIDEO_SUFFIXES`; outputs keep
            the path below the folder), or list files (`LIST_SUFFIXES`: paths relative to the list).
        out_dir: Folder of the outputs (created).
        model: The model, or a function returning it (called only when some video needs
            computing; under torchrun, only on ranks with work). Used in eval mode, unmodified.
        settings: Model identity and window/stride/views/per_frame (see `FeatureSettings`).
        batch_size: Views per forward pass (windows of a video are batched together).
        workers: DataLoader processes that decode and preprocess (0: in this process).
        device: Where the model runs. `"auto"`: CUDA when available (`cuda:LOCAL_RANK` under
            torchrun), else the CPU; `None` (default): the module's own device (`"auto"` when
            `model` is a function).
        progress: Show a progress bar (videos/s, ETA) on stderr; default: when stderr is a terminal.
        verbose: Also print notes (videos already done, duplicate inputs), the readers' warnings
            and the summary of a clean run to stderr. Errors (as they happen) and, when something
            failed, the summary with every failure and its reason are printed regardless.
        silent: Print nothing at all (the returned summary says what happened).

    Returns:
        The `FeaturesSummary` over all ranks (the same on every rank).

    Raises:
        ValueError: For bad settings (window, stride, views) or batch size.
    """
    if settings.window is not None and settings.window < 0:
        raise ValueError(f"window must be >= 0 frames (0: the whole video), got {settings.window}")
    if settings.stride is not None and (settings.stride < 1 or settings.window == 0):
        raise ValueError("stride must be >= 1 frames and needs a window (window=0 is one clip per video)")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    out = Path(out_dir).expanduser()
    say = _Say(verbose and not silent, silent)
    with distributed_context() as context:
        plan = _plan(inputs, out, settings)
        if context.is_main:
            for message in plan.duplicates:
                say(f"note: {message}")
            if plan.skipped:
                say(
                    f"{len(plan.skipped)} of {len(plan.skipped) + len(plan.todo)} videos already done in {shown_path(out)}; skipping them"
                )
        # Nobody writes before every rank has seen the same finished outputs: the shares below are
        # cut from the same to-do list on every rank.
        context.barrier()
        mine = context.shard(plan.todo)
        written: list[str] = []
        failed: list[tuple[str, str]] = []
        if mine:
            _run(mine, out, model, settings, batch_size, workers, device, progress, say, context, written, failed)
        everyone = context.all_gather((written, failed))
    result = FeaturesSummary(
        written=[v for rank_written, _ in everyone for v in rank_written],
        skipped=plan.skipped,
        failed=plan.failed + [f for _, rank_failed in everyone for f in rank_failed],
        duplicates=plan.duplicates,
    )
    if context.is_main:
        _print_summary(result, say)
    return result


class _Say:
    """Prints `vivit: ...` lines to stderr, through tqdm while a progress bar is shown.

    Informational lines only when verbose; errors (`force=True`) unless silent.
    """

    def __init__(self, verbose: bool, silent: bool = False) -> None:
        self.verbose = verbose
        self.silent = silent
        self.bar: Any = None

    def __call__(self, message: str, force: bool = False) -> None:
        if self.silent or not (self.verbose or force):
            return
        self.raw(f"vivit: {message}")

    def raw(self, line: str) -> None:
        if self.silent:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)


def _run(
    mine: list[tuple[_Video, os.stat_result]],
    out: Path,
    model_source: ModelSource,
    settings: FeatureSettings,
    batch_size: int,
    workers: int,
    device: str | torch.device | None,
    progress: bool | None,
    say: _Say,
    context: DistributedContext,
    written: list[str],
    failed: list[tuple[str, str]],
) -> None:
    from tqdm import tqdm

    model = model_source if isinstance(model_source, nn.Module) else model_source()
    if device is None and isinstance(model_source, nn.Module):
        target = next(model.parameters()).device
    else:
        target = local_device(device, context)
    model = model.to(target)
    cfg = resolve_data_config(model_data_config(model)[0])
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    num_frames, frame_stride = cfg["input_size"][1], cfg["frame_stride"]
    window, stride = _window_and_stride(cfg, settings.window, settings.stride)
    views = settings.views or (1, 1)
    extract = feature_fn(model, settings.per_frame)  # type: ignore[arg-type]
    geometry = _Geometry(cfg, window, stride, views, batch_size)
    stream = _WindowStream([video.path for video, _ in mine], geometry)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=target.type == "cuda",
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    fixed = {
        "format": FEATURES_FORMAT,
        "format_version": _FORMAT_VERSION,
        "model": settings.model,
        "weights": settings.weights,
        "overrides": settings.overrides,
        "per_frame": str(settings.per_frame).lower(),
        "window": str(window),
        "stride": str(stride),
        "views": f"{views[0]}x{views[1]}",
        "clip_frames": str(num_frames),
        "frame_stride": str(frame_stride),
        "settings": settings.key(),
        "vivit_version": __version__,
    }
    label = "features" if not context.distributed else f"features (rank {context.rank}/{context.world_size})"
    bar = tqdm(
        total=len(mine),
        desc=label,
        unit="video",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=_bar_disabled(progress, context),
    )
    say.bar = bar if not bar.disable else None
    partial: dict[int, dict[str, Any]] = {}
    finished: set[int] = set()
    try:
        with torch.inference_mode():
            for item in loader:
                if "fatal" in item:
                    raise OSError(item["fatal"])
                index = item["index"]
                video, stat = mine[index]
                for note in item.get("warnings") or ():
                    say(f"warning: {note}")
                if "error" in item:
                    partial.pop(index, None)
                    finished.add(index)
                    failed.append((shown_path(video.path), item["error"]))
                    say(f"error: {item['error']}", force=True)
                    bar.update(1)
                    continue
                state = partial.get(index)
                if state is None:
                    state = partial[index] = {key: item[key] for key in ("windows", "seconds", "frames", "fps")}
                out_batch = extract(item["views"].to(target, dtype, non_blocking=True)).float()
                sums = state.get("sums")
                if sums is None:
                    sums = state["sums"] = out_batch.new_zeros((len(state["windows"]), *out_batch.shape[1:]))
                # Windows own consecutive views; summing each run then adding is deterministic on any device.
                owners, counts = torch.unique_consecutive(item["window"], return_counts=True)
                for owner, part in zip(owners.tolist(), out_batch.split(counts.tolist()), strict=True):
                    sums[owner] += part.sum(0)
                if not item["last"]:
                    continue
                del partial[index]
                features = (sums / (views[0] * views[1])).cpu().contiguous()
                metadata = {
                    **fixed,
                    "source_path": shown_path(video.path.resolve()),
                    "source_size": str(stat.st_size),
                    "source_mtime_ns": str(stat.st_mtime_ns),
                    "video_frames": str(state["frames"]),
                    "video_fps": repr(state["fps"]),
                }
                try:
                    _write(video.output, features, state["windows"], state["seconds"], metadata)
                except OSError as err:  # a full disk, a read-only folder: this video fails, the others try
                    failed.append((shown_path(video.path), f"cannot write {shown_path(video.output)}: {err}"))
                    say(f"error: cannot write {shown_path(video.output)}: {err}", force=True)
                else:
                    written.append(shown_path(video.path))
                finished.add(index)
                bar.update(1)
        # Every video must come back written or failed: a batch that a worker's queue dropped
        # (torch prints its error and goes on) is a failure, not a video silently left out.
        for index, (video, _) in enumerate(mine):
            if index not in finished:
                reason = (
                    "no result came back from the worker that decoded it (see the errors above); run again to retry"
                )
                failed.append((shown_path(video.path), reason))
                say(f"error: {shown_path(video.path)}: {reason}", force=True)
    finally:
        bar.close()
        say.bar = None


def _bar_disabled(progress: bool | None, context: DistributedContext) -> bool | None:
    """tqdm's `disable`: None (= only on a terminal) by default, and one bar per job (rank 0's)."""
    if progress is False or context.rank > 0:
        return True
    return None if progress is None else False


def _write(
    output: Path, features: torch.Tensor, windows: torch.Tensor, seconds: torch.Tensor, metadata: dict[str, str]
) -> None:
    from safetensors.torch import save

    tensors = {"features": features, "window_frames": windows.contiguous(), "window_seconds": seconds.contiguous()}
    data = _sorted_header(save(tensors, metadata=metadata))
    # A temporary file renamed into place: an interrupted run never leaves a half-written output.
    # Written through Python (safetensors' own file functions refuse non-UTF-8 file names).
    with atomic_write(output) as tmp, open(tmp, "wb") as f:
        f.write(data)
    # A run killed while writing this video left its temporary file behind; it is of no use now.
    for leftover in output.parent.glob(f".{glob.escape(output.name)}.*.part"):
        leftover.unlink(missing_ok=True)


def _sorted_header(data: bytes) -> bytes:
    """The safetensors bytes with the header's keys sorted, so that equal features give equal files.

    safetensors writes the header from a Rust HashMap, in an order that changes from run to run;
    `diff -r`, checksums and content-addressed stores (DVC, git-lfs) would see every re-run as
    new. Data offsets are relative to the end of the header, so its length may change freely
    (it is padded with spaces to a multiple of 8, as safetensors does).
    """
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(
        json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + size :]


def _print_summary(summary: FeaturesSummary, say: _Say) -> None:
    """`vivit: features: N written, N already done, N failed` (a note when nothing failed); when
    something failed, the line ends with `:` and every failure follows on its own indented line,
    so that the end of a long log says what to look at."""
    parts = [f"{len(summary.written)} written", f"{len(summary.skipped)} already done", f"{len(summary.failed)} failed"]
    if summary.duplicates:
        parts.append(f"{len(summary.duplicates)} duplicate input{'s' if len(summary.duplicates) != 1 else ''}")
    if not summary.failed:
        say(f"features: {', '.join(parts)}")
        return
    say(f"features: {', '.join(parts)}:", force=True)
    for video, reason in summary.failed:
        say.raw(f"  {reason if video in reason else f'{video}: {reason}'}")
