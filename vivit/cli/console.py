"""The command line's only writer to the terminal: results, notes, warnings, errors and progress bars.

Everything vivit shows a person goes through `write`, which escapes control characters, so a file
name or label holding an escape sequence (`\\x1b]0;title\\x07`, `\\x1b[2J`) prints as text and never
reaches the terminal raw. Library code never prints: jobs return their results, raise, warn
(`warnings.warn`) and log (`logging.getLogger("vivit...")`); `session` turns those into lines here.

Where lines go:

* stdout: results only (predictions, JSON lines, metrics, what was written);
* stderr: `vivit: error: ...` (always), `vivit: warning: ...` and `vivit: ...` notes (not with
  `-q`), and progress bars (only on a terminal, never with `-q`, so a log file gets whole lines,
  never `\\r` fragments). Lines printed while a bar is drawn go above it (tqdm.write).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from ..data.video import VideoWarning

__all__ = [
    "PROG",
    "ProgressBar",
    "error",
    "error_line",
    "json_line",
    "note",
    "out",
    "printable",
    "progress_enabled",
    "quiet",
    "session",
    "stderr_is_terminal",
    "summary",
    "warn",
    "write",
]

PROG = "vivit"

# -q of the running command, set by `session` for the duration of one command: every helper here
# sees it without passing it around, and an in-process caller (a test, a notebook) gets it reset.
_QUIET: ContextVar[bool] = ContextVar("vivit_console_quiet", default=False)


# ---------------------------------------------------------------- text
def printable(text: Any) -> str:
    """Text for the terminal: every character that is not printable (control characters, escape
    sequences, line breaks, bidirectional overrides) written as its Python escape.

    `"\\x1b[2Jred"` prints as `\\x1b[2Jred`, `"a\\nb"` as `a\\nb` (one line stays one line).
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _json_safe(value: Any) -> Any:
    """`value` with non-finite floats as null, so that `json.dumps(..., allow_nan=False)` succeeds."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_line(value: Any) -> str:
    """One line of strict JSON (RFC 8259: no NaN or Infinity, which most parsers reject), ASCII only."""
    return json.dumps(_json_safe(value), allow_nan=False)


# ---------------------------------------------------------------- the writers
def quiet() -> bool:
    """Whether the running command was given -q (informational lines and progress are silenced)."""
    return _QUIET.get()


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # a replaced stream without isatty, or a closed one
        return False


def progress_enabled() -> bool:
    """Draw progress bars? Only for a person watching: not with -q, not into a file or a pipe."""
    return not quiet() and stderr_is_terminal()


def write(line: str, stream: IO[str] | None = None) -> None:
    """One line to `stream` (default stderr), escaped (`printable`), above any progress bar, flushed."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    tqdm.write(printable(line), file=stream)
    stream.flush()


def out(line: str) -> None:
    """A result line on stdout."""
    write(line, sys.stdout)


def note(message: str) -> None:
    """An informational line on stderr, `vivit: MESSAGE`; silenced by -q."""
    if not quiet():
        write(f"{PROG}: {message}")


def warn(message: str) -> None:
    """A warning line on stderr, `vivit: warning: MESSAGE`; silenced by -q (as the README says)."""
    if not quiet():
        write(f"{PROG}: warning: {message}")


