"""`vivit evaluate`: top-1, top-5 and mean per-class accuracy on a labelled set (the job: `vivit.evaluate`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..distributed import launch_env
from . import console

if TYPE_CHECKING:
    from ..evaluate import Evaluation
from .features import load_job_model
from .options import (
    add_model_options,
    add_out_option,
    add_run_options,
    add_sample_fps_option,
    add_workers_option,
    device_option,
    model_choice,
    out_folder_option,
    refuse_untrained_head,
    require_input,
)


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="measure accuracy on a labelled set of videos",
        description="Classify every video of a labelled list or class-folder tree with the multi-view test "
        "protocol and print top-1, top-5 and mean per-class accuracy (EPIC-KITCHENS heads: noun, verb and "
        "action). With --out, write predictions.jsonl and metrics.json (after the metrics are printed). "
        "Runs unchanged under torchrun.",
    )
    p.add_argument(
        "source",
        metavar="LIST",
        help="CSV/TSV list (path,label[,start,end]) or a class-folder tree root/<class>/<video>",
    )
    add_model_options(p)
    add_out_option(p, "write DIR/predictions.jsonl and DIR/metrics.json", required=False)
    add_run_options(p, "test views, e.g. 4x3 (default: the model's test_views)")
    add_sample_fps_option(p)
    add_workers_option(p)
    p.add_argument(
        "--temporal-check",
        action="store_true",
        help="also score the clips with their frames shuffled, reversed and frozen on the middle frame: a model "
        "that learned motion loses accuracy, one that recognises scenes does not",
    )
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate

    choice = model_choice(args)
    refuse_untrained_head(choice, command="evaluate")  # accuracy of a head that never learned means nothing
    out = out_folder_option(args.out) if args.out is not None else None  # before the work, not after it
    device_option(args.device)
    require_input(args.source, "LIST")
    model = load_job_model(choice)
    refuse_untrained_head(choice, model, command="evaluate")
    reporting = launch_env().rank == 0
    with console.ProgressBar("evaluate", "video", enabled=reporting and console.progress_enabled()) as bar:
        result = evaluate(
            args.source,
            model,
            views=args.views,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device or "auto",
            model_name=choice.display,
            progress=bar,
            temporal_check=args.temporal_check,
            sample_fps=args.sample_fps,
        )
    if result.rank == 0:
        _print_metrics(result)  # first: a folder that fails below must not lose them
        if out is not None:
            result.write(out)
    return 1 if result.metrics["num_failed"] else 0


def _print_metrics(result: Evaluation) -> None:
    metrics: Mapping[str, Any] = result.metrics

    def line(prefix: str) -> str:
        return (
            f"top-1 {metrics[prefix + 'top1']:.2f}%  top-5 {metrics[prefix + 'top5']:.2f}%  "
            f"mean per-class {metrics[prefix + 'mean_class_accuracy']:.2f}%"
        )

    counts = f"{metrics['num_videos']} videos, {metrics['views']} views, {metrics['num_failed']} failed to decode"
    if not metrics["num_videos"]:
        console.write(f"{console.PROG}: evaluate: no video could be scored ({counts})")
    elif result.split_names:
        for name in result.split_names:
            console.out(f"{name}: {line(name + '_')}")
        if "action_top1" in metrics:
            console.out(f"action: top-1 {metrics['action_top1']:.2f}%  top-5 {metrics['action_top5']:.2f}%")
        console.out(f"({counts})")
    else:
        console.out(f"{line('')}  ({counts})")
    if "temporal_check" in metrics:
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.2f}%" for k, v in metrics["temporal_check"].items())
        console.out(f"temporal check, top-1: {shown}")
    failed = metrics["failed"]
    if failed:  # the end of a long log says what to look at
        total = metrics["num_videos"] + len(failed)
        console.write(f"{console.PROG}: evaluate: {len(failed)} of {total} videos failed to decode (not scored):")
        for failure in failed:
            console.write(f"  {failure['error']}")
