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
from hubserver import HubServer
from safetensors.numpy import load_file, save_file

from vivit import files
from vivit.files import clean_stale_temp_files
from vivit.weights import cache
from vivit.weights.cache import (
    CacheError,
    CacheWarning,
    cache_lock,
    cache_write_error,
    get_or_build,
    stale_reason,
)

PAYLOAD = bytes(range(256)) * 64

# One process of the concurrency test: register a Scenic entry served by the test server, say
# "ready" once imported, wait for "go" (so that all four start together), then load it.
_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
import vivit
from scenic_fixtures import load_forward_fixture, model_args_from_config
from vivit.models.registry import register_model
from vivit.models.vivit import MODEL_CLASSES

torch.set_num_threads(1)
f = load_forward_fixture("m2_factorized_encoder_tubelet_token")
variant, args = model_args_from_config(f["meta"]["config"])
register_model("rank_test", MODEL_CLASSES[variant], args, {"sources": ({"format": "scenic", "url": "{scenic}/k400/checkpoint"},)})
print("ready", flush=True)
sys.stdin.readline()
model = vivit.create_model("rank_test", pretrained=True)
with torch.no_grad():
    print(float((model(f["video"]) - f["logits"]).abs().max()))
"""
CHECKPOINT = (
    Path(__file__).parent / "data" / "scenic" / "checkpoints" / "m2_factorized_encoder_tubelet_token.checkpoint"
)


@pytest.mark.slow
def test_four_processes_make_one_download(hub_server: HubServer, tmp_path: Path) -> None:
    """Four ranks of a job start at once with a cold cache: one downloads and converts, the others wait."""
    hub_server.add_file(
        "k400/checkpoint", CHECKPOINT.read_bytes(), fault="slow_start"
    )  # 1 s: the others arrive meanwhile
    tests = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, tests],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for _ in range(4)
    ]
    try:
        assert [p.stdout.readline() for p in procs] == ["ready\n"] * 4  # type: ignore[union-attr]
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), results
    assert all(float(out) <= 1e-5 for out, _ in results)  # every rank got the Scenic fixture's logits
    assert hub_server.count("/files/k400/checkpoint") == 1
    cache_root = Path(os.environ["VIVIT_CACHE"])
    names = sorted(p.name for p in (cache_root / "converted").iterdir())
    # the stamp of a verified digest is written by a process that reads the file 2 s or more after its write
    assert [n for n in names if n != "rank_test.safetensors.verified"] == [
        ".rank_test.safetensors.lock",
        "rank_test.safetensors",
    ]
    assert os.listdir(cache_root / "downloads") == []


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
    for stale in (
        {**current, "converter_version": "1"},
        {k: v for k, v in current.items() if k != "config"},
        {**current, "source_url": "https://mirror/ckpt"},
    ):
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


def test_cache_write_failure_is_a_warning_and_the_result_is_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest, _calls, build, _, read = _store(tmp_path)
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path))

    def full_disk(data: np.ndarray, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.warns(
        CacheWarning,
        match=rf"cannot write the m to {dest.parent} \(no space left on the device\); "
        rf"free space there, or set VIVIT_CACHE .*the result is used now but will be rebuilt next time",
    ):
        assert get_or_build(dest, EXPECTED, read, build, full_disk, "m")[0] == 1
    assert sorted(os.listdir(dest.parent)) == [".m.safetensors.lock"]  # no partial file left


def test_unwritable_cache_folder_still_returns_the_result(tmp_path: Path) -> None:
    """The cache path runs through a file: no lock, no cache, but the model is still built."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    dest, _calls, build, write_with, read = _store(blocker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert get_or_build(dest, EXPECTED, read, build, write_with({}), "m")[0] == 1
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == 2 and "continuing without the lock" in messages[0] and "rebuilt next time" in messages[1]
    assert all(f"to {dest.parent} (" in m and "VIVIT_CACHE" in m for m in messages)


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EDQUOT, "no space left on the device"),
        (errno.EACCES, "permission denied: the folder is read-only"),
        (errno.EROFS, "permission denied: the folder is read-only"),
    ],
)
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
        with pytest.raises(
            CacheError,
            match=r"timed out after 0 s waiting for another process to finish building m \(lock .*\.m\.safetensors\.lock\)",
        ):
            with cache_lock(dest, "building m", timeout_s=0.3):
                pass
        assert time.monotonic() - start < 30  # only a lock wait that ignores its timeout fails this, not a busy machine
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
    day_ago = time.time() - files.STALE_AFTER_S - 60
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


