"""Checks applied to everything a checkpoint file claims, before it is trusted or allocated.

A checkpoint is data from a stranger: its tensor names decide the depth, its shapes the widths,
and an embedded `pretrained_cfg` decides how many forward passes a prediction makes. This module
holds the rules every reader and converter applies, so that they agree:

* `short_list`: error messages name a few offending items and then a count, never thousands;
* `ARCH_LIMITS` / `check_model_args` / `check_parameter_count`: the largest architecture a file
  may describe (a user's explicit keyword arguments are not capped);
* `count_blocks`: the depth is the number of distinct block indices, which must run 0..N-1
  (one stray tensor `blocks.999999999.x` is an error, not a billion-block model);
* `FLOAT_DTYPES` / `all_finite`: weights are float16, bfloat16, float32 or float64 and finite;
* `validate_pretrained_cfg`: the preprocessing and label fields of an embedded config, checked
  against ranges (views, sizes, finite mean/std, class splits that sum to the class count).

Every failure is a `ValueError` whose message starts with the file it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "ARCH_LIMITS",
    "CFG_LIMITS",
    "FLOAT_DTYPES",
    "INTERPOLATIONS",
    "MAX_PARAMETERS",
    "all_finite",
    "check_finite",
    "check_model_args",
    "check_parameter_count",
    "count_blocks",
    "short_list",
    "validate_pretrained_cfg",
]

# Names as numpy/Flax write them; safetensors' codes (F16, BF16, F32, F64) map onto these.
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

# The largest architecture a checkpoint may describe: (lowest, highest) per constructor argument.
# Generous for every published ViViT/ViT (ViT-H/14: embed 1280, depth 32, heads 16, mlp 5120;
# ViViT-L 32x224^2: 3136 tokens); small enough that a corrupt or hostile file cannot make a model
# that does not fit in memory before any tensor is compared.
ARCH_LIMITS: Mapping[str, tuple[int, int]] = {
    "embed_dim": (1, 8192),
    "depth": (1, 256),
    "temporal_depth": (1, 256),
    "num_heads": (1, 256),
    "temporal_num_heads": (1, 256),
    "mlp_dim": (1, 65536),
    "temporal_mlp_dim": (1, 65536),
    "num_classes": (0, 100_000),
    "in_chans": (1, 16),
    "tubelet_size": (1, 256),
    "patch_size": (1, 1024),
    "img_size": (1, 8192),
    "num_frames": (1, 4096),
    "tokens": (1, 65_536),  # tubelets per clip (nt * nh * nw): the position table's length
}
# Parameters of the model a file describes (2e9 float32 = 8 GB; ViViT-H is about 0.65e9).
MAX_PARAMETERS = 2_000_000_000

# Ranges for the fields of an embedded pretrained_cfg (Scenic's protocols use 1..4 clips x 1..3
# crops, strides 1..2, 224-320 pixel crops).
CFG_LIMITS: Mapping[str, tuple[int, int]] = {
    "clips": (1, 64),
    "frame_stride": (1, 1024),
    "pixels": (1, 8192),
    "channels": (1, 16),
    "frames": (1, 4096),
    "num_classes": (0, 100_000),
    "text": (0, 4096),  # characters of any one string (a label, the licence, ...)
}

# The resampling filters vivit.data.transforms implements (weights never imports data).
INTERPOLATIONS = ("bilinear", "bicubic")
_MAX_LISTED = 5


def short_list(items: Iterable[Any], limit: int = _MAX_LISTED, sep: str = ", ") -> str:
    """Join the first `limit` items with `sep` and say how many more there are.

    >>> short_list(["a", "b", "c"], limit=2)
    'a, b and 1 more'
    """
    items = list(items)
    shown = sep.join(str(item) for item in items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _clip(text: Any, limit: int = 80) -> str:
    """A value for an error message: repr, control characters escaped, at most `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# ---------------------------------------------------------------- architecture
# Arguments that are not sizes: a fraction in [0, 1) or one of a few names.
_RATES = ("drop_rate", "attn_drop_rate", "drop_path_rate")
_CHOICES: Mapping[str, tuple[Any, ...]] = {
    "global_pool": ("token", "avg"),
    "attention_order": ("time_space", "space_time"),
    "dynamic_size": (False, True),
}
_DERIVED = ("mlp_dim", "temporal_num_heads", "temporal_mlp_dim")  # None: computed from the others
_PAIRS = ("img_size", "patch_size")  # an int or an (h, w) pair


def _ints(value: Any, pair: bool = False) -> list[int] | None:
    """`value` as a list of ints (an int, or with `pair` an (h, w) pair of ints), else None."""
    values = value if pair and isinstance(value, (list, tuple)) and len(value) == 2 else [value]
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return None
    return [int(v) for v in values]


def check_model_args(args: Mapping[str, Any], where: str, *, from_file: bool = True) -> None:
    """Refuse architecture arguments of the wrong type or outside `ARCH_LIMITS`, before anything is built.

    Every model `vivit.create_model` builds passes here: arguments read from a checkpoint (its tensors
    and embedded config, a `config.json`), a registry entry's, and the user's overrides.

    Args:
        args: Constructor arguments; unknown keys are left to the constructor. Sizes are integers
            (`img_size`/`patch_size` an int or an (h, w) pair), `drop_rate`/`attn_drop_rate`/
            `drop_path_rate` numbers in [0, 1), `global_pool` 'token' or 'avg', `attention_order`
            'time_space' or 'space_time', `dynamic_size` a bool; `mlp_dim`, `temporal_num_heads`,
            `temporal_mlp_dim` may be None (derived from the others).
        where: The source (a file, or the model name and overrides), named first in the message.
        from_file: Whether the arguments come from a file (the message then says it may be corrupt).

    Raises:
        ValueError: Naming the first offending arguments, what they must be, and `where`.
    """
    problems = []
    for key, (low, high) in ARCH_LIMITS.items():
        if key not in args or key == "tokens" or (key in _DERIVED and args[key] is None):
            continue
        values = _ints(args[key], pair=key in _PAIRS)
        if values is None:
            kind = "an integer or a pair of integers" if key in _PAIRS else "an integer"
            problems.append(f"{key}={_clip(args[key])} is not {kind}")
        elif not all(low <= v <= high for v in values):
            problems.append(f"{key}={_clip(args[key])} is outside {low}..{high}")
    for key in _RATES:
        value = args.get(key, 0.0)
        if not (isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and 0 <= value < 1):
            problems.append(f"{key}={_clip(value)} is not a number in [0, 1)")
    for key, choices in _CHOICES.items():
        if key in args and not any(args[key] is c or (isinstance(c, str) and args[key] == c) for c in choices):
            problems.append(f"{key}={_clip(args[key])} is not one of {', '.join(map(repr, choices))}")
    if not problems and all(k in args for k in ("img_size", "num_frames", "patch_size", "tubelet_size")):
        size, patch = _ints(args["img_size"], pair=True), _ints(args["patch_size"], pair=True)
        assert size is not None and patch is not None
        h, w = (size * 2)[:2]
        ph, pw = (patch * 2)[:2]
        tokens = (int(args["num_frames"]) // int(args["tubelet_size"])) * (h // ph) * (w // pw)
        low, high = ARCH_LIMITS["tokens"]
        if tokens > high:
            problems.append(f"{tokens} tubelets per clip is outside {low}..{high}")
    if problems:
        tail = "; the file is corrupt or not a ViViT/ViT checkpoint" if from_file else ""
        raise ValueError(
            f"{where}: the architecture is outside the supported limits: {short_list(problems, sep='; ')} "
            f"(vivit.weights.validate.ARCH_LIMITS){tail}"
        )


def check_parameter_count(model: torch.nn.Module, where: str, *, from_file: bool = True) -> None:
    """Refuse a model (built on the meta device) with more than `MAX_PARAMETERS` parameters.

    Args:
        model: The model, built on the meta device (nothing allocated).
        where: The source, for the message.
        from_file: Whether the architecture comes from a file (the message then says it may be corrupt).
    """
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        tail = "; the file is corrupt or not a ViViT/ViT checkpoint" if from_file else ""
        raise ValueError(
            f"{where}: a model of {count:,} parameters ({count * 4 / 2**30:,.1f} GiB in float32), more than the "
            f"limit of {MAX_PARAMETERS:,} (vivit.weights.validate.MAX_PARAMETERS){tail}"
        )


def count_blocks(names: Iterable[str], pattern: str, where: str, what: str = "blocks") -> int:
    """The number of blocks in a checkpoint: distinct indices, which must be 0..N-1.

    The depth is never the highest index plus one: one stray name with index 999999999 would
    describe a billion blocks.

    Args:
        names: Tensor or parameter names.
        pattern: A regular expression whose first group is the block index, matched with
            `re.match` (e.g. `r"blocks\\.(\\d+)\\."` or `r"Transformer/encoderblock_(\\d+)/"`).
        where: The file, for the message ('' to leave it to the caller).
        what: What the blocks are called in the message.

    Returns:
        N, the number of blocks (0 if no name matches).

    Raises:
        ValueError: If the indices are not exactly 0..N-1, or N exceeds `ARCH_LIMITS["depth"]`.
    """
    regex = re.compile(pattern)
    indices = {int(m[1]) for name in names if (m := regex.match(name))}
    count = len(indices)
    strays = sorted(i for i in indices if i >= count)
    lead = f"{where}: " if where else ""
    if strays:
        missing = sorted(set(range(count)) - indices)
        raise ValueError(
            f"{lead}{what} indices must run 0..{count - 1} without gaps ({count} distinct indices); beyond the end: "
            f"{short_list(strays)}; missing: {short_list(missing)}; the file is corrupt or not a ViViT/ViT checkpoint"
        )
    high = ARCH_LIMITS["depth"][1]
    if count > high:
        raise ValueError(f"{lead}{count} {what} is more than the supported {high}; the file is corrupt")
    return count


# ---------------------------------------------------------------- values
def all_finite(values: np.ndarray | torch.Tensor, chunk: int = 1 << 22) -> bool:
    """Whether every element is finite.

    A sum is NaN or infinite when any element is, so one reduction (no boolean temporary: about 30x
    faster than `isfinite(x).all()` on a ViViT-B) answers for finite tensors; only a sum that is not
    finite (a non-finite element, or finite values that overflow it) is checked element by element,
    in chunks.

    Args:
        values: A numpy array or tensor (any shape; integers are always finite).
        chunk: Elements per chunk of the element-wise check.
    """
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point():
            return True
        tensor = values.detach().reshape(-1)
        wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        if bool(torch.isfinite(tensor.sum(dtype=wide))):
            return True
        return all(bool(torch.isfinite(tensor[i : i + chunk]).all()) for i in range(0, tensor.numel(), chunk))
    array = np.asarray(values).reshape(-1)
    if array.dtype.kind not in "fc":
        return True
    return all(bool(np.isfinite(array[i : i + chunk]).all()) for i in range(0, int(array.size), chunk))


# ---------------------------------------------------------------- embedded pretrained_cfg
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class _CfgChecker:
    """Collects problems while normalising a pretrained_cfg (one pass, all problems reported)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.out: dict[str, Any] = {}
        self.problems: list[str] = []

    def bad(self, key: str, why: str) -> None:
        self.problems.append(f"{key}={_clip(self.cfg.get(key))} {why}")

    def int_in(self, key: str, limit: str) -> int | None:
        value = self.cfg.get(key)
        low, high = CFG_LIMITS[limit]
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or not low <= value <= high:
            self.bad(key, f"must be an integer in {low}..{high}")
            return None
        return int(value)

    def ints(self, key: str, count: Collection[int], limits: tuple[str, ...]) -> tuple[int, ...] | None:
        value = self.cfg.get(key)
        values = value if isinstance(value, (list, tuple)) else None
        if (
            values is None
            or len(values) not in count
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
        ):
            self.bad(key, f"must be a list of {' or '.join(map(str, sorted(count)))} integers")
            return None
        for v, name in zip(values, limits * len(values), strict=False):
            low, high = CFG_LIMITS[name]
            if not low <= v <= high:
                self.bad(key, f"has {v}, outside {low}..{high}")
                return None
        return tuple(int(v) for v in values)


def _json_safe(value: Any, depth: int = 0) -> bool:
    """Whether a value is plain JSON data (no NaN/inf, no deep nesting) that can be stored and printed."""
    if depth > 8:
        return False
    if value is None or isinstance(value, (bool, str, int)):
        return not isinstance(value, str) or len(value) <= CFG_LIMITS["text"][1]
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_safe(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_json_safe(v, depth + 1) for v in value)
    return False


_CHECKED_FIELDS = frozenset(
    {
        "input_size",
        "crop_size",
        "resize_size",
        "frame_stride",
        "test_views",
        "mean",
        "std",
        "interpolation",
        "antialias",
        "num_classes",
        "label_names",
        "class_splits",
        "split_names",
        "metrics",
    }
)


def validate_pretrained_cfg(cfg: Any, where: str, num_classes: int | None = None) -> dict[str, Any]:
    """Check an embedded `pretrained_cfg` against ranges; return a copy.

    Checked when present: `input_size` (C, T, H, W), `crop_size`, `resize_size`, `frame_stride`,
    `test_views` (clips 1..64, crops 1 or 3), `mean`/`std` (finite numbers, one per channel, std > 0),
    `interpolation` (a short string), `antialias` (bool), `num_classes`, `label_names` (strings, one
    per class), `class_splits` (positive, summing to the class count) with `split_names`, `metrics`
    (finite numbers or short strings). Any other field must be plain JSON data without NaN/inf.

    Args:
        cfg: The config as read from the file (a JSON object).
        where: The file, for the message.
        num_classes: The class count of the weights (the head's rows), if known: `num_classes`,
            `label_names` and `class_splits` must agree with it.

    Returns:
        A copy of the config (the values as they were).

    Raises:
        ValueError: Listing the first few offending fields and how many there are.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where}: its pretrained_cfg is a {type(cfg).__name__}, expected a JSON object")
    check = _CfgChecker(cfg)
    out = check.out
    for key, value in cfg.items():
        if not isinstance(key, str):
            check.problems.append(f"key {_clip(key)} is not a string")
            continue
        out[key] = value
    channels = None
    if "input_size" in cfg:
        size = check.ints("input_size", {4}, ("channels", "frames", "pixels", "pixels"))
        out["input_size"] = size
        channels = size[0] if size else None
    if "crop_size" in cfg:
        value = cfg["crop_size"]
        out["crop_size"] = (
            check.int_in("crop_size", "pixels")
            if not isinstance(value, (list, tuple))
            else check.ints("crop_size", {2}, ("pixels",))
        )
    for key, limit in (("resize_size", "pixels"), ("frame_stride", "frame_stride")):
        if key in cfg:
            out[key] = check.int_in(key, limit)
    if "test_views" in cfg:
        views = check.ints("test_views", {2}, ("clips", "clips"))
        if views is not None and views[1] not in (1, 3):
            check.bad("test_views", "must be (clips, crops) with 1 or 3 crops")
        out["test_views"] = views
    for key in ("mean", "std"):
        if key not in cfg:
            continue
        values = cfg[key]
        if (
            not isinstance(values, (list, tuple))
            or not 1 <= len(values) <= CFG_LIMITS["channels"][1]
            or not all(_is_number(v) and math.isfinite(v) for v in values)
        ):
            check.bad(key, "must be a list of finite numbers, one per channel")
            continue
        if channels is not None and len(values) != channels:
            check.bad(key, f"must have {channels} entries (one per channel of input_size)")
        if key == "std" and min(values) <= 0:
            check.bad(key, "must be positive")
        out[key] = tuple(float(v) for v in values)
    if "interpolation" in cfg and cfg["interpolation"] not in INTERPOLATIONS:
        check.bad("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}")
    crop = out.get("crop_size") or (out.get("input_size") or (None, None, None))[2:]
    crops = [crop] if isinstance(crop, int) else list(crop or ())
    resize = out.get("resize_size")
    # frames are resized so that their short side is resize_size, then cropped: the crop must fit
    if crops and all(isinstance(c, int) for c in crops) and isinstance(resize, int) and max(crops) > resize:
        check.bad("crop_size" if "crop_size" in cfg else "input_size", f"crops more than resize_size={resize}")
    if "antialias" in cfg and not isinstance(cfg["antialias"], bool):
        check.bad("antialias", "must be true or false")
    _check_classes(check, num_classes)
    if "metrics" in cfg:
        metrics = cfg["metrics"]
        if not isinstance(metrics, Mapping) or not all(
            isinstance(k, str)
            and (v is None or (_is_number(v) and math.isfinite(v)) or (isinstance(v, str) and len(v) <= 256))
            for k, v in metrics.items()
        ):
            check.bad("metrics", "must map names to finite numbers, short strings or null")
    for key, value in cfg.items():
        if isinstance(key, str) and key not in _CHECKED_FIELDS and not _json_safe(value):
            check.problems.append(
                f"{key}={_clip(value)} is not plain JSON data (NaN/inf, too long, or nested too deep)"
            )
    if check.problems:
        raise ValueError(
            f"{where}: its embedded pretrained_cfg is invalid: {short_list(check.problems, 3, sep='; ')}; "
            "the file is corrupt or was written by another tool"
        )
    return {key: value for key, value in cfg.items() if isinstance(key, str)}


def _check_classes(check: _CfgChecker, num_classes: int | None) -> None:
    """num_classes, label_names, class_splits and split_names, against the weights' class count."""
    cfg, out = check.cfg, check.out
    declared = check.int_in("num_classes", "num_classes") if cfg.get("num_classes") is not None else None
    if declared is not None and num_classes is not None and declared != num_classes:
        check.bad("num_classes", f"disagrees with the {num_classes} outputs of the weights")
    classes = num_classes if num_classes is not None else declared
    names = cfg.get("label_names")
    if names is not None:
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            check.problems.append("label_names must be a list of strings")
        elif classes is not None and len(names) != classes:
            check.problems.append(f"label_names has {len(names)} names for {classes} classes")
        elif any(len(n) > CFG_LIMITS["text"][1] for n in names):
            check.problems.append(f"label_names has names longer than {CFG_LIMITS['text'][1]} characters")
        else:
            out["label_names"] = tuple(names)
    splits = cfg.get("class_splits")
    if splits is not None:
        if (
            not isinstance(splits, (list, tuple))
            or not splits
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in splits)
        ):
            check.bad("class_splits", "must be a list of positive integers")
        elif classes is not None and sum(splits) != classes:
            check.bad("class_splits", f"sums to {sum(splits)}, not the {classes} classes")
        else:
            out["class_splits"] = tuple(splits)
        split_names = cfg.get("split_names")
        if split_names is not None:
            if (
                not isinstance(split_names, (list, tuple))
                or not isinstance(splits, (list, tuple))
                or len(split_names) != len(splits)
                or not all(isinstance(n, str) and len(n) <= 64 for n in split_names)
            ):
                check.bad("split_names", "must be one short string per class split")
            else:
                out["split_names"] = tuple(split_names)


def check_finite(where: str, values: Mapping[str, np.ndarray | torch.Tensor], what: str = "tensors") -> None:
    """Refuse weights holding NaN or infinity: one message for every format, naming the first few.

    Args:
        where: The file (or source) named in the message.
        values: Name -> array or tensor.
        what: What the names are, for the message ("tensors", "parameters", "arrays").

    Raises:
        ValueError: If any value is not finite.
    """
    bad = [name for name, array in values.items() if not all_finite(array)]
    if bad:
        raise ValueError(
            f"{where}: {len(bad)} {what} hold NaN or infinite values: {short_list(bad)}; "
            "the weights are corrupt (or diverged in training) and cannot be used"
        )
