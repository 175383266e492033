"""The cache: one download for many processes, stale temporary files, rebuilds, write failures."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hubserver import HubServer, hub_server  # noqa: F401 - the fixture is used by name
from safetensors.numpy import load_file, save_file

from vivit.weights import cache
from vivit.weights.cache import (
    CacheError,
    CacheWarning,
    cache_lock,
    cache_write_error,
    clean_stale_temp_files,
    get_or_build,
    stale_reason,
)

PAYLOAD = bytes(range(256)) * 64

# One process of the concurrency test: say "ready" once imported, wait for "go" (so that all four
# start together), then get the cached "conversion" of a downloaded file.
_WORKER = """
import sys, time
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file, save_file
from vivit.weights.cache import cache_dir, get_or_build, scratch_dir
from vivit.weights.hub import download_url

url = sys.argv[1]
dest = cache_dir() / "converted" / "entry.safetensors"
expected = {"source_url": url, "converter_version": "1"}

def build():
    with scratch_dir() as folder:
        raw = folder / "entry.checkpoint"
        download_url(url, raw, progress=False)
        data = np.frombuffer(raw.read_bytes(), np.uint8).astype(np.float32)
        raw.unlink()
    return data

def write(data, path):
    save_file({"x": data}, str(path), metadata=expected)

print("ready", flush=True)
sys.stdin.readline()
data = get_or_build(dest, expected, read=lambda p: load_file(str(p))["x"], build=build, write=write, what="test entry")
print(int(data.sum()))
"""


def test_four_processes_make_one_download(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("k400/checkpoint", PAYLOAD, fault="slow_start")  # 1 s: the others arrive meanwhile
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ)  # fmt: skip
        for _ in range(4)
    ]
    try:
        assert [p.stdout.readline() for p in procs] == ["ready\n"] * 4
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), results
    assert [out.strip() for out, _ in results] == [str(sum(PAYLOAD))] * 4
    assert hub_server.count("/files/k400/checkpoint") == 1
    converted = Path(os.environ["VIVIT_CACHE"]) / "converted"
    assert sorted(p.name for p in converted.iterdir()) == [".entry.safetensors.lock", "entry.safetensors"]
    assert os.listdir(Path(os.environ["VIVIT_CACHE"]) / "downloads") == []


# ---------------------------------------------------------------- get_or_build
def _store(tmp_path: Path):
    dest = tmp_path / "converted" / "m.safetensors"
    calls = []

    def build() -> np.ndarray:
        calls.append(1)
        return np.full(3, len(calls), np.float32)

    def write_with(metadata: dict[str, str]):
        return lambda data, path: save_file({"x": data}, str(path), metadata=metadata)

    def read(path: Path) -> np.ndarray:
        tensors = load_file(str(path))
        if "x" not in tensors:
            raise ValueError(f"{path}: no x")
        return tensors["x"]

    return dest, calls, build, write_with, read


EXPECTED = {"source_url": "https://example/ckpt", "converter_version": "2", "config": "*"}


def test_cached_result_is_reused_until_it_is_outdated(tmp_path: Path) -> None:
    dest, calls, build, write_with, read = _store(tmp_path)
    current = {"source_url": "https://example/ckpt", "converter_version": "2", "config": "{}"}
    assert get_or_build(dest, EXPECTED, read, build, write_with(current), "m")[0] == 1
    assert get_or_build(dest, EXPECTED, read, build, write_with(current), "m")[0] == 1
    assert len(calls) == 1
    # written by an older converter, or without its config, or from another source: rebuilt
    for stale in ({**current, "converter_version": "1"}, {k: v for k, v in current.items() if k != "config"},
                  {**current, "source_url": "https://mirror/ckpt"}):  # fmt: skip
        save_file({"x": np.zeros(3, np.float32)}, str(dest), metadata=stale)
        before = len(calls)
        assert get_or_build(dest, EXPECTED, read, build, write_with(current), "m")[0] == before + 1
        assert stale_reason(load_metadata(dest), EXPECTED) is None
    # unreadable (cut short), or readable but without what the reader needs: rebuilt
    dest.write_bytes(dest.read_bytes()[:50])
    assert get_or_build(dest, EXPECTED, read, build, write_with(current), "m")[0] == len(calls) == 5
    save_file({"y": np.zeros(3, np.float32)}, str(dest), metadata=current)
    assert get_or_build(dest, EXPECTED, read, build, write_with(current), "m")[0] == len(calls) == 6


def load_metadata(path: Path) -> dict[str, str]:
    from vivit.weights.formats import read_safetensors_header

    return dict(read_safetensors_header(path).metadata)


def test_stale_reason() -> None:
    assert stale_reason({"a": "1", "config": "{}"}, {"a": "1", "config": "*"}) is None
    assert stale_reason({"a": "2", "config": "{}"}, {"a": "1"}) == "its a is '2', not '1'"
    assert stale_reason({"a": "1"}, {"a": "1", "config": "*"}) == "it has no config"
    assert stale_reason(None, {"a": "1"}) == "it is unreadable"


def test_cache_write_failure_is_a_warning_and_the_result_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest, calls, build, _, read = _store(tmp_path)
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path))

    def full_disk(data: np.ndarray, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.warns(CacheWarning, match=rf"cannot write the m to {dest.parent} \(no space left on the device\); "
                      rf"free space there, or set VIVIT_CACHE .*the result is used now but will be rebuilt next time"):  # fmt: skip
        assert get_or_build(dest, EXPECTED, read, build, full_disk, "m")[0] == 1
    assert sorted(os.listdir(dest.parent)) == [".m.safetensors.lock"]  # no partial file left


def test_unwritable_cache_folder_still_returns_the_result(tmp_path: Path) -> None:
    """The cache path runs through a file: no lock, no cache, but the model is still built."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    dest, calls, build, write_with, read = _store(blocker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert get_or_build(dest, EXPECTED, read, build, write_with({}), "m")[0] == 1
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == 2 and "continuing without the lock" in messages[0] and "rebuilt next time" in messages[1]
    assert all(f"to {dest.parent} (" in m and "VIVIT_CACHE" in m for m in messages)


