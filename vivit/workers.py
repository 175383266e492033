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
import traceback
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from .data.datasets import shared_memory_error

__all__ = ["SHM_FOLDER", "check_shared_memory", "loader_items", "share_batch"]

#: Where POSIX shared memory lives on Linux (torch's `file_descriptor` sharing strategy uses it).
SHM_FOLDER = "/dev/shm"


def _size(n: float) -> str:
    """Bytes for people: `512 KB`, `231 MB`, `3.9 GB`."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


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
        err = OSError(f"{folder} has {_size(free)} free, and one batch of decoded clips needs {_size(batch_bytes)}")
        raise shared_memory_error(err)


def share_batch(batch: Any) -> None:
    """In a DataLoader worker: move every tensor of `batch` (dicts and lists walked) into shared memory now.

    Left to torch, a tensor not yet shared is moved by the worker's queue thread, whose failure (no
    room in /dev/shm) is printed as a traceback and drops the batch: the main process then waits for
    ever. Here the failure is raised where it can be reported.

    Raises:
        OSError: `shared_memory_error` when there is no room.
    """
    import torch

    pending = [batch]
    try:
        while pending:
            value = pending.pop()
            if isinstance(value, torch.Tensor):
                value.share_memory_()
            elif isinstance(value, dict):
                pending.extend(value.values())
            elif isinstance(value, (list, tuple)):
                pending.extend(value)
    except RuntimeError as err:
        raise shared_memory_error(err) from None


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
    failure: BaseException | None = None
    with _QuietHalfBuiltIterator():
        try:
            iterator = iter(loader)
        except (OSError, RuntimeError) as err:
            if not (workers and _is_shared_memory_error(err)):
                raise
            failure = err
        if failure is not None:
            # The half-built iterator lives on in the traceback's frames: free it now, while its failing
            # __del__ is filtered, not when the error is printed.
            traceback.clear_frames(failure.__traceback__)
            failure.__traceback__ = None
    if failure is not None:
        raise shared_memory_error(failure)
    try:
        yield from iterator
    except (OSError, RuntimeError) as err:
        if workers and _is_shared_memory_error(err):
            raise shared_memory_error(err) from None
        raise
    finally:
        del iterator
