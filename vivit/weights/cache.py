"""vivit's cache folder: where it is, one writer at a time, nothing stale, nothing outdated.

Several processes (every rank of a `torchrun` job) may ask for the same weights at once, a
process may be killed mid-download, a cached file may come from an older vivit, and the disk
may be full or read-only. The rules, in one place:

* `cache_dir`: ``$VIVIT_CACHE``, else ``$HF_HOME/vivit``, else ``~/.cache/vivit``;
* `cache_lock`: an inter-process file lock (the `filelock` package) per cached file, so that N
  processes make one download and one conversion; the others wait, then read the result;
* writes go through `vivit.files.atomic_write` (readers see no file or the complete one), and,
  under the lock, `vivit.files.clean_stale_temp_files` removes any leftover for that file;
* `get_or_build`: a cached file is used only if its metadata matches what the caller expects
  (source, converter version, format) and it reads back; otherwise it is rebuilt. A failure to
  *write* the cache is a `CacheWarning`, and the freshly built result is still returned;
* `cache_write_error`: disk-full and permission errors name the folder and ``VIVIT_CACHE``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from ..files import atomic_write, clean_stale_temp_files, temp_path
from .formats import read_safetensors_header

__all__ = [
    "LOCK_TIMEOUT_S",
    "CacheError",
    "CacheWarning",
    "cache_dir",
    "cache_lock",
    "cache_write_error",
    "get_or_build",
    "scratch_dir",
    "stale_reason",
    "tensors_digest",
    "tensors_match_digest",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How long a process waits for another one holding the lock before it says so.
_WAIT_NOTICE_S = 2.0
# How long it waits at most by default: a download's default deadline (2 h) plus a conversion.
LOCK_TIMEOUT_S = 7200.0 + 600.0


class CacheError(OSError):
    """The cache folder cannot be used (full, read-only, locked for too long); the message says what to do."""


class CacheWarning(UserWarning):
    """A cached file was stale and is rebuilt, or a cache write failed (the result is still returned)."""


def cache_dir() -> Path:
    """Return vivit's cache folder for downloaded and converted weights.

    ``$VIVIT_CACHE`` if set, else ``$HF_HOME/vivit`` if ``HF_HOME`` is set, else
    ``~/.cache/vivit``. The folder is not created.
    """
    explicit = os.environ.get("VIVIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "vivit"
    return Path("~/.cache/vivit").expanduser()


def cache_write_error(err: OSError, folder: Path, what: str) -> CacheError:
    """Turn an OSError met while writing into the cache into a message that says what to do.

    Args:
        err: The error (``ENOSPC``/``EDQUOT``: full; ``EACCES``/``EPERM``/``EROFS``: not writable).
        folder: The folder that could not be written.
        what: What was being written (``"the download of <url>"``, ``"the converted weights"``).
    """
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied: the folder is read-only"
    else:
        reason = err.strerror or str(err)
    error = CacheError(
        f"cannot write {what} to {folder} ({reason}); free space there, or set VIVIT_CACHE to a writable "
        f"folder with room (the cache is now {cache_dir()})"
    )
    error.errno = err.errno
    return error


@contextmanager
def cache_lock(dest: Path, what: str, timeout_s: float | None = None) -> Iterator[bool]:
    """Hold an inter-process lock for building `dest` (lock file ``.<name>.lock`` beside it).

    The operating system releases the lock of a killed process, so a lock is never stale. If the
    folder is not writable the lock cannot be taken: a `CacheWarning` says so and the block runs
    unlocked (yielding False), since the result cannot be cached there anyway.

    Args:
        dest: The file to be built.
        what: What is being built, for messages (``"vivit_b_fe_k400"``).
        timeout_s: How long to wait for another process (default `LOCK_TIMEOUT_S`; the loader passes
            its download deadline, ``VIVIT_DOWNLOAD_TIMEOUT``, plus 10 minutes for a conversion).

    Yields:
        Whether the lock is held.

    Raises:
        CacheError: If another process holds the lock for longer than `timeout_s`.
    """
    from filelock import FileLock, Timeout

    if timeout_s is None:
        timeout_s = LOCK_TIMEOUT_S
    lock_path = dest.parent / f".{dest.name}.lock"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=min(_WAIT_NOTICE_S, timeout_s))
        except Timeout:
            logger.warning("waiting for another process to finish %s (lock %s)", what, lock_path)
            lock.acquire(timeout=max(timeout_s - _WAIT_NOTICE_S, 0))
    except Timeout:
        raise CacheError(
            f"timed out after {timeout_s:.0f} s waiting for another process to finish {what} (lock {lock_path}); "
            "if no other vivit process is running, delete that file"
        ) from None
    except OSError as err:
        warnings.warn(
            f"{cache_write_error(err, dest.parent, 'a lock file')}; continuing without the lock",
            CacheWarning,
            stacklevel=3,
        )
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def stale_reason(metadata: Mapping[str, str] | None, expected: Mapping[str, str]) -> str | None:
    """Why a cached file's metadata does not match what the caller would write now (None if it does).

    Args:
        metadata: The cached file's metadata (None: unreadable).
        expected: Keys that must be present with exactly these values (e.g. ``source_url``,
            ``converter_version``, ``format_version``); a value of ``"*"`` only requires presence
            (e.g. ``config``).
    """
    if metadata is None:
        return "it is unreadable"
    for key, value in expected.items():
        if key not in metadata:
            return f"it has no {key}"
        if value != "*" and metadata[key] != value:
            return f"its {key} is {metadata[key][:80]!r}, not {value[:80]!r}"
    return None


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of tensors' names, dtypes, shapes and bytes, in name order: what a cached file records
    of its data, so that data changed after the write (zeroed blocks after a crash, a disk error, an edit)
    is found on reading and the file rebuilt, even when its metadata still matches.

    The bytes are the tensors' own (little-endian, as safetensors stores them), so a file read back
    with `vivit.weights.formats.load_safetensors` gives the digest of the tensors it was written from.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # no copy
    return digest.hexdigest()


_RACY_NS = 2_000_000_000  # file times are kept at a coarse tick on some file systems; 2 s is well beyond it


def _file_identity(path: Path) -> dict[str, int]:
    """What changes whenever a file's data is written: size, modification and change times, inode."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def tensors_match_digest(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], recorded: str) -> bool:
    """Whether `tensors`, read from the cache file `path`, have the SHA-256 `recorded` in its metadata.

    The full hash (`tensors_digest`) runs once per version of the file: after it matches, a stamp
    beside the file (`NAME.verified`) records the file's size, modification and change times and inode,
    and later calls on the unchanged file trust the stamp instead of hashing again (ViViT-B's 460 MB
    took 0.26 s to hash here, as long as building and loading the model; hashing also reads every page
    that loading maps lazily). Writing the file's data, renaming another file onto it or touching it
    changes its change time (`st_ctime`, which no user call can set), so a changed file is hashed again.
    A stamp that cannot be written only means the next call hashes again.

    Raises:
        OSError: `path` cannot be examined.
    """
    path = Path(path)
    stamp = path.with_name(path.name + ".verified")
    stat = _file_identity(path)
    identity: dict[str, int | str] = {**stat, "tensors_sha256": recorded}
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) == identity:
            return True
    except (OSError, ValueError):
        pass  # no stamp, or an unreadable one: hash
    if tensors_digest(tensors) != recorded:
        return False
    if time.time_ns() - stat["ctime_ns"] < _RACY_NS:
        # a change within the file system's timestamp granularity of this one would keep the times: stamp
        # only a file that has been left alone for a while (git's "racy clean" rule)
        return True
    try:
        with atomic_write(stamp) as tmp:
            tmp.write_text(json.dumps(identity), encoding="utf-8")
    except OSError:
        pass  # a read-only cache: correct, only slower next time
    return True


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A folder for a download that is converted and then deleted.

    ``<cache>/downloads`` when it can be written (same disk as the cache, and cleaned of stale
    temporary files), else a temporary folder of the system (removed afterwards), with a
    `CacheWarning`.
    """
    folder = cache_dir() / "downloads"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "probe")
        probe.touch()
        probe.unlink()
    except OSError as err:
        warnings.warn(
            f"{cache_write_error(err, folder, 'downloads')}; downloading to a temporary folder instead",
            CacheWarning,
            stacklevel=3,
        )
        with tempfile.TemporaryDirectory(prefix="vivit-") as tmp:
            yield Path(tmp)
        return
    clean_stale_temp_files(folder)
    yield folder


def get_or_build(
    dest: Path,
    expected: Mapping[str, str],
    read: Callable[[Path], T],
    build: Callable[[], T],
    write: Callable[[T, Path], None],
    what: str,
    lock_timeout_s: float | None = None,
) -> T:
    """Return the cached result at `dest` if it is current, else build it once and cache it.

    1. Without the lock: if `dest` exists, its safetensors metadata matches `expected` (see
       `stale_reason`) and `read(dest)` succeeds, return that.
    2. Otherwise take `cache_lock` (other processes wait here), check again (another process may
       have just built it), remove temporary files of `dest` left by dead processes, `build()`,
       and `write` the result atomically. If writing fails (disk full, read-only folder), warn
       with a `CacheWarning` naming the folder and ``VIVIT_CACHE`` and return the result anyway.

    Args:
        dest: The cached file (a `.safetensors` file whose metadata carries `expected`).
        expected: Metadata the cached file must have.
        read: Reads a cached file; raises ValueError if it is unusable (it is then rebuilt).
        build: Makes the result (downloads, converts); its errors propagate.
        write: Writes a result to the given (temporary) path, including the `expected` metadata.
        what: What is cached, for messages.
        lock_timeout_s: How long to wait for another process building it (see `cache_lock`).

    Returns:
        The result, from the cache or freshly built.
    """

    def current(announce: bool) -> T | None:
        if not dest.exists():
            return None
        try:
            metadata: Mapping[str, str] | None = read_safetensors_header(dest).metadata
        except (ValueError, OSError):
            metadata = None
        reason = stale_reason(metadata, expected)
        if reason is None:
            try:
                return read(dest)
            except ValueError as err:
                reason = f"it cannot be read ({err})"
        if announce:
            warnings.warn(f"rebuilding the cached {what} at {dest}: {reason}", CacheWarning, stacklevel=3)
        return None

    hit = current(announce=False)
    if hit is not None:
        return hit
    with cache_lock(dest, f"building {what}", lock_timeout_s) as locked:
        if locked:
            hit = current(announce=True)
            if hit is not None:
                return hit
            clean_stale_temp_files(dest.parent, name=dest.name)
        result = build()
        try:
            with atomic_write(dest) as tmp:
                write(result, tmp)
        except OSError as err:
            warnings.warn(
                f"{cache_write_error(err, dest.parent, f'the {what}')}; the result is used now but will be "
                "rebuilt next time",
                CacheWarning,
                stacklevel=2,
            )
        return result
