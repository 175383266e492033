"""Datasets of video files: class folders, CSV/TSV lists and plain path lists, for training and testing.

`VideoDataset` is a map-style `torch.utils.data.Dataset` in the manner of pytorchvideo's
`LabeledVideoDataset`: it holds paths and labels, decodes nothing until an item is asked for, and
returns dicts (the clip, its label, the video's index and path, the frames it was cut from).

* `mode="train"`: one random clip per item (`sample_frame_indices` with a random start) through
  the paper's augmentation (`create_transform(train=True)`): float32 `(C, T, H, W)`.
* `mode="eval"`: the `clips x crops` test views of `vivit.predict_views`, stacked: float32
  `(V, C, T, H, W)` with `V = clips * crops`, view order clip-major as `predict_views`.

Sources (`VideoDataset(source)`):

* a folder of class folders, `root/<class>/<video>` (videos found recursively below each class;
  classes sorted by name, as torchvision's `ImageFolder`);
* a list file: `.csv` (comma), `.tsv` (tab), or another suffix (tab-separated when a line has a
  tab, else one path per line). Columns are `path[,label[,start,end]]` (Kinetics-style; times
  in seconds, a segment of the video), or named by a header row whose first field is `path`
  (`path,label,start,end`, or one column per label split such as `path,noun,verb` for
  EPIC-KITCHENS); a misspelt header (`paht,label`, `path,lable`) is refused with the header
  expected. Relative paths are relative to the list's folder; `#` starts a comment line;
* a sequence of paths (no labels).

Labels are class names or integer indices. With `label_names` (e.g. a model's
`pretrained_cfg["label_names"]`) names are matched to those indices (exactly, else ignoring case
and `_` versus space); an unknown name is an error that lists close matches. Without it, names
are numbered in sorted order (`dataset.classes`).

A video that cannot be read (missing, damaged, not a video, a list line that cannot be read, a
file that holds no video data for `reader_args["timeout"]` seconds) never stops an epoch: it is counted
(`dataset.failed_indices()`, shared with DataLoader workers) and announced with a
`SkippedVideoWarning`. In training the next video of the list is read in its place, so every
batch keeps its size (which `DistributedDataParallel` needs); in evaluation the item is a dict
with an `"error"` and `collate_videos` moves it out of the batch into `batch["failed"]`.

Example:
    >>> dataset = VideoDataset("k400/train.csv", "train", pretrained_cfg=model.pretrained_cfg, seed=0)
    >>> loader = DataLoader(dataset, batch_size=8, num_workers=4, sampler=DistributedSampler(dataset),
    ...                     collate_fn=collate_videos)
    >>> for epoch in range(epochs):
    ...     loader.sampler.set_epoch(epoch); dataset.set_epoch(epoch)
    ...     for batch in loader:
    ...         loss = F.cross_entropy(model(batch["video"]), batch["label"])
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
import stat
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from ._source import check_input_file, escape_controls
from .sampling import (
    sample_frame_indices,
    sample_frame_indices_by_time,
    view_frame_indices,
    view_frame_indices_by_time,
)
from .transforms import create_transform, crop_test_views, resolve_data_config
from .video import VideoReader, VideoWarning

__all__ = [
    "LIST_SUFFIXES",
    "VIDEO_SUFFIXES",
    "SkippedVideoWarning",
    "VideoDataset",
    "VideoRecord",
    "collate_videos",
    "find_videos",
    "match_labels",
    "read_video_list",
]

#: File suffixes taken for videos when a folder is searched (lower case; `.npy`/`.npz` are
#: uint8 frame arrays, which `vivit.VideoReader` reads without a decoder).
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".npy",
        ".npz",
    }
)
#: Suffixes read as lists of videos rather than as videos.
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst", ".list")

# Errors that mean "this video cannot be read" (the reader raises ValueError / FileNotFoundError /
# IndexError with the file's name); anything else (a missing decoder, out of memory) is not the
# video's fault and is raised.
_VIDEO_ERRORS = (ValueError, OSError, IndexError, EOFError)
_READER_CACHE = 2  # open readers kept per process: consecutive segments of one long video


def shared_memory_error(err: BaseException) -> OSError:
    """The error for a DataLoader worker that cannot hand tensors over in shared memory (/dev/shm full,
    or a file-size limit): no video is at fault, every one would fail the same way, so the job stops."""
    text = " ".join(str(err).split())
    return OSError(
        f"a DataLoader worker cannot pass decoded clips to the main process through shared memory (/dev/shm): "
        f"{text}; give /dev/shm room (in docker: docker run --shm-size 4g) or decode in the main process "
        "(--workers 0, workers=0)"
    )


def share_in_worker(tensors: Iterable[Any]) -> None:
    """Move a worker's tensors into shared memory here, where a failure can be reported.

    Left to torch, it happens in a queue thread whose error is printed and its batch dropped,
    so the main process waits for ever (or misses the video). Raises `shared_memory_error`.
    """
    try:
        for value in tensors:
            if isinstance(value, torch.Tensor):
                value.share_memory_()
    except RuntimeError as err:
        raise shared_memory_error(err) from None


class SkippedVideoWarning(VideoWarning):
    """A dataset item could not be read (the message says why) and was skipped."""


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as text that can always be printed or stored as UTF-8.

    File names are bytes on POSIX; bytes that are not UTF-8 (Python keeps them as surrogate
    escapes) are written `\\xNN`, so the text names the file unambiguously.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class VideoRecord:
    """One entry of a dataset: a video file, its labels as written, an optional segment.

    Attributes:
        path: The video file (absolute, or as given for a sequence of paths).
        labels: Label column name -> value as written (`{"label": "abseiling"}`; empty without
            labels; `{"noun": "tap", "verb": "open"}` for a list with split columns).
        start: Segment start in seconds, or `None` (the beginning).
        end: Segment end in seconds, or `None` (the end).
        where: Where the entry came from, for messages (`list.csv:12`, a class folder).
        error: Why the entry cannot be read (`list.csv:12: a NUL byte in the line ...`), or `None`.
            A record with an error fails when loaded (`VideoDataset` counts it as a broken
            video); its `path` is then the path as far as it could be read, control characters
            written `\\xNN`, for messages only.
    """

    path: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    where: str = ""
    error: str | None = None


# ---------------------------------------------------------------- finding videos
def find_videos(folder: str | os.PathLike[str], suffixes: Iterable[str] = VIDEO_SUFFIXES) -> list[Path]:
    """Video files below `folder`, recursively, sorted; hidden files and folders are left out.

    Args:
        folder: The folder to search (symbolic links to folders are not followed).
        suffixes: File suffixes to take, lower case with the dot (default `VIDEO_SUFFIXES`).

    Returns:
        Paths, sorted by their path relative to `folder`.
    """
    wanted = {s.lower() for s in suffixes}
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in wanted:
                found.append(Path(dirpath, name))
    return found


def _class_folder_records(root: Path) -> list[VideoRecord]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{shown_path(root)} has no class folders: a class-folder dataset is root/<class>/<video> "
            "(or pass a CSV/TSV list)"
        )
    records = [
        VideoRecord(path, {"label": name}, where=shown_path(root / name))
        for name in classes
        for path in find_videos(root / name)
    ]
    if not records:
        raise ValueError(
            f"{shown_path(root)}: no videos in its class folders (suffixes: {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return records


#: The columns of a video list, in the order they are read without a header row.
LIST_COLUMNS = ("path", "label", "start", "end")
_PATH_COLUMNS = ("path", "video")  # names a header may give the path column
_EXPECTED_HEADER = "path,label[,start,end] (or one label column per split: path,noun,verb[,start,end])"
# A header cell: a word, as column names are written (no dot, slash or leading digit, unlike paths and labels).
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ -]*")
# The largest list read (256 MiB: about 5 million lines of Kinetics paths; Kinetics-700 lists 650,000 videos):
# a larger file (a sparse `truncate -s 20G`, a video or log given by mistake) was read whole into memory.
MAX_LIST_BYTES = 256 * 2**20
# The longest list line (characters): a path (PATH_MAX, 4096 bytes) with its labels and times fits many times.
MAX_LINE_CHARS = 65_536


def read_video_list(path: str | os.PathLike[str]) -> list[VideoRecord]:
    """Read a list of videos: CSV/TSV `path[,label[,start,end]]` or one path per line.

    The separator is a comma for `.csv`, a tab for `.tsv`; for other suffixes a tab when any
    line has one, else each line is a whole path (spaces and commas included). Without a header
    the columns are positional: path, label, start, end (seconds). A header row names the
    columns: its first column is `path` (or `video`), then `label`, `start`, `end`; any other
    name is a label column of its own (split labels such as `noun`, `verb`). Empty lines and
    lines starting with `#` are skipped; fields may be quoted as in CSV. Relative paths are
    relative to the list's folder; `~` is expanded. The file is read as UTF-8 (a BOM is ignored;
    UTF-16 with a BOM, as spreadsheets save "Unicode text", is read as such); bytes of a path
    that are not UTF-8 are kept as the file-name bytes they stand for.

    A line that cannot be read (a NUL byte, broken quoting, more fields than columns, no path, a
    time that is not a number, `end <= start`, a label or time that is not UTF-8) does not stop
    the others: it becomes a `VideoRecord` whose `error` says what is wrong, as `list.csv:LINE:
    ...` (control characters written `\\xNN`); `VideoDataset` counts it as a video that failed to
    load. Problems of the whole list raise instead.

    Args:
        path: The list file.

    Returns:
        One `VideoRecord` per entry, in file order.

    Raises:
        FileNotFoundError: If the list does not exist (or is a directory).
        OSError: If it is a symbolic link loop or cannot be read.
        ValueError: If it is not a text file, or its header is wrong: a first row that looks like
            column names but does not start with `path` (`paht,label`), a known column misspelt
            (`path,lable`: the message says which header was expected and the close match), a
            column named twice or left unnamed.
    """
    path = Path(path).expanduser()
    shown = escape_controls(os.fsdecode(path))
    try:
        status = check_input_file(path, "list")
    except OSError as err:  # FileNotFoundError included
        raise type(err)(f"list {err}") from None
    if stat.S_ISDIR(status.st_mode):
        raise FileNotFoundError(f"list {shown} is a directory")
    with open(path, "rb") as f:  # at most the limit, whatever its size says (a file that grows, a pseudo file)
        data = f.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(
            f"list {shown} is larger than {MAX_LIST_BYTES // 2**20} MiB (vivit.data.datasets.MAX_LIST_BYTES): "
            "not a list of videos, or split it into several lists"
        )
    lines = _list_lines(data, shown)
    suffix = path.suffix.lower()
    delimiter = (
        ","
        if suffix == ".csv"
        else "\t"
        if suffix == ".tsv"
        else "\t"
        if any("\t" in line for _, line in lines)
        else None
    )
    base = path.parent
    records: list[VideoRecord] = []
    columns = list(LIST_COLUMNS)
    header = False
    for number, line in lines:
        where = f"{shown}:{number}"
        if len(line) > MAX_LINE_CHARS:  # fails alone, and no message repeats megabytes of it
            reason = f"a line of {len(line):,} characters, more than any path with its labels ({MAX_LINE_CHARS:,})"
            records.append(_bad_line(base, line[:80] + "…", where, f"{reason}: {_quoted(line[:80])}…"))
            continue
        try:
            fields = _fields(line, delimiter)
        except csv.Error as err:
            first = line.split(delimiter or "\n")[0].strip().strip('"')
            records.append(_bad_line(base, first, where, f"broken quoting ({err}): {_quoted(line)}"))
            continue
        if not records and not header and fields and _is_header(fields, delimiter, base, where):
            columns = _header_columns(fields, where)
            header = True
            continue
        records.append(_record(fields, columns, header, base, line, where))
    return records


def _list_lines(data: bytes, shown: str) -> list[tuple[int, str]]:
    """`(line number, text)` of the entries of a list file (blank lines and `#` comments left out)."""
    text = None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its BOM: spreadsheets' "Unicode text"
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            text = None
    if text is None:
        text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    # Lines end at \n, \r\n or \r, as editors number them (str.splitlines also splits at \x0b, \x1c, ...).
    numbered = [
        (n, line)
        for n, line in enumerate(re.split(r"\r\n|\n|\r", text), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    with_nul = sum("\x00" in line for _, line in numbered)
    if with_nul >= 2 and 2 * with_nul > len(numbered):
        raise ValueError(
            f"{shown} is not a text list of videos: {with_nul} of its {len(numbered)} lines hold NUL bytes "
            "(binary data, or a text encoding other than UTF-8 / UTF-16 with a BOM)"
        )
    return numbered


def _fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return [line.strip()]
    (fields,) = csv.reader(io.StringIO(line), delimiter=delimiter, skipinitialspace=True, strict=True)
    return [f.strip() for f in fields]


def _close_column(name: str) -> str | None:
    """The known column `name` is a misspelling of (`lable` -> `label`), or None."""
    close = difflib.get_close_matches(name.lower(), [*LIST_COLUMNS, *_PATH_COLUMNS], n=1, cutoff=0.75)
    return close[0] if close and close[0] != name.lower() else None


def _is_header(fields: list[str], delimiter: str | None, base: Path, where: str) -> bool:
    """Whether the first row names columns rather than holding a video (path + label).

    A row starting with `path`/`video` is a header. So is, for CSV/TSV, a row of two or more
    words (no dot, slash or leading digit, as paths with a suffix and integer labels have) of
    which one is or nearly is a column name, unless its first field names an existing file:
    that is a misspelt header (`paht,label`, `filename,label`), refused with what was expected.
    """
    first = fields[0].lower()
    if first in _PATH_COLUMNS:
        return True
    if delimiter is None or len(fields) < 2 or not all(_COLUMN_NAME.fullmatch(f) for f in fields):
        return False
    if not any(f.lower() in LIST_COLUMNS or _close_column(f) for f in fields):
        return False
    candidate = Path(fields[0]).expanduser()
    if (candidate if candidate.is_absolute() else base / candidate).is_file():
        return False
    row = (delimiter or ",").join(fields)
    guess = _close_column(first)
    hint = f" (did you mean {guess!r}?)" if guess in _PATH_COLUMNS else ""
    raise ValueError(
        f"{where}: the first row {row!r} looks like a header, but a header starts with 'path'{hint}; "
        f"expected {_EXPECTED_HEADER}"
    )


def _header_columns(fields: list[str], where: str) -> list[str]:
    """The column names of a header row (its first field is `path` or `video`), checked."""
    columns = ["path", *(f.lower() for f in fields[1:])]
    if any(column in _PATH_COLUMNS for column in columns[1:]):
        raise ValueError(f"{where}: header names the path column twice ({fields}); expected {_EXPECTED_HEADER}")
    if len(set(columns)) != len(columns) or any(not c for c in columns):
        raise ValueError(f"{where}: header names a column twice or leaves one unnamed: {fields}")
    for column in columns[1:]:
        guess = _close_column(column) if column not in LIST_COLUMNS else None
        if guess is not None:
            raise ValueError(
                f"{where}: header column {column!r} is not a known column (did you mean {guess!r}?); "
                f"expected {_EXPECTED_HEADER}; other names are read as label columns of their own"
            )
    return columns


def _quoted(text: str) -> str:
    """Text read from a list, quoted for a message: control characters and bad bytes written `\\xNN`."""
    return f"'{escape_controls(text)}'"


def _bad_line(
    base: Path, path_text: str, where: str, reason: str, labels: Mapping[str, str] | None = None
) -> VideoRecord:
    """The record of a list line that cannot be read: it fails when loaded, with `where: reason`.

    `labels` are those of the line that could be read (a job that needs a label for every video,
    such as evaluation, then still runs and counts the line as a video that failed).
    """
    text = escape_controls(path_text.strip()) or "?"
    shown = Path(text).expanduser()
    path = shown if shown.is_absolute() else base / shown
    return VideoRecord(path, dict(labels or {}), where=where, error=f"{where}: {reason}")


def _readable_text(value: str) -> bool:
    """Whether a label or time is text: no control character, no byte that is not UTF-8."""
    return escape_controls(value) == value


def _record(fields: list[str], columns: list[str], header: bool, base: Path, line: str, where: str) -> VideoRecord:
    """The record of one list line, or a record with an `error` (see `read_video_list`)."""
    path_text = fields[0] if fields else ""
    if len(fields) > len(columns):
        reason = f"{len(fields)} fields, expected at most {len(columns)} ({', '.join(columns)})"
        return _bad_line(base, path_text, where, reason + ("" if header else "; paths with commas must be quoted"))
    row = dict(zip(columns, fields, strict=False))
    labels = {k: v for k, v in row.items() if k not in ("path", "start", "end") and v != "" and _readable_text(v)}
    if "\x00" in line:
        return _bad_line(base, path_text, where, f"a NUL byte in the line ({_quoted(line)})", labels)
    if not row.get("path"):
        return _bad_line(base, path_text, where, "no video path", labels)
    for column, value in row.items():  # a path's bytes are a file name's; a label's or time's are text
        if column != "path" and any(0xDC80 <= ord(char) <= 0xDCFF for char in value):
            return _bad_line(base, path_text, where, f"{column} {_quoted(value)} is not UTF-8 text", labels)
    video = Path(row.pop("path")).expanduser()
    try:
        start, end = (_seconds(row.pop(key, ""), key) for key in ("start", "end"))
        if start is not None and end is not None and not end > start:
            raise ValueError(f"end ({end} s) must be after start ({start} s)")
    except ValueError as err:
        return _bad_line(base, path_text, where, str(err), labels)
    labels = {k: v for k, v in row.items() if v != ""}
    return VideoRecord(video if video.is_absolute() else base / video, labels, start, end, where)


def _seconds(text: str, name: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {text!r}")
    return value


def _records(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | VideoRecord]) -> list[VideoRecord]:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source).expanduser()
        if root.is_dir():
            return _class_folder_records(root)
        try:
            check_input_file(root, "dataset")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} (expected a class folder tree or a CSV/TSV list)") from None
        if root.suffix.lower() in VIDEO_SUFFIXES:
            raise ValueError(
                f"{shown_path(root)} is a video, not a dataset: pass a class folder tree, a list file, or a list of paths"
            )
        records = read_video_list(root)
        if not records:  # a list emptied by mistake would otherwise train or score nothing, silently
            raise ValueError(
                f"{shown_path(root)} lists no videos (expected rows 'path,label[,start,end]' or one path per line)"
            )
        return records
    return [item if isinstance(item, VideoRecord) else VideoRecord(Path(item)) for item in source]


# ---------------------------------------------------------------- labels
def _normalized(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def match_labels(values: Sequence[tuple[str, str]], label_names: Sequence[str], what: str = "label") -> list[int]:
    """Indices of labels written as names or integer indices into `label_names`.

    A value is matched, in order: to a name exactly; to an integer index in range; to the one
    name equal to it ignoring case, repeated spaces and `_` versus space (`air_drumming` ->
    `air drumming`).

    Args:
        values: `(value, where)` pairs; `where` (e.g. `list.csv:12`) is quoted in errors.
        label_names: The known names, by index (e.g. a model's `label_names`).
        what: What the values are, for the message (`label`, `noun label`).

    Returns:
        One index per value.

    Raises:
        ValueError: Naming every unknown value (up to 10) with its place and the closest
            known names (difflib), and how many values were unknown in all.
    """
    names = list(label_names)
    exact = {name: i for i, name in enumerate(names)}
    loose: dict[str, int | None] = {}
    for i, name in enumerate(names):
        key = _normalized(name)
        loose[key] = None if key in loose else i  # None: ambiguous
    out, unknown = [], []
    for value, where in values:
        index = exact.get(value)
        if index is None and value.lstrip("-").isdigit() and 0 <= int(value) < len(names):
            index = int(value)
        if index is None:
            index = loose.get(_normalized(value))
        if index is None:
            unknown.append((value, where))
            index = -1
        out.append(index)
    if unknown:
        distinct = list(dict.fromkeys(v for v, _ in unknown))
        parts = []
        for value in distinct[:10]:
            place = next(w for v, w in unknown if v == value)
            close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
            if not close:
                close = [names[i] for k, i in loose.items() if i is not None and k in _normalized(value)][:3]
            hint = f" (close matches: {', '.join(repr(c) for c in close)})" if close else " (no close match)"
            parts.append(f"{value!r} at {place}{hint}")
        more = f"; and {len(distinct) - 10} more unknown" if len(distinct) > 10 else ""
        raise ValueError(
            f"{len(unknown)} {what}{'s' if len(unknown) != 1 else ''} not among the {len(names)} known classes: "
            + "; ".join(parts)
            + more
        )
    return out


def _label_columns(records: Sequence[VideoRecord], label_names: Any) -> list[str]:
    if not isinstance(label_names, Mapping):
        return ["label"]
    columns = list(label_names)
    present = {key for record in records for key in record.labels}
    missing = [c for c in columns if c not in present]
    if present and missing:
        raise ValueError(
            f"label columns {missing} are not in the list (it has {sorted(present)}); split labels need a "
            f"header row such as 'path,{','.join(columns)}'"
        )
    return columns


def _label_or_none(value: str, names: Sequence[str] | None) -> int:
    """The index of a label from a line that could not be read, or -1 where it matches nothing."""
    if names is None:
        return int(value) if value.isdigit() else -1
    try:
        return match_labels([(value, "")], names)[0]
    except ValueError:
        return -1


def _numbered(values: Sequence[tuple[str, str]]) -> tuple[list[int], list[str] | None]:
    """Labels without known names: integers as written, or names numbered in sorted order."""
    texts = [v for v, _ in values]
    if all(t.isdigit() for t in texts):
        return [int(t) for t in texts], None
    classes = sorted(set(texts))
    index = {name: i for i, name in enumerate(classes)}
    return [index[t] for t in texts], classes


# ---------------------------------------------------------------- the dataset
class VideoDataset(Dataset):
    """Videos with labels, decoded clip by clip in the worker that asks for them.

    Args:
        source: A class-folder tree, a list file (CSV/TSV, see `read_video_list`), or a sequence
            of video paths / `VideoRecord`s.
        mode: `"train"` (one random augmented clip per item) or `"eval"` (all test views).
        pretrained_cfg: Preprocessing cfg of the model (frames, stride, sizes, mean/std, test
            views); see `vivit.data.resolve_data_config`. Default: Kinetics ViViT's.
        label_names: Known class names by index (e.g. the model's `label_names`), or for split
            labels a mapping column -> names (`{"noun": nouns, "verb": verbs}`); labels are then
            matched to these (unknown names raise `ValueError` listing close matches).
            Default: integer labels as written, names numbered in sorted order.
        views: `(clips, crops)` of eval mode (default: the cfg's `test_views`).
        transform: Replaces the training augmentation (called as `transform(frames,
            generator=...)` on uint8 `(T, H, W, 3)` frames); default
            `create_transform(pretrained_cfg, train=True)`.
        seed: Makes training clips reproducible: the randomness of item `i` in epoch `e`
            comes from `(seed, e, i)` alone, whatever the workers or ranks (call `set_epoch`).
            `None` draws from torch's global generator (which DataLoader seeds per worker and epoch).
        reader_args: Keyword arguments for `vivit.VideoReader` (size limits, `fps` of frame arrays,
            `timeout`: the per-video bound on reading without finding video data, 20 s by default).
        max_retries: Training only: how many following videos are tried in place of a broken one
            before giving up with RuntimeError (the data is then likely unreadable as a whole).
        sample_fps: Choose frames by presentation time, `sample_fps` per second, instead of every
            `frame_stride` frames (`vivit.data.sampling.sample_frame_indices_by_time`: a clip then
            spans `num_frames / sample_fps` seconds in any file, variable frame rates included).
            Training takes a random start, evaluation the evenly spaced test clips. Default: the
            cfg's `sample_fps` (None in the released models' cfgs: index sampling, as Scenic).

    Attributes:
        records: The `VideoRecord`s, by index.
        targets: Label of each item: an int (`-1` without a label) or, with split labels, a
            tuple of ints.
        classes: The class names (`label_names`, the sorted names found, or `None` for integer
            labels); a dict column -> names for split labels.

    Raises:
        FileNotFoundError: If `source` does not exist.
        ValueError: For a malformed list, unknown labels, or bad settings.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | VideoRecord],
        mode: str = "train",
        *,
        pretrained_cfg: Mapping[str, Any] | None = None,
        label_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        views: tuple[int, int] | None = None,
        transform: Any = None,
        seed: int | None = None,
        reader_args: Mapping[str, Any] | None = None,
        max_retries: int = 10,
        sample_fps: float | None = None,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.mode = mode
        self.cfg = resolve_data_config(pretrained_cfg, sample_fps=sample_fps)
        self.num_frames = self.cfg["input_size"][1]
        self.frame_stride = self.cfg["frame_stride"]
        self.sample_fps: float | None = self.cfg["sample_fps"]
        clips, crops = views if views is not None else self.cfg["test_views"]
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1 or crops not in (1, 3):
            raise ValueError(f"views must be (clips >= 1, crops 1 or 3), got {views!r}")
        self.views = (clips, crops)
        self.transform: Any = (
            transform
            if transform is not None
            else (create_transform(self.cfg, train=True) if mode == "train" else None)
        )
        self.seed = seed
        self.reader_args = dict(reader_args or {})
        self.max_retries = int(max_retries)
        self.records = _records(source)
        self.targets, self.classes = self._labels(label_names)
        # Shared with DataLoader workers (fork or spawn): what failed, and the current epoch.
        self._failed = torch.zeros(len(self.records), dtype=torch.uint8).share_memory_()
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._readers: OrderedDict[Path, VideoReader] = OrderedDict()

    # ------------------------------------------------------------ labels
    def _labels(self, label_names: Any) -> tuple[list[Any], Any]:
        records = self.records
        columns = _label_columns(records, label_names)
        per_column: dict[str, list[int]] = {}
        classes: dict[str, list[str] | None] = {}
        for column in columns:
            # Lines that could not be read are counted as failed videos when loaded: their labels, if
            # any could be read, are matched where they can be and never stop the whole dataset.
            labelled = [
                (i, r.labels[column], r.where) for i, r in enumerate(records) if column in r.labels and r.error is None
            ]
            values = [(value, where) for _, value, where in labelled]
            indices = [-1] * len(records)
            names: list[str] | None
            if isinstance(label_names, Mapping):
                names = list(label_names[column])
                found = match_labels(values, names, f"{column} label")
            elif label_names is not None:
                names = list(label_names)
                found = match_labels(values, names)
            else:
                found, names = _numbered(values)
            for (i, _, _), index in zip(labelled, found, strict=True):
                indices[i] = index
            for i, record in enumerate(records):
                if record.error is not None and column in record.labels:
                    indices[i] = _label_or_none(record.labels[column], names)
            per_column[column] = indices
            classes[column] = names
        if isinstance(label_names, Mapping):
            targets = [tuple(per_column[c][i] for c in columns) for i in range(len(records))]
            return targets, classes
        return per_column["label"], classes["label"]

    # ------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds training clips (with `seed`); seen by running workers too."""
        self._epoch.fill_(int(epoch))

    def failed_indices(self) -> list[int]:
        """Indices of the videos that failed to read so far, in any worker of this process's loaders."""
        return torch.nonzero(self._failed).flatten().tolist()

    @property
    def num_failed(self) -> int:
        """How many distinct videos failed to read so far (see `failed_indices`)."""
        return int(self._failed.sum())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()  # open files stay in their process; a worker opens its own
        return state

    # ------------------------------------------------------------ items
    def __getitem__(self, index: int) -> dict[str, Any]:
        """The item `index`: a dict with `video`, `label`, `video_index`, `path`, `frame_indices`.

        `video` is float32 `(C, T, H, W)` (train) or `(V, C, T, H, W)` (eval); `label` an int
        (`-1`: none) or, for split labels, an int64 tensor `(num_splits,)`; `frame_indices`
        int64 `(T,)` (train) or `(clips, T)` (eval), indices into the decoded video. An eval
        item that cannot be read is `{"video_index", "path", "label", "error"}` instead.
        """
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        if self.mode == "eval":
            try:
                return self._eval_item(index)
            except _VIDEO_ERRORS as err:
                message = self._fail(index, err)
                return {
                    "video_index": index,
                    "path": str(self.records[index].path),
                    "label": self._label(index),
                    "error": message,
                }
        failures = []
        for attempt in range(max(self.max_retries, 1)):
            current = (index + attempt) % len(self.records)
            try:
                return self._train_item(current)
            except _VIDEO_ERRORS as err:
                failures.append(self._fail(current, err))
        raise RuntimeError(
            f"{len(failures)} videos in a row could not be read, starting at index {index}; the data looks "
            f"unreadable as a whole. Last error: {failures[-1]}"
        )

    def _fail(self, index: int, err: BaseException) -> str:
        self._failed[index] = 1
        record = self.records[index]
        shown = shown_path(record.path)
        message = str(err) if shown in str(err) else f"{shown}: {err}"
        if record.error is not None:  # a list line that could not be read: `list.csv:7: ...`
            message = record.error
        elif record.where and record.where not in message:  # the list line it came from
            message = f"{message} ({record.where})"
        warnings.warn(f"skipping {message}", SkippedVideoWarning, stacklevel=3)
        return message

    def _label(self, index: int) -> Any:
        target = self.targets[index]
        return torch.tensor(target, dtype=torch.int64) if isinstance(target, tuple) else int(target)

    def _reader(self, path: Path) -> VideoReader:
        reader = self._readers.pop(path, None)
        if reader is None:
            # Many workers decode at once: one FFmpeg thread each keeps the cores from thrashing.
            threads = 1 if get_worker_info() is not None else 0
            reader = VideoReader(path, **{"num_threads": threads, **self.reader_args})
        self._readers[path] = reader
        while len(self._readers) > _READER_CACHE:
            self._readers.popitem(last=False)[1].close()
        return reader

    def _segment(self, reader: VideoReader, record: VideoRecord) -> tuple[int, int]:
        """Frames `[first, last)` of the record's segment (timestamps: right for variable frame rates)."""
        count = len(reader)
        if record.start is None and record.end is None:
            return 0, count
        times = reader.timestamps
        if not np.isfinite(times).all():
            raise ValueError(
                f"{shown_path(record.path)} has no frame rate, so its segment [{record.start}, {record.end}) s "
                "cannot be found; store an 'fps' entry in the .npz or pass reader_args={'fps': ...}"
            )
        first = int(np.searchsorted(times, record.start, side="left")) if record.start is not None else 0
        last = int(np.searchsorted(times, record.end, side="left")) if record.end is not None else count
        if last <= first:
            duration = reader.duration_seconds
            raise ValueError(
                f"{shown_path(record.path)}: segment [{record.start}, {record.end}) s holds no frame "
                f"(the video lasts {duration:.3f} s)"
            )
        return first, last

    def _open(self, record: VideoRecord) -> VideoReader:
        if record.error is not None:
            raise ValueError(record.error)
        return self._reader(record.path)

    def _train_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        reader = self._open(record)
        first, last = self._segment(reader, record)
        generator = self._generator(index)
        if self.sample_fps is None:
            count = last - first
            indices = sample_frame_indices(count, self.num_frames, self.frame_stride, generator=generator) + first
        else:
            times = reader.timestamps
            end = times[last] if last < len(times) else reader.duration_seconds
            indices = (
                sample_frame_indices_by_time(
                    times[first:last], self.num_frames, self.sample_fps, end_seconds=end, generator=generator
                )
                + first
            )
        frames = reader.get_frames_at(indices)
        video = self.transform(frames, generator=generator)
        return {
            "video": video,
            "label": self._label(index),
            "video_index": index,
            "path": str(record.path),
            "frame_indices": torch.from_numpy(indices),
        }

    def _eval_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        reader = self._open(record)
        first, last = self._segment(reader, record)
        clips, crops = self.views
        if self.sample_fps is None:
            indices = view_frame_indices(len(reader), self.num_frames, self.frame_stride, clips, first=first, last=last)
        else:
            indices = view_frame_indices_by_time(
                reader.timestamps,
                self.num_frames,
                self.sample_fps,
                clips,
                first=first,
                last=last,
                end_seconds=reader.duration_seconds,
            )
        views = []
        for row in indices:  # one clip's frames at a time: memory bounded by a clip, not the video
            views.extend(crop_test_views(torch.from_numpy(reader.get_frames_at(row)), crops, self.cfg))
        return {
            "video": torch.stack(views),
            "label": self._label(index),
            "video_index": index,
            "path": str(record.path),
            "frame_indices": torch.from_numpy(indices),
        }

    def _generator(self, index: int) -> torch.Generator:
        if self.seed is None:
            seed = int(torch.randint(2**62, (1,)))  # the global generator: DataLoader seeds it per worker and epoch
        else:
            state = np.random.SeedSequence([int(self.seed), int(self._epoch), int(index)]).generate_state(2, np.uint32)
            seed = int(state[0]) << 31 | int(state[1]) >> 1
        return torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        classes = self.classes
        count = sum(len(v or ()) for v in classes.values()) if isinstance(classes, dict) else len(classes or ())
        return (
            f"VideoDataset({len(self)} videos, mode={self.mode!r}, {count or 'integer'} classes, "
            + (
                f"clip {self.num_frames} frames every {self.frame_stride}"
                if self.sample_fps is None
                else f"clip {self.num_frames} frames at {self.sample_fps:g} per second"
            )
            + (f", views {self.views[0]}x{self.views[1]})" if self.mode == "eval" else ")")
        )


def collate_videos(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch `VideoDataset` items, setting aside those that failed.

    Use as `DataLoader(..., collate_fn=collate_videos)`. Items with an `"error"` (eval mode's
    unreadable videos) are left out of the batch and listed in `batch["failed"]` as dicts
    `{"video_index", "path", "label", "error"}`; the others are stacked by torch's
    `default_collate` (`video` `(B, ...)`, `label` `(B,)` or `(B, num_splits)`, `path` a list).
    When every item failed the batch is `{"failed": [...]}` only.

    Args:
        items: Items from `VideoDataset.__getitem__`.

    Returns:
        The batch dict, always with a `"failed"` list (usually empty).
    """
    good = [item for item in items if "error" not in item]
    failed = [dict(item) for item in items if "error" in item]
    batch: dict[str, Any] = dict(default_collate(good)) if good else {}
    batch["failed"] = failed
    return batch
