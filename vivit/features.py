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

Where outputs go (the input root): a folder's videos are named relative to the folder; a list's
relative to the list's folder when every entry lies below it, else relative to the deepest folder
holding all its entries (so a list of absolute paths into `videos/` names its outputs as the
folder `videos/` would); a file given directly keeps its name. `..` is removed first and nothing
can climb out of `out_dir` (`vivit.files.relative_output`), nor write through a symbolic link
inside it to elsewhere. Before any work, every output is checked: two inputs never share an
output (one file reached twice is computed once; two files whose outputs would be one file,
through `..`, symbolic links or letter case on a case-insensitive file system, are refused), no
output would need a folder where another output is a file (or the reverse), every name fits the
file system (NAME_MAX), and `out_dir` takes files.

Work and writes are per video, so the cost per video is constant and a run can be stopped at
any time: outputs are written atomically (temporary file, then rename), and a re-run skips every
video whose output records the same source (resolved path, size, mtime) and the same settings,
without loading the model; everything else is recomputed. Temporary files of killed runs are
removed at the start, only those whose writer is gone (a second run on the same `out_dir` keeps
its own). The same call under `torchrun` splits the remaining videos across ranks (see
`vivit.distributed`); each rank writes only its own videos, and the union is bit for bit what one
process writes (on CPU), because every video's windows are batched and reduced the same way
whatever process computes them.

Decoding and preprocessing run in DataLoader worker processes (`workers`), so they overlap
the model; within a video, windows are batched `batch_size` views at a time. Model 2 with windows
that share tubelet slices (overlapping windows, a stride that is a multiple of `frame_stride x
tubelet_size`) is the exception: each video is decoded in this process by `vivit.windows.WindowRunner`,
which encodes every slice once per video and crop and runs only the temporal encoder per window (the
slice cache lives beside the model; the features equal computing every window within 1e-5 in fp32;
`reuse=False` turns it off).

