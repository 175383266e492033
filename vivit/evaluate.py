"""Accuracy of a checkpoint on a labelled video set, with the paper's multi-view test protocol.

`evaluate(source, model)` is the job behind `vivit evaluate`. Every video of a class-folder tree
or a CSV/TSV list (`vivit.data.VideoDataset`, eval mode) is classified as `vivit.predict_views`
does it: the `clips x crops` views (4x3 for the released Kinetics models), logits averaged over
the views (Scenic averages logits, not probabilities). Reported, as percentages:

* `top1`, `top5`: share of videos whose label is the first / among the first five predictions;
* `mean_class_accuracy`: top-1 accuracy of each class present in the labels, averaged over those
  classes (the "mean per-class accuracy" some Kinetics tables quote);
* for a head with `class_splits` (EPIC-KITCHENS-100: 300 nouns then 97 verbs), the same per split
  (`noun_top1`, `verb_top5`, ...) and the action: Scenic's `joint_accuracy` / `joint_top_k`
  (`scenic/projects/vivit/model_utils.py`, reported by `ViViTMultiHeadClassificationModel` as
  `noun-verb_accuracy`): the two splits' softmaxes are multiplied into a joint distribution over
  (first, second) pairs and ranked; top-1 is then "both the noun and the verb right".

Videos that fail to decode are not scored; they are counted (`num_failed`) and listed. Under
`torchrun` every rank classifies every `world_size`-th video and rank 0 gathers the logits, so
the metrics are exactly those of one process.

The job returns an `Evaluation` (the metrics and one prediction record per listed video) and
prints nothing: each failed video is logged as it fails (`logging.getLogger("vivit.evaluate")`),
short or damaged videos are reported with `VideoWarning` (also those read in DataLoader workers).
`Evaluation.write(out_dir)` writes `predictions.jsonl` (one line per listed video, in list
order: path, label, top-5, the averaged logits; or the error) and `metrics.json`; `vivit evaluate`
prints the metrics first, so a folder that fails at the last step never loses them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .data.datasets import (
    SkippedVideoWarning,
    VideoDataset,
    VideoRecord,
    collate_videos,
    shared_memory_error,
    shown_path,
)
from .data.temporal import TEMPORAL_PERTURBATIONS, perturb_time
from .data.transforms import resolve_data_config
from .data.video import VideoDecoderMissingError, VideoReader, VideoWarning
from .distributed import distributed_context, local_device
from .files import WriteError, atomic_write, check_output_dir, writing
from .predict import ProgressFn, inference_model, model_data_config, top_predictions
from .version import __version__
from .workers import loader_items, share_batch

__all__ = ["Evaluation", "EvaluationNotWrittenError", "classification_metrics", "evaluate"]

logger = logging.getLogger(__name__)


def classification_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Top-1, top-5 and mean per-class accuracy (percent), per split and joint for split heads.

    Args:
        logits: float `(N, num_classes)`, one row per video (e.g. view-averaged logits).
        labels: int `(N,)` class indices, or for split heads `(N, num_splits)` indices within
            each split.
        class_splits: Sizes of the consecutive logit groups with a softmax each (Scenic's
            `class_splits`, e.g. `(300, 97)` for EPIC-KITCHENS-100 nouns and verbs).
        split_names: Names of the splits (default `"1"`, `"2"`, ... as Scenic).

    Returns:
        `top1`, `top5`, `mean_class_accuracy` for a single head; for split heads
        `<split>_top1`, `<split>_top5`, `<split>_mean_class_accuracy` for each split, and with
        two splits `action_top1`, `action_top5` (Scenic's joint accuracy). Values in percent;
        NaN for no videos.

    Raises:
        ValueError: If the shapes do not agree.
    """
    logits_t = torch.as_tensor(logits, dtype=torch.float32)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    if logits_t.ndim != 2:
        raise ValueError(f"logits must be (N, num_classes), got shape {tuple(logits_t.shape)}")
    if not class_splits:
        if labels_t.ndim != 1 or len(labels_t) != len(logits_t):
            raise ValueError(f"labels must be ({len(logits_t)},), got shape {tuple(labels_t.shape)}")
        return _single_head(logits_t, labels_t, "")
    sizes = [int(s) for s in class_splits]
    names = list(split_names or [str(i + 1) for i in range(len(sizes))])
    if sum(sizes) != logits_t.shape[1] or len(names) != len(sizes):
        raise ValueError(f"class_splits {sizes} must add up to the {logits_t.shape[1]} logits, with one name each")
    if labels_t.shape != (len(logits_t), len(sizes)):
        raise ValueError(f"labels must be ({len(logits_t)}, {len(sizes)}) for split heads, got {tuple(labels_t.shape)}")
    out: dict[str, float] = {}
    parts = logits_t.split(sizes, dim=1)
    for i, (part, name) in enumerate(zip(parts, names, strict=True)):
        out.update(_single_head(part, labels_t[:, i], f"{name}_"))
    if len(sizes) == 2:
        out.update(_joint(parts[0], parts[1], labels_t[:, 0], labels_t[:, 1]))
    return out


