"""Fine-tune a ViViT model on a labelled video set, the paper's way, in runs that survive being killed.

`train(TRAIN, VAL, model, out_dir, recipe="k400")` is the job behind `vivit train`. It composes the
library's pieces as timm's `train.py` does: `VideoDataset` (decoding in DataLoader workers) with the
recipe's augmentation (`train_transform`), `vivit.data.mixup.Mixup` and the losses of `vivit.loss`,
`vivit.optim.create_optimizer` with Scenic's warm-up + cosine schedule (`warmup_cosine_lr`),
global-norm gradient clipping, optional weight EMA (`ModelEmaV3`), bf16/fp16 autocast and gradient
checkpointing; the validation set is scored as `vivit evaluate` scores it (multi-view logits
averaged, `vivit.evaluate.classification_metrics`). The recipes (`vivit.recipes`) carry Scenic's
values with their sources; every value can be overridden.

The global batch: `batch_size` clips per forward pass x `accum_steps` micro-batches x ranks.

Determinism by construction (why a killed run resumes bit for bit):

* the sample order of epoch `e` is a permutation drawn from `(seed, e)`; global step `s` takes the
  next `global_batch` entries, cut into micro-batches of `batch_size`: micro-batch `m` goes to rank
  `m // accum_steps` as its `m % accum_steps`-th micro-batch (so N ranks see what one rank with N
  times the accumulation sees);
* each video's clip and augmentation come from `(seed, e, index)` (`VideoDataset(seed=...)`), not
  from any worker's generator;
* mixup, drop path and dropout draw from torch's, numpy's and Python's generators, which are seeded
  from `(seed, s, m)` before micro-batch `m` of step `s`;
* the learning rate is a function of the step; the optimiser's state, the grad scaler and the EMA
  are in the checkpoint;
* resuming at step `s` starts the epoch's sampler at position `s mod steps_per_epoch`, so consumed
  batches are never decoded again.

Files in `out_dir`: `settings.json` (what the run is; a re-run with other settings is refused),
`checkpoint.pt` (everything to resume, written atomically every `checkpoint_every` steps and at each
epoch end; `torch.load(weights_only=True)` reads it), `log.jsonl` (one JSON object per logging step
and per evaluation), `last/` and `best/` (`save_pretrained` folders: `create_model("local-dir:...")`
and `vivit predict --model local-dir:DIR/best` load them, with label names and the evaluation
preprocessing in their config), `result.json` at the end, `tensorboard/` when TensorBoard is installed.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate, get_worker_info

from .data.datasets import (
    SkippedVideoWarning,
    VideoDataset,
    VideoRecord,
    collate_videos,
    match_labels,
    shared_memory_error,
    shown_path,
)
from .data.mixup import Mixup
from .data.sampling import check_sample_fps
from .data.temporal import TEMPORAL_PERTURBATIONS, perturb_time
from .data.transforms import create_transform, resolve_data_config
from .distributed import DistributedContext, local_device, training_context
from .evaluate import classification_metrics
from .factory import create_model
from .files import atomic_write, check_file_destination, clean_stale_temp_files
from .loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from .models.registry import get_entry
from .models.vivit import ViViT
from .optim import ModelEmaV3, create_optimizer, set_learning_rate, warmup_cosine_lr
from .predict import model_data_config
from .recipes import Recipe, get_recipe
from .version import __version__

__all__ = ["PRECISIONS", "DistributedTrainingError", "StepSampler", "TrainResult", "train", "train_transform"]


#: Values of `precision`: fp32; bf16 autocast (CPU and GPU); fp16 autocast with a grad scaler (GPU).
PRECISIONS = ("fp32", "bf16", "fp16")
SETTINGS_FILE = "settings.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"
_CHECKPOINT_FORMAT = "vivit-train-checkpoint"
_CHECKPOINT_VERSION = 1
# Settings that may change between the runs of one folder: they do not change the weights.
_FREE_SETTINGS = frozenset(
    {"workers", "device", "log_every", "checkpoint_every", "tensorboard", "temporal_check", "vivit_version"}
)
# Streams of derived seeds (the same (seed, a, b) never feeds two purposes).
_ORDER, _MICRO, _SHUFFLE, _INIT = 1, 2, 3, 4


class DistributedTrainingError(RuntimeError):
    """A rank lost contact with the others (one died, hung past the timeout, or the network failed)."""


@dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        out_dir: the run's folder.
        steps: optimiser updates done (the whole run's).
        epochs: epochs done.
        resumed_from: the step this call resumed from (None: started afresh).
        metrics: the last evaluation's metrics (percent; `{}` without a validation set).
        best: `{"step", "epoch", "metric", "value"}` of the best evaluation (`best/` holds it).
        temporal_check: top-1 (percent) on the validation clips as they are (`"normal"`) and with
            their frames shuffled, reversed and replaced by the middle one; None when not run.
        num_failed: videos that could not be decoded (skipped, counted).
        failed: their paths.
        already_complete: the run had finished before this call (the stored result is returned).
    """

    out_dir: Path
    steps: int
    epochs: int
    resumed_from: int | None
    metrics: dict[str, Any]
    best: dict[str, Any]
    temporal_check: dict[str, float | None] | None
    num_failed: int
    failed: list[str]
    already_complete: bool = False

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


