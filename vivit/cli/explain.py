"""`vivit explain`: draw where the model looks on a video (the job: `vivit.explain.explain_video`)."""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from torch import nn

from .._install import install_hint
from ..predict import has_untrained_head
from . import console
from .options import (
    DEMO_MODEL,
    UsageError,
    add_device_option,
    add_model_options,
    add_quiet_option,
    device_option,
    model_choice,
    positive_float,
    positive_int,
    require_input,
)
from .predict import data_cfg, sample_clip, synthetic_note


def add_explain_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "explain",
        help="draw where the model looks on a video",
        description="Draw the model's relevance map (attention rollout, or one block's attention) over the "
        "centre clip of a video as the model sees it: a contact sheet of frames (.png) or an animation "
        f"(.gif, .mp4), with a colour bar and the top predictions. Without VIDEO, explains the sample clip "
        f"bundled with the package using {DEMO_MODEL}. Needs matplotlib: {install_hint('matplotlib', 'plot')}.",
    )
    p.add_argument("video", nargs="?", metavar="VIDEO", help="video file (needs PyAV) or uint8 .npy/.npz frame array")
    add_model_options(p, default=DEMO_MODEL)
    p.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="picture to write: .png (contact sheet), .gif or .mp4"
    )
    p.add_argument(
        "--block",
        type=int,
        metavar="N",
        help="show block N's own attention instead of the rollout (0-based, negative from the end; "
        "Model 2 counts its spatial blocks, then its temporal blocks)",
    )
    p.add_argument("--head", type=int, metavar="H", help="with --block: only head H of that block")
    p.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="predictions in the title (default 3)")
    p.add_argument(
        "--fps",
        type=positive_float,
        default=4.0,
        metavar="FPS",
        help="animation speed (default 4; a .gif plays 0.00153 to 50)",
    )
    add_device_option(p)
    add_quiet_option(p)
    p.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from ..explain import check_block_head, explain_video
    from ..render import check_animation_fps, require_writer

    choice = model_choice(args, default=DEMO_MODEL)
    if args.head is not None and args.block is None:
        raise UsageError("--head selects one head of one block: give --block too")
    try:
        require_writer(args.out)  # a wrong suffix or path, or a missing extra, is reported before any work
    except ValueError as err:
        raise UsageError(f"--out: {err}") from None
    try:
        check_animation_fps(args.out, args.fps)
    except ValueError as err:
        raise UsageError(f"--fps: {err}") from None
    device = device_option(args.device)
    with ExitStack() as stack:
        if args.video:
            require_input(args.video, "video")
            path, label = Path(args.video), None
        else:
            path, label = stack.enter_context(sample_clip())
        model = choice.load(device)
        try:
            check_block_head(model, args.block, args.head)
        except ValueError as err:
            raise UsageError(f"--block/--head: {err}") from None
        cfg = data_cfg(model)
        # The map does not depend on the head (rollout from the class or mean token), so an untrained
        # head is no reason to refuse; the title and the answer line say it instead of a prediction.
        untrained = not isinstance(getattr(model, "head", None), nn.Linear) or has_untrained_head(model)
        note = synthetic_note(choice.display, cfg) if args.video else None  # the sample clip: in its test set
        title = choice.display + (" (untrained head: no real prediction)" if untrained else "")
        title += " (trained on synthetic data only)" if note else ""
        result = explain_video(
            model,
            path,
            args.out,
            pretrained_cfg=cfg,
            block=args.block,
            head=args.head,
            top_k=args.top_k,
            true_label=label,
            fps=args.fps,
            name=title,
        )
    top = result["predictions"][0]
    answer = "untrained head, no prediction" if untrained else f"{top['label']} {top['probability'] * 100:.1f}%"
    console.out(f"wrote {args.out} ({result['frames']} frames): {answer}")
    if note:
        console.out(f"  note: {note}")
    return 0