def _percent(hits: torch.Tensor) -> float:
    return float(hits.double().mean() * 100) if len(hits) else math.nan


def _single_head(logits: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict[str, float]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit1 = logits.argmax(dim=1) == labels  # argmax takes the first of tied maxima, as jnp.argmax
    hit5 = (top == labels[:, None]).any(dim=1)
    per_class = [_percent(hit1[labels == c]) for c in labels.unique().tolist()]
    return {
        f"{prefix}top1": _percent(hit1),
        f"{prefix}top5": _percent(hit5),
        f"{prefix}mean_class_accuracy": float(np.mean(per_class)) if per_class else math.nan,
    }


def _joint(
    first: torch.Tensor, second: torch.Tensor, first_labels: torch.Tensor, second_labels: torch.Tensor
) -> dict[str, float]:
    """Scenic's `get_joint_logits_labels` + top-k: rank pairs by the product of the two softmaxes."""
    hit1, hit5 = [], []
    n_second = second.shape[1]
    for start in range(0, len(first), 256):  # (chunk, 300 * 97) at a time
        a = first[start : start + 256].softmax(-1)
        b = second[start : start + 256].softmax(-1)
        pairs = (a[:, :, None] * b[:, None, :]).flatten(1)
        target = first_labels[start : start + 256] * n_second + second_labels[start : start + 256]
        hit1.append(pairs.argmax(dim=1) == target)
        hit5.append((pairs.topk(min(5, pairs.shape[1]), dim=1).indices == target[:, None]).any(dim=1))
    none = torch.zeros(0, dtype=torch.bool)
    return {
        "action_top1": _percent(torch.cat(hit1) if hit1 else none),
        "action_top5": _percent(torch.cat(hit5) if hit5 else none),
    }


def _label_names(cfg: Mapping[str, Any], num_classes: int) -> list[str] | dict[str, list[str]] | None:
    """The model's label names, per split for split heads; None when it has none (labels must be indices)."""
    names = cfg.get("label_names")
    if names is not None and len(names) != num_classes:
        names = None  # a replaced head no longer matches the names
    splits = cfg.get("class_splits")
    if splits and sum(splits) == num_classes:
        split_names = list(cfg.get("split_names") or [str(i + 1) for i in range(len(splits))])
        out, start = {}, 0
        for name, size in zip(split_names, splits, strict=True):
            out[name] = list(names[start : start + size]) if names else [str(i) for i in range(size)]
            start += size
        return out
    return list(names) if names is not None else None


@dataclass
class Evaluation:
    """What `evaluate` computed.

    Attributes:
        metrics: The accuracies (percent) and counts: `top1`, `top5`, `mean_class_accuracy` (per
            split and `action_*` for split heads), `num_videos` (scored), `num_failed`, `failed`
            (`[{"path", "error"}]`), `views`, `model`, `vivit_version`.
        predictions: One record per listed video, in list order (what `predictions.jsonl` holds):
            `path`, `label`, `label_index`, then `top5` and `logits`, or `error`.
        split_names: The names of the head's class splits (EPIC-KITCHENS: noun, verb), or None.
        rank: The rank of the process this was returned in (0 alone): rank 0 reports and writes.
    """

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    split_names: list[str] | None = None
    rank: int = 0

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write `out_dir/predictions.jsonl` and `out_dir/metrics.json` atomically (the folder is created).

        Returns:
            The two paths.

        Raises:
            WriteError: A file could not be written (full disk, read-only folder, ...), naming it;
                nothing half-written is left.
        """
        out = Path(out_dir).expanduser()
        files = [out / "predictions.jsonl", out / "metrics.json"]
        texts = [
            "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in self.predictions),
            json.dumps(self.metrics, indent=2, ensure_ascii=False) + "\n",
        ]
        created = [folder for folder in (out, *out.parents) if not folder.exists()]
        try:
            for path, text in zip(files, texts, strict=True):
                with writing(path), atomic_write(path) as tmp:
                    tmp.write_text(text, encoding="utf-8")
        except WriteError:
            for folder in created:  # deepest first: the folders this call made, if they stayed empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        return files


class EvaluationNotWrittenError(WriteError):
    """`evaluate(..., out_dir=...)` computed its results but could not write them: they are in `evaluation`."""

    evaluation: Evaluation | None = None


def evaluate(
    source: str | os.PathLike[str] | Sequence[VideoRecord],
    model: nn.Module,
    *,
    views: tuple[int, int] | None = None,
    batch_size: int = 4,
    workers: int = 2,
    out_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    model_name: str | None = None,
    progress: ProgressFn | None = None,
    temporal_check: bool = False,
    sample_fps: float | None = None,
) -> Evaluation:
    """Classify every video of a labelled set with the multi-view protocol and score it.

    Example:
        >>> model = vivit.create_model("vivit_b_fe_k400", pretrained=True)
        >>> result = evaluate("kinetics400/val.csv", model, views=(4, 3))
        >>> result.metrics["top1"]
        >>> result.write("eval/")  # predictions.jsonl and metrics.json

    Args:
        source: A class-folder tree or a CSV/TSV list (`path,label[,start,end]`; for split heads
            a header with one column per split, e.g. `path,noun,verb`), as `VideoDataset` reads it.
            Label names are matched to the model's `label_names`; integer labels are indices.
        model: The classifier (used in eval mode, unmodified).
        views: `(clips, crops)`; default the model's `test_views`.
        batch_size: Views per forward pass.
        workers: DataLoader processes that decode (0: in this process).
        out_dir: Also write the results there on rank 0 (`Evaluation.write`); the folder is checked
            before any work. None: nothing is written.
        device: Where the model runs: `"auto"` for CUDA when available (`cuda:LOCAL_RANK` under
            torchrun), else the CPU; default (`None`): the model's own device.
        model_name: Recorded in the metrics.
        progress: Called as `progress(videos_done, videos_total)` on this rank as videos finish.
        temporal_check: Also score every video with its views' frames shuffled, reversed and
            replaced by the middle frame (`vivit.data.temporal`): `metrics["temporal_check"]` holds
            the top-1 of each (`normal`, `shuffled`, `reversed`, `middle_frame`). A model that uses
            motion loses accuracy; one that recognises scenes does not.
        sample_fps: Choose each clip's frames by presentation time, `sample_fps` per second
            (`VideoDataset(sample_fps=)`: a clip spans the same seconds in any file); default the
            model cfg's (None for the released Kinetics models: index sampling, as Scenic).

    Returns:
        The `Evaluation` (the same metrics on every rank).

    Raises:
        ValueError: If the list has unlabelled entries, a label the model does not know (with
            close matches), or labels outside the model's classes; an `out_dir` that takes no files.
        OSError: Decoded clips cannot be passed through shared memory (/dev/shm full or too small;
            the message says what to do).
        vivit.data.VideoDecoderMissingError: A video file needs PyAV, which is not installed.
        EvaluationNotWrittenError: With `out_dir`: the results could not be written (they are in
            its `evaluation`).

    Logs:
        `vivit.evaluate`: each video that fails, as an error, as it fails.

    Warns:
        VideoWarning: Short videos (their frames are looped), truncated or damaged files.
    """
    if out_dir is not None:
        check_output_dir(out_dir, "out_dir")
    cfg, _ = model_data_config(model)
    cfg = resolve_data_config(cfg, sample_fps=sample_fps)  # VideoDataset reads the cfg's sample_fps
    num_classes = int(getattr(model, "num_classes", 0) or cfg.get("num_classes") or 0)
    names = _label_names(cfg, num_classes)
    views = tuple(views or cfg["test_views"])  # type: ignore[assignment]
    try:
        dataset = VideoDataset(source, "eval", pretrained_cfg=cfg, label_names=names, views=views)  # type: ignore[arg-type]
    except RuntimeError as err:  # its failure counters live in shared memory, for the workers to update
        if "shared memory" not in str(err):
            raise
        raise shared_memory_error(err) from None
    _check_labels(dataset, names, num_classes)
    splits = [len(v) for v in names.values()] if isinstance(names, dict) else None
    split_names = list(names) if isinstance(names, dict) else None
    channels, num_frames = cfg["input_size"][:2]
    video_bytes = 4 * views[0] * views[1] * channels * num_frames * cfg["crop_size"][0] * cfg["crop_size"][1]
    with distributed_context() as context:
        target = next(model.parameters()).device if device is None else local_device(device, context)
        runner = inference_model(model).to(target)
        dtype = next((p.dtype for p in runner.parameters() if p.is_floating_point()), torch.float32)
        mine = context.shard(range(len(dataset)))
        loader = DataLoader(
            _ReportingItems(dataset, mine),
            batch_size=1,
            num_workers=min(workers, len(mine)),  # one video per item: more workers would start for nothing
            collate_fn=_collate,
            pin_memory=target.type == "cuda",
            prefetch_factor=2 if min(workers, len(mine)) else None,
        )
        results: list[tuple[int, np.ndarray | None, str | None]] = []
        perturbed: list[tuple[int, dict[str, np.ndarray]]] = []
        with torch.inference_mode():
            for batch in loader_items(loader, video_bytes):
                if "fatal" in batch:
                    if batch.get("kind") == "decoder":
                        raise VideoDecoderMissingError(batch["fatal"])
                    raise OSError(batch["fatal"])
                for note in batch["warnings"]:
                    warnings.warn(note, VideoWarning, stacklevel=2)
                for failure in batch["failed"]:
                    results.append((failure["video_index"], None, failure["error"]))
                    logger.error("%s", failure["error"])
                if "video" in batch:
                    (index,) = batch["video_index"].tolist()
                    results.append((index, _average_logits(runner, batch["video"][0], batch_size, target, dtype), None))
                    if temporal_check:
                        perturbed.append(
                            (index, _perturbed_logits(runner, batch["video"][0], index, batch_size, target, dtype))
                        )
                if progress is not None:
                    progress(len(results), len(mine))
        gathered = [r for rank_results in context.all_gather(results) for r in rank_results]
    gathered.sort(key=lambda r: r[0])
    metrics = _score(dataset, gathered, splits, split_names, views, model_name)
    if temporal_check:
        metrics["temporal_check"] = _temporal_scores(
            dataset, metrics, [r for part in context.all_gather(perturbed) for r in part], splits, split_names
        )
    result = Evaluation(metrics, _prediction_records(dataset, gathered, cfg), split_names, context.rank)
    if out_dir is not None and context.is_main:
        try:
            result.write(out_dir)
        except WriteError as err:
            error = EvaluationNotWrittenError(err.path, err.reason, err.errno)
            error.evaluation = result
            raise error from err
    return result


class _ReportingItems(Dataset):
    """The dataset's items `indices`, with what happened while reading them carried in the item.

    VideoWarnings raised while reading (in a DataLoader worker they would be printed by that
    process, or lost) travel as text in `warnings`, with the short-video warning `predict` and
    `features` give; a missing video decoder (every video would fail the same way) becomes a
    `fatal` item.
    """

    def __init__(self, dataset: VideoDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VideoWarning)
            try:
                item = dict(self.dataset[index])
            except VideoDecoderMissingError as err:
                return {"video_index": index, "fatal": str(err), "kind": "decoder"}
        notes = [
            str(w.message)
            for w in caught
            if issubclass(w.category, VideoWarning) and not issubclass(w.category, SkippedVideoWarning)
        ]
        if "error" not in item:
            looped = _looped_note(self.dataset, index, item["frame_indices"])
            if looped:
                notes.append(looped)
        item["warnings"] = notes
        return item


def _looped_note(dataset: VideoDataset, index: int, frame_indices: torch.Tensor) -> str | None:
    """The short-video warning of `predict_views` when a view's clip wrapped around (DMVR's looping):
    its indices stop increasing exactly when the video (segment) is shorter than one clip spans."""
    rows = frame_indices.reshape(-1, frame_indices.shape[-1])
    if rows.shape[1] < 2 or bool((rows[:, 1:] > rows[:, :-1]).all()):
        return None
    record = dataset.records[index]
    name = shown_path(record.path)
    num_frames, stride = dataset.num_frames, dataset.frame_stride
    span = (num_frames - 1) * stride + 1
    clip = (
        f"one clip spans ({num_frames} frames every {stride} = {span}); its frames are repeated (looped), as DMVR does"
        if dataset.sample_fps is None
        else f"one clip spans ({num_frames} frames at {dataset.sample_fps:g} per second); its frames are repeated "
        "(looped), as DMVR does"
    )
    if record.start is not None or record.end is not None:
        return f"the segment [{record.start}, {record.end}) s of {name} is shorter than {clip}"
    try:
        with VideoReader(record.path) as reader:
            count = len(reader)
    except (OSError, ValueError):
        return f"{name} is shorter than {clip}"
    return f"{name} has {count} frame{'' if count == 1 else 's'}, fewer than {clip}"


def _collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`collate_videos`, with the items' warnings gathered in `warnings`, a fatal item passed on, and a
    worker's failure to allocate the batch in shared memory (/dev/shm full) returned as `fatal` text:
    raised in the worker, it would reach the user as that worker's traceback."""
    fatal = next((item for item in items if "fatal" in item), None)
    if fatal is not None:
        return {"failed": [], "warnings": [], "fatal": fatal["fatal"], "kind": fatal.get("kind")}
    notes = [note for item in items for note in item.get("warnings", ())]
    try:
        batch = collate_videos([{k: v for k, v in item.items() if k != "warnings"} for item in items])
    except RuntimeError as err:  # in a worker, stacking into shared memory is all that can fail here
        if get_worker_info() is None:
            raise
        return {"failed": [], "warnings": notes, "fatal": str(shared_memory_error(err)), "kind": "shm"}
    if get_worker_info() is not None:
        try:  # the small tensors too (labels, indices): torch's queue thread would drop the batch on failure
            share_batch(batch)
        except OSError as err:
            return {"failed": [], "warnings": notes, "fatal": str(err), "kind": "shm"}
    batch["warnings"] = notes
    return batch


