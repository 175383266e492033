"""File helpers shared by downloads, jobs and pictures: atomic writes, temporary files, output checks.

Every file vivit writes (cached weights, features, metrics, pictures, exports) goes through
`atomic_write`, so a reader sees either no file or the complete one, and a killed process leaves
only a hidden ``.<name>.<pid>.<random>.part`` file that `clean_stale_temp_files` can recognise and
remove (only when its writer is gone: never a live writer's). Temporary names always fit the file
system's name limit (a long name is shortened with a hash of it).

Output checks, all made before any slow work so that no result is computed and then lost:
`check_file_destination` (one file), `check_output_dir` (a folder of outputs: not empty, not a
file, takes files, has room), `check_name_fits` (NAME_MAX). The output-path policy of the dataset
jobs lives here too: `relative_output` maps an input path below its root to a path that can never
leave the output folder, `output_key` makes two spellings of one output compare equal (symlinks,
`..`, letter case on a case-insensitive file system), and `WriteError` is the one error for a
write that failed (full disk, read-only folder), naming the path.

This module imports nothing from vivit: every layer may use it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

__all__ = [
    "NAME_MAX",
    "PATH_MAX",
    "STALE_AFTER_S",
    "WriteError",
    "atomic_write",
    "case_insensitive",
    "check_file_destination",
    "check_name_fits",
    "check_output_dir",
    "clean_stale_temp_files",
    "common_folder",
    "describe_path_problem",
    "free_space",
    "is_inside",
    "name_max",
    "new_folder_contents",
    "output_key",
    "relative_output",
    "remove_quietly",
    "temp_path",
    "write_error",
    "writing",
]

logger = logging.getLogger(__name__)

# Temporary files untouched for this long are stale whoever wrote them (a live download writes
# every few seconds; the download deadline defaults to 2 hours).
STALE_AFTER_S = 24 * 3600.0
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.part$")
#: The longest file name (bytes) POSIX file systems take (ext4, xfs, btrfs, tmpfs: NAME_MAX); used when
#: the folder cannot be asked (`name_max`).
NAME_MAX = 255
#: The longest path (bytes, with its terminating NUL) Linux system calls take.
PATH_MAX = 4096
# What a temporary name adds around its stem: "." + stem + "." + pid (at most 7 digits on Linux,
# 10 elsewhere) + "." + 12 hex digits + ".part".
_TEMP_OVERHEAD = 1 + 1 + 10 + 1 + 12 + 5


def _temp_stem(name: str, limit: int = NAME_MAX) -> str:
    """`name`, or when the temporary name would be too long, its start + `~` + 16 hex digits of its hash.

    The hash keeps two long names that share their start apart; the stem is a function of the name
    alone, so `clean_stale_temp_files(folder, name)` finds the temporary files of a long name too.
    """
    raw = os.fsencode(name)
    room = limit - _TEMP_OVERHEAD
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    start = raw[: room - 17].decode("utf-8", "ignore")  # never cut a UTF-8 character in two
    return os.fsdecode(os.fsencode(start)) + "~" + digest


def temp_path(dest: Path) -> Path:
    """An unused hidden temporary path next to `dest`: ``.<name>.<pid>.<random>.part``.

    Same folder, so that the final rename is atomic; the pid lets `clean_stale_temp_files` tell
    whether its writer is still alive; the random part keeps concurrent writers apart. A name too
    long for the file system with these additions (NAME_MAX, 255 bytes) is shortened with a hash.
    """
    return dest.parent / f".{_temp_stem(dest.name)}.{os.getpid()}.{secrets.token_hex(6)}.part"


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


def clean_stale_temp_files(folder: Path, name: str | None = None, *, lock_held: bool = True) -> list[Path]:
    """Remove temporary ``.part`` files left behind by interrupted writers.

    A temporary file is stale when its writer (the pid in its name) is no longer running on this
    machine, or when it has not been modified for `STALE_AFTER_S`; a live writer's file is never
    touched. With `name` and `lock_held` (call it while holding `cache_lock` for that file), every
    temporary file for `name` is stale, since no other writer can be active.

    Args:
        folder: The folder to clean (nothing happens if it does not exist).
        name: Only temporary files of this destination name.
        lock_held: With `name`: whether the caller holds the only right to write `name` (then all
            of its temporary files are stale); False: only those of dead or old writers.

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
        if name is not None and match["name"] != _temp_stem(name):
            continue
        if name is not None and lock_held:
            stale = True
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
        _sync(tmp)
        os.replace(tmp, dest)
        _sync(dest.parent, folder=True)
    finally:
        remove_quietly(tmp)