Sampling by time (`FeatureSettings.sample_fps`, or a model cfg's `sample_fps`): windows are
`window / sample_fps` seconds every `stride / sample_fps` seconds and a clip's frames `1 / sample_fps`
seconds apart by their timestamps (`vivit.predict.sampled_windows`, `window_clip_rows`).

Nothing is printed: the job returns a `FeaturesSummary`, warns (`VideoWarning`: short or damaged
videos) and logs (`logging.getLogger("vivit.features")`: each failed video as an error as it
fails, notes such as videos already done as info). A full disk or a folder that stopped taking
files ends the run early: the videos not computed are failures that say so.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
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
from .data.sampling import window_seconds
from .data.transforms import crop_test_views, resolve_data_config
from .data.video import VideoDecoderMissingError, VideoReader, VideoWarning
from .distributed import DistributedContext, distributed_context, local_device
from .files import (
    WriteError,
    atomic_write,
    case_insensitive,
    check_name_fits,
    check_output_dir,
    clean_stale_temp_files,
    common_folder,
    describe_path_problem,
    output_key,
    relative_output,
    writing,
)
from .models.vivit import FactorizedEncoderViViT, ViViT
from .predict import (
    ProgressFn,
    Video,
    inference_model,
    iter_views,
    model_data_config,
    sampled_windows,
    sum_view_outputs,
    window_and_stride,
    window_clip_rows,
)
from .version import __version__
from .windows import WindowRunner, shares_slices
from .workers import loader_items

__all__ = [
    "FEATURES_FORMAT",
    "FeatureFn",
    "FeatureSettings",
    "FeaturesSummary",
    "extract_features",
    "feature_fn",
    "read_features",
    "video_features",
    "weights_identity",
]

logger = logging.getLogger(__name__)

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
    view_iter = iter_views(video, views[0], views[1], cfg, device)
    total = views[0] * views[1]
    summed = sum_view_outputs(extract, view_iter, batch_size=batch_size, total=total, logits=False)
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
        sample_fps: Frames by presentation time at this rate (`None`: the model cfg's, index
            sampling for the released models); window and stride then count frames at this rate.
    """

    model: str
    weights: str = "released"
    overrides: str = "[]"
    per_frame: bool = False
    window: int | None = None
    stride: int | None = None
    views: tuple[int, int] | None = None
    sample_fps: float | None = None

    def key(self) -> str:
        """Canonical JSON of the settings, stored in every file and compared on resume.

        `sample_fps` appears only when set, so files written before it existed stay up to date.
        """
        settings = asdict(self)
        if settings["sample_fps"] is None:
            del settings["sample_fps"]
        return json.dumps(settings, sort_keys=True)


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
    error: str | None = None  # a list line that could not be read as an entry


@dataclass
class _Plan:
    todo: list[tuple[_Video, os.stat_result]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def _list_root(listing: Path, paths: Sequence[Path]) -> Path:
    """The folder a list's outputs are named relative to: the list's own folder when every entry lies
    below it (`dataset/train.csv` listing `videos/a.mp4`), else the deepest folder holding every entry
    (a list of absolute paths, or of `../videos/...`), so that it names them as that folder would."""
    base = Path(os.path.normpath(os.path.abspath(listing.parent)))
    inside = all(not os.path.relpath(os.path.normpath(os.path.abspath(p)), base).startswith(os.pardir) for p in paths)
    return base if inside or not paths else common_folder(paths) or base


def _output(out_dir: Path, path: Path, root: Path) -> Path:
    relative = relative_output(path, root)
    return out_dir / relative.parent / f"{relative.name}{_SUFFIX}"


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
            videos += [_Video(p, _output(out_dir, p, path), shown) for p in found]
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            try:
                records = read_video_list(path)
            except (ValueError, OSError) as err:
                plan.failed.append((shown, str(err)))
                continue
            if not records:  # an empty list is a mistake upstream, not a clean run
                plan.failed.append(
                    (shown, "lists no videos (expected one path per line, or CSV/TSV rows path[,label,...])")
                )
            root = _list_root(path, [r.path for r in records])
            for r in records:
                # A line that could not be read as an entry fails alone, with its list:line.
                error = getattr(r, "error", None)
                videos.append(_Video(r.path, _output(out_dir, r.path, root), r.where, str(error) if error else None))
        elif path.exists() or path.suffix.lower() not in LIST_SUFFIXES:
            videos.append(_Video(path, out_dir / f"{path.name}{_SUFFIX}", shown))
        else:
            plan.failed.append((shown, f"list file {describe_path_problem(path)}"))
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
    """Every input video's fate, decided before any work: to do, up to date, failed, or a duplicate.

    Failures found here: a missing or unreadable input (with its list line), a list line that is
    not an entry, an output that another input already has (through `..`, symbolic links, or
    letter case on a case-insensitive file system), an output where another output needs a folder
    (or the reverse), an output path blocked by an existing file or folder, an output reached
    through a symbolic link leading out of `out_dir`, a name longer than the file system takes,
    and an existing file that is not a features file (never overwritten).
    """
    plan = _Plan()
    key = settings.key()
    insensitive = case_insensitive(out_dir)
    root_key = output_key(out_dir, insensitive)
    seen_files: dict[tuple[int, int], str] = {}
    outputs: dict[str, str] = {}  # output key -> the input that has it
    folders: dict[str, str] = {}  # key of every folder below out_dir an output needs -> that input
    for video in _collect(inputs, out_dir, plan):
        shown = shown_path(video.path)
        listed = f" (listed at {video.where})" if ":" in video.where else ""
        if video.error is not None:
            plan.failed.append((video.where or shown, video.error))
            continue
        try:
            stat = video.path.stat()
            is_file = video.path.is_file()
        except (OSError, ValueError):
            plan.failed.append((shown, describe_path_problem(video.path) + listed))
            continue
        if not is_file:
            plan.failed.append((shown, "is not a file" + listed))
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen_files:  # the same file reached twice (symlink, ../, a list and a folder)
            plan.duplicates.append(f"{shown} is the same file as {seen_files[identity]}; computed once")
            continue
        seen_files[identity] = shown
        problem = _output_problem(video.output, shown, out_dir, root_key, insensitive, outputs, folders)
        if problem is not None:
            plan.failed.append((shown, problem))
            continue
        state, reason = _output_state(video.output, video.path, stat, key)
        if state == "done":
            plan.skipped.append(shown)
        elif state == "foreign":
            plan.failed.append((shown, reason))
        else:
            plan.todo.append((video, stat))
    return plan


def _output_problem(
    output: Path,
    owner: str,
    out_dir: Path,
    root_key: str,
    insensitive: bool,
    outputs: dict[str, str],
    folders: dict[str, str],
) -> str | None:
    """Why `output` cannot be this video's (None: it can), recording it in `outputs` / `folders` if it can."""
    shown_output = shown_path(output)
    try:
        check_name_fits(output)
    except WriteError as err:
        return f"its output {err.reason}"
    key = output_key(output, insensitive)
    if not key.startswith(root_key.rstrip(os.sep) + os.sep):
        return f"its output {shown_output} would be written outside {shown_path(out_dir)} (through a symbolic link)"
    if key in outputs:
        return (
            f"its output {shown_output} is already that of {outputs[key]} (same relative name under two inputs"
            + (", or names that differ only in letter case on a case-insensitive file system" if insensitive else "")
            + "); run it with its own --out"
        )
    if key in folders:
        return f"its output {shown_output} is the folder that the output of {folders[key]} needs; run it with its own --out"
    parents = []
    parent = output.parent
    while parent != out_dir and parent != parent.parent and len(parent.parts) > len(out_dir.parts):
        parents.append(parent)
        parent = parent.parent
    for folder in parents:
        folder_key = output_key(folder, insensitive)
        if folder_key in outputs:
            return (
                f"its output needs a folder {shown_path(folder)} where the output of {outputs[folder_key]} is a file; "
                "run it with its own --out"
            )
        if folder.exists() and not folder.is_dir():
            return f"its output needs a folder {shown_path(folder)}, which is an existing file; not overwritten"
    if output.is_dir():
        return f"its output {shown_output} is an existing folder; not overwritten"
    outputs[key] = owner
    for folder in parents:
        folders.setdefault(output_key(folder, insensitive), owner)
    return None


def _clean_interrupted_writes(todo: Sequence[tuple[_Video, os.stat_result]]) -> None:
    """Remove the temporary files that killed runs left in the output folders (never a live writer's)."""
    for folder in sorted({video.output.parent for video, _ in todo}):
        if folder.is_dir():
            clean_stale_temp_files(folder)


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
    cannot go on (no room in shared memory, no video decoder installed: every video would fail
    the same way) yields `fatal` (the message) with its `kind` and stops.
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
                        yield {"index": index, "fatal": str(err), "kind": "shm"}
                        return
                yield item
                if "fatal" in item:
                    return

    def _video(self, index: int, threads: int) -> Iterator[dict[str, Any]]:
        path = self.paths[index]
        g = self.geometry
        clips, crops = g.views
        num_frames = g.cfg["input_size"][1]
        notes: list[str] = []
        try:
            reader = _caught(notes, lambda: VideoReader(path, num_threads=threads))
        except VideoDecoderMissingError as err:
            yield {"index": index, "fatal": str(err), "kind": "decoder", "warnings": notes}
            return
        except (ValueError, OSError, IndexError, EOFError) as err:
            yield {"index": index, "error": _reason(err, path), "warnings": notes}
            return
        with reader:
            count = len(reader)
            try:
                windows, header = _video_header(reader, path, g, notes)
            except ValueError as err:  # sampling by time on a video without timestamps
                yield {"index": index, "error": _reason(err, path), "warnings": notes}
                return
            per_window = clips * crops
            # Enough windows per decode for one batch: their frames come from one pass over the file
            # (one seek), within a memory budget for the decoded frames (a 720p frame is 2.8 MB).
            frame_bytes = reader.height * reader.width * 3
            budget = max(1, _DECODE_BUDGET_BYTES // (frame_bytes * clips * num_frames))
            group = max(1, min(-(-g.batch_size // per_window), budget))
            pending: list[torch.Tensor] = []
            owners: list[int] = []
            clip_rows = window_clip_rows(g.cfg, clips, count, reader.timestamps, reader.duration_seconds)
            for first in range(0, len(windows), group):
                chosen = range(first, min(first + group, len(windows)))
                try:
                    rows = [clip_rows(int(windows[w][0]), int(windows[w][1])) for w in chosen]
                except ValueError as err:
                    yield {"index": index, "error": _reason(err, path), "warnings": notes}
                    return
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


def _video_header(reader: VideoReader, path: Path, g: _Geometry, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The windows `(n, 2)` of one video and the header its first item carries (`windows`, `seconds`,
    `frames`, `fps`); a video shorter than one clip spans adds a note (its frames loop).

    Raises:
        ValueError: Sampling by time (`sample_fps`) on a video without timestamps.
    """
    count = len(reader)
    num_frames, frame_stride, rate = g.cfg["input_size"][1], g.cfg["frame_stride"], g.cfg["sample_fps"]
    times, end = reader.timestamps, reader.duration_seconds
    if g.window == 0:
        windows = np.array([[0, count]])
    else:
        windows = sampled_windows(g.cfg, g.window, g.stride, count, times, end)
    if rate is None:
        span = (num_frames - 1) * frame_stride + 1
        if count < span:
            notes.append(
                f"{shown_path(path)} has {count} frames, fewer than one clip spans ({num_frames} frames every "
                f"{frame_stride} = {span}); its frames are repeated (looped), as DMVR does"
            )
    else:
        window_clip_rows(g.cfg, 1, count, times, end)(0, count)  # no timestamps: refused here, as one line
        duration = (end or math.nan) - float(times[0])
        if duration < num_frames / rate:
            notes.append(
                f"{shown_path(path)} lasts {duration:.3g} s, less than one clip spans ({num_frames} frames at {rate:g} "
                f"per second); its frames are repeated (looped), as DMVR does"
            )
    header = {
        "windows": torch.from_numpy(windows.astype(np.int64)),
        "seconds": torch.from_numpy(window_seconds(windows, times, end)),
        "frames": count,
        "fps": float(reader.average_fps or math.nan),
    }
    return windows, header


# ---------------------------------------------------------------- Model 2: dense windows in this process
def _dense_model(model: nn.Module, g: _Geometry, reuse: bool | None) -> nn.Module | None:
    """The eval-mode model when Model 2's slices are to be reused across this job's windows, else None.

    With `reuse=None` the job's window grid decides (`shares_slices` on windows of a long video: the
    stride a multiple of `frame_stride x tubelet_size`, windows overlapping; by time, frames at the
    sampling rate); each video then asks again for its own windows.
    """
    runner = inference_model(model)
    if reuse is False or not isinstance(runner, FactorizedEncoderViViT) or g.window == 0:
        return None
    grid = [(k * g.stride, k * g.stride + g.window) for k in range(g.window // g.stride + 2)]
    # By time, windows and clips count frames at the sampling rate: consecutive samples, as frame stride 1.
    grid_cfg = g.cfg if g.cfg["sample_fps"] is None else {**g.cfg, "frame_stride": 1, "sample_fps": None}
    if reuse is None and not shares_slices(runner, grid, views=g.views, pretrained_cfg=grid_cfg):
        return None
    return runner


def _dense_items(
    paths: Sequence[Path], g: _Geometry, model: nn.Module, per_frame: bool, reuse: bool | None
) -> Iterator[dict[str, Any]]:
    """The items `_WindowStream` would give, one per video, each with its finished `features`.

    Every video is decoded here by a `WindowRunner`, only the frames of new slices (read in chunks
    of bounded size), so memory holds one video's features, a chunk of decoded frames and the
    slice cache (at most one window's slices). A failure has the shape of a worker's.
    """
    for index, path in enumerate(paths):
        notes: list[str] = []
        try:
            reader = _caught(notes, lambda: VideoReader(path))  # noqa: B023 (called at once)
        except VideoDecoderMissingError as err:
            yield {"index": index, "fatal": str(err), "kind": "decoder", "warnings": notes}
            return
        except (ValueError, OSError, IndexError, EOFError) as err:
            yield {"index": index, "error": _reason(err, path), "warnings": notes}
            continue
        with reader:
            try:
                windows, header = _video_header(reader, path, g, notes)
                rows = window_clip_rows(g.cfg, g.views[0], len(reader), reader.timestamps, reader.duration_seconds)
                shared = shares_slices(model, windows, views=g.views, pretrained_cfg=g.cfg, clip_rows=rows)
                runner = WindowRunner(
                    model,
                    output="frame_features" if per_frame else "features",
                    views=g.views,
                    pretrained_cfg=g.cfg,
                    batch_size=g.batch_size,
                    reuse=bool(reuse) or shared,
                    clip_rows=rows,
                )
                outputs = _caught(notes, lambda: list(runner.run(windows, reader.get_frames_at)))  # noqa: B023
            except (ValueError, OSError, IndexError, EOFError) as err:
                yield {"index": index, "error": _reason(err, path), "warnings": notes}
                continue
        features = torch.stack(outputs).cpu().contiguous()
        yield {"index": index, **header, "features": features, "last": True, "warnings": notes}


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
        out_dir: The output folder.
        rank: The rank of the process this summary was returned in (0 alone): rank 0 reports.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    out_dir: str = ""
    rank: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def failure_lines(self) -> list[str]:
        """One line per failure: the reason, led by the video unless the reason names it already."""
        return [reason if video in reason else f"{video}: {reason}" for video, reason in self.failed]


ModelSource = nn.Module | Callable[[], nn.Module]

# A write that fails for one of these reasons would fail for every later video too: stop computing.
_FOLDER_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def extract_features(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    model: ModelSource,
    settings: FeatureSettings,
    *,
    batch_size: int = 4,
    workers: int = 2,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    reuse: bool | None = None,
) -> FeaturesSummary:
    """Write sliding-window features of every video named by `inputs`, one file per video.

    Runs in one process, or split across the ranks of a `torchrun` job (every rank calls it with
    the same arguments); see the module docstring for the files, where they go and the resume rule.

    Example:
        >>> settings = FeatureSettings(model="vivit_b_fe_k400", window=64, stride=32)
        >>> summary = extract_features(
        ...     ["videos/"], "features/", lambda: create_model("vivit_b_fe_k400", pretrained=True), settings
        ... )
        >>> summary.failed  # [(video, reason), ...]

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
        progress: Called as `progress(videos_done, videos_to_do)` on this rank as videos finish.
        reuse: Model 2 (`FactorizedEncoderViViT`) only: encode each tubelet slice once per video and
            crop and run only the temporal encoder per window (`vivit.windows.WindowRunner`; features
            equal recomputing within 1e-5 in fp32). None (default): when the windows share slices
            (`vivit.windows.shares_slices`: overlapping windows whose stride is a multiple of
            `frame_stride x tubelet_size` frames); False: every window from its pixels, in workers.
            Such videos are decoded in this process (`workers` are not used for them): the slice
            cache must live beside the model. Models 1, 3 and 4 always compute every window whole.

    Returns:
        The `FeaturesSummary` over all ranks (the same on every rank, but `rank`).

    Raises:
        ValueError: For bad settings (window, stride, views) or batch size, or an `out_dir` that
            cannot take files (checked before any work).
        OSError: Decoded clips cannot be passed through shared memory (/dev/shm full; the message
            says what to do).
        vivit.data.VideoDecoderMissingError: A video file needs PyAV, which is not installed.

    Logs:
        `vivit.features`: each video that fails (error, as it fails), duplicate inputs and
        videos already done (info).

    Warns:
        VideoWarning: Short videos (looped), truncated or damaged files.
    """
    if settings.window is not None and settings.window < 0:
        raise ValueError(f"window must be >= 0 frames (0: the whole video), got {settings.window}")
    if settings.stride is not None and (settings.stride < 1 or settings.window == 0):
        raise ValueError("stride must be >= 1 frames and needs a window (window=0 is one clip per video)")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    out = check_output_dir(out_dir, "out_dir")
    with distributed_context() as context:
        plan = _plan(inputs, out, settings)
        if context.is_main:
            for message in plan.duplicates:
                logger.info("note: %s", message)
            if plan.skipped:
                done = len(plan.skipped)
                logger.info(
                    "%d of %d videos already done in %s; skipping them", done, done + len(plan.todo), shown_path(out)
                )
            _clean_interrupted_writes(plan.todo)
        # Nobody writes before every rank has seen the same finished outputs: the shares below are
        # cut from the same to-do list on every rank.
        context.barrier()
        mine = context.shard(plan.todo)
        written: list[str] = []
        failed: list[tuple[str, str]] = []
        if mine:
            _run(mine, out, model, settings, batch_size, workers, device, progress, context, written, failed, reuse)
        everyone = context.all_gather((written, failed))
    return FeaturesSummary(
        written=[v for rank_written, _ in everyone for v in rank_written],
        skipped=plan.skipped,
        failed=plan.failed + [f for _, rank_failed in everyone for f in rank_failed],
        duplicates=plan.duplicates,
        out_dir=shown_path(out),
        rank=context.rank,
    )


def _batch_bytes(cfg: Mapping[str, Any], batch_size: int) -> int:
    """Bytes of one batch of float32 views `(batch_size, C, T, h, w)` a worker hands over."""
    channels, frames = cfg["input_size"][:2]
    height, width = cfg["crop_size"]
    return 4 * batch_size * channels * frames * height * width


def _fatal(item: Mapping[str, Any]) -> BaseException:
    """The error that stops the job for a worker's `fatal` item."""
    if item.get("kind") == "decoder":
        return VideoDecoderMissingError(item["fatal"])
    return OSError(item["fatal"])


def _run(
    mine: list[tuple[_Video, os.stat_result]],
    out: Path,
    model_source: ModelSource,
    settings: FeatureSettings,
    batch_size: int,
    workers: int,
    device: str | torch.device | None,
    progress: ProgressFn | None,
    context: DistributedContext,
    written: list[str],
    failed: list[tuple[str, str]],
    reuse: bool | None = None,
) -> None:
    model = model_source if isinstance(model_source, nn.Module) else model_source()
    if device is None and isinstance(model_source, nn.Module):
        target = next(model.parameters()).device
    else:
        target = local_device(device, context)
    model = model.to(target)
    cfg = resolve_data_config(model_data_config(model)[0], sample_fps=settings.sample_fps)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    num_frames, frame_stride = cfg["input_size"][1], cfg["frame_stride"]
    window, stride = window_and_stride(cfg, settings.window, settings.stride)
    views = settings.views or (1, 1)
    extract = feature_fn(model, settings.per_frame)  # type: ignore[arg-type]
    geometry = _Geometry(cfg, window, stride, views, batch_size)
    paths = [video.path for video, _ in mine]
    dense = _dense_model(model, geometry, reuse)
    if dense is not None:  # Model 2 with shared slices: decoded here, beside the slice cache
        items: Iterator[dict[str, Any]] = _dense_items(paths, geometry, dense, settings.per_frame, reuse)
    else:
        loader = DataLoader(
            _WindowStream(paths, geometry),
            batch_size=None,
            num_workers=min(workers, len(paths)),  # a worker takes whole videos: more would start for nothing
            pin_memory=target.type == "cuda",
            prefetch_factor=2 if min(workers, len(paths)) else None,
            persistent_workers=False,
        )
        items = loader_items(loader, _batch_bytes(cfg, batch_size))
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
    if cfg["sample_fps"] is not None:
        fixed["sample_fps"] = repr(cfg["sample_fps"])
    partial: dict[int, dict[str, Any]] = {}
    finished: set[int] = set()
    stopped: str | None = None  # why the run stopped early (the output folder takes no more files)

    def fail(index: int, reason: str) -> None:
        video = mine[index][0]
        failed.append((shown_path(video.path), reason))
        logger.error("%s", reason if shown_path(video.path) in reason else f"{shown_path(video.path)}: {reason}")
        finished.add(index)
        if progress is not None:
            progress(len(finished), len(mine))

    with torch.inference_mode():
        for item in items:
            if "fatal" in item:
                raise _fatal(item)
            index = item["index"]
            video, stat = mine[index]
            for note in item.get("warnings") or ():
                warnings.warn(note, VideoWarning, stacklevel=2)
            if "error" in item:
                partial.pop(index, None)
                fail(index, item["error"])
                continue
            state = partial.get(index)
            if state is None:
                state = partial[index] = {key: item[key] for key in ("windows", "seconds", "frames", "fps")}
            if "features" in item:  # computed whole by the window runner (`_dense_items`)
                features = item["features"]
            else:
                sums = _window_features(extract, item, state, target, dtype)
                if not item["last"]:
                    continue
                features = (sums / (views[0] * views[1])).cpu().contiguous()
            del partial[index]
            metadata = {
                **fixed,
                "source_path": shown_path(video.path.resolve()),
                "source_size": str(stat.st_size),
                "source_mtime_ns": str(stat.st_mtime_ns),
                "video_frames": str(state["frames"]),
                "video_fps": repr(state["fps"]),
            }
            try:
                _write(video.output, out, features, state["windows"], state["seconds"], metadata)
            except WriteError as err:  # a full disk, a read-only folder: this video fails
                fail(index, str(err))
                if err.errno in _FOLDER_ERRORS:  # ... and so would every later one: stop computing
                    stopped = str(err)
                    break
                continue
            written.append(shown_path(video.path))
            finished.add(index)
            if progress is not None:
                progress(len(finished), len(mine))
    # Every video must come back written or failed: a batch that a worker's queue dropped (torch
    # prints its error and goes on) is a failure, not a video silently left out.
    for index in range(len(mine)):
        if index not in finished:
            if stopped is not None:
                fail(index, f"not computed: the run stopped when a write failed ({stopped})")
            else:
                fail(index, "no result came back from the worker that decoded it (see the errors above); run again")


def _window_features(
    extract: FeatureFn, item: Mapping[str, Any], state: dict[str, Any], target: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One batch of views through the model, added to its windows' sums in `state["sums"]` (created on
    first use): the one place `extract_features` runs the model (a window-reuse engine replaces it).

    Windows own consecutive views; summing each run then adding is deterministic on any device.
    """
    out_batch = extract(item["views"].to(target, dtype, non_blocking=True)).float()
    sums = state.get("sums")
    if sums is None:
        sums = state["sums"] = out_batch.new_zeros((len(state["windows"]), *out_batch.shape[1:]))
    owners, counts = torch.unique_consecutive(item["window"], return_counts=True)
    for owner, part in zip(owners.tolist(), out_batch.split(counts.tolist()), strict=True):
        sums[owner] += part.sum(0)
    return sums


def _write(
    output: Path,
    out_dir: Path,
    features: torch.Tensor,
    windows: torch.Tensor,
    seconds: torch.Tensor,
    metadata: dict[str, str],
) -> None:
    """Write one features file atomically (a temporary file renamed into place).

    Raises:
        WriteError: It could not be written (full disk, read-only folder, a symbolic link that
            appeared since the plan and leads out of `out_dir`), naming the file.
    """
    from safetensors.torch import save

    tensors = {"features": features, "window_frames": windows.contiguous(), "window_seconds": seconds.contiguous()}
    data = _sorted_header(save(tensors, metadata=metadata))
    with writing(output):
        output.parent.mkdir(parents=True, exist_ok=True)
        if not output_key(output).startswith(output_key(out_dir).rstrip(os.sep) + os.sep):
            raise WriteError(output, f"it would be written outside {shown_path(out_dir)} (through a symbolic link)")
        # Written through Python (safetensors' own file functions refuse non-UTF-8 file names).
        with atomic_write(output) as tmp, open(tmp, "wb") as f:
            f.write(data)


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