def _check_labels(dataset: VideoDataset, names: Any, num_classes: int) -> None:
    unlabelled = [
        r.where or shown_path(r.path)
        for r, t in zip(dataset.records, dataset.targets, strict=True)
        # a broken list line is a counted failure when it is loaded, not a missing label
        if getattr(r, "error", None) is None and (min(t) if isinstance(t, tuple) else t) < 0
    ]
    if unlabelled:
        # a header's other names are split columns (path,noun,verb): one the model has no head for labels nothing
        used = set(dataset.classes) if isinstance(dataset.classes, dict) else {"label"}
        columns = sorted({c for r in dataset.records for c in r.labels} - used)
        hint = (
            f"; the list's column {', '.join(repr(c) for c in columns)} is not a label column of this model "
            "(name it 'label')"
            if columns
            else ""
        )
        raise ValueError(
            f"{len(unlabelled)} of {len(dataset)} videos have no label (first: {unlabelled[0]}){hint}; evaluation "
            "needs a label for every video: a class-folder tree or a list 'path,label'"
        )
    if names is None and num_classes:
        too_big = [t for t in dataset.targets if not isinstance(t, tuple) and t >= num_classes]
        if too_big:
            raise ValueError(f"label index {max(too_big)} is outside the model's {num_classes} classes")
        if dataset.classes is not None:
            raise ValueError(
                "the list labels videos by class name, but the model has no label names; label them by class "
                "index (0 .. num_classes - 1) instead"
            )