def _sync(path: Path, folder: bool = False) -> None:
    """Flush `path` to the disk (`fsync`), so that a rename never lands before the data it names: after a
    power loss or a kernel crash, an un-synced new file can be empty or zero-filled under its final name,
    and a resumable job would then find a file it does not overwrite, or a cache one it trusts. A folder's
    sync (the rename itself) is best effort: some file systems refuse it."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not folder:
            raise


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
    _check_fits(dest, "cannot write")
    try:
        is_dir = dest.is_dir()
    except OSError as err:  # no permission to look, an I/O error
        raise ValueError(f"cannot write {_shown(dest)}: {err.strerror or err}") from None
    if is_dir:
        raise ValueError(f"{dest} is a folder: give a file name, e.g. {dest / ('output' + dest.suffix)}")
    for parent in dest.parents:
        if _exists(parent):
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


# ---------------------------------------------------------------- output folders, names and paths
class WriteError(OSError):
    """A file or folder could not be written (full disk, read-only folder, no permission, name too long).

    Its message names the path and the reason (`cannot write out/a.safetensors: No space left on
    device`); `errno` is the operating system's error number when there is one.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, error_number: int | None = None) -> None:
        super().__init__(error_number, reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {_shown(self.path)}: {self.reason}"

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:  # crosses process boundaries intact
        return type(self), (self.path, self.reason, self.errno)


def _shown(path: str | os.PathLike[str]) -> str:
    """A path as printable UTF-8 text (bytes that are not UTF-8 as `\\xNN`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_error(dest: str | os.PathLike[str], err: BaseException) -> WriteError:
    """`err`, raised while writing `dest`, as a `WriteError` naming `dest` and the reason.

    OSErrors give their `strerror`; safetensors' `SafetensorError` (a full disk while it writes
    reads `IoError(Os { code: 28, ... message: "No space left on device" })`) gives the message
    inside it. Anything else keeps its text.
    """
    if isinstance(err, WriteError):
        return err
    if isinstance(err, OSError):
        return WriteError(dest, err.strerror or str(err) or type(err).__name__, err.errno)
    text = " ".join(str(err).split())
    # safetensors words an I/O error as `I/O error: No space left on device (os error 28)` (or, in older
    # releases, `IoError(Os { code: 28, ..., message: "No space left on device" })`)
    found = re.search(r"I/O error: (.+?) \(os error (\d+)\)", text) or re.search(
        r'code: (?P<code>\d+).*?message: "(?P<message>[^"]+)"', text
    )
    if found is None:
        return WriteError(dest, text or type(err).__name__)
    if found.re.groupindex:
        return WriteError(dest, found["message"], int(found["code"]))
    return WriteError(dest, found[1], int(found[2]))


@contextmanager
def writing(dest: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError (or a safetensors write error) raised inside into a `WriteError` naming `dest`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise write_error(dest, err) from err
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise write_error(dest, err) from err


@contextmanager
def new_folder_contents(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Create `directory` (and its missing parents) for a set of files written together; when the block
    raises, remove the files it added there and the folders made for them, so that a failed write (full
    disk, read-only folder) leaves no half set (a `model.safetensors` without its `config.json`) and no
    empty folder. Files that were there before are left alone (each is replaced atomically or not at all).

    Raises:
        WriteError: The folder cannot be created (naming it and the reason).
    """
    directory = Path(directory)
    missing = [p for p in (directory, *directory.parents) if not os.path.lexists(p)]
    try:
        before = {entry.name for entry in os.scandir(directory)} if not missing else set()
    except OSError:
        before = set()
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    except BaseException:
        try:
            added = [e.path for e in os.scandir(directory) if e.name not in before and e.is_file(follow_symlinks=False)]
        except OSError:
            added = []
        for path in added:
            remove_quietly(Path(path))
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def name_max(folder: str | os.PathLike[str]) -> int:
    """The longest file name, in bytes, that the file system holding `folder` (or its nearest existing
    parent) takes; `NAME_MAX` (255) when it cannot be asked."""
    for candidate in (Path(folder), *Path(folder).parents):
        try:
            return int(os.pathconf(candidate, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return NAME_MAX


def check_name_fits(path: str | os.PathLike[str], limit: int | None = None) -> None:
    """Refuse a path with a component longer than the file system takes, before any work is done.

    Temporary names (`temp_path`) are shortened as needed, so only the final names are checked.

    Raises:
        WriteError: A component is longer than `limit` bytes (default: `name_max` of its folder),
            errno ENAMETOOLONG; the message gives its length and the limit.
    """
    path = Path(path)
    limit = name_max(path.parent) if limit is None else limit
    total = len(os.fsencode(os.path.abspath(path)))
    if total >= PATH_MAX - _TEMP_OVERHEAD:
        raise WriteError(
            path,
            f"the path is {total} bytes, longer than the {PATH_MAX - _TEMP_OVERHEAD} bytes the system takes "
            "(PATH_MAX, with room for a temporary name); choose a shorter --out or input path",
            errno.ENAMETOOLONG,
        )
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit and part != os.sep:
            raise WriteError(
                path,
                f"name {_shown(part)[:40]}… is {size} bytes, longer than the {limit} bytes this file system takes "
                "(NAME_MAX); shorten the input's name",
                errno.ENAMETOOLONG,
            )


def _check_fits(path: Path, what: str, folder: bool = False) -> None:
    """`check_name_fits` for an output the user named, as the ValueError the output checks raise: a name
    too long for the file system is refused before any work (it made `stat` itself fail with a raw
    `[Errno 36] File name too long`). A folder keeps room for the names written in it."""
    try:
        check_name_fits(path / "x" if folder else path)
    except WriteError as err:
        reason = err.reason.replace("shorten the input's name", "choose a shorter name")
        raise ValueError(f"{what} {_shown(path)[:60]}…: {reason}") from None


def _exists(path: Path, what: str = "cannot write") -> bool:
    """`path.exists()` (symbolic links followed); an error other than "not there" (no permission to look
    into a parent folder) is a ValueError naming the path, never a raw OSError, nor a pass that would
    fail only when the result is written."""
    try:
        return path.exists()
    except OSError as err:
        raise ValueError(f"{what} {_shown(path)}: {err.strerror or err}") from None


def _probe(folder: Path, payload: int = 4096) -> None:
    """Create, fill with `payload` bytes and remove a temporary file in `folder` (raises OSError)."""
    with tempfile.TemporaryFile(dir=folder) as f:
        if payload:
            f.write(b"\0" * payload)
            f.flush()
            os.fsync(f.fileno())


def check_output_dir(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check, before any work, that files can be written in `folder` (created later if missing).

    Refused: an empty name (it would mean the current folder), an existing file, a path under a
    file, and a folder (or, if it does not exist yet, its nearest existing parent) that does not
    take new files: read-only, no permission, full (a probe of 4 KiB is written and removed), or a
    pseudo file system such as /proc.

    Args:
        folder: The output folder.
        what: How the message names it (e.g. `"--out"`).

    Returns:
        `folder` as a Path, `~` expanded.

    Raises:
        ValueError: What is wrong, naming `folder`.
    """
    text = os.fspath(folder)
    if not text.strip():
        raise ValueError(f"{what} is empty: give a folder name (an empty one would write into the current folder)")
    path = Path(text).expanduser()
    shown = _shown(path)
    _check_fits(path, what, folder=True)
    if _exists(path, what) and not path.is_dir():
        raise ValueError(f"{what} {shown} is an existing file, not a folder: give a folder name")
    for candidate in (path, *path.parents):
        if not _exists(candidate, what):
            if candidate.is_symlink():
                try:
                    os.stat(candidate)
                except OSError as err:
                    kind = "a symbolic link loop" if err.errno == errno.ELOOP else "a broken symbolic link"
                    raise ValueError(f"{what} {shown}: {_shown(candidate)} is {kind}") from None
            continue
        if not candidate.is_dir():
            raise ValueError(f"{what} {shown}: {_shown(candidate)} is a file, not a folder")
        try:
            _probe(candidate)
        except OSError as err:
            where = "" if candidate == path else f" (its nearest existing folder {_shown(candidate)})"
            raise ValueError(
                f"{what} {shown}{where} does not take new files: {err.strerror or err}; choose another folder"
            ) from None
        return path
    return path  # pragma: no cover - a relative path always has "." among its parents


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether `path`, symbolic links resolved, lies inside `folder` (also resolved)."""
    target = os.path.realpath(path)
    root = os.path.realpath(folder)
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def common_folder(paths: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The deepest folder holding every path (absolute, `..` removed lexically), None for no paths."""
    folders = [os.path.dirname(os.path.normpath(os.path.abspath(p))) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else None


def relative_output(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> PurePath:
    """Where an input found below `root` goes below an output folder: a relative path that cannot leave it.

    `path` relative to `root`, both made absolute with `..` removed lexically (`a/../b.mp4` is
    `b.mp4`); a path outside `root` (an absolute list entry, `../../x.mp4`) keeps its whole
    absolute path below the output folder (`/data/x.mp4` -> `data/x.mp4`). The result never holds
    `..` and is never absolute, so `out / relative_output(...)` is inside `out` whatever the input.

    Args:
        path: An input file.
        root: The folder its output names are relative to (the input folder, the list's root).

    Returns:
        The relative path (without the output suffix).
    """
    target = os.path.normpath(os.path.abspath(path))
    base = os.path.normpath(os.path.abspath(root))
    relative = os.path.relpath(target, base)
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        rest = os.path.splitdrive(target)[1]
        relative = rest.lstrip(os.sep + (os.altsep or ""))
    parts = [p for p in PurePath(relative).parts if p not in ("", os.curdir, os.pardir)]
    return PurePath(*parts) if parts else PurePath("_")


def case_insensitive(folder: str | os.PathLike[str]) -> bool:
    """Whether the file system of `folder` (or its nearest existing parent) ignores letter case in names
    (macOS and Windows defaults, vfat/exFAT drives): probed with a temporary file."""
    for candidate in (Path(folder), *Path(folder).parents):
        if not candidate.is_dir():
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=candidate, prefix=".vivit-Case-") as f:
                twin = Path(f.name).with_name(Path(f.name).name.swapcase())
                return twin.exists()
        except OSError:
            return False
    return False


def output_key(path: str | os.PathLike[str], insensitive: bool = False) -> str:
    """A key under which two spellings of the same output compare equal.

    The nearest existing folder of `path` is resolved (symbolic links, `..`), the rest is added
    lexically; with `insensitive` (see `case_insensitive`) the key is case-folded.
    """
    path = Path(os.path.abspath(path))
    rest: list[str] = []
    existing = path
    while not existing.exists() and existing != existing.parent:
        rest.append(existing.name)
        existing = existing.parent
    key = os.path.join(os.path.realpath(existing), *reversed(rest))
    key = os.path.normpath(key)
    return key.casefold() if insensitive else key


def describe_path_problem(path: str | os.PathLike[str]) -> str:
    """Why `path` cannot be opened, in words: `does not exist`, `is a symbolic link loop`, `is a broken
    symbolic link (to X)`, or the operating system's reason (no permission, a NUL byte in the name)."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (to {_shown(os.readlink(path))})"
        return "does not exist"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back at itself); fix or remove the link"
        return err.strerror or str(err)
    except ValueError as err:  # "embedded null byte"
        return f"is not a usable file name ({err})"
    return "is not a file"