def error_line(err: BaseException | str, expected: tuple[type[BaseException], ...] = (), debug_env: str = "") -> str:
    """`vivit: error: ...`, one line for any error: multi-line messages are joined, and an error of an
    unexpected type (a bug, not bad input) is named, with how to see its traceback."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, BaseException):
        text = text or type(err).__name__
        if not isinstance(err, expected):
            text = f"{type(err).__name__}: {text}" + (f" (set {debug_env}=1 for a traceback)" if debug_env else "")
    return f"{PROG}: error: {text}"


def error(err: BaseException | str, expected: tuple[type[BaseException], ...] = (), debug_env: str = "") -> None:
    """An error line on stderr (never silenced); see `error_line`."""
    write(error_line(err, expected, debug_env))


def summary(total: int, failed: Sequence[str], *, noun: str = "video", done: str = "done") -> None:
    """The last lines of a run over several inputs: the counts, then each input that failed.

    `vivit: 2 of 3 videos classified, 1 failed:` followed by one indented line per failed input,
    so that the end of a long log says what to look at. Printed whenever something failed, even
    with -q (it reports errors); a clean run's one line is informational (silenced by -q).

    Args:
        total: Inputs the run was asked to process.
        failed: What failed (the input, or the input and why), in order.
        noun: What an input is (singular; an "s" is added for counts other than 1).
        done: The past participle of the job, e.g. "classified", "written".
    """
    nouns = noun if total == 1 else f"{noun}s"
    if not failed:
        note(f"{total} of {total} {nouns} {done}")
        return
    write(f"{PROG}: {total - len(failed)} of {total} {nouns} {done}, {len(failed)} failed:")
    for item in failed:
        write(f"  {item}")


# ---------------------------------------------------------------- progress
class ProgressBar:
    """A tqdm bar on stderr, driven by a job's progress callback `(done, total)`; nothing when disabled.

    Pass the instance as a job's `progress=` argument; use it as a context manager so that the bar
    is closed (a bar with `leave=False` disappears, e.g. the views of one video).

    Args:
        desc: Label in front of the bar, e.g. "videos".
        unit: What one step is, e.g. "video", "view".
        leave: Keep the finished bar on screen.
        enabled: Draw it (default `progress_enabled()`: a terminal and no -q).
    """

    def __init__(self, desc: str, unit: str, *, leave: bool = True, enabled: bool | None = None) -> None:
        self.desc, self.unit, self.leave = desc, unit, leave
        self.enabled = progress_enabled() if enabled is None else enabled
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=self.desc, unit=self.unit, leave=self.leave, file=sys.stderr, dynamic_ncols=True
            )
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- warnings and log records
def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Every warning (a short video, a truncated file, a cache not written) as one `vivit: warning:` line."""
    warn(" ".join(str(message).split()))


class _LogHandler(logging.Handler):
    """vivit's log records as lines: errors as `vivit: error: ...` (never silenced: a job reports each
    failed input as it fails), warnings as `vivit: warning: ...`, information as `vivit: ...` (-q
    silences both)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
        except Exception:  # a bad format string in a log call must not end the command
            message = str(record.msg)
        if record.levelno >= logging.ERROR:
            error(message)
        elif record.levelno >= logging.WARNING:
            warn(message)
        else:
            note(message)


@contextmanager
def _download_progress() -> Iterator[None]:
    """Download bars (huggingface_hub's, which vivit's downloads share) follow `progress_enabled`:
    off with -q or when stderr is not a terminal; restored afterwards."""
    if progress_enabled():
        yield
        return
    from huggingface_hub import utils as hf_utils

    was_disabled = hf_utils.are_progress_bars_disabled()
    hf_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            hf_utils.enable_progress_bars()


@contextmanager
def session(quiet: bool = False, *, show_warnings: bool = True) -> Iterator[None]:
    """The terminal of one command: -q, warnings and vivit's log records shown as lines, download bars.

    Everything is restored on exit (an in-process caller keeps its own warning filters, log
    configuration and quiet state).

    Args:
        quiet: The command's -q.
        show_warnings: Show warnings as `vivit: warning:` lines (False: as Python shows them, e.g.
            with tracebacks under a debug setting).
    """
    token = _QUIET.set(bool(quiet))
    logger = logging.getLogger(PROG)
    handler = _LogHandler()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the lines above are the record's only rendering
    try:
        with warnings.catch_warnings(), _download_progress():
            if show_warnings:
                warnings.showwarning = _show_warning
            # every occurrence is news (another video, another file), not a repeat to hide
            warnings.simplefilter("always", VideoWarning)
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        _QUIET.reset(token)


def silence_broken_pipe() -> None:
    """After the reader of stdout left (`vivit list | head`): keep the interpreter's final flush quiet."""
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until the interpreter exits
    except OSError:
        pass