def _average_logits(
    model: nn.Module, views: torch.Tensor, batch_size: int, device: torch.device, dtype: torch.dtype
) -> np.ndarray:
    """View-averaged float32 logits, batched and summed exactly as `vivit.predict_views` does."""
    total: torch.Tensor | None = None
    for chunk in views.split(batch_size):
        logits = model(chunk.to(device, dtype, non_blocking=True))
        part = logits.float().sum(0)
        total = part if total is None else total + part
    assert total is not None
    return (total / len(views)).cpu().numpy()


def _perturbed_logits(
    model: nn.Module, views: torch.Tensor, index: int, batch_size: int, device: torch.device, dtype: torch.dtype
) -> dict[str, np.ndarray]:
    """View-averaged logits with the frames shuffled (the order seeded by the video's index), reversed, frozen."""
    return {
        mode: _average_logits(
            model, perturb_time(views, mode, torch.Generator().manual_seed(index)), batch_size, device, dtype
        )
        for mode in TEMPORAL_PERTURBATIONS
    }


def _temporal_scores(
    dataset: VideoDataset,
    metrics: Mapping[str, Any],
    perturbed: list[tuple[int, dict[str, np.ndarray]]],
    splits: list[int] | None,
    split_names: list[str] | None,
) -> dict[str, float]:
    """Top-1 (action top-1 for two splits) of the clips as they are and with their time destroyed."""
    key = "action_top1" if "action_top1" in metrics else next((k for k in metrics if k.endswith("top1")), "top1")
    out = {"normal": metrics.get(key, math.nan)}
    perturbed.sort(key=lambda r: r[0])
    labels = np.array([dataset.targets[i] for i, _ in perturbed], dtype=np.int64)
    for mode, name in zip(TEMPORAL_PERTURBATIONS, ("shuffled", "reversed", "middle_frame"), strict=True):
        logits = [r[1][mode] for r in perturbed]
        out[name] = classification_metrics(np.stack(logits), labels, splits, split_names)[key] if logits else math.nan
    return out


