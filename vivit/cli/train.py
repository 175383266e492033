"""`vivit train`: fine-tune a model on a labelled set of videos with Scenic's recipes (the job: `vivit.train`)."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import console
from .options import (
    CommandError,
    UsageError,
    add_device_option,
    add_quiet_option,
    add_sample_fps_option,
    add_workers_option,
    device_option,
    entry_option,
    override_value,
    positive_int,
    require_input,
    views_value,
)

# Recipe setting -> (command-line kind, metavar); `vivit train --help` shows them all, `--show` their values.
RECIPE_OPTIONS: dict[str, tuple[str, str]] = {
    "lr": ("float", "LR"),
    "epochs": ("int", "N"),
    "optimizer": ("str", "sgd|adamw"),
    "momentum": ("float", "M"),
    "weight_decay": ("float", "WD"),
    "layer_decay": ("float?", "D|none"),
    "grad_clip": ("float?", "NORM|none"),
    "global_batch": ("int", "N"),
    "warmup_epochs": ("float", "E"),
    "frame_stride": ("int", "S"),
    "resize_size": ("int", "PX"),
    "crop_size": ("int", "PX"),
    "scale": ("pair", "LOW,HIGH"),
    "hflip": ("float", "P"),
    "color_prob": ("float", "P"),
    "color_drop_prob": ("float", "P"),
    "randaugment": ("pair?", "N,M|none"),
    "drop_path_rate": ("float", "R"),
    "label_smoothing": ("float", "A"),
    "mixup_alpha": ("float", "ALPHA"),
    "cutmix_alpha": ("float", "ALPHA"),
    "ema_decay": ("float", "DECAY"),
    "test_views": ("views", "CLIPSxCROPS"),
    "eval_every": ("int", "EPOCHS"),
}


def _setting_value(kind: str) -> Callable[[str], Any]:
    """A parser for one recipe setting's command-line text (`none` turns optional settings off)."""

    def parse(text: str) -> Any:
        lowered = text.strip().lower()
        if kind.endswith("?") and lowered in ("none", "off"):
            return None
        try:
            if kind.startswith("float"):
                value = float(text)
                if math.isfinite(value):
                    return value
            elif kind == "int":
                return int(text)
            else:  # a pair
                parts = [p for p in re.split(r"[,x]", lowered) if p]
                if len(parts) == 2:
                    return tuple((float if kind == "pair" else int)(p) for p in parts)
        except ValueError:
            pass
        hint = {"pair": "two numbers such as 0.9,1.33", "pair?": "two integers such as 2,15, or none"}
        raise argparse.ArgumentTypeError(
            f"expected {hint.get(kind, 'a number or none' if kind == 'float?' else kind)}, got {text!r}"
        )

    return parse


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    from ..recipes import RECIPES, list_recipes

    p = commands.add_parser(
        "train",
        help="fine-tune a model on a labelled set of videos (Scenic's recipes, resumable)",
        description="Fine-tune a model on TRAIN (a class-folder tree or a CSV/TSV list), scoring it on VAL as "
        "'vivit evaluate' does. --recipe sets Scenic's values for a dataset family (--recipe NAME --show lists "
        "them with their sources); every value can be changed with its option. Writes OUT/log.jsonl, "
        "OUT/checkpoint.pt, OUT/last/ and OUT/best/ (load with --model local-dir:OUT/best). Re-running the same "
        "command resumes from the checkpoint; other settings in the same OUT are refused. Runs under torchrun.",
    )
    p.add_argument("train", nargs="?", metavar="TRAIN", help="class-folder tree root/<class>/<video> or a list file")
    p.add_argument("--val", metavar="VAL", help="validation set, as TRAIN (default: none, no best/)")
    p.add_argument(
        "--model",
        "-m",
        metavar="NAME",
        help="model name (e.g. vivit_b_fe_in21k, vivit_b_fe_k400, local-dir:PATH, hf-hub:org/repo)",
    )
    p.add_argument(
        "--pretrained", metavar="PATH|none", help="weights to start from (default: the entry's own; none: a fresh init)"
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        type=override_value,
        metavar="KEY=VALUE",
        help="constructor argument, JSON value (repeatable), e.g. --override num_frames=16",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="the run's folder (created; re-run to resume)")
    p.add_argument("--recipe", default="k400", choices=list_recipes(), help="Scenic's settings (default k400)")
    p.add_argument("--show", action="store_true", help="print the recipe's settings with their sources and exit")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="clips per forward pass (default 8)")
    p.add_argument(
        "--accum-steps",
        type=positive_int,
        metavar="N",
        help="micro-batches per update (default: global batch / (batch size x ranks))",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample order, augmentation and init (default 0)")
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="fp32, bf16 autocast, fp16 (GPU)"
    )
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward (less memory)")
    p.add_argument("--log-every", type=positive_int, default=10, metavar="STEPS", help="log lines (default 10)")
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=500, metavar="STEPS", help="besides each epoch (default 500)"
    )
    p.add_argument("--eval-batch-size", type=positive_int, default=4, metavar="N", help="views per forward pass")
    p.add_argument("--no-temporal-check", action="store_true", help="skip the shuffled/reversed/frozen-frame check")
    p.add_argument(
        "--no-tensorboard", action="store_true", help="no OUT/tensorboard even when TensorBoard is installed"
    )
    add_sample_fps_option(p)
    add_device_option(p)
    add_workers_option(p)
    add_quiet_option(p)
    recipe = p.add_argument_group("recipe settings (default: the recipe's; see --show)")
    defaults = RECIPES["k400"]
    for name, (kind, metavar) in RECIPE_OPTIONS.items():
        flag = "--views" if name == "test_views" else "--" + name.replace("_", "-")
        parse = views_value if kind == "views" else (_setting_value(kind) if kind != "str" else str)
        recipe.add_argument(
            flag,
            dest=f"set_{name}",
            type=parse,
            default=argparse.SUPPRESS,  # absent unless given: "none" is a value (off), not "not given"
            metavar=metavar,
            help=f"{name} (k400: {getattr(defaults, name)})",
        )
    p.set_defaults(run=run_train)


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, f"set_{name}") for name in RECIPE_OPTIONS if hasattr(args, f"set_{name}")}


