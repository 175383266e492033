"""`vivit predict`: classify videos (the test views, logits averaged), or each window of a long one."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..files import check_file_destination
from ..predict import Timeline, classify_video, model_data_config, predict_timeline
from . import console
from .options import (
    DEMO_MODEL,
    CommandError,
    ModelChoice,
    UsageError,
    add_model_options,
    add_run_options,
    add_sample_fps_option,
    device_option,
    model_choice,
    positive_int,
    refuse_untrained_head,
    require_input,
)

SAMPLE_CLIP = "sample_clip.npz"


def add_predict_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict",
        help="classify videos",
        description="Classify videos with the multi-view test protocol (logits averaged over views). "
        f"Without VIDEO, classifies the sample clip bundled with the package using {DEMO_MODEL}.",
    )
    p.add_argument(
        "videos", nargs="*", metavar="VIDEO", help="video files (needs PyAV) or uint8 .npy/.npz frame arrays"
    )
    add_model_options(p, default=DEMO_MODEL)
    add_run_options(p, "test views, e.g. 4x3 (default: the model's test_views; with --timeline 1x1 per window)")
    p.add_argument(
        "--top-k",
        type=positive_int,
        metavar="K",
        help="classes to show (default 5; with --timeline 3 per window, and the plot's classes)",
    )
    add_sample_fps_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per video (with --timeline: its windows; a video that failed: its error)",
    )
    timeline = p.add_argument_group("timeline (long videos)")
    timeline.add_argument(
        "--timeline",
        action="store_true",
        help="classify consecutive windows of each video: per window its time span and top-k classes",
    )
    timeline.add_argument(
        "--window",
        type=positive_int,
        metavar="N",
        help="frames per window (default: the model's clip, frames x frame stride)",
    )
    timeline.add_argument(
        "--stride", type=positive_int, metavar="N", help="frames between window starts (default: the window)"
    )
    timeline.add_argument(
        "--live",
        action="store_true",
        help="classify a live source window by window as it plays: VIDEO is - (standard input, e.g. "
        "ffmpeg ... -f mpegts -), a named pipe, a camera (/dev/video0) or a URL (rtsp://, udp://, http://); "
        "one line per window (--json: one object) as soon as its last frame has arrived, then a summary",
    )
    timeline.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the probabilities of the top-k classes over time (needs matplotlib; one VIDEO)",
    )
    p.set_defaults(run=run_predict)


# ---------------------------------------------------------------- shared with `vivit explain`
@contextmanager
def sample_clip() -> Iterator[tuple[Path, str | None]]:
    """The sample clip bundled in `vivit/assets` and its true label, as a real file path."""
    ref = resources.files("vivit") / "assets" / SAMPLE_CLIP
    if not ref.is_file():
        raise CommandError(
            f"no VIDEO given and the bundled sample clip (vivit/assets/{SAMPLE_CLIP}) is missing from this "
            "install; pass a video file: vivit predict VIDEO"
        )
    with resources.as_file(ref) as path:
        with np.load(path, allow_pickle=False) as data:
            label = str(data["label"].item()) if "label" in data.files else None
        yield path, label


def data_cfg(model: nn.Module) -> dict[str, Any]:
    """The model's preprocessing cfg, with a note when it had to come from the model's own sizes."""
    cfg, defaulted = model_data_config(model)
    if defaulted:
        console.note("the weights carry no preprocessing config: using Kinetics defaults at the model's input size")
    return cfg


def synthetic_note(name: str, cfg: Mapping[str, Any]) -> str | None:
    """The line shown beside an answer of a model trained on synthetic data only (the demo), if it is one."""
    if not cfg.get("synthetic_data"):
        return None
    return f"{name} was trained on synthetic clips only; on a real video this answer means nothing"


# ---------------------------------------------------------------- predict
def _check_timeline_args(args: argparse.Namespace) -> None:
    """Timeline options without --timeline, or a --plot that could not be written: usage errors,
    reported before any model is loaded; a missing matplotlib too (exit 1, with the install line)."""
    if args.live:
        if args.sample_fps is not None:
            raise UsageError("--sample-fps does not apply to --live (a live source's windows are counted in frames)")
        if len(args.videos) != 1:
            raise UsageError(f"--live reads one source (-, a named pipe, a device or a URL); got {len(args.videos)}")
        if args.plot is not None:
            raise UsageError("--plot draws a whole timeline: use --timeline on a file, not --live")
        return
    if not args.timeline:
        given = [name for name in ("window", "stride", "plot") if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--{given[0]} belongs to a timeline: add --timeline")
        return
    if args.plot is None:
        return
    from ..render import check_output_suffix, require_matplotlib

    if len(args.videos) > 1:
        raise UsageError(f"--plot draws one video's timeline; give one VIDEO, not {len(args.videos)}")
    try:
        check_output_suffix(args.plot, (".png",))
    except ValueError as err:
        raise UsageError(f"--plot: {err}") from None
    plot = Path(args.plot).expanduser()
    try:
        is_dir, parent_is_dir = plot.is_dir(), plot.parent.is_dir()
    except OSError:  # a name too long for the file system: the check below says so in one short line
        is_dir, parent_is_dir = False, True
    if is_dir:
        raise UsageError(f"--plot {args.plot} is a folder; give a file name ending in .png")
    if not parent_is_dir:
        raise UsageError(f"--plot {args.plot}: the folder {plot.parent} does not exist")
    try:
        check_file_destination(plot)  # a folder that takes no files: refused now, not after the whole video
    except ValueError as err:
        raise UsageError(f"--plot: {err}") from None
    require_matplotlib()


def run_predict(args: argparse.Namespace) -> int:
    choice = model_choice(args, default=DEMO_MODEL)  # an unknown name is reported before any file is touched
    _check_timeline_args(args)
    refuse_untrained_head(choice)  # before any download
    device = device_option(args.device)
    if args.live:
        return _run_live(args, choice, device)
    with ExitStack() as stack:
        if args.videos:
            inputs: list[tuple[Path, str, str | None]] = [(Path(v), v, None) for v in args.videos]
            if "-" in args.videos:
                raise UsageError("- (standard input) is read live: add --live")
            problems = []
            for video in args.videos:
                try:
                    require_input(video, "video")
                except CommandError as err:
                    problems.append(err)
            # one missing file among several is that video's failure (the others are still classified);
            # when none can be opened, nothing is worth loading the model for
            if len(problems) == len(args.videos):
                raise problems[0]
        else:
            path, label = stack.enter_context(sample_clip())
            inputs = [(path, str(path), label)]
        model = choice.load(device)
        refuse_untrained_head(choice, model)
        cfg = data_cfg(model)
        # The bundled sample clip comes from the demo's own (synthetic) test set: its answer is a real one.
        note = synthetic_note(choice.display, cfg) if args.videos else None
        base: dict[str, Any] = {"model": choice.display}
        if choice.weights is not None:
            base["weights"] = choice.weights
        failed: list[str] = []
        several = len(inputs) > 1
        with console.ProgressBar("videos", "video", enabled=several and console.progress_enabled()) as bar:
            for done, (path, shown, label) in enumerate(inputs, 1):
                record: dict[str, Any] = {"video": shown, **base}
                try:  # only the frames of the views' (windows') clips are decoded, whatever the video's length
                    with console.ProgressBar(
                        *(("windows", "window") if args.timeline else ("views", "view")), leave=False
                    ) as views:
                        if args.timeline:
                            timeline = _timeline(model, path, args, cfg, views)
                        else:
                            result = classify_video(
                                model,
                                path,
                                args.views,
                                pretrained_cfg=cfg,
                                top_k=args.top_k or 5,
                                batch_size=args.batch_size,
                                progress=views,
                                sample_fps=args.sample_fps,
                            )
                except (ValueError, OSError) as err:  # one bad file must not lose the others' results
                    text = " ".join(str(err).split())
                    console.error(text if shown in text or str(path) in text else f"{shown}: {text}")
                    failed.append(shown)
                    if args.json:
                        console.out(console.json_line({**record, "error": text}))
                    bar(done, len(inputs))
                    continue
                if label is not None:
                    record["true_label"] = label
                if note is not None:
                    record["note"] = note
                if args.timeline:
                    _show_timeline(args, choice, shown, record, timeline, note)
                else:
                    record.update(views=result["views"], predictions=result["predictions"])
                    if args.json:
                        console.out(console.json_line(record))
                    else:
                        _print_predictions(shown, record)
                bar(done, len(inputs))
        if several:
            console.summary(len(inputs), failed, done="classified")
    return 1 if failed else 0


def _print_predictions(shown: str, result: Mapping[str, Any]) -> None:
    header = f"{shown} ({result['model']}, {result['views'][0]}x{result['views'][1]} views)"
    if result.get("true_label") is not None:
        header += f", true label: {result['true_label']}"
    console.out(header)
    if result.get("note"):
        console.out(f"  note: {result['note']}")
    split = None
    for item in result["predictions"]:
        if item.get("split") != split:
            split = item["split"]
            console.out(f"  {split}:")
        indent = "    " if split else "  "
        console.out(f"{indent}{item['probability'] * 100:6.2f}%  {item['label']}")


# ---------------------------------------------------------------- --timeline
def _timeline(
    model: nn.Module, path: Path, args: argparse.Namespace, cfg: Mapping[str, Any], progress: Any
) -> Timeline:
    return predict_timeline(
        model,
        path,
        args.window,
        args.stride,
        views=args.views or (1, 1),
        pretrained_cfg=cfg,
        top_k=args.top_k or 3,
        batch_size=args.batch_size,
        progress=progress,
        sample_fps=args.sample_fps,
    )


def _show_timeline(
    args: argparse.Namespace,
    choice: ModelChoice,
    shown: str,
    record: dict[str, Any],
    timeline: Timeline,
    note: str | None,
) -> None:
    record.update(
        views=list(timeline.views),
        window=timeline.window,
        stride=timeline.stride,
        video_frames=timeline.video_frames,
        video_fps=timeline.video_fps,
    )
    if timeline.sample_fps is not None:
        record["sample_fps"] = timeline.sample_fps
    if args.json:
        console.out(console.json_line({**record, "windows": timeline.records()}))
    else:
        _print_timeline(shown, record, timeline)
    if args.plot is not None:
        _plot_timeline(args, choice, shown, timeline, note)


def _span(record: Mapping[str, Any]) -> str:
    """`12.50-13.57 s  frames [300, 332)`, the seconds left out when the video has no frame rate."""
    frames = f"frames [{record['start_frame']}, {record['end_frame']})"
    start, end = record["start_seconds"], record["end_seconds"]
    if np.isnan(start) or np.isnan(end):  # a frame array without a frame rate
        return frames
    return f"{start:.2f}-{end:.2f} s  {frames}"


def _print_timeline(shown: str, result: Mapping[str, Any], timeline: Timeline) -> None:
    windows = f"{len(timeline)} window{'' if len(timeline) == 1 else 's'}"
    rate = f" at {timeline.sample_fps:g} per second" if timeline.sample_fps is not None else ""
    header = (
        f"{shown} ({result['model']}, {windows} of {timeline.window} frames every {timeline.stride}{rate}, "
        f"{result['views'][0]}x{result['views'][1]} views each)"
    )
    if result.get("true_label") is not None:
        header += f", true label: {result['true_label']}"
    console.out(header)
    if result.get("note"):
        console.out(f"  note: {result['note']}")
    records = timeline.records()
    spans = [_span(record) for record in records]
    width = max(len(span) for span in spans)
    for span, record in zip(spans, records, strict=True):
        top = ", ".join(
            f"{item['split'] + ' ' if item.get('split') else ''}{item['label']} {item['probability'] * 100:.1f}%"
            for item in record["predictions"]
        )
        console.out(f"  {span.ljust(width)}  {top}")


def _plot_timeline(
    args: argparse.Namespace, choice: ModelChoice, shown: str, timeline: Timeline, note: str | None
) -> None:
    from ..render import plot_timeline

    seconds = timeline.window_seconds
    timed = bool(np.isfinite(seconds).all())
    title = f"{Path(shown).name}: {choice.display}, windows of {timeline.window} frames every {timeline.stride}"
    title += " (trained on synthetic data only)" if note else ""
    plot_timeline(
        Path(args.plot).expanduser(),
        seconds if timed else timeline.window_frames,
        timeline.probabilities.numpy(),
        timeline.labels,
        classes=args.top_k or 3,
        title=title,
        unit="s" if timed else "frames",
    )
    console.note(f"wrote {args.plot}")


# ---------------------------------------------------------------- --live
def _run_live(args: argparse.Namespace, choice: ModelChoice, device: Any) -> int:
    """One line (or JSON object) per window of a live source as it completes, then a summary line.

    Ctrl-C ends the stream cleanly: the summary is printed and the exit status is 130, as for any
    interrupted command. A source that cannot be opened is one error line (exit 1).
    """
    from ..live import predict_stream

    (source,) = args.videos
    if source != "-" and "://" not in source:
        require_input(source, "source")
    model = choice.load(device)
    refuse_untrained_head(choice, model)
    cfg = data_cfg(model)
    note = synthetic_note(choice.display, cfg)
    base: dict[str, Any] = {"video": source, "model": choice.display}
    try:
        stream = predict_stream(
            model,
            source,
            args.window,
            args.stride,
            views=args.views or (1, 1),
            pretrained_cfg=cfg,
            top_k=args.top_k or 3,
            batch_size=args.batch_size,
        )
    except (ValueError, OSError) as err:
        text = " ".join(str(err).split())
        console.error(text if source in text else f"{source}: {text}")
        return 1
    summary = stream.summary
    if not args.json:
        header = f"{source} ({choice.display}, live: windows of {summary.window} frames every {summary.stride})"
        console.out(header)
        if note is not None:
            console.out(f"  note: {note}")
    error: str | None = None
    with stream:
        try:
            for record in stream:
                if args.json:
                    console.out(console.json_line({**base, **record}))
                else:
                    console.out(_live_line(record))
        except (ValueError, OSError) as err:  # the stream broke (not video, a read error): said once
            error = " ".join(str(err).split())
    if error is not None:
        console.error(error if source in error else f"{source}: {error}")
    if args.json:
        console.out(console.json_line({**base, "summary": summary.as_dict()}))
    else:
        console.out(_live_summary(summary))
    if summary.interrupted:
        return 130
    return 1 if error is not None else 0


def _live_line(record: Mapping[str, Any]) -> str:
    top = ", ".join(
        f"{item['split'] + ' ' if item.get('split') else ''}{item['label']} {item['probability'] * 100:.1f}%"
        for item in record["predictions"]
    )
    extra = ""
    if record.get("partial"):
        extra += "  (cut short by the end of the stream)"
    if record.get("skipped"):
        skipped = record["skipped"]
        extra += f"  ({skipped} window{'' if skipped == 1 else 's'} skipped before it: the model fell behind)"
    return f"  {_span(record)}  {top}{extra}"


def _live_summary(summary: Any) -> str:
    kept = f"{summary.windows} window{'' if summary.windows == 1 else 's'} kept"
    skipped = f"{summary.skipped} skipped" + (" (the model fell behind)" if summary.skipped else "")
    last = ", the last one cut short by the end of the stream (reported as partial)" if summary.partial else ""
    return f"live: {kept}, {skipped}{last}; {summary.frames} frames read; ended: {summary.end}"