def _score(
    dataset: VideoDataset,
    results: list[tuple[int, np.ndarray | None, str | None]],
    splits: list[int] | None,
    split_names: list[str] | None,
    views: tuple[int, ...],
    model_name: str | None,
) -> dict[str, Any]:
    scored = [(i, logits) for i, logits, _ in results if logits is not None]
    failed = [
        {"path": shown_path(dataset.records[i].path), "error": error} for i, logits, error in results if logits is None
    ]
    metrics: dict[str, Any] = {
        "model": model_name,
        "views": f"{views[0]}x{views[1]}",
        "num_videos": len(scored),
        "num_failed": len(failed),
    }
    if scored:
        logits = np.stack([lg for _, lg in scored])
        labels = np.array([dataset.targets[i] for i, _ in scored], dtype=np.int64)
        metrics.update(classification_metrics(logits, labels, splits, split_names))
    metrics["failed"] = failed
    metrics["vivit_version"] = __version__
    return metrics


def _label_text(dataset: VideoDataset, index: int) -> Any:
    target = dataset.targets[index]
    classes = dataset.classes
    if isinstance(target, tuple):
        return {
            name: (classes[name][t] if classes and classes.get(name) else t)
            for name, t in zip(classes, target, strict=True)
        }
    return classes[target] if classes else target


def _prediction_records(
    dataset: VideoDataset, results: list[tuple[int, np.ndarray | None, str | None]], cfg: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One JSON-ready record per video, in list order: path, label, then top-5 and logits, or the error."""
    records = []
    for index, logits, error in results:
        entry: dict[str, Any] = {
            "path": shown_path(dataset.records[index].path),
            "label": _label_text(dataset, index),
            "label_index": list(t) if isinstance(t := dataset.targets[index], tuple) else t,
        }
        if logits is None:
            entry["error"] = error
        else:
            entry["top5"] = top_predictions(torch.from_numpy(logits), cfg, 5)
            entry["logits"] = [float(v) for v in logits]
        records.append(entry)
    return records