@pytest.mark.parametrize(
    "code, reason",
    [(errno.ENOSPC, "no space left on the device"), (errno.EDQUOT, "no space left on the device"),
     (errno.EACCES, "permission denied: the folder is read-only"), (errno.EROFS, "permission denied: the folder is read-only")],
)  # fmt: skip
def test_cache_write_error_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str) -> None:
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path / "c"))
    err = cache_write_error(OSError(code, os.strerror(code)), tmp_path / "c" / "downloads", "the download of X")
    assert isinstance(err, OSError) and err.errno == code
    assert str(err) == (
        f"cannot write the download of X to {tmp_path / 'c' / 'downloads'} ({reason}); free space there, or set "
        f"VIVIT_CACHE to a writable folder with room (the cache is now {tmp_path / 'c'})"
    )


def test_scratch_dir_falls_back_to_a_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(CacheWarning, match="downloading to a temporary folder instead"), cache.scratch_dir() as folder:
        assert folder.is_dir() and tmp_path not in folder.parents
    assert not folder.exists()


# ---------------------------------------------------------------- locks and stale temporary files
def test_lock_timeout_names_the_lock_file(tmp_path: Path) -> None:
    from filelock import FileLock

    dest = tmp_path / "m.safetensors"
    with FileLock(str(tmp_path / ".m.safetensors.lock")):
        start = time.monotonic()
        with pytest.raises(CacheError, match=r"timed out after 0 s waiting for another process to finish building m \(lock .*\.m\.safetensors\.lock\)"):
            with cache_lock(dest, "building m", timeout_s=0.3):
                pass
        assert time.monotonic() - start < 2
    with cache_lock(dest, "building m", timeout_s=0.3) as locked:
        assert locked


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = {
        "dead": f".m.safetensors.{dead_pid}.0123456789ab.part",
        "alive": f".m.safetensors.{os.getpid()}.0123456789ab.part",
        "old": f".n.safetensors.{os.getpid()}.ba9876543210.part",
        "other": "m.safetensors",
        "not_ours": ".m.safetensors.part",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    day_ago = time.time() - cache.STALE_AFTER_S - 60
    os.utime(tmp_path / names["old"], (day_ago, day_ago))
    removed = clean_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["old"]])
    # under the lock of m.safetensors, every temporary file of it is stale (no other writer)
    assert [p.name for p in clean_stale_temp_files(tmp_path, name="m.safetensors")] == [names["alive"]]
    assert sorted(os.listdir(tmp_path)) == sorted([names["other"], names["not_ours"]])


def test_a_killed_download_leaves_a_part_file_that_the_next_run_removes(hub_server: HubServer, tmp_path: Path) -> None:
    """kill -9 during a download: its .part file stays, and is removed by the next process."""
    url = hub_server.add_file("big/checkpoint", PAYLOAD, fault="slowloris")
    folder = Path(os.environ["VIVIT_CACHE"]) / "downloads"
    script = (
        "from vivit.weights.hub import download_url, DownloadLimits\n"
        f"download_url({url!r}, {str(folder / 'k.checkpoint')!r}, progress=False, limits=DownloadLimits(min_rate=0))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ)
    try:
        deadline = time.monotonic() + 60
        while not (folder.exists() and any(n.endswith(".part") for n in os.listdir(folder))):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait(timeout=30)
    leftovers = [n for n in os.listdir(folder) if n.endswith(".part")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".k.checkpoint.")
    with cache.scratch_dir() as scratch:
        assert scratch == folder
    assert os.listdir(folder) == []