# ---------------------------------------------------------------- the Scenic conversion cache, through create_model
@pytest.fixture
def scenic_entry(hub_server: HubServer):
    """A registered Scenic entry (the Model 2 fixture) served by the test server; removed afterwards."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from scenic_fixtures import load_forward_fixture, model_args_from_config

    from vivit.models.registry import _REGISTRY, register_model
    from vivit.models.vivit import MODEL_CLASSES

    f = load_forward_fixture("m2_factorized_encoder_tubelet_token")
    variant, args = model_args_from_config(f["meta"]["config"])
    added = []

    def add(name: str = "cache_test", **source: str) -> str:
        register_model(
            name,
            MODEL_CLASSES[variant],
            args,
            {"sources": ({"format": "scenic", "url": "{scenic}/m2/checkpoint", **source},)},
        )
        added.append(name)
        return name

    hub_server.add_file("m2/checkpoint", CHECKPOINT.read_bytes())
    yield add, f
    for name in added:
        del _REGISTRY[name]


def _converted(name: str) -> Path:
    return Path(os.environ["VIVIT_CACHE"]) / "converted" / f"{name}.safetensors"


def _rewrite_metadata(path: Path, **changes: str | None) -> None:
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    metadata = load_metadata(path)
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    save_torch(load_torch(str(path)), str(path), metadata=metadata)


def test_outdated_or_incomplete_cached_conversions_are_rebuilt(hub_server: HubServer, scenic_entry) -> None:
    import torch

    import vivit

    add, f = scenic_entry
    name = add()
    vivit.create_model(name, pretrained=True)
    assert hub_server.count("/files/m2/checkpoint") == 1
    meta = load_metadata(_converted(name))
    assert (
        meta["converter_version"] == "2"
        and meta["format_version"] == "2"
        and meta["source_url"].endswith("/files/m2/checkpoint")
    )
    vivit.create_model(name, pretrained=True)
    assert hub_server.count("/files/m2/checkpoint") == 1  # current: read from the cache
    downloads = 1
    for change in (
        {"converter_version": "1"},
        {"converter_version": None},
        {"config": None},
        {"config": '{"model_args": 5}'},
        {"format_version": "1"},
    ):
        _rewrite_metadata(_converted(name), **change)
        model = vivit.create_model(name, pretrained=True)
        downloads += 1
        assert hub_server.count("/files/m2/checkpoint") == downloads, change
        with torch.no_grad():
            assert (model(f["video"]) - f["logits"]).abs().max() <= 1e-5
        assert load_metadata(_converted(name))["converter_version"] == "2"


def test_cached_conversions_whose_data_changed_under_matching_metadata_are_rebuilt(
    hub_server: HubServer, scenic_entry
) -> None:
    """Found by attack 22b: blocks zeroed after the write (a crash before the data reached the disk, a
    disk error) kept the metadata intact, and the zeroed weights loaded without a word."""
    import torch

    import vivit

    add, f = scenic_entry
    name = add()
    vivit.create_model(name, pretrained=True)
    path = _converted(name)
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    for changed in (
        data[:start] + bytes(len(data) - start),  # every tensor zeroed
        data[:-4] + bytes(4),  # the last value's bytes zeroed
    ):
        path.write_bytes(changed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = vivit.create_model(name, pretrained=True)
        with torch.no_grad():
            assert (model(f["video"]) - f["logits"]).abs().max() <= 1e-5
        assert any("tensors changed after it was written" in str(w.message) for w in caught)
        assert path.read_bytes()[-(len(data) - start) :] == data[start:]  # rebuilt: the original tensors
    assert hub_server.count("/files/m2/checkpoint") == 3


def test_cache_write_failure_still_returns_the_model(hub_server: HubServer, scenic_entry) -> None:
    """The converted file cannot be written (its folder is taken by a file): a warning, and the model."""
    import torch

    import vivit

    add, f = scenic_entry
    name = add()
    converted = Path(os.environ["VIVIT_CACHE"]) / "converted"
    converted.parent.mkdir(parents=True, exist_ok=True)
    converted.write_bytes(b"not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = vivit.create_model(name, pretrained=True)
    with torch.no_grad():
        assert (model(f["video"]) - f["logits"]).abs().max() <= 1e-5
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert messages and all(str(converted) in m and "VIVIT_CACHE" in m for m in messages), messages
    assert "rebuilt next time" in messages[-1]


def test_pinned_sha256_is_checked(hub_server: HubServer, scenic_entry) -> None:
    import hashlib

    import vivit
    from vivit.weights.hub import WeightsDownloadError

    add, _ = scenic_entry
    name = add("pinned_wrong", sha256="0" * 64)
    with pytest.raises(WeightsDownloadError, match=r"but its SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        vivit.create_model(name, pretrained=True)
    assert not _converted(name).exists()
    name = add("pinned_right", sha256=hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest())
    vivit.create_model(name, pretrained=True)
    assert _converted(name).exists()


def test_a_download_cut_short_is_retried_and_a_bad_file_tries_the_next_source(
    hub_server: HubServer, scenic_entry
) -> None:
    """A truncated transfer is resumed; an HTML page in place of the file is a download failure (the
    next source is tried), never a ValueError that stops the fallback."""
    import vivit
    from vivit.weights.hub import WeightsDownloadError

    add, _ = scenic_entry
    hub_server.add_file("m2/checkpoint", CHECKPOINT.read_bytes(), fault="truncate", fail_times=1)
    vivit.create_model(add("resumed"), pretrained=True)
    assert hub_server.count("/files/m2/checkpoint") == 2
    hub_server.add_file("m2/checkpoint", CHECKPOINT.read_bytes()[:-100] + b"x" * 100, fault="html_comment")
    with pytest.raises(WeightsDownloadError, match=r"(?s)from any source.*returned an HTML/XML page"):
        vivit.create_model(add("html"), pretrained=True)
    import gzip

    hub_server.add_file("m2/checkpoint", gzip.compress(CHECKPOINT.read_bytes()))  # binary, but not msgpack
    with pytest.raises(
        WeightsDownloadError,
        match=r"(?s)from any source.*but it is not a valid checkpoint: not a Flax msgpack checkpoint",
    ):
        vivit.create_model(add("gzipped"), pretrained=True)


def test_a_conversion_recorded_by_an_older_converter_is_rebuilt_with_a_warning(
    hub_server: HubServer, scenic_entry
) -> None:
    """Issue 22.7: a cached conversion that says an older converter made it (here with a zeroed head, so that
    using it would show) loaded without a word; it is rebuilt, and a CacheWarning says why."""
    import torch
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    import vivit

    add, f = scenic_entry
    name = add()
    vivit.create_model(name, pretrained=True)
    path = _converted(name)
    metadata = load_metadata(path)
    tensors = load_torch(str(path))
    tensors["head.weight"] = torch.zeros_like(tensors["head.weight"])
    save_torch(tensors, str(path), metadata={**metadata, "converter": "vivit.weights.from_scenic 0.1.0"})
    with pytest.warns(
        CacheWarning,
        match=rf"rebuilding the cached converted weights of {name} at .*: its converter is "
        r"'vivit.weights.from_scenic 0.1.0', not 'vivit.weights.from_scenic v2'",
    ):
        model = vivit.create_model(name, pretrained=True)
    assert hub_server.count("/files/m2/checkpoint") == 2
    with torch.no_grad():
        assert (model(f["video"]) - f["logits"]).abs().max() <= 1e-5
    assert load_metadata(path)["converter"] == "vivit.weights.from_scenic v2"


def test_a_verified_cache_file_is_hashed_once_per_version(tmp_path, monkeypatch) -> None:
    """The digest check reads and hashes every byte (0.26 s for ViViT-B): once a file matched, a stamp of
    its size, times and inode stands for the hash until the file changes."""
    import time

    import torch
    from safetensors.torch import save_file

    from vivit.weights import cache

    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    recorded = cache.tensors_digest(tensors)
    hashed = []
    real = cache.tensors_digest
    monkeypatch.setattr(cache, "tensors_digest", lambda t: hashed.append(1) or real(t))

    assert cache.tensors_match_digest(path, tensors, recorded) and len(hashed) == 1
    assert not (tmp_path / "m.safetensors.verified").exists()  # written just now: not stamped (racy)
    later = time.time_ns() + 10_000_000_000
    monkeypatch.setattr(cache.time, "time_ns", lambda: later)
    assert cache.tensors_match_digest(path, tensors, recorded) and len(hashed) == 2
    assert (tmp_path / "m.safetensors.verified").exists()
    assert cache.tensors_match_digest(path, tensors, recorded) and len(hashed) == 2  # the stamp stands for it
    assert not cache.tensors_match_digest(path, tensors, "0" * 64) and len(hashed) == 3  # another digest: hashed

    zeroed = {"w": torch.zeros(3, 4)}
    save_file(zeroed, str(path))  # same size, same inode: the times differ
    assert not cache.tensors_match_digest(path, zeroed, recorded) and len(hashed) == 4
