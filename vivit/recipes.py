"""Fine-tuning recipes: Scenic's ViViT training settings per dataset family, as frozen data with sources.

Each value of a `Recipe` was read from Google's Scenic repository (google-research/scenic,
`scenic/projects/vivit/configs/<family>/*.py`, the trainer `scenic/projects/vivit/train_utils.py`,
`scenic/train_lib/lr_schedules.py`, DMVR's processors) and carries that source
(`recipe.source(field)`, `vivit train --recipe NAME --show`). Where the paper's text and Scenic's
code differ, the recipe follows the code and the source says so.

Sizes are Scenic's at the released models' input (32 frames, 224^2 crops; SSv2 256^2 from 288). A
model of another input size keeps its own frames and crop; the short side before cropping keeps the
recipe's ratio (`resize_size / crop_size`), see `Recipe.data_config`.

Every field can be overridden: `get_recipe("ek100").replace(lr=0.1, mixup_alpha=0.0)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes"]

_K400 = "scenic/projects/vivit/configs/kinetics400/vivit_base_k400.py"
_K400_FE = "scenic/projects/vivit/configs/kinetics400/vivit_base_factorised_encoder.py"
_EK = "scenic/projects/vivit/configs/epic_kitchens/vivit_large_factorised_encoder.py"
_SSV2 = "scenic/projects/vivit/configs/something_something_v2/vivit_large_factorised_encoder.py"
_SCHEDULE = "lr_configs.factors = 'constant * cosine_decay * linear_warmup' (scenic/train_lib/lr_schedules.py)"
_SGD = "optimizer = 'momentum' (flax.optim.Momentum: beta 0.9, nesterov False)"
_CLIP = (
    "max_grad_norm = 1 (Scenic clips each device's gradient before the cross-device mean; "
    "vivit clips the global batch's gradient, so the result does not depend on how the batch is split)"
)
_RANDAUG_VS_COLOUR = "RandAugment and colour augmentation are exclusive (scenic/dataset_lib/video_ops.py)"


@dataclass(frozen=True)
class Recipe:
    """A complete set of training settings (Scenic's config fields in vivit's names).

    Attributes:
        name, description: what the recipe is.
        optimizer: `"sgd"` (Scenic's `'momentum'`) or `"adamw"`.
        lr: base learning rate for `global_batch` clips per update (no automatic scaling).
        momentum, weight_decay: SGD momentum; decoupled weight decay (Scenic: `l2_decay_factor = 0`).
        layer_decay: layer-wise LR decay (AdamW recipes; None: off).
        grad_clip: max global norm of the gradient (None: no clipping).
        global_batch: clips per optimiser update over all ranks and accumulation steps.
        epochs, warmup_epochs: run length and linear warm-up (then one cosine to 0).
        frame_stride: frames between sampled frames.
        resize_size, crop_size: short side and crop at Scenic's input size (the ratio is kept
            for other sizes).
        scale: scale-jitter range (DMVR `scale_jitter_augm`, h and w independent).
        hflip: horizontal flip probability.
        color_prob, color_drop_prob: DMVR `color_default_augm` probabilities (0: off).
        randaugment: `(num_ops, magnitude)` or None (Scenic `distort_image_with_randaugment`).
        drop_path_rate: stochastic depth of the last layer (Scenic `stochastic_droplayer_rate`).
        label_smoothing: Scenic's smoothing `a` (per class split).
        mixup_alpha, cutmix_alpha: Beta parameters (0: off).
        ema_decay: weight EMA decay per update (0: no EMA; Scenic's recipes use none).
        test_views: `(clips, crops)` of the evaluation.
        eval_every: epochs between evaluations on the validation set (and always at the end).
        lr_by_model: `((model class, embed_dim, lr), ...)`: rates the configs set for one model.
        reference: the Scenic config the recipe transcribes.
        sources: field -> where the value comes from (`reference: ...` when it is that file).
    """

    name: str
    description: str
    lr: float
    epochs: int
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    layer_decay: float | None = None
    grad_clip: float | None = 1.0
    global_batch: int = 64
    warmup_epochs: float = 2.5
    frame_stride: int = 2
    resize_size: int = 256
    crop_size: int = 224
    scale: tuple[float, float] = (0.9, 1.33)
    hflip: float = 0.5
    color_prob: float = 0.0
    color_drop_prob: float = 0.0
    randaugment: tuple[int, int] | None = None
    drop_path_rate: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0
    test_views: tuple[int, int] = (4, 3)
    eval_every: int = 5
    lr_by_model: tuple[tuple[str, int, float], ...] = ()
    reference: str = field(default="", compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for key in ("lr", "weight_decay", "momentum", "warmup_epochs", "drop_path_rate", "label_smoothing"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{key} must be a finite number >= 0, got {value!r}")
        for key in ("hflip", "color_prob", "color_drop_prob"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                problems.append(f"{key} must be a probability in [0, 1], got {value!r}")
        if isinstance(self.momentum, (int, float)) and self.momentum >= 1:  # >= 1: the steps grow without bound
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        for key in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{key} must be >= 0, got {value!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.label_smoothing >= 1:
            problems.append(f"label_smoothing must be < 1, got {self.label_smoothing!r}")
        if self.drop_path_rate >= 1:
            problems.append(f"drop_path_rate must be < 1, got {self.drop_path_rate!r}")
        for key in ("epochs", "global_batch", "frame_stride", "resize_size", "crop_size", "eval_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            problems.append(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must be in (0, 1] or None, got {self.layer_decay!r}")
        low, high = self.scale
        if not 0 < low <= high:
            problems.append(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        if self.randaugment is not None:
            ops, magnitude = self.randaugment
            if ops < 0 or magnitude < 0:
                problems.append(f"randaugment must be (num_ops >= 0, magnitude >= 0), got {self.randaugment!r}")
        if self.randaugment is not None and (self.color_prob > 0 or self.color_drop_prob > 0):
            problems.append(
                "randaugment and colour augmentation (color_prob, color_drop_prob) cannot both be on: "
                f"{_RANDAUG_VS_COLOUR}; turn one off (color_prob=0 and color_drop_prob=0, or randaugment=None)"
            )
        if (
            isinstance(self.resize_size, int)
            and isinstance(self.crop_size, int)
            and 0 < self.resize_size < self.crop_size
        ):
            problems.append(
                f"resize_size {self.resize_size} is smaller than crop_size {self.crop_size}: frames are resized to "
                "a short side of resize_size, then crop_size is cut from them"
            )
        clips, crops = self.test_views
        if clips < 1 or crops not in (1, 3):
            problems.append(f"test_views must be (clips >= 1, crops 1 or 3), got {self.test_views!r}")
        if problems:
            raise ValueError(f"recipe {self.name!r}: " + "; ".join(problems))

    # ------------------------------------------------------------ queries
    @classmethod
    def fields(cls) -> list[str]:
        """The names of the settings (everything but name, description, lr_by_model, sources)."""
        skip = {"name", "description", "lr_by_model", "reference", "sources"}
        return [f.name for f in dataclasses.fields(cls) if f.name not in skip]

    def source(self, key: str) -> str:
        """Where the value of `key` comes from ("vivit default" for values Scenic does not set)."""
        return dict(self.sources).get(key, "vivit default")

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with some settings replaced (their source becomes "overridden").

        Raises:
            ValueError: an unknown setting (the message lists them) or an invalid value.
        """
        unknown = sorted(set(overrides) - set(self.fields()))
        if unknown:
            raise ValueError(f"unknown recipe settings {unknown}; the settings are: {', '.join(self.fields())}")
        if not overrides:
            return self
        for key in ("scale", "test_views", "randaugment"):
            if overrides.get(key) is not None:
                overrides[key] = tuple(overrides[key])
        sources = dict(self.sources)
        for key in overrides:
            sources[key] = "overridden"
        if "lr" in overrides:
            overrides["lr_by_model"] = ()
        return dataclasses.replace(self, **overrides, sources=tuple(sources.items()))

    def lr_for(self, model: Any) -> float:
        """The base rate for `model`: the configs' per-model rate when one applies, else `lr`."""
        for class_name, width, lr in self.lr_by_model:
            if type(model).__name__ == class_name and getattr(model, "embed_dim", None) == width:
                return lr
        return self.lr

    def settings(self) -> dict[str, Any]:
        """The settings as plain JSON data (tuples as lists)."""
        return {key: _plain(getattr(self, key)) for key in self.fields()}

    def rows(self) -> list[tuple[str, Any, str]]:
        """`(setting, value, source)` for every setting, for display."""
        out = [(key, getattr(self, key), self.source(key)) for key in self.fields()]
        kinds = {"SpatioTemporalViViT": "Model 1", "FactorizedEncoderViViT": "Model 2"}
        for class_name, width, lr in self.lr_by_model:
            out.insert(1, (f"lr ({kinds.get(class_name, class_name)}, D={width})", lr, self.source("lr_by_model")))
        return out

    def data_config(self, crop: tuple[int, int], num_frames: int) -> dict[str, Any]:
        """Preprocessing for a model taking `num_frames` frames of `crop` pixels.

        The short side is `round(min(crop) * resize_size / crop_size)` (256:224 for Kinetics,
        288:256 for SSv2), so a model at Scenic's size gets exactly Scenic's numbers.
        """
        resize = round(min(crop) * self.resize_size / self.crop_size)
        return {
            "input_size": (3, int(num_frames), int(crop[0]), int(crop[1])),
            "frame_stride": self.frame_stride,
            "resize_size": resize,
            "crop_size": (int(crop[0]), int(crop[1])),
            "test_views": tuple(self.test_views),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_COMMON_SOURCES = {
    "optimizer": _SGD,
    "momentum": "flax.optim.Momentum default beta 0.9 (Scenic adds momentum=0.9 when none is given)",
    "weight_decay": "l2_decay_factor = 0",
    "grad_clip": _CLIP,
    "global_batch": "batch_size = 64",
    "warmup_epochs": "lr_configs.warmup_steps = int(2.5 * steps_per_epoch); " + _SCHEDULE,
    "scale": "augmentation_params.scale_min_factor = 0.9, scale_max_factor = 1.33, prob_scale_jitter = 1.0",
    "hflip": "DMVR add_image random_flip=True (probability 0.5)",
    "eval_every": "dataset_configs.log_test_epochs = 5 (multi-view test every 5 epochs)",
}


def _sources(path: str, extra: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    merged = {key: f"{path}: {text}" for key, text in _COMMON_SOURCES.items()}
    merged.update({key: f"{path}: {text}" for key, text in extra.items()})
    return tuple(merged.items())


#: The recipes by name.
RECIPES: dict[str, Recipe] = {
    "k400": Recipe(
        name="k400",
        reference=_K400,
        description="Kinetics-400 (Scenic configs/kinetics400): SGD, 30 epochs, scale jitter, crop, flip, colour",
        lr=0.1,
        epochs=30,
        frame_stride=2,
        color_prob=0.8,
        color_drop_prob=0.1,
        lr_by_model=(("FactorizedEncoderViViT", 768, 0.05),),
        sources=_sources(
            _K400,
            {
                "lr": "lr_configs.base_learning_rate = 1e-1 (Model 1; also the L factorised encoder)",
                "lr_by_model": f"{_K400_FE}: base_learning_rate = 5e-2 (ViViT-B Model 2)",
                "epochs": "num_training_epochs = 30",
                "frame_stride": "dataset_configs.num_frames = 32, stride = 2",
                "resize_size": "dataset_configs.min_resize = 256",
                "crop_size": "dataset_configs.crop_size = 224",
                "color_prob": "augmentation_params.do_color_augment = True, prob_color_augment = 0.8",
                "color_drop_prob": "augmentation_params.prob_color_drop = 0.1",
                "test_views": "num_test_clips = 4, do_three_spatial_crops = True",
                "label_smoothing": "label_smoothing = None",
            },
        ),
    ),
    "ek100": Recipe(
        name="ek100",
        reference=_EK,
        description="EPIC-KITCHENS-100 (Scenic configs/epic_kitchens): SGD, 50 epochs, RandAugment, drop path, "
        "label smoothing, mixup, noun + verb loss",
        lr=0.5,
        epochs=50,
        frame_stride=1,
        randaugment=(2, 15),
        drop_path_rate=0.2,
        label_smoothing=0.2,
        mixup_alpha=0.1,
        sources=_sources(
            _EK,
            {
                "lr": "lr_configs.base_learning_rate = 0.5",
                "epochs": "num_training_epochs = 50",
                "frame_stride": "dataset_configs.num_frames = 32, stride = 1",
                "resize_size": "dataset_configs.min_resize = 256",
                "crop_size": "dataset_configs.crop_size = 224",
                "color_prob": "augmentation_params.do_color_augment = False",
                "color_drop_prob": "augmentation_params.do_color_augment = False",
                "randaugment": "do_rand_augment = True, rand_augment_num_layers = 2, rand_augment_magnitude = 15",
                "drop_path_rate": "model.stochastic_droplayer_rate = 0.2",
                "label_smoothing": "label_smoothing = 0.2 (per split: ViViTMultiHeadClassificationModel)",
                "mixup_alpha": "mixup.alpha = 0.1 (in the train step, per device batch)",
                "test_views": "num_test_clips = 4, do_three_spatial_crops = True (the paper reports 4x1)",
            },
        ),
    ),
    "ssv2": Recipe(
        name="ssv2",
        reference=_SSV2,
        description="Something-Something v2 (Scenic configs/something_something_v2): SGD, 35 epochs, 288 -> 256, "
        "no flip, RandAugment, drop path, label smoothing, mixup",
        lr=0.4,
        epochs=35,
        frame_stride=1,
        resize_size=288,
        crop_size=256,
        hflip=0.0,
        randaugment=(2, 20),
        drop_path_rate=0.3,
        label_smoothing=0.3,
        mixup_alpha=0.3,
        sources=_sources(
            _SSV2,
            {
                "lr": "lr_configs.base_learning_rate = 0.4 (the paper's Table 7 says 0.5; the code is followed)",
                "epochs": "num_training_epochs = 35",
                "frame_stride": "dataset_configs.num_frames = 32, stride = 1",
                "resize_size": "dataset_configs.min_resize = 288",
                "crop_size": "dataset_configs.crop_size = 256",
                "hflip": "no flip: SSv2 labels name directions ('from left to right'); Scenic's SSv2 pipeline has "
                "no random_flip (comment in scenic/dataset_lib/video_ops.py), although this public config, read "
                "through DMVR's generic add_image, would flip",
                "color_prob": "augmentation_params.do_color_augment = False",
                "color_drop_prob": "augmentation_params.do_color_augment = False",
                "randaugment": "do_rand_augment = True, rand_augment_num_layers = 2, rand_augment_magnitude = 20",
                "drop_path_rate": "model.stochastic_droplayer_rate = 0.3",
                "label_smoothing": "label_smoothing = 0.3",
                "mixup_alpha": "mixup.alpha = 0.3 (in the train step, per device batch)",
                "test_views": "num_test_clips = 4, do_three_spatial_crops = True",
            },
        ),
    ),
}


def list_recipes() -> list[str]:
    """The recipe names, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called `name` (a `Recipe` is returned as is).

    Raises:
        ValueError: an unknown name (the message lists the recipes).
    """
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(list_recipes())}") from None