class _TrainProgress:
    """The job's progress events as notes and a bar over the steps (rank 0 only)."""

    def __init__(self) -> None:
        self.bar = console.ProgressBar("train", "step")
        self.total = 0

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            what = "resuming at step {step}" if event["resumed"] else "training"
            console.note(
                f"{what.format(step=event['step'])}: {event['train_videos']} videos ({event['classes']} classes), "
                f"{event['val_videos']} held out; {event['total_steps']} steps of {event['global_batch']} clips "
                f"({event['steps_per_epoch']} per epoch, {event['accum_steps']} micro-batches x {event['world_size']} "
                f"rank(s) on {event['device']}), base lr {event['lr']:g}"
            )
            self.total = event["total_steps"]
            self.bar(event["step"], self.total)
        elif kind == "step":
            self.bar(event["step"], self.total)
        elif kind == "log":
            norm = "" if event.get("grad_norm") is None else f"  grad norm {event['grad_norm']:.3f}"
            console.note(
                f"step {event['step']}  epoch {event['epoch']:.2f}  loss {event['loss']:.4f}  lr {event['lr']:.3g}"
                f"{norm}  {event['clips_per_s']:.1f} clips/s"
            )
        elif kind == "eval":
            best = "  (best so far)" if event.get("best") else ""
            console.note(f"epoch {event['epoch']}: {_train_metrics(event)}{best}")
        elif kind == "interrupted":
            self.bar.close()
            kept = f"a checkpoint of step {event['step']}" if event["checkpoint"] else "the last checkpoint"
            console.note(f"stopped; {kept} is kept: re-run the same command to resume")


