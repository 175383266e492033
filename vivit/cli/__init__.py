"""The `vivit` command line (also `python -m vivit`): argument parsing and dispatch to the jobs.

    vivit list [PATTERN] [--pretrained]          registered model names
    vivit info NAME                              size, compute, input and preprocessing, weights
    vivit predict [VIDEO ...] [--model NAME]     classify videos (no VIDEO: the bundled sample clip)
    vivit predict VIDEO --timeline [--window N] [--stride N] [--plot FILE.png]   what happens when
    vivit features INPUT ... --model NAME --out DIR  sliding-window features, one file per video
    vivit evaluate LIST --model NAME [--views 4x3] [--out DIR]   top-1/top-5 on a labelled set
    vivit train TRAIN --val VAL --model NAME --out DIR [--recipe k400]   fine-tune (Scenic's recipes, resumable)
    vivit convert SRC [--model NAME] --out FILE.safetensors|DIR [--to vivit|transformers]
                                                 any supported checkpoint -> ours (or transformers')
    vivit explain [VIDEO] [--model NAME] --out FILE.{png,gif,mp4}   where the model looks (relevance map)
    vivit export onnx NAME --out FILE.onnx [--int8]                 ONNX file, validated in ONNX Runtime
    vivit export openvino NAME --out FILE.xml [--int8 --calibration VIDEO ...]   OpenVINO IR, validated in OpenVINO

predict, features and evaluate take `--backend pytorch|openvino` and `--precision fp32|bf16|int8`
(`vivit.backends.inference_backend`; options.py builds the model on that engine).

Every model name may also be a checkpoint that names its architecture: `local-dir:PATH`
(what `vivit convert` and `save_pretrained` write) or `hf-hub:org/repo`.

The jobs that decode in `--workers` processes beside the model (features, evaluate, train) size the
model's threads around them (`vivit.threads.configure_job_threads`): `vivit info` shows the policy.

Every failure prints one line, `vivit: error: ...`, to stderr and exits with status 2 (the command
line was wrong: unknown model, bad option) or 1 (anything else: missing or undecodable file, no
network, corrupted checkpoint). `VIVIT_DEBUG=1` re-raises instead, with the traceback.

Layout: one module per subcommand (`catalog`, `predict`, `features`, `evaluate`, `train`, `convert`,
`explain`, `export`), each with an `add_<cmd>_parser(commands)` that adds its parser and sets its
`run_<cmd>(args) -> exit status`; `options` holds what they share; `console` is the only writer to
the terminal. A new subcommand is one such module and one line in `PARSERS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from ..threads import configure_job_threads
from ..version import __version__
from ..weights.hub import WeightsDownloadError
from . import catalog, console, convert, evaluate, explain, export, features, predict, train
from .options import CommandError, Parser, UsageError

__all__ = ["PARSERS", "CommandError", "UsageError", "build_parser", "main"]

PROG = console.PROG
DEBUG_ENV = "VIVIT_DEBUG"

#: The subcommands, in the order `vivit --help` lists them: each adds its parser to the subparsers
#: and sets `run` (its `run_<cmd>`) as the parser's default.
PARSERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    catalog.add_list_parser,
    catalog.add_info_parser,
    predict.add_predict_parser,
    features.add_features_parser,
    evaluate.add_evaluate_parser,
    train.add_train_parser,
    convert.add_convert_parser,
    explain.add_explain_parser,
    export.add_export_parser,
)

# Errors whose message is enough on its own; anything else is unexpected and also gets its type.
_EXPECTED_ERRORS = (UsageError, CommandError, ValueError, OSError, ImportError, WeightsDownloadError)

# Kept for callers of vivit 0.1's private helpers (tests of other packages use them).
_printable = console.printable
_json_line = console.json_line


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `vivit` command (exposed for documentation tools)."""
    parser = Parser(prog=PROG, description="ViViT video transformers: list, inspect, run and convert models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for add in PARSERS:
        add(commands)
    return parser


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def _job_threads(args: argparse.Namespace) -> Iterator[None]:
    """A job that decodes in `--workers` processes beside the model gets its threads sized around them
    (`vivit.threads.configure_job_threads`); the count in effect before comes back afterwards, for a
    caller of `main` in a longer-lived process."""
    workers = getattr(args, "workers", None)
    if not isinstance(workers, int):
        yield
        return
    import torch

    before = torch.get_num_threads()
    configure_job_threads(workers)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `vivit` command; returns the exit status (the console script exits with it).

    Args:
        argv: Arguments without the program name (default `sys.argv[1:]`).
    """
    try:
        args = build_parser().parse_args(argv)
        with console.session(quiet=bool(getattr(args, "quiet", False)), show_warnings=not _debug()), _job_threads(args):
            return int(args.run(args))
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except UsageError as err:
        console.error(err, _EXPECTED_ERRORS)
        return 2
    except KeyboardInterrupt:
        console.write("")
        console.write(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:  # `vivit list | head`: the reader left; stop quietly
        console.silence_broken_pipe()
        return 1
    except Exception as err:
        if _debug():
            raise
        console.error(err, _EXPECTED_ERRORS, DEBUG_ENV)
        return 1


if __name__ == "__main__":
    sys.exit(main())