# ---------------------------------------------------------------- small pieces
def _derived_seed(*values: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def _seed_everything(seed: int) -> None:
    """Seed torch (every device), numpy's and Python's global generators: whatever a regulariser uses."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every global generator's state as tensors and plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": int(n["pos"])},
            "has_gauss": int(n["has_gauss"]),
            "gauss": float(n["gauss"]),
        }
    )
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def train_transform(cfg: Mapping[str, Any], recipe: Recipe) -> Any:
    """The recipe's training augmentation for a preprocessing `cfg` (`create_transform(train=True)`).

    Scale jitter, random crop and flip always; DMVR colour augmentation (`color_prob`,
    `color_drop_prob`) or Scenic's RandAugment (`randaugment`) when the recipe turns them on. The
    keywords are passed only when on, so a build without them still runs the recipes that do not
    use them.

    Raises:
        ValueError: the recipe asks for an augmentation this build's `create_transform` lacks.
    """
    extra: dict[str, Any] = {}
    if recipe.color_prob > 0 or recipe.color_drop_prob > 0:  # DMVR draws the colour drop on its own
        extra["color_prob"] = recipe.color_prob
        extra["color_drop_prob"] = recipe.color_drop_prob
    if recipe.randaugment is not None and recipe.randaugment[0] > 0:
        extra["randaugment"] = tuple(recipe.randaugment)
    try:
        return create_transform(cfg, train=True, scale=recipe.scale, hflip=recipe.hflip, **extra)
    except TypeError as err:
        raise ValueError(
            f"recipe {recipe.name!r} asks for {', '.join(f'{k}={v}' for k, v in extra.items())}, which this "
            f"build's create_transform does not offer ({err}); turn them off (color_prob=0, randaugment=None)"
        ) from None


# ---------------------------------------------------------------- labels and model
@dataclass(frozen=True)
class _Labels:
    """How the training labels map to the model's head."""

    names: list[str] | dict[str, list[str]] | None  # VideoDataset's label_names
    num_classes: int
    class_splits: tuple[int, ...] | None
    split_names: tuple[str, ...] | None
    keep_head: bool  # the model's own head already predicts these classes

    @property
    def label_names(self) -> list[str] | None:
        """The names of the logits, in order (split heads: each split's, concatenated)."""
        if isinstance(self.names, dict):
            return [name for names in self.names.values() for name in names]
        return self.names


def _label_columns(records: Sequence[VideoRecord]) -> list[str]:
    columns: list[str] = []
    for record in records:
        for key in record.labels:
            if key not in columns:
                columns.append(key)
    return columns


def _values(records: Sequence[VideoRecord], column: str) -> list[tuple[str, str]]:
    return [(r.labels[column], r.where or shown_path(r.path)) for r in records if column in r.labels]


def _names_for(values: Sequence[tuple[str, str]], what: str, count: int | None) -> list[str]:
    """Class names of a column: sorted names, or for integer labels `"0" .. "count-1"`."""
    texts = [v for v, _ in values]
    if not texts:
        raise ValueError(f"no {what} in the training set: every video needs one (a class folder or a list column)")
    if all(t.isdigit() for t in texts):
        largest = max(int(t) for t in texts)
        size = count if count is not None else largest + 1
        if largest >= size:
            raise ValueError(f"{what} index {largest} does not fit the {size} classes asked for (num_classes)")
        return [str(i) for i in range(size)]
    return sorted(set(texts))


def _resolve_labels(records: Sequence[VideoRecord], model: nn.Module, num_classes: int | None) -> _Labels:
    """Keep the model's head when its label names cover the training labels; else a new head."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    model_names = cfg.get("label_names")
    model_classes = int(getattr(model, "num_classes", 0) or 0)
    columns = _label_columns(records)
    if columns in ([], ["label"]):
        values = _values(records, "label")
        if model_names is not None and len(model_names) == model_classes and num_classes in (None, model_classes):
            try:
                match_labels(values, list(model_names))
                return _Labels(list(model_names), model_classes, None, None, keep_head=True)
            except ValueError:
                pass  # other classes: a new head
        names = _names_for(values, "label", num_classes)
        if num_classes is not None and num_classes != len(names):
            raise ValueError(
                f"num_classes={num_classes} does not match the {len(names)} classes of the training set "
                f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            )
        return _Labels(names, len(names), None, None, keep_head=False)
    # split labels (EPIC-KITCHENS: path,noun,verb): one softmax per column
    splits = cfg.get("class_splits")
    split_names = cfg.get("split_names")
    if (
        splits
        and split_names
        and list(split_names) == columns
        and model_names is not None
        and sum(splits) == model_classes
        and num_classes in (None, model_classes)
    ):
        named: dict[str, list[str]] = {}
        start = 0
        for column, size in zip(columns, splits, strict=True):
            named[column] = list(model_names[start : start + size])
            start += size
        try:
            for column in columns:
                match_labels(_values(records, column), named[column], f"{column} label")
            return _Labels(named, model_classes, tuple(splits), tuple(columns), keep_head=True)
        except ValueError:
            pass
    named = {column: _names_for(_values(records, column), f"{column} label", None) for column in columns}
    sizes = tuple(len(v) for v in named.values())
    if num_classes is not None and num_classes != sum(sizes):
        raise ValueError(
            f"num_classes={num_classes} does not match the training labels: {' + '.join(map(str, sizes))} "
            f"classes in the columns {', '.join(columns)}"
        )
    return _Labels(named, sum(sizes), sizes, tuple(columns), keep_head=False)


def _records_of(source: Any) -> list[VideoRecord]:
    return VideoDataset(source, "eval", views=(1, 1)).records


def _build_model(
    model: str | nn.Module, pretrained: bool | str | None, model_args: Mapping[str, Any], drop_path_rate: float
) -> ViViT:
    """The model to fine-tune (on the CPU), with the recipe's stochastic depth."""
    args = dict(model_args)
    args.pop("num_classes", None)  # the head is sized by the labels (_resolve_labels)
    if isinstance(model, nn.Module):
        if not isinstance(model, ViViT):
            raise TypeError(f"model must be a model name or a vivit model, got {type(model).__name__}")
        if args:
            raise ValueError("model_args only apply to a model given by name; build the module with them")
        if model.model_args.get("drop_path_rate", 0.0) == drop_path_rate:
            return model
        rebuilt = type(model)(**{**model.model_args, "drop_path_rate": drop_path_rate})
        rebuilt.load_state_dict(model.state_dict())
        rebuilt.pretrained_cfg = dict(model.pretrained_cfg)
        return rebuilt
    if not isinstance(model, str):
        raise TypeError(f"model must be a model name or a vivit model, got {type(model).__name__}")
    if drop_path_rate:
        args["drop_path_rate"] = drop_path_rate
    if model.startswith(("hf-hub:", "local-dir:")):
        return create_model(model, pretrained=True if pretrained is None else bool(pretrained), **args)
    entry = get_entry(model)
    if pretrained is None:
        pretrained = entry.has_weights
    return create_model(model, pretrained=pretrained, **args)


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fingerprint(records: Sequence[VideoRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            json.dumps([shown_path(record.path), sorted(record.labels.items()), record.start, record.end]).encode()
        )
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- data
class _TrainItems(Dataset):
    """The training `VideoDataset` as `(clip, label)` pairs; a set that cannot be read at all becomes a
    `fatal` item (raised by the main process as one clear error, not a worker's traceback)."""

    def __init__(self, dataset: VideoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            item = self.dataset[index]
        except RuntimeError as err:  # "N videos in a row could not be read"
            return {"fatal": f"the training set looks unreadable: {err}"}
        return {"video": item["video"], "label": item["label"]}


def _collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    fatal = [item["fatal"] for item in items if "fatal" in item]
    if fatal:
        return {"fatal": fatal[0]}
    try:
        return dict(default_collate(list(items)))
    except RuntimeError as err:  # in a worker only stacking into shared memory can fail here
        if get_worker_info() is None:
            raise
        return {"fatal": str(shared_memory_error(err))}


def _collate_eval(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    try:
        return collate_videos(items)
    except RuntimeError as err:
        if get_worker_info() is None:
            raise
        return {"failed": [], "fatal": str(shared_memory_error(err))}


def _quiet_skips(worker_id: int | None = None) -> None:
    """Unreadable videos are counted and reported by the job, not printed by each worker."""
    warnings.filterwarnings("ignore", category=SkippedVideoWarning)


class StepSampler(Sampler[int]):
    """Dataset indices of one rank, from a position in an epoch to its end (see the module docstring).

    Epoch `e` is `randperm(n)` from the seed `(seed, e)`; its first `steps_per_epoch *
    global_batch` entries are used (the rest is dropped, as Scenic's `drop_remainder`). This rank
    yields, for each step from `start_step`, its `accum_steps` micro-batches of `batch_size`.
    """

    def __init__(self, size: int, seed: int, batch_size: int, accum_steps: int, world_size: int, rank: int) -> None:
        self.size = size
        self.seed = seed
        self.batch_size = batch_size
        self.accum_steps = accum_steps
        self.world_size = world_size
        self.rank = rank
        self.global_batch = batch_size * accum_steps * world_size
        self.steps_per_epoch = size // self.global_batch
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch `epoch` from its step `start_step` (consumed steps are skipped, not read)."""
        self.epoch = epoch
        self.start_step = start_step

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_derived_seed(self.seed, epoch, _ORDER))
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order(self.epoch).tolist()
        micro = self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch
            for k in range(self.accum_steps):
                m = self.rank * self.accum_steps + k
                yield from order[base + m * micro : base + (m + 1) * micro]

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0) * self.accum_steps * self.batch_size


# ---------------------------------------------------------------- the run folder
def _check_out_dir(out: Path) -> None:
    """Refuse a folder that cannot be written, or that holds something other than a vivit run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run")
    check_file_destination(out / SETTINGS_FILE)
    if out.is_dir() and not (out / SETTINGS_FILE).exists():
        visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if visible:
            raise ValueError(
                f"{out} is not empty and holds no vivit run ({SETTINGS_FILE} is missing; it has "
                f"{', '.join(sorted(visible)[:3])}{', ...' if len(visible) > 3 else ''}): give a new or empty folder"
            )


def _settings_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in _FREE_SETTINGS:
            continue
        a, b = old.get(key, "<not set>"), new.get(key, "<not set>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_settings_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key} {json.dumps(b)} (the run in the folder: {json.dumps(a)})")
    return out


def _settings_digest(settings: Mapping[str, Any]) -> str:
    fixed = {k: v for k, v in settings.items() if k not in _FREE_SETTINGS}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()


def _write_json(path: Path, value: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(value), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_model_dir(model: ViViT, folder: Path) -> None:
    """`save_pretrained` into a fresh folder, then swapped in: `folder` is always a complete model."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except Exception as err:  # OSError, or safetensors' SafetensorError for a failed write (full disk, ulimit -f)
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise _write_error(err, folder, _state_bytes(model.state_dict())) from None
    shutil.rmtree(old, ignore_errors=True)


def _state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state: about what writing it needs on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _write_error(err: Exception, path: Path, nbytes: int) -> OSError:
    """The error of a failed write as one clear `OSError`.

    torch.save and safetensors report a failed write as a RuntimeError ("unexpected pos ...") or a
    SafetensorError ("... (os error 28)"), without the OSError: the cause is recovered from the
    message or, failing that, from the free space and the file size limit (`ulimit -f`) against
    the `nbytes` the file needs.
    """
    if isinstance(err, OSError) and err.errno is not None:
        return _disk_error(err, path)
    code = None
    found = re.search(r"os error (\d+)", str(err))
    if found:
        code = int(found.group(1))
    else:
        try:
            folder = next(p for p in (path.parent, *path.parents) if p.exists())
            if shutil.disk_usage(folder).free < nbytes:
                code = errno.ENOSPC
        except (OSError, StopIteration):
            pass
        limit = _file_size_limit()
        if code is None and limit is not None and nbytes > limit:
            code = errno.EFBIG
    if code is not None:
        return _disk_error(OSError(code, os.strerror(code)), path)
    return OSError(
        errno.EIO,
        f"cannot write {path} ({' '.join(str(err).split())[:200]}); the previous checkpoint and models in "
        f"{path.parent} are intact: re-run the same command to resume",
    )


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _disk_error(err: OSError, path: Path) -> OSError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(
            err.errno,
            f"no space left on the device while writing {path}; the previous checkpoint and models in "
            f"{path.parent} are intact: free some space and re-run the same command to resume",
        )
    if err.errno == errno.EFBIG:
        return OSError(
            err.errno,
            f"{path} would be larger than this process may write (the file size limit, ulimit -f); the previous "
            f"checkpoint and models in {path.parent} are intact: raise the limit and re-run the same command to resume",
        )
    return OSError(err.errno, f"cannot write {path}: {err.strerror or err}")


def _clean_leftovers(out: Path) -> None:
    """Temporary files and folders of killed writers (their pid is gone)."""
    clean_stale_temp_files(out)
    for entry in out.glob(".*.tmp"):
        _remove_dead_writer_dir(entry)
    for entry in out.glob(".*.old"):
        _remove_dead_writer_dir(entry)


def _remove_dead_writer_dir(entry: Path) -> None:
    try:
        pid = int(entry.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
        if pid != os.getpid():
            return  # alive: another writer's
    except ProcessLookupError:
        pass
    except PermissionError:
        return
    shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------- evaluation
def _average_logits(
    model: nn.Module, views: torch.Tensor, batch: int, device: torch.device, autocast: Any
) -> torch.Tensor:
    """View-averaged float32 logits, summed over view chunks as `vivit.predict_views` does."""
    total: torch.Tensor | None = None
    for chunk in views.split(batch):
        with autocast():
            logits = model(chunk.to(device, non_blocking=True))
        part = logits.float().sum(0)
        total = part if total is None else total + part
    assert total is not None
    return (total / len(views)).cpu()


def _score(
    model: nn.Module,
    dataset: VideoDataset,
    labels: _Labels,
    context: DistributedContext,
    device: torch.device,
    *,
    batch: int,
    workers: int,
    autocast: Any,
    perturbations: Sequence[str],
    seed: int,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Scores of `model` on the evaluation dataset, as `vivit evaluate` computes them.

    Every rank scores every `world_size`-th video; rank 0's and the others' logits are gathered
    (the metrics are the same on every rank). With `perturbations`, each video's views are also
    scored with their frames shuffled / reversed / frozen (one decode for all).

    Returns:
        `({"none": metrics, "shuffle": metrics, ...}, failed paths)`.
    """
    was_training = model.training
    model.eval()
    mine = context.shard(range(len(dataset)))
    loader = DataLoader(
        Subset(dataset, mine),
        batch_size=1,
        num_workers=workers,
        collate_fn=_collate_eval,
        pin_memory=device.type == "cuda",
        worker_init_fn=_quiet_skips,
    )
    modes = ("none", *perturbations)
    results: list[tuple[int, dict[str, np.ndarray]]] = []
    failed: list[str] = []
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            _quiet_skips()
            for item in loader:
                if "fatal" in item:
                    raise OSError(item["fatal"])
                failed.extend(f["error"] for f in item["failed"])
                if "video" not in item:
                    continue
                (index,) = item["video_index"].tolist()
                views = item["video"][0]
                out = {}
                for mode in modes:
                    generator = torch.Generator().manual_seed(_derived_seed(seed, index, _SHUFFLE))
                    clips = perturb_time(views, mode, generator)
                    out[mode] = _average_logits(model, clips, batch, device, autocast).numpy()
                results.append((index, out))
    finally:
        model.train(was_training)
    gathered = sorted((r for part in context.all_gather(results) for r in part), key=lambda r: r[0])
    failed = [f for part in context.all_gather(failed) for f in part]
    scores: dict[str, dict[str, Any]] = {}
    split_names = list(labels.split_names) if labels.split_names else None
    for mode in modes:
        if not gathered:
            scores[mode] = {}
            continue
        logits = np.stack([r[1][mode] for r in gathered])
        targets = np.array([dataset.targets[i] for i, _ in gathered], dtype=np.int64)
        scores[mode] = classification_metrics(logits, targets, labels.class_splits, split_names)
        scores[mode]["num_videos"] = len(gathered)
    return scores, failed


def _headline(metrics: Mapping[str, Any]) -> tuple[str, float | None]:
    """The metric that picks the best model: top-1, or the action top-1 of a two-split head."""
    for key in ("top1", "action_top1"):
        if key in metrics:
            value = metrics[key]
            return key, (None if value is None or not math.isfinite(value) else float(value))
    first = next((k for k in metrics if k.endswith("_top1")), None)
    if first is None:
        return "top1", None
    value = metrics[first]
    return first, (None if value is None or not math.isfinite(value) else float(value))


# ---------------------------------------------------------------- the job
def train(
    train_source: str | os.PathLike[str] | Sequence[VideoRecord],
    val_source: str | os.PathLike[str] | Sequence[VideoRecord] | None,
    model: str | nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    recipe: str | Recipe = "k400",
    pretrained: bool | str | None = None,
    model_args: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    accum_steps: int | None = None,
    seed: int = 0,
    workers: int = 2,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    grad_checkpointing: bool = False,
    views: tuple[int, int] | None = None,
    eval_batch_size: int = 4,
    log_every: int = 10,
    checkpoint_every: int = 500,
    temporal_check: bool = True,
    tensorboard: bool | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    sample_fps: float | None = None,
    **settings: Any,
) -> TrainResult:
    """Fine-tune `model` on `train_source`, scoring it on `val_source`; resumable (module docstring).

    Example:
        >>> result = train("train/", "val/", "vivit_b_fe_in21k", "runs/b", recipe="k400", epochs=10, lr=0.05)
        >>> result.best["value"], result.temporal_check

    Args:
        train_source: a class-folder tree or a CSV/TSV list (`VideoDataset`); split label columns
            (`path,noun,verb`) train a head with one softmax per column (Scenic's two-head loss).
        val_source: the same for validation (None: no evaluation, no `best/`).
        model: a `create_model` name (`vivit_b_fe_in21k`, `vivit_b_fe_k400`, `local-dir:...`,
            `hf-hub:...`) or a vivit model. Its head is kept when its label names cover the training
            labels; otherwise a new zero head for the training classes (Scenic's init).
        out_dir: the run's folder. A folder with a run of the same settings is resumed from its
            checkpoint; other settings are refused (`ValueError` naming what differs).
        recipe: a name of `vivit.recipes.RECIPES` (`k400`, `ek100`, `ssv2`) or a `Recipe`.
        pretrained: weights for a model name (`create_model(pretrained=...)`); None: the entry's
            weights when it has some, else a fresh init.
        model_args: constructor overrides (`num_frames=16`, ...; `num_classes` must match the labels).
        batch_size: clips per forward pass and rank.
        accum_steps: micro-batches per update; default `global_batch / (batch_size x ranks)` (must
            divide exactly). Given, it sets the global batch instead of the recipe.
        seed: the seed of everything random (sample order, augmentation, mixup, drop path).
        workers: DataLoader processes decoding videos (0: in this process).
        device: `"cpu"`, `"cuda"`, ...; default CUDA when available (`cuda:LOCAL_RANK` under torchrun).
        precision: `"fp32"`, `"bf16"` (autocast, CPU or GPU) or `"fp16"` (autocast + grad scaler, GPU).
        grad_checkpointing: recompute activations in backward (less memory, same gradients).
        views: `(clips, crops)` of the evaluation (default: the recipe's `test_views`).
        eval_batch_size: views per forward pass in evaluation.
        log_every: optimiser steps between `log.jsonl` lines.
        checkpoint_every: optimiser steps between checkpoints (besides every epoch end).
        temporal_check: at the end, score the validation clips with shuffled, reversed and frozen
            frames too (`TrainResult.temporal_check`).
        tensorboard: write `out_dir/tensorboard` (None: when TensorBoard is installed).
        progress: called on rank 0 with event dicts: `{"event": "start", "step", "total_steps",
            ...}`, `{"event": "step", "step", "epoch", "lr", "loss" (logging steps, else None)}`,
            `{"event": "log", ...the log line}`, `{"event": "eval", ...}`, `{"event": "end", ...}`;
            on Ctrl-C `{"event": "interrupted", "step", "checkpoint"}` (whether a checkpoint of that
            step was written: it is unless the interrupt came during an update's bookkeeping) before
            the `KeyboardInterrupt` propagates.
        sample_fps: choose clip frames by presentation time, `sample_fps` per second, in training and
            evaluation (`VideoDataset(sample_fps=)`); recorded in the saved models' `pretrained_cfg`,
            so their predictions sample the same way. None (default): index sampling, as Scenic.
        **settings: recipe overrides (`lr=0.05`, `epochs=5`, `label_smoothing=0.1`, ... see
            `Recipe`).

    Returns:
        A `TrainResult` (the same on every rank).

    Raises:
        ValueError: a bad setting or input (unknown recipe/setting, labels that do not fit the model
            or `num_classes`, an empty set or one smaller than a global batch, an `out_dir` that
            cannot be written or holds another run); nothing is written then.
        OSError: the disk filled while writing (the previous checkpoint stays valid).
        DistributedTrainingError: a rank died or a collective timed out.
    """
    recipe_ = get_recipe(recipe).replace(**settings)
    if sample_fps is not None:
        sample_fps = check_sample_fps(sample_fps)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for name, value in (("batch_size", batch_size), ("log_every", log_every), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if accum_steps is not None and (
        isinstance(accum_steps, bool) or not isinstance(accum_steps, int) or accum_steps < 1
    ):
        raise ValueError(f"accum_steps must be a positive integer, got {accum_steps!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if (recipe_.mixup_alpha > 0 or recipe_.cutmix_alpha > 0) and batch_size == 1:
        # Mixup pairs clip i with clip B - 1 - i of the same forward pass (Scenic: of one device's batch)
        warnings.warn(
            f"recipe {recipe_.name!r} mixes clips (mixup_alpha {recipe_.mixup_alpha:g}, cutmix_alpha "
            f"{recipe_.cutmix_alpha:g}) within each forward pass, and with batch_size 1 no clip has a partner: "
            "nothing is mixed. Use batch_size >= 2 (the global batch is reached by accumulation), or set "
            "mixup_alpha=0 (--mixup-alpha 0) to train without mixup knowingly",
            UserWarning,
            stacklevel=2,
        )
    out = Path(out_dir).expanduser()
    _check_out_dir(out)  # before any work: a folder that cannot take files, or another run's
    if recipe_.cutmix_alpha > 0:
        Mixup(mixup_alpha=recipe_.mixup_alpha, cutmix_alpha=recipe_.cutmix_alpha, num_classes=2)  # may refuse now
    if accum_steps is not None and "global_batch" in settings:
        raise ValueError("give accum_steps or global_batch, not both (accum_steps sets the global batch)")
    requested = _usable_device(device)
    if precision == "fp16" and requested.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (it uses a grad scaler); use bf16 on the CPU")
    with training_context(requested) as context:
        rank_device = local_device(device, context)
        if rank_device.type == "cuda":  # each rank's kernels and nccl calls on its own GPU
            torch.cuda.set_device(rank_device)
        run = _Run(
            context,
            recipe_,
            out,
            train_source=train_source,
            val_source=val_source,
            model_spec=model,
            pretrained=pretrained,
            model_args=dict(model_args or {}),
            batch_size=batch_size,
            accum_steps=accum_steps,
            seed=int(seed),
            workers=int(workers),
            device=rank_device,
            precision=precision,
            grad_checkpointing=grad_checkpointing,
            views=views,
            eval_batch_size=eval_batch_size,
            log_every=log_every,
            checkpoint_every=checkpoint_every,
            temporal_check=temporal_check,
            tensorboard=tensorboard,
            progress=progress,
            sample_fps=sample_fps,
        )
        try:
            return run.run()
        finally:
            # DistributedDataParallel's reducer holds the process group: let it go while the group still
            # exists, so that the group is destroyed (after its last collectives) inside training_context
            run.ddp = getattr(run, "model", None)  # type: ignore[assignment]
            run.loader = None  # type: ignore[assignment]


def _first_words(err: BaseException, limit: int = 160) -> str:
    """An error's text on one line, without the C++ source location gloo/nccl put in front."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", " ".join(str(err).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _usable_device(device: str | torch.device | None) -> torch.device:
    """The device asked for (None / "auto": CUDA when available), checked to hold a tensor here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"device {device!r} cannot be used here ({reason})") from None
    return chosen


def _is_distributed_failure(err: BaseException) -> bool:
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(
        hint in text
        for hint in ("gloo", "nccl", "connection closed by peer", "connection reset", "broken pipe", "timed out")
    )


class _Run:
    """One call of `train`: its options, then (`_prepare`) everything the steps share."""

    def __init__(self, context: DistributedContext, recipe: Recipe, out: Path, **options: Any) -> None:
        self.context = context
        self.recipe = recipe
        self.out = out
        self.train_source = options["train_source"]
        self.val_source = options["val_source"]
        self.model_spec = options["model_spec"]
        self.pretrained = options["pretrained"]
        self.model_args: dict[str, Any] = options["model_args"]
        self.batch_size: int = options["batch_size"]
        self.seed: int = options["seed"]
        self.workers: int = options["workers"]
        self.device: torch.device = options["device"]
        self.precision: str = options["precision"]
        self.grad_checkpointing: bool = options["grad_checkpointing"]
        self.views: tuple[int, int] | None = options["views"]
        self.eval_batch_size: int = options["eval_batch_size"]
        self.log_every: int = options["log_every"]
        self.checkpoint_every: int = options["checkpoint_every"]
        self.temporal_check: bool = options["temporal_check"]
        self.tensorboard: bool | None = options["tensorboard"]
        self.progress: Callable[[dict[str, Any]], None] | None = options["progress"]
        self.sample_fps: float | None = options["sample_fps"]
        world = context.world_size
        accum = options["accum_steps"]
        if accum is None:
            if recipe.global_batch % (self.batch_size * world):
                raise ValueError(
                    f"the global batch {recipe.global_batch} is not a multiple of batch_size {self.batch_size} x "
                    f"{world} ranks; choose a batch size that divides it, or set accum_steps (or global_batch)"
                )
            accum = recipe.global_batch // (self.batch_size * world)
        self.accum_steps: int = accum
        self.global_batch = self.batch_size * accum * world
        # the run's state: restored from a checkpoint when resuming
        self.step = 0
        self.best: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.failed_before: list[str] = []
        self.writer: Any = None

    # ------------------------------------------------------------ set-up
    def _prepare(self) -> dict[str, Any] | None:
        """Data, model, optimiser; compare with the folder's run. Returns the checkpoint to resume from."""
        recipe, world = self.recipe, self.context.world_size
        records = _records_of(self.train_source)
        _seed_everything(_derived_seed(self.seed, _INIT))  # a fresh init (new layers, no weights) is the seed's
        model = _build_model(self.model_spec, self.pretrained, self.model_args, recipe.drop_path_rate)
        labels = _resolve_labels(records, model, self.model_args.get("num_classes"))
        if not labels.keep_head and max(labels.class_splits or (labels.num_classes,)) < 2:
            # a softmax over one class has loss 0 and gradient 0 whatever the model does: nothing to learn
            only = labels.label_names or []
            raise ValueError(
                f"the training set has one class ({', '.join(map(repr, only))}): a classifier needs at least 2; "
                "add videos of other classes (root/<class>/<video>, or more labels in the list)"
            )
        if not labels.keep_head:
            model.reset_classifier(labels.num_classes)
        base_cfg = resolve_data_config(model_data_config(model)[0])
        data_cfg = {
            **{k: base_cfg[k] for k in ("interpolation", "antialias", "mean", "std")},
            **recipe.data_config(model.img_size, model.num_frames),
        }
        if self.views is not None:
            data_cfg["test_views"] = tuple(self.views)
        if self.sample_fps is not None:  # VideoDataset reads it from the cfg; the saved models keep it
            data_cfg["sample_fps"] = self.sample_fps
        train_set = VideoDataset(
            records,
            "train",
            pretrained_cfg=data_cfg,
            label_names=labels.names,
            transform=train_transform(data_cfg, recipe),
            seed=self.seed,
        )
        unlabelled = [i for i, t in enumerate(train_set.targets) if (min(t) if isinstance(t, tuple) else t) < 0]
        if unlabelled:
            r = train_set.records[unlabelled[0]]
            raise ValueError(
                f"{len(unlabelled)} of {len(train_set)} training videos have no label "
                f"(first: {r.where or shown_path(r.path)})"
            )
        self.val_set = (
            None
            if self.val_source is None
            else VideoDataset(
                self.val_source,
                "eval",
                pretrained_cfg=data_cfg,
                label_names=labels.names,
                views=data_cfg["test_views"],
            )
        )
        sampler = StepSampler(len(train_set), self.seed, self.batch_size, self.accum_steps, world, self.context.rank)
        if sampler.steps_per_epoch < 1:
            raise ValueError(
                f"the training set has {len(train_set)} videos, fewer than one global batch of {self.global_batch} "
                f"(batch_size {self.batch_size} x accum_steps {self.accum_steps} x {world} ranks): lower the "
                "global batch (global_batch, --global-batch) or the accumulation (accum_steps, --accum-steps)"
            )
        self.train_set, self.sampler, self.labels = train_set, sampler, labels
        self.steps_per_epoch = sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.warmup_steps = int(recipe.warmup_epochs * self.steps_per_epoch)  # Scenic: int(2.5 * steps_per_epoch)
        self.base_lr = recipe.lr_for(model)
        self.settings = _jsonable(
            {
                "vivit_version": __version__,
                "train": _describe_source(self.train_source),
                "train_videos": len(records),
                "train_fingerprint": _fingerprint(records),
                "val": None if self.val_source is None else _describe_source(self.val_source),
                "model": self.model_spec if isinstance(self.model_spec, str) else type(self.model_spec).__name__,
                "initial_weights": _weights_digest(model) if isinstance(self.model_spec, nn.Module) else None,
                "pretrained": str(self.pretrained) if isinstance(self.pretrained, os.PathLike) else self.pretrained,
                "model_args": self.model_args,
                "recipe": recipe.name,
                "settings": recipe.settings(),
                "base_lr": self.base_lr,
                "label_names": labels.label_names,
                "class_splits": labels.class_splits,
                "batch_size": self.batch_size,
                "accum_steps": self.accum_steps,
                "world_size": world,
                "global_batch": self.global_batch,
                "seed": self.seed,
                "precision": self.precision,
                "grad_checkpointing": self.grad_checkpointing,
                "views": data_cfg["test_views"],
                "workers": self.workers,
                "device": str(self.device),
                "log_every": self.log_every,
                "checkpoint_every": self.checkpoint_every,
                "temporal_check": self.temporal_check,
                # only when set: runs from before sample_fps existed resume unchanged
                **({"sample_fps": self.sample_fps} if self.sample_fps is not None else {}),
            }
        )
        checkpoint = self._open_folder()

        model.pretrained_cfg = self._saved_cfg(model, data_cfg, labels)
        model.to(self.device)
        if self.grad_checkpointing:
            model.set_grad_checkpointing(True)
        model.train()
        self.model = model
        self.optimizer = create_optimizer(
            model,
            recipe.optimizer,
            lr=self.base_lr,
            weight_decay=recipe.weight_decay,
            momentum=recipe.momentum,
            layer_decay=recipe.layer_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema_decay > 0 else None
        return checkpoint

    def run(self) -> TrainResult:
        self._lock: Any = None
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _hold_folder(self) -> None:
        """Rank 0 holds `out_dir/.lock` for the whole run: a second `train` on the same folder (another
        terminal, a re-run while the first is still going) would interleave its writes with this one's."""
        if not self.context.is_main or self._lock is not None:
            return
        import filelock

        lock = filelock.FileLock(str(self.out / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ValueError(
                f"another vivit train is running in {self.out} (it holds {self.out / LOCK_FILE}): wait for it to "
                "end, or stop it and re-run this command to resume, or use another folder"
            ) from None
        self._lock = lock

    def _run(self) -> TrainResult:
        checkpoint = self._prepare()
        ctx = self.context
        if checkpoint is not None:
            self._restore(checkpoint)
        resumed_from = self.step if checkpoint is not None else None
        if self.step >= self.total_steps and (self.out / RESULT_FILE).exists():
            stored = json.loads((self.out / RESULT_FILE).read_text(encoding="utf-8"))
            stored.update(out_dir=self.out, already_complete=True)
            return TrainResult(**{f.name: stored[f.name] for f in dataclasses.fields(TrainResult)})
        self.ddp: nn.Module = self.model
        if ctx.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.loader = DataLoader(
            _TrainItems(self.train_set),
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
            worker_init_fn=_quiet_skips,
        )
        if ctx.is_main:
            self.writer = self._tensorboard()
        self._emit(
            {
                "event": "start",
                "step": self.step,
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.recipe.epochs,
                "resumed": resumed_from is not None,
                "train_videos": len(self.train_set),
                "val_videos": len(self.val_set) if self.val_set is not None else 0,
                "classes": self.labels.num_classes,
                "global_batch": self.global_batch,
                "accum_steps": self.accum_steps,
                "world_size": ctx.world_size,
                "device": str(self.device),
                "lr": self.base_lr,
            }
        )
        try:
            with warnings.catch_warnings():
                _quiet_skips()  # skipped videos are counted in the log and the result, not printed by each reader
                self._loop()
                temporal = self._temporal_check()
        except Exception as err:
            if ctx.distributed and _is_distributed_failure(err):
                raise DistributedTrainingError(
                    f"rank {ctx.rank} of {ctx.world_size} lost contact with the other ranks at step {self.step + 1} "
                    f"({_first_words(err)}): a rank died, hung, or the network failed; the last "
                    f"checkpoint in {self.out} is intact: re-run the same command to resume"
                ) from err
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
        failed = sorted(set(self.failed_before) | set(self._failed_paths()))
        failed = sorted({f for part in ctx.all_gather(failed) for f in part})
        result = TrainResult(
            out_dir=self.out,
            steps=self.step,
            epochs=self.step // self.steps_per_epoch,
            resumed_from=resumed_from,
            metrics=self.metrics,
            best=self.best,
            temporal_check=temporal,
            num_failed=len(failed),
            failed=failed,
        )
        if ctx.is_main:
            _write_json(self.out / RESULT_FILE, result.to_json())
            self._log({"event": "end", "step": self.step, "temporal_check": temporal, "num_failed": len(failed)})
        return result

    def _open_folder(self) -> dict[str, Any] | None:
        """Compare with (or write) the settings record; the checkpoint to resume from, if any."""
        out = self.out
        path = out / SETTINGS_FILE
        if out.is_dir():
            self._hold_folder()  # before reading anything another run may be writing
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ValueError(f"{path} is unreadable ({err}); it is not a vivit run folder any more") from None
            if not isinstance(old, dict):
                raise ValueError(
                    f"{path} holds JSON {type(old).__name__}, not the settings record of a vivit run; "
                    "it is not a vivit run folder any more: use another folder"
                )
            differences = _settings_differences(old, self.settings)
            if differences:
                raise ValueError(
                    f"{out} holds a run with other settings; this call has "
                    + "; ".join(differences[:6])
                    + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
                    + ". Use another folder, or the same settings to resume"
                )
        checkpoint = None
        if (out / CHECKPOINT_FILE).exists():
            checkpoint = _load_checkpoint(out / CHECKPOINT_FILE, _settings_digest(self.settings))
        self.context.barrier()  # every rank has read the folder before rank 0 changes it
        if self.context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            self._hold_folder()
            _clean_leftovers(out)
            if not path.exists():
                _write_json(path, self.settings)
            log = out / LOG_FILE
            keep = int(checkpoint["log_bytes"]) if checkpoint is not None else 0
            if log.exists() and log.stat().st_size > keep:  # lines after the checkpoint are redone
                with open(log, "r+b") as f:
                    f.truncate(keep)
        self.context.barrier()
        return checkpoint

    def _saved_cfg(self, model: ViViT, data_cfg: Mapping[str, Any], labels: _Labels) -> dict[str, Any]:
        """The pretrained_cfg of the saved models: their evaluation preprocessing and label names."""
        old = dict(getattr(model, "pretrained_cfg", None) or {})
        cfg: dict[str, Any] = dict(data_cfg)
        cfg["num_classes"] = labels.num_classes
        if labels.label_names is not None:
            cfg["label_names"] = tuple(labels.label_names)
        if labels.class_splits:
            cfg["class_splits"] = tuple(labels.class_splits)
            cfg["split_names"] = tuple(labels.split_names or ())
        for key in ("architecture", "license"):
            if key in old:
                cfg[key] = old[key]
        cfg["source"] = f"fine-tuned with vivit train (recipe {self.recipe.name})"
        cfg["fine_tuned_from"] = (
            str(self.model_spec) if isinstance(self.model_spec, str) else type(self.model_spec).__name__
        )
        return cfg

    def _tensorboard(self) -> Any:
        if self.tensorboard is False:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if self.tensorboard:
                raise ImportError("tensorboard=True needs TensorBoard: pip install tensorboard") from None
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)

    # ------------------------------------------------------------ checkpoints
    def _restore(self, checkpoint: Mapping[str, Any]) -> None:
        """The run's state from a checkpoint; one that carries our marker but not our contents (damaged or
        edited) is refused as one error, whatever part of it is wrong."""
        try:
            step = checkpoint["step"]
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.total_steps:
                raise ValueError(f"its step {step!r} is not one of this run's 0..{self.total_steps}")
            self._restore_state(checkpoint)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            text = " ".join(str(err).split())
            raise ValueError(
                f"{self.out / CHECKPOINT_FILE} cannot be resumed from ({type(err).__name__}: "
                f"{text[:200] + ('...' if len(text) > 200 else '')}); move it away to start the run afresh"
            ) from None

    def _restore_state(self, checkpoint: Mapping[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])
        _set_rng_state(checkpoint["rng"])
        self.step = int(checkpoint["step"])
        self.best = dict(checkpoint.get("best") or {})
        self.metrics = dict(checkpoint.get("metrics") or {})
        self.failed_before = list(checkpoint.get("failed") or [])

    def _checkpoint(self) -> None:
        """Everything the next step needs, written atomically by rank 0 (the others have the same state)."""
        if not self.context.is_main:
            return
        log = self.out / LOG_FILE
        state = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "settings_digest": _settings_digest(self.settings),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "position_in_epoch": self.step % self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "rng": _rng_state(),
            "best": _jsonable(self.best),
            "metrics": _jsonable(self.metrics),
            "failed": sorted(set(self.failed_before) | set(self._failed_paths())),
            "log_bytes": log.stat().st_size if log.exists() else 0,
            "vivit_version": __version__,
        }
        path = self.out / CHECKPOINT_FILE
        try:
            with atomic_write(path) as tmp:
                torch.save(state, tmp)
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
            raise _write_error(err, path, _state_bytes(state)) from None

    def _failed_paths(self) -> list[str]:
        return [shown_path(self.train_set.records[i].path) for i in self.train_set.failed_indices()]

    # ------------------------------------------------------------ logging
    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None and self.context.is_main:
            self.progress(event)

    def _log(self, line: dict[str, Any]) -> None:
        """One line of log.jsonl (rank 0), also sent to the progress callback."""
        if not self.context.is_main:
            return
        line = _jsonable({**line, "time": round(time.time(), 3)})
        try:
            with open(self.out / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError as err:
            raise _disk_error(err, self.out / LOG_FILE) from None
        self._emit({**line, "event": "log" if line.get("event") == "train" else line.get("event")})

    # ------------------------------------------------------------ the loop
    def _loop(self) -> None:
        recipe = self.recipe
        self.mixup = (
            Mixup(
                mixup_alpha=recipe.mixup_alpha,
                cutmix_alpha=recipe.cutmix_alpha,
                label_smoothing=recipe.label_smoothing,
                num_classes=self.labels.num_classes,
                class_splits=self.labels.class_splits,
            )
            if recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0
            else None
        )
        self.soft_loss = SoftTargetCrossEntropy(self.labels.class_splits)
        self.hard_loss = LabelSmoothingCrossEntropy(recipe.label_smoothing, self.labels.class_splits)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.window_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.window_steps = 0
        self.window_data_s = 0.0
        self.window_start = time.perf_counter()
        self._boundary: int | None = None
        try:
            self._steps()
        except KeyboardInterrupt:
            self._checkpoint_on_interrupt()
            raise

    def _check_finite(self, lr: float) -> None:
        """Raise `_diverged` when a loss since the last log line or a weight is not finite (NaN, inf)."""
        if not bool(torch.isfinite(self.window_loss)):
            raise _diverged(float(self.window_loss), self.step, lr)
        with torch.no_grad():
            if not all(bool(torch.isfinite(p).all()) for p in self.params):
                raise _diverged(float("nan"), self.step, lr, "the weights")

    def _checkpoint_on_interrupt(self) -> None:
        """Ctrl-C: keep the work done so far when the state is that of a step boundary.

        Until an update changes the weights (`_update`'s optimiser step), an interrupted step has
        only touched gradients and the data pipeline, none of which a checkpoint holds: the state is
        exactly that at the start of step `self.step`, and the resumed run continues as if never
        stopped. An interrupt from the optimiser step to the end of the step's bookkeeping (logging,
        evaluation, saving) keeps the last checkpoint instead.
        """
        written = False
        if self._boundary == self.step:
            try:
                self._check_finite(0.0)
                self._checkpoint()
                written = self.context.is_main
            except (OSError, FloatingPointError):
                pass  # the previous checkpoint is intact; the interrupt is what the user asked for
        self._emit({"event": "interrupted", "step": self.step, "checkpoint": written})

    def _steps(self) -> None:
        recipe, spe = self.recipe, self.steps_per_epoch
        while self.step < self.total_steps:
            epoch, position = divmod(self.step, spe)
            self.sampler.set_position(epoch, position)
            self.train_set.set_epoch(epoch)  # seeds each video's clip and augmentation: (seed, epoch, index)
            self._boundary = self.step
            batches = iter(self.loader)
            for _ in range(position, spe):
                self._boundary = self.step  # every piece of step `step - 1` is done: a checkpoint may be taken
                lr, grad_norm = self._update(batches)
                loss = self._log_step(lr, grad_norm) if self._logging_step() else None
                self._emit({"event": "step", "step": self.step, "epoch": self.step / spe, "lr": lr, "loss": loss})
                epoch_end = self.step % spe == 0
                if epoch_end or self.step % self.checkpoint_every == 0:
                    self._check_finite(lr)  # never evaluate, save or checkpoint weights that went NaN
                if epoch_end:
                    done = self.step // spe
                    if self.val_set is not None and (done % recipe.eval_every == 0 or self.step == self.total_steps):
                        self._evaluate()
                    if self.context.is_main:
                        _save_model_dir(self._evaluated(), self.out / "last")
                if epoch_end or self.step % self.checkpoint_every == 0:
                    self._checkpoint()
            # the sampler is exhausted here: persistent workers wait for the next epoch's iterator

    def _update(self, batches: Iterator[dict[str, Any]]) -> tuple[float, torch.Tensor | None]:
        """One optimiser update from `accum_steps` micro-batches; returns its learning rate and gradient norm."""
        ctx, accum = self.context, self.accum_steps
        autocast = self._autocast()
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for k in range(accum):
            waited = time.perf_counter()
            batch = next(batches)
            self.window_data_s += time.perf_counter() - waited
            if "fatal" in batch:
                raise ValueError(batch["fatal"])
            # mixup, drop path and dropout of micro-batch m of step s draw from (seed, s, m) on every rank layout
            _seed_everything(_derived_seed(self.seed, self.step, ctx.rank * accum + k, _MICRO))
            clips = batch["video"].to(self.device, non_blocking=True)
            targets = batch["label"].to(self.device, non_blocking=True)
            last = k == accum - 1
            with self.ddp.no_sync() if ctx.distributed and not last else nullcontext():  # type: ignore[operator]
                if self.mixup is not None:
                    clips, soft = self.mixup(clips, targets)
                    with autocast():
                        loss = self.soft_loss(self.ddp(clips), soft)
                else:
                    with autocast():
                        loss = self.hard_loss(self.ddp(clips), targets)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            step_loss += loss.detach().double()
        self._boundary = None  # from here the weights change: an interrupt keeps the last checkpoint
        lr = warmup_cosine_lr(self.step, self.base_lr, self.warmup_steps, self.total_steps)
        set_learning_rate(self.optimizer, lr)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.recipe.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.window_loss += step_loss / accum
        self.window_steps += 1
        return lr, grad_norm

    def _logging_step(self) -> bool:
        return self.step % self.log_every == 0 or self.step == self.total_steps

    def _log_step(self, lr: float, grad_norm: torch.Tensor | None) -> float:
        """The mean loss since the last line over every rank, written to log.jsonl (and TensorBoard)."""
        totals = torch.stack([self.window_loss, torch.full_like(self.window_loss, self.window_steps)])
        if self.context.distributed:
            dist.all_reduce(totals)  # on this rank's device: nccl reduces CUDA tensors only
        loss = float(totals[0] / totals[1])
        if not math.isfinite(loss):
            raise _diverged(loss, self.step, lr)
        elapsed = time.perf_counter() - self.window_start
        line = {
            "event": "train",
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "loss": loss,
            "lr": lr,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "clips_per_s": self.window_steps * self.global_batch / max(elapsed, 1e-9),
            "seconds_per_step": elapsed / self.window_steps,  # wall clock, since the last line
            "data_seconds_per_step": self.window_data_s / self.window_steps,  # of it, waiting for batches
            "failed_videos": self.train_set.num_failed,
        }
        self._log(line)
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "clips_per_s"):
                if line[key] is not None:
                    self.writer.add_scalar(f"train/{key}", line[key], self.step)
        self.window_loss.zero_()
        self.window_steps = 0
        self.window_data_s = 0.0
        self.window_start = time.perf_counter()
        return loss

    def _autocast(self) -> Callable[[], Any]:
        if self.precision == "fp32":
            return nullcontext
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        device_type = self.device.type
        return lambda: torch.autocast(device_type, dtype=dtype)

    # ------------------------------------------------------------ evaluation
    def _evaluated(self) -> ViViT:
        """The weights that are scored and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    def _scores(self, perturbations: Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        assert self.val_set is not None
        return _score(
            self._evaluated(),
            self.val_set,
            self.labels,
            self.context,
            self.device,
            batch=self.eval_batch_size,
            workers=self.workers,
            autocast=self._autocast(),
            perturbations=perturbations,
            seed=self.seed,
        )

    def _evaluate(self) -> None:
        scores, failed = self._scores(())
        metrics = {**scores["none"], "num_failed": len(failed)}
        self.metrics = metrics
        epoch = self.step // self.steps_per_epoch
        key, value = _headline(metrics)
        improved = value is not None and (self.best.get("value") is None or value > self.best["value"])
        if improved:
            self.best = {"step": self.step, "epoch": epoch, "metric": key, "value": value}
            if self.context.is_main:
                _save_model_dir(self._evaluated(), self.out / "best")
        self._log({"event": "eval", "step": self.step, "epoch": epoch, **metrics, "best": improved})
        if self.writer is not None:
            for name, number in metrics.items():
                if isinstance(number, (int, float)) and math.isfinite(number):
                    self.writer.add_scalar(f"eval/{name}", number, self.step)

    def _temporal_check(self) -> dict[str, float | None] | None:
        """After the last step: top-1 on the validation clips as they are and with their time destroyed."""
        if self.val_set is None or not self.temporal_check:
            return None
        scores, _ = self._scores(TEMPORAL_PERTURBATIONS)
        names = ("normal", "shuffled", "reversed", "middle_frame")
        out = {name: _headline(scores[mode])[1] for mode, name in zip(("none", *TEMPORAL_PERTURBATIONS), names)}
        self._log({"event": "temporal_check", "step": self.step, **out})
        return out


def _diverged(loss: float, step: int, lr: float, what: str = "the training loss") -> FloatingPointError:
    return FloatingPointError(
        f"{what} became {loss} by step {step} (lr {lr:.3g}); nothing after the last finite step was "
        "saved. Lower the learning rate (lr=..., --lr) or use fp32, in a new folder (a run with other settings "
        "does not resume this one)"
    )


def _describe_source(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).expanduser().resolve())
    return [shown_path(r.path if isinstance(r, VideoRecord) else r) for r in source]


def _load_checkpoint(path: Path, digest: str) -> dict[str, Any]:
    """Read our own checkpoint safely (`weights_only=True`: tensors and plain data, no code)."""
    try:
        with warnings.catch_warnings():  # torch's remarks on a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted or foreign file
        raise ValueError(
            f"{path} cannot be read as a vivit training checkpoint ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); move it away to start the run afresh"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vivit training checkpoint")
    if checkpoint.get("settings_digest") != digest:
        raise ValueError(
            f"{path} was written by a run with other settings than {path.parent / SETTINGS_FILE} records; "
            "use another folder"
        )
    return checkpoint