def run_train(args: argparse.Namespace) -> int:
    """`vivit train`: parse, hand over to `vivit.train.train`, draw its progress, print its result."""
    from ..recipes import get_recipe
    from ..train import DistributedTrainingError, train

    try:
        recipe = get_recipe(args.recipe).replace(**_train_settings(args))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.show:
        console.out(f"recipe {recipe.name}: {recipe.description}")
        console.out(f"source: {recipe.reference} (google-research/scenic) unless another file is named")
        for name, value, source in recipe.rows():
            console.out(f"  {name:<18} {value!s:<12} {source.removeprefix(recipe.reference + ': ')}")
        return 0
    missing = [
        flag for flag, value in (("TRAIN", args.train), ("--model", args.model), ("--out", args.out)) if not value
    ]
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (or --show)")
    if not args.model.startswith(("hf-hub:", "local-dir:")):
        entry_option(args.model)
    device = device_option(args.device)
    # option combinations that cannot work, as usage errors (the job checks them too, as ValueError)
    if args.accum_steps is not None and "global_batch" in _train_settings(args):
        raise UsageError("give --accum-steps or --global-batch, not both (--accum-steps sets the global batch)")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if args.accum_steps is None and recipe.global_batch % (args.batch_size * world):
        raise UsageError(
            f"the global batch {recipe.global_batch} is not a multiple of --batch-size {args.batch_size} x {world} "
            "rank(s): choose a batch size that divides it, or set --global-batch or --accum-steps"
        )
    if args.precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (it uses a grad scaler); use bf16 on the CPU")
    require_input(args.train, "TRAIN")
    if args.val:
        require_input(args.val, "VAL")
    pretrained: bool | str | None = None
    if args.pretrained is not None:
        pretrained = False if args.pretrained.lower() == "none" else args.pretrained
        if pretrained:
            require_input(args.pretrained, "--pretrained")
    rank0 = os.environ.get("RANK", "0") == "0"
    progress = _TrainProgress() if rank0 else None
    try:
        result = train(
            args.train,
            args.val,
            args.model,
            args.out,
            recipe=recipe,
            pretrained=pretrained,
            model_args=dict(args.override),
            batch_size=args.batch_size,
            accum_steps=args.accum_steps,
            seed=args.seed,
            workers=args.workers,
            device=device,
            precision=args.precision,
            grad_checkpointing=args.grad_checkpointing,
            eval_batch_size=args.eval_batch_size,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            temporal_check=not args.no_temporal_check,
            tensorboard=False if args.no_tensorboard else None,
            progress=progress,
            sample_fps=args.sample_fps,
        )
    except (DistributedTrainingError, FloatingPointError) as err:
        raise CommandError(str(err)) from None
    finally:
        if progress is not None:
            progress.bar.close()
    if not rank0:
        return 0
    out = Path(args.out)
    if result.already_complete:
        console.note(f"{out} holds a finished run with these settings: nothing to do")
    if result.metrics:
        console.out(f"last: {_train_metrics(result.metrics)}  ({out / 'last'})")
    if result.best:
        console.out(
            f"best: {result.best['metric'].replace('top', 'top-')} {result.best['value']:.2f}% at epoch "
            f"{result.best['epoch']}  ({out / 'best'})"
        )
    elif not args.val:
        console.out(f"model: {out / 'last'}")
    if result.temporal_check:
        shown = ", ".join(
            f"{name.replace('_', ' ')} {value:.2f}%"
            for name, value in result.temporal_check.items()
            if value is not None
        )
        console.out(f"temporal check, top-1: {shown}")
    if result.num_failed:
        console.warn(f"{result.num_failed} videos could not be decoded and were skipped:")
        for path in result.failed:
            console.warn(f"  {path}")
    return 0


def _train_metrics(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in ("top1", "top5", "action_top1", "action_top5") if metrics.get(k) is not None]
    keys = keys or [k for k in metrics if k.endswith("top1") and metrics[k] is not None]
    shown = "  ".join(f"{k.replace('top', 'top-')} {metrics[k]:.2f}%" for k in keys)
    return f"{shown}  ({metrics.get('num_videos', 0)} videos)"
