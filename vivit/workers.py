"""Running a dataset job's DataLoader: shared memory checked before the work, its failures as one clear error.

DataLoader workers hand decoded clips to the main process through shared memory (`/dev/shm` on
Linux: 64 MB in a default docker container), and torch's queues and semaphores live there too.
When it is too small or full, torch reports `[Errno 28] No space left on device` without naming
it, then a half-built iterator prints "Exception ignored ... AttributeError" at exit; mid-run, a
worker's queue thread prints its error and drops the batch. `loader_items` turns each of these
into `vivit.data.datasets.shared_memory_error` (names /dev/shm, says `--workers 0` and docker's
`--shm-size`), checks the room a batch needs before any video is decoded, and prints nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from .data.datasets import shared_memory_error

__all__ = ["SHM_FOLDER", "check_shared_memory", "loader_items"]

#: Where POSIX shared memory lives on Linux (torch's `file_descriptor` sharing strategy uses it).
SHM_FOLDER = "/dev/shm"


def _megabytes(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def check_shared_memory(batch_bytes: int, workers: int, folder: str = SHM_FOLDER) -> None:
    """Refuse, before any work, a shared memory too small for one batch of decoded clips.

    Args:
        batch_bytes: Bytes of one batch a worker hands over (e.g. 4 x 3 views of 32x224^2 float32:
            231 MB per video).
        workers: DataLoader workers (0: nothing is shared, nothing is checked).
        folder: The shared-memory file system (nothing is checked where it does not exist).

    Raises:
        OSError: `shared_memory_error`: less free room than one batch, with the sizes.
    """
    if workers <= 0 or not os.path.isdir(folder):
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < batch_bytes:
        err = OSError(
            errno.ENOSPC,
            f"{folder} has {_megabytes(free)} free, and one batch of decoded clips needs {_megabytes(batch_bytes)}",
        )
        raise shared_memory_error(err)


class _QuietHalfBuiltIterator:
    """`sys.unraisablehook` for the duration of a DataLoader's start: a worker iterator whose
    `__init__` failed (no room for its queues) fails again in `__del__` (AttributeError: `_shutdown`),
    which Python would print as "Exception ignored in ..." with a traceback; that one is dropped,
    every other unraisable exception goes to the hook that was there."""

    def __init__(self) -> None:
        self.previous = sys.unraisablehook

    def __call__(self, unraisable: Any) -> None:
        owner = type(getattr(unraisable, "object", None)).__name__ if getattr(unraisable, "object", None) else ""
        if isinstance(unraisable.exc_value, AttributeError) and "DataLoaderIter" in (
            owner + repr(getattr(unraisable, "object", ""))
        ):
            return
        self.previous(unraisable)

    def __enter__(self) -> _QuietHalfBuiltIterator:
        sys.unraisablehook = self
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.collect()  # the half-built iterator goes now, while the filter is in place
        sys.unraisablehook = self.previous


def _is_shared_memory_error(err: BaseException) -> bool:
    text = str(err)
    return (
        (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.ENOMEM, errno.EMFILE))
        or "No space left on device" in text
        or "shared memory" in text
        or "/dev/shm" in text
        or "torch_shm_manager" in text
    )


def loader_items(loader: DataLoader, batch_bytes: int | None = None) -> Iterator[Any]:
    """Iterate over `loader`, with shared memory checked first and its failures as one clear error.

    Args:
        loader: The job's DataLoader.
        batch_bytes: Bytes of one batch its workers hand over, checked against the free room in
            `/dev/shm` before any worker starts (None: not checked).

    Yields:
        The loader's batches.

    Raises:
        OSError: `shared_memory_error` (names /dev/shm, says `--workers 0` and `--shm-size`), at
            start-up or mid-run, instead of torch's errno line and tracebacks.
    """
    workers = int(getattr(loader, "num_workers", 0) or 0)
    if batch_bytes is not None:
        check_shared_memory(batch_bytes, workers)
    iterator = None
    with _QuietHalfBuiltIterator():
        try:
            iterator = iter(loader)
        except (OSError, RuntimeError) as err:
            if workers and _is_shared_memory_error(err):
                raise shared_memory_error(err) from None
            raise
    try:
        yield from iterator
    except (OSError, RuntimeError) as err:
        if workers and _is_shared_memory_error(err):
            raise shared_memory_error(err) from None
        raise
    finally:
        del iterator
