"""`vivit features`: sliding-window features of every video, one file per video (the job: `vivit.features`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..distributed import launch_env
from ..models.vivit import ViViT
from . import console

if TYPE_CHECKING:
    from ..features import FeaturesSummary
from .options import (
    ModelChoice,
    UsageError,
    add_model_options,
    add_out_option,
    add_run_options,
    add_sample_fps_option,
    add_workers_option,
    device_option,
    model_choice,
    non_negative_int,
    out_folder_option,
    positive_int,
)


def add_features_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "features",
        help="extract sliding-window features, one file per video",
        description="Write the features of every window of every video to OUT/<video path relative to its "
        "input>.safetensors (features (windows, D) or (windows, nt, D), window_frames, window_seconds; metadata: "
        "source, model, settings). Resumable: a video whose output matches its file and the settings is skipped. "
        "Runs unchanged under torchrun (the videos are split across ranks).",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders (searched recursively) or list files (.csv/.tsv/.txt, paths relative to the list)",
    )
    add_model_options(p)
    add_out_option(p, "output folder (one .safetensors per video)")
    p.add_argument(
        "--window",
        type=non_negative_int,
        metavar="N",
        help="frames per window (default: the model's clip, frames x frame stride; 0: one clip for the whole video)",
    )
    p.add_argument(
        "--stride", type=positive_int, metavar="N", help="frames between window starts (default: the window)"
    )
    p.add_argument("--per-frame", action="store_true", help="one feature per temporal token (nt, D) instead of (D,)")
    add_run_options(p, "views averaged per window (default 1x1: the centre clip, centre crop)")
    add_sample_fps_option(p)
    add_workers_option(p)
    p.set_defaults(run=run_features)


def load_job_model(choice: ModelChoice) -> ViViT:
    """The model of a dataset job, on the CPU (the job moves it to this rank's device), with the note
    about a missing preprocessing config printed once per job (by rank 0 under torchrun)."""
    from .predict import data_cfg

    model = choice.load()
    if launch_env().rank == 0:
        data_cfg(model)
    return model


def run_features(args: argparse.Namespace) -> int:
    from ..features import FeatureSettings, extract_features

    choice = model_choice(args)
    if args.out.endswith(".safetensors"):
        raise UsageError(
            f"--out {args.out}: features are now written one file per video into a folder "
            "(DIR/<video>.safetensors, with window_frames and window_seconds); give a folder, e.g. --out features/"
        )
    out = out_folder_option(args.out)
    if args.stride is not None and args.window == 0:
        raise UsageError("--stride needs windows: --window 0 is one clip for the whole video")
    device_option(args.device)  # a device this machine cannot use: refused now, not after planning
    settings = FeatureSettings(
        model=choice.name,
        weights=choice.weights_identity(),
        overrides=json.dumps(sorted(choice.overrides.items())),
        per_frame=args.per_frame,
        window=args.window,
        stride=args.stride,
        views=args.views,
        sample_fps=args.sample_fps,
    )
    reporting = launch_env().rank == 0  # one bar per job, rank 0's
    with console.ProgressBar("features", "video", enabled=reporting and console.progress_enabled()) as bar:
        summary = extract_features(
            args.inputs,
            out,
            lambda: load_job_model(choice),
            settings,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device or "auto",
            progress=bar,
        )
    if summary.rank == 0:
        _print_summary(summary)
    return 1 if summary.failed else 0


def _print_summary(summary: FeaturesSummary) -> None:
    """`vivit: features: N written, N already done, N failed` (a note when nothing failed); when
    something failed, the line ends with `:` and every failure follows on its own indented line,
    so that the end of a long log says what to look at."""
    parts = [f"{len(summary.written)} written", f"{len(summary.skipped)} already done", f"{len(summary.failed)} failed"]
    if summary.duplicates:
        parts.append(f"{len(summary.duplicates)} duplicate input{'s' if len(summary.duplicates) != 1 else ''}")
    if not summary.failed:
        console.note(f"features: {', '.join(parts)}")
        return
    console.write(f"{console.PROG}: features: {', '.join(parts)}:")
    for line in summary.failure_lines():
        console.write(f"  {line}")
