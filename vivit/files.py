"""File helpers shared by downloads, jobs and pictures: atomic writes, temporary files, output checks.

Every file vivit writes (cached weights, features, metrics, pictures, exports) goes through
`atomic_write`, so a reader sees either no file or the complete one, and a killed process leaves
only a hidden ``.<name>.<pid>.<random>.part`` file that `clean_stale_temp_files` can recognise and
remove. `check_file_destination` refuses a path that could not be written before any slow work.

This module imports nothing from vivit: every layer may use it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "atomic_write",
    "check_file_destination",
    "clean_stale_temp_files",
    "free_space",
    "remove_quietly",
    "temp_path",
]

logger = logging.getLogger(__name__)

# Temporary files untouched for this long are stale whoever wrote them (a live download writes
# every few seconds; the download deadline defaults to 2 hours).
STALE_AFTER_S = 24 * 3600.0
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.part$")


def temp_path(dest: Path) -> Path:
    """An unused hidden temporary path next to `dest`: ``.<name>.<pid>.<random>.part``.

    Same folder, so that the final rename is atomic; the pid lets `clean_stale_temp_files` tell
    whether its writer is still alive; the random part keeps concurrent writers apart.
    """
    return dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(6)}.part"


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists, never masking the error being handled."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_temp_files(folder: Path, name: str | None = None) -> list[Path]:
    """Remove temporary ``.part`` files left behind by interrupted writers.

    A temporary file is stale when its writer (the pid in its name) is no longer running on this
    machine, or when it has not been modified for `STALE_AFTER_S`. With `name` (call it while
    holding `cache_lock` for that file), every temporary file for `name` is stale, since no other
    writer can be active.

    Args:
        folder: The folder to clean (nothing happens if it does not exist).
        name: Only temporary files of this destination name, all of them.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if name is not None:
            stale = match["name"] == name
        else:
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            except OSError:
                continue
            stale = old or not _pid_alive(int(match["pid"]))
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    if removed:
        logger.info("removed %d stale temporary files from %s", len(removed), folder)
    return removed


@contextmanager
def atomic_write(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: readers see either no file or the complete one.

    Yields a temporary path in the destination's folder; write the file there. When the block
    exits normally the temporary file gets the permissions of a new file (``0o666 & ~umask``) and
    is renamed onto ``dest`` (replacing any existing file); when it raises, the temporary file is
    removed and ``dest`` is left untouched.

    Args:
        dest: The final path. Its parent folders are created.

    Example:
        >>> with atomic_write(cache_dir() / "model.safetensors") as tmp:
        ...     safetensors.torch.save_file(state_dict, tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_write: nothing was written to {tmp} for {dest}")
        # A new file is readable as the umask says, whoever wrote the temporary file (safetensors
        # creates its files 0600, which made a folder prepared for sharing unreadable to others).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        remove_quietly(tmp)


def _umask() -> int:
    """The process's umask: from /proc on Linux (no side effect), else set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def check_file_destination(dest: str | os.PathLike[str]) -> None:
    """Refuse a path that `atomic_write` could not turn into a file, before any slow work is done.

    Raises:
        ValueError: `dest` is an existing folder, one of its parents is a file, or its nearest
            existing folder does not take new files (read-only, no permission, a pseudo file
            system such as /proc): probed by creating and removing a temporary file there.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise ValueError(f"{dest} is a folder: give a file name, e.g. {dest / ('output' + dest.suffix)}")
    for parent in dest.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {dest}: {parent} is a file, not a folder")
            try:  # permissions alone do not tell (root, read-only mounts, /proc): try it
                with tempfile.TemporaryFile(dir=parent):
                    pass
            except OSError as err:
                raise ValueError(
                    f"cannot write {dest}: the folder {parent} does not take new files ({err.strerror})"
                ) from None
            return


def free_space(folder: Path) -> int | None:
    """Free bytes on the disk holding `folder` (its nearest existing parent), or None if unknown."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None
