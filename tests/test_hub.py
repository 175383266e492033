"""Tests for downloading and caching weights, against a local Hub stand-in (no internet)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
from pathlib import Path

import pytest
from hubserver import HubServer

from vivit.files import atomic_write
from vivit.weights import hub
from vivit.weights.cache import CacheError
from vivit.weights.hub import (
    WeightsDownloadError,
    cache_dir,
    download_url,
    hf_download,
    scenic_base_url,
    sha256_file,
)

REPO = "google/vivit-test"
PAYLOAD = os.urandom(3000) + b"end"


def _listing(folder: Path) -> list[str]:
    """Names in a folder (hidden temporary files included), or [] if it does not exist."""
    return sorted(os.listdir(folder)) if folder.exists() else []


# --- Environment-derived settings. ---


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VIVIT_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "vivit"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_dir() == tmp_path / "hf" / "vivit"
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_scenic_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIVIT_SCENIC_BASE_URL", raising=False)
    assert scenic_base_url() == "https://storage.googleapis.com/scenic-bucket/vivit"
    monkeypatch.setenv("VIVIT_SCENIC_BASE_URL", "http://127.0.0.1:9/mirror/")
    assert scenic_base_url() == "http://127.0.0.1:9/mirror"


@pytest.mark.parametrize(
    "value, expected", [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("", False)]
)
def test_offline_flag_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.is_offline() is expected


def test_fixture_points_everything_at_the_server(hub_server: HubServer, tmp_path: Path) -> None:
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    assert scenic_base_url() == f"{hub_server.url}/files"
    assert cache_dir() == tmp_path / "vivit_cache"


# --- Hugging Face Hub downloads. ---


def test_hf_download_then_served_from_cache(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True)
    hub_server.add_repo_file(REPO, "config.json", b'{"a": 1}')

    path = hf_download(REPO, "model.safetensors")
    assert path.read_bytes() == PAYLOAD
    assert Path(os.environ["HF_HOME"]) in path.parents
    assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in hub_server.requests
    after_first = hub_server.request_count
    assert after_first > 0

    # Same arguments again: served from the cache without touching the network.
    assert hf_download(REPO, "model.safetensors") == path
    assert hub_server.request_count == after_first

    # ...also in offline mode.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_download(REPO, "model.safetensors").read_bytes() == PAYLOAD
    assert hub_server.request_count == after_first

    # A non-LFS file (ETag = git blob sha1) in offline mode is not cached yet.
    with pytest.raises(WeightsDownloadError, match="offline"):
        hf_download(REPO, "config.json")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hf_download(REPO, "config.json").read_bytes() == b'{"a": 1}'


def test_hf_download_offline_cold_cache(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsDownloadError, match="offline") as info:
        hf_download(REPO, "model.safetensors")
    assert REPO in str(info.value) and "model.safetensors" in str(info.value)
    assert hub_server.request_count == 0, hub_server.requests


def test_hf_download_pull_request_revision(hub_server: HubServer) -> None:
    commit = hub_server.add_repo_file(REPO, "model.safetensors", b"from the PR", revision="refs/pr/3", lfs=True)
    hub_server.add_repo_file(REPO, "model.safetensors", b"from main", lfs=True)

    path = hf_download(REPO, "model.safetensors", revision="refs/pr/3")
    assert path.read_bytes() == b"from the PR"
    assert commit in str(path)
    assert ("HEAD", f"/{REPO}/resolve/refs%2Fpr%2F3/model.safetensors") in hub_server.requests
    assert hf_download(REPO, "model.safetensors").read_bytes() == b"from main"

    # The commit hash of the PR resolves to the same cached file without a request.
    count = hub_server.request_count
    assert hf_download(REPO, "model.safetensors", revision=commit) == path
    assert hub_server.request_count == count


def test_hf_download_by_commit_hash_cold(hub_server: HubServer) -> None:
    commit = hub_server.add_repo_file(REPO, "weights.bin", PAYLOAD)
    assert hf_download(REPO, "weights.bin", revision=commit).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "repo_id, filename, revision, message",
    [
        ("nobody/missing", "model.safetensors", None, "does not exist"),
        (REPO, "missing.safetensors", None, "no such file"),
        (REPO, "model.safetensors", "v9", "no such revision"),
    ],
)
def test_hf_download_not_found_errors(
    hub_server: HubServer, repo_id: str, filename: str, revision: str | None, message: str
) -> None:
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD)
    with pytest.raises(WeightsDownloadError, match=message) as info:
        hf_download(repo_id, filename, revision=revision)
    text = str(info.value)
    assert repo_id in text and filename in text and (revision or "main") in text


def test_hf_download_network_error_message(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reaching a dead endpoint for real makes huggingface_hub retry with back-off for ~20 s, so the
    # error it ends with is injected instead.
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def unreachable(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsDownloadError, match="could not be reached") as info:
        hf_download(REPO, "model.safetensors")
    assert "offline mode" not in str(info.value)


@pytest.mark.parametrize("fault, times", [("503", 1), ("500", 2), ("truncate", 1)])
def test_hf_download_retries_transient_errors(hub_server: HubServer, fault: str, times: int) -> None:
    """A Hub file behind a flaky CDN: HTTP 5xx and dropped connections are retried, as plain downloads
    are (before: one 503 failed the call at once)."""
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True, fault=fault, fail_times=times)
    assert hf_download(REPO, "model.safetensors").read_bytes() == PAYLOAD
    assert hub_server.count(f"/{REPO}/resolve/main/model.safetensors") == times + 1


def test_hf_download_gives_up_after_the_retries(hub_server: HubServer) -> None:
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True, fault="503")
    with pytest.raises(WeightsDownloadError, match=r"after 4 attempts.*503"):
        hf_download(REPO, "model.safetensors")
    assert hub_server.count(f"/{REPO}/resolve/main/model.safetensors") == 4


def test_hf_download_does_not_retry_a_missing_file(hub_server: HubServer) -> None:
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True, fault="404")
    with pytest.raises(WeightsDownloadError):
        hf_download(REPO, "model.safetensors")
    assert hub_server.count(f"/{REPO}/resolve/main/model.safetensors") == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOTDIR])
def test_hf_download_disk_errors_name_the_hugging_face_cache(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A full, read-only or misplaced Hugging Face cache is a disk problem, not a network one (before:
    "Check your network connection")."""
    import huggingface_hub

    folder = Path(os.environ["HF_HOME"]) / "hub"

    def disk_error(*args: object, **kwargs: object) -> str:
        raise OSError(code, os.strerror(code), str(folder / "models--google--vivit-test"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", disk_error)
    with pytest.raises(WeightsDownloadError) as info:
        hf_download(REPO, "model.safetensors")
    text = str(info.value)
    assert "network" not in text and "HF_HOME" in text and str(folder) in text, text


# --- Plain URL downloads (Scenic bucket). ---


def test_download_url_success(hub_server: HubServer) -> None:
    url = hub_server.add_file("kinetics_400/vivit_base/checkpoint", PAYLOAD)
    assert url == f"{scenic_base_url()}/kinetics_400/vivit_base/checkpoint"
    dest = cache_dir() / "scenic" / "checkpoint"
    digest = download_url(url, dest)
    assert digest == hashlib.sha256(PAYLOAD).hexdigest() == sha256_file(dest)
    assert dest.read_bytes() == PAYLOAD
    assert _listing(dest.parent) == ["checkpoint"]


def test_download_url_expected_sha256_ok(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    assert download_url(url, tmp_path / "ckpt", expected_sha256=expected.upper(), progress=False) == expected


def test_download_url_sha256_mismatch_leaves_nothing(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    dest = tmp_path / "dl" / "checkpoint"
    with pytest.raises(WeightsDownloadError, match="SHA-256") as info:
        download_url(url, dest, expected_sha256="0" * 64)
    assert url in str(info.value)
    assert _listing(dest.parent) == []


def test_download_url_failure_keeps_existing_file(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="truncate")
    dest = tmp_path / "checkpoint"
    dest.write_bytes(b"previous")
    with pytest.raises(WeightsDownloadError):
        download_url(url, dest)
    assert dest.read_bytes() == b"previous"
    assert _listing(tmp_path) == ["checkpoint"]


def test_download_url_truncated(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="truncate")
    dest = tmp_path / "dl" / "checkpoint"
    with pytest.raises(WeightsDownloadError, match=r"truncated|interrupted") as info:
        download_url(url, dest)
    assert url in str(info.value)
    assert _listing(dest.parent) == []


def test_download_url_html_page(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="html")
    dest = tmp_path / "dl" / "checkpoint"
    with pytest.raises(WeightsDownloadError, match="HTML") as info:
        download_url(url, dest)
    assert url in str(info.value)
    assert _listing(dest.parent) == []


def test_download_url_html_sniffed_without_content_type(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", b"  <!DOCTYPE html><html>Login</html>")
    with pytest.raises(WeightsDownloadError, match="HTML"):
        download_url(url, tmp_path / "checkpoint")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("status", ["404", "500"])
def test_download_url_http_errors(hub_server: HubServer, tmp_path: Path, status: str) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault=status)
    with pytest.raises(WeightsDownloadError, match=status) as info:
        download_url(url, tmp_path / "checkpoint")
    assert url in str(info.value)
    assert _listing(tmp_path) == []


def test_download_url_missing_file_is_404(hub_server: HubServer, tmp_path: Path) -> None:
    url = f"{scenic_base_url()}/no/such/checkpoint"
    with pytest.raises(WeightsDownloadError, match="404") as info:
        download_url(url, tmp_path / "checkpoint")
    assert url in str(info.value)


def test_download_url_connection_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/checkpoint"
    with pytest.raises(WeightsDownloadError) as info:
        download_url(url, tmp_path / "checkpoint")
    # No retries for an unreachable host, and advice for a non-Hub download (not HF_HUB_OFFLINE).
    assert str(info.value).startswith(f"Cannot download {url}: cannot reach 127.0.0.1:{port} (Connection refused). ")
    assert "VIVIT_SCENIC_BASE_URL" in str(info.value) and "HF_HUB_OFFLINE" not in str(info.value)
    assert _listing(tmp_path) == []


def test_download_url_unwritable_destination(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where a folder is needed
    with pytest.raises(CacheError, match=rf"cannot write the download of {url} to {blocker} .*VIVIT_CACHE"):
        download_url(url, blocker / "checkpoint")
    assert hub_server.request_count == 0


def test_download_url_offline_makes_no_request(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    with pytest.raises(WeightsDownloadError, match="offline") as info:
        download_url(url, tmp_path / "checkpoint")
    assert "not in the cache" in str(info.value)
    assert hub_server.request_count == 0
    assert _listing(tmp_path) == []


# --- Atomic writes and hashing. ---


def test_atomic_write_success_and_replace(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "model.safetensors"
    with atomic_write(dest) as tmp:
        assert tmp.parent == dest.parent and not dest.exists()
        tmp.write_bytes(b"one")
    assert dest.read_bytes() == b"one"
    with atomic_write(dest) as tmp:
        tmp.write_bytes(b"two")
    assert dest.read_bytes() == b"two"
    assert _listing(dest.parent) == ["model.safetensors"]


def test_atomic_write_error_removes_temp(tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    dest.write_bytes(b"old")
    with pytest.raises(KeyError), atomic_write(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyError("conversion failed")
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["model.safetensors"]


def test_atomic_write_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "x"):
        pass
    assert _listing(tmp_path) == []


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom((1 << 20) + 17)  # spans more than one read chunk
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# --- Misbehaving servers: every failure is a WeightsDownloadError, within the limits. ---

FAST = hub.DownloadLimits(deadline_s=20.0, retries=3, backoff_s=0.01, read_timeout_s=5.0)


def _limits(**changes: float) -> hub.DownloadLimits:
    import dataclasses

    return dataclasses.replace(FAST, **changes)


@pytest.mark.parametrize("fault", ["slowloris", "slow_headers"])
def test_download_deadline_stops_a_slow_server(hub_server: HubServer, tmp_path: Path, fault: str) -> None:
    """A server sending one byte every 50 ms (body or headers) is cut off at the total deadline."""
    import time

    url = hub_server.add_file("slow/checkpoint", PAYLOAD, fault=fault)
    start = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=r"did not finish within 1\.5 s \(VIVIT_DOWNLOAD_TIMEOUT\)") as info:
        download_url(url, tmp_path / "checkpoint", limits=_limits(deadline_s=1.5, min_rate=0), progress=False)
    elapsed = time.monotonic() - start
    # not early; the upper bound only catches a missing deadline (the whole body takes 150 s), not a busy machine
    assert 1.4 < elapsed < 30.0, elapsed
    assert url in str(info.value)
    assert _listing(tmp_path) == []


def test_download_minimum_rate(hub_server: HubServer, tmp_path: Path) -> None:
    import time

    url = hub_server.add_file("slow/checkpoint", PAYLOAD, fault="slowloris")
    start = time.monotonic()
    with pytest.raises(
        WeightsDownloadError,
        match=r"failed after 2 attempts \(too slow: \d+ bytes/s over the last \d\.\d s, below the minimum of 1,000",
    ):
        download_url(
            url, tmp_path / "checkpoint", limits=_limits(min_rate=1000, rate_window_s=0.5, retries=1), progress=False
        )
    assert time.monotonic() - start < 30.0  # without the rule: 150 s per attempt (a generous bound, not a timing)
    assert hub_server.count("/files/slow/checkpoint") == 2


def test_download_env_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIT_DOWNLOAD_TIMEOUT", "90")
    monkeypatch.setenv("VIVIT_DOWNLOAD_MIN_RATE", "0")
    monkeypatch.setenv("VIVIT_DOWNLOAD_RETRIES", "5")
    limits = hub.DownloadLimits.from_env()
    assert (limits.deadline_s, limits.min_rate, limits.retries) == (90.0, 0.0, 5)
    assert hub.DownloadLimits() == hub.DownloadLimits(7200.0, 32768.0, 60.0, 3, 1.0, 30.0, 64 << 30)
    monkeypatch.setenv("VIVIT_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="VIVIT_DOWNLOAD_TIMEOUT='soon': expected a non-negative number"):
        hub.DownloadLimits.from_env()


@pytest.mark.parametrize(
    "fault, message",
    [
        ("gzip", r"the server sent a 'gzip'-encoded body although an unencoded file was requested"),
        ("html", r"returned a text/html document: an HTML/XML page \(<!DOCTYPE html>"),
        ("html_comment", r"returned an HTML/XML page \(<!-- served by cache-7 --> <html><body>Access denied"),
        ("json_error", r"returned a JSON document \(Quota exceeded for this bucket\)"),
        ("404", r"failed with HTTP 404 Not Found; the server said: a JSON document \(not found\)"),
    ],
)
def test_download_error_bodies_are_recognised(hub_server: HubServer, tmp_path: Path, fault: str, message: str) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault=fault)
    with pytest.raises(WeightsDownloadError, match=message):
        download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False)
    assert hub_server.count("/files/a/checkpoint") == 1  # not retried: the server would answer the same
    assert _listing(tmp_path) == []


def test_download_short_content_length_caught_by_the_servers_md5(hub_server: HubServer, tmp_path: Path) -> None:
    """Content-Length 64 bytes short: http.client stops early; GCS's x-goog-hash MD5 exposes it."""
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="short_length")
    with pytest.raises(
        WeightsDownloadError, match=r"Downloaded .* but its MD5 [0-9a-f]{32} differs from the server's x-goog-hash"
    ):
        download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False)
    assert hub_server.count("/files/a/checkpoint") == 2  # downloaded again once, in case it was a glitch
    assert _listing(tmp_path) == []


def test_download_validate_hook(hub_server: HubServer, tmp_path: Path) -> None:
    """A format check of the finished file: a gzip body served as binary is refused before it is stored."""
    import gzip

    from vivit.weights.flax_msgpack import open_flax_checkpoint

    def is_flax(path: Path) -> None:
        open_flax_checkpoint(path).close()

    url = hub_server.add_file("a/checkpoint", gzip.compress(PAYLOAD))
    with pytest.raises(WeightsDownloadError, match=r"but it is not a valid checkpoint: not a Flax msgpack checkpoint"):
        download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False, validate=is_flax)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("fault, times", [("503", 2), ("429", 1), ("500", 3)])
def test_download_retries_transient_errors(hub_server: HubServer, tmp_path: Path, fault: str, times: int) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault=fault, fail_times=times)
    digest = download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False)
    assert digest == hashlib.sha256(PAYLOAD).hexdigest()
    assert hub_server.count("/files/a/checkpoint") == times + 1


def test_download_gives_up_after_the_retries(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="503")
    with pytest.raises(WeightsDownloadError, match=r"failed after 4 attempts \(HTTP 503 Service Unavailable"):
        download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False)
    assert hub_server.count("/files/a/checkpoint") == 4


def test_download_resumes_a_dropped_connection(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD, fault="truncate", fail_times=1)
    dest = tmp_path / "checkpoint"
    assert download_url(url, dest, limits=FAST, progress=False) == hashlib.sha256(PAYLOAD).hexdigest()
    assert dest.read_bytes() == PAYLOAD
    assert hub_server.count("/files/a/checkpoint") == 2


def test_download_refuses_when_the_disk_is_too_small(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    monkeypatch.setattr(hub, "free_space", lambda folder: 100)
    with pytest.raises(
        CacheError,
        match=rf"cannot write the download of {url} to {tmp_path} \(no space left on the device\); .*VIVIT_CACHE",
    ):
        download_url(url, tmp_path / "checkpoint", limits=FAST, progress=False)
    assert _listing(tmp_path) == []


def test_download_write_failure_names_the_folder(hub_server: HubServer, tmp_path: Path) -> None:
    """A real write failure (a file-size limit, as on a full disk) in a subprocess: folder and VIVIT_CACHE named."""
    import subprocess
    import sys

    url = hub_server.add_file("a/checkpoint", PAYLOAD * 4)
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from vivit.weights.hub import download_url\n"
        "from vivit.weights.cache import CacheError\n"
        "try:\n"
        f"    download_url({url!r}, {str(tmp_path / 'checkpoint')!r}, progress=False)\n"
        "except CacheError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ)
    assert out.stdout.startswith(f"cannot write the download of {url} to {tmp_path} (File too large); "), out
    assert "VIVIT_CACHE" in out.stdout
    assert _listing(tmp_path) == []


def test_hf_download_fails_fast_without_network(tmp_path: Path) -> None:
    """No network (here: nothing listens on the endpoint): one line within 5 s, no retry warnings."""
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "*"}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    # The failure itself is timed inside the process: starting Python and importing torch on a loaded
    # 2-core CI machine can take seconds of its own and is not what a user waits for after the call.
    script = (
        "import sys, time\n"
        "from vivit.weights.hub import hf_download, WeightsDownloadError\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    hf_download('google/vivit-b-16x2-kinetics400', 'model.safetensors')\n"
        "except WeightsDownloadError as err:\n"
        "    print(err)\n"
        "print(f'elapsed {time.monotonic() - start:.3f}', file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    elapsed = float(out.stderr.rsplit("elapsed ", 1)[1])
    assert out.stdout.splitlines()[0] == (
        f"Cannot reach the Hugging Face Hub at http://127.0.0.1:{port} (Connection refused), and 'model.safetensors' "
        "from the Hugging Face Hub repo 'google/vivit-b-16x2-kinetics400' (revision 'main') is not in the Hugging "
        "Face cache. Check your network connection and proxy (HF_ENDPOINT for a mirror); without network, set "
        "HF_HUB_OFFLINE=1 and pass the path of a local checkpoint."
    )
    assert len(out.stdout.splitlines()) == 1 and "Retry" not in out.stderr, out
    assert elapsed < 5.0, elapsed


def _closed_port() -> int:
    with socket.socket() as sock:  # free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Hub endpoint and Scenic bucket on a closed local port, empty caches, offline mode off."""
    port = _closed_port()
    for key, value in {
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "VIVIT_SCENIC_BASE_URL": f"http://127.0.0.1:{port}/scenic",
        "HF_HOME": str(tmp_path / "hf"),
        "VIVIT_CACHE": str(tmp_path / "cache"),
        "NO_PROXY": "*",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    return port


def test_cli_without_network_fails_fast_with_one_line(
    no_network: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issues 15 and 21.6: both sources of vivit_b_st_k400 unreachable -> one short line at once (no retry, no
    backoff wait) that names the hosts, where to save a file downloaded by hand and under which name, and the
    env var; no retry chatter (before: ~700 characters of both sources' errors, and no file name)."""
    import time

    from vivit import cli

    waits: list[float] = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)  # fast = no backoff (a count, not a busy machine's clock)
    port = no_network
    start = time.monotonic()
    code = cli.main(["predict", "--model", "vivit_b_st_k400", "-q"])
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and waits == [] and elapsed < 60.0, (waits, elapsed, err)
    assert err.splitlines() == [
        f"vivit: error: could not get weights for vivit_b_st_k400: no network (cannot reach 127.0.0.1:{port}); "
        f"download http://127.0.0.1:{port}/scenic/kinetics_400/vivit_base_16x2_unfactorized/checkpoint elsewhere "
        f"and save it as {tmp_path / 'cache' / 'downloads' / 'vivit_b_st_k400.checkpoint'} (VIVIT_CACHE sets the "
        "cache folder), or pass a local checkpoint (pretrained=PATH, vivit --weights PATH)"
    ]
    # half the old message (about 900 characters with this folder), most of it the URL and the path it must name
    assert len(err) - len(str(tmp_path)) < 380, len(err)


def test_scenic_only_entry_without_network(no_network: int, capsys: pytest.CaptureFixture[str]) -> None:
    from vivit import cli

    assert cli.main(["predict", "--model", "vivit_b_fe_k400", "-q"]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "{scenic}" not in line and "HF_HUB_OFFLINE" not in line
    assert f"download http://127.0.0.1:{no_network}/scenic/kinetics_400/vivit_base_16x2_fe/checkpoint elsewhere" in line
    assert "vivit_b_fe_k400.checkpoint (VIVIT_CACHE sets the cache folder)" in line


def test_offline_mode_names_the_file_to_copy_and_then_uses_it(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21.6: offline, a Scenic entry's error says where to save the original checkpoint and under which
    name; a file saved there is converted and cached without any request."""
    import sys as _sys

    import torch

    import vivit
    from vivit.models.registry import _REGISTRY, register_model
    from vivit.models.vivit import MODEL_CLASSES

    _sys.path.insert(0, str(Path(__file__).parent))
    from scenic_fixtures import DATA, load_forward_fixture, model_args_from_config

    f = load_forward_fixture("m1_spacetime_tubelet_token")
    variant, args = model_args_from_config(f["meta"]["config"])
    register_model(
        "offline_test", MODEL_CLASSES[variant], args, {"sources": ({"format": "scenic", "url": "{scenic}/m1"},)}
    )
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(WeightsDownloadError) as info:
            vivit.create_model("offline_test", pretrained=True)
        target = cache_dir() / "downloads" / "offline_test.checkpoint"
        assert str(info.value) == (
            f"could not get weights for offline_test: offline mode is on (HF_HUB_OFFLINE); download "
            f"{hub_server.url}/files/m1 elsewhere and save it as {target} (VIVIT_CACHE sets the cache folder), or "
            "pass a local checkpoint (pretrained=PATH, vivit --weights PATH)"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((DATA / "checkpoints" / "m1_spacetime_tubelet_token.checkpoint").read_bytes())
        model = vivit.create_model("offline_test", pretrained=True)
        with torch.no_grad():
            assert (model(f["video"]) - f["logits"]).abs().max() <= 1e-5
        assert hub_server.request_count == 0 and not target.exists()  # converted, cached, and removed
        assert (cache_dir() / "converted" / "offline_test.safetensors").is_file()
    finally:
        del _REGISTRY["offline_test"]


def test_short_raw_writes_are_completed_or_refused() -> None:
    """An unbuffered write may write less than asked (a file-size limit or a disk filling up mid-chunk)
    and say so only in its return value: before, the rest of the chunk was lost and the download 'passed'."""
    from vivit.weights.hub import _write_all

    class Dribble(io.RawIOBase):
        def __init__(self, room: int) -> None:
            self.data, self.room = bytearray(), room

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            n = min(len(b), 7, self.room - len(self.data))
            self.data += bytes(b[:n])
            return n

    sink = Dribble(room=10**6)
    _write_all(sink, PAYLOAD)  # type: ignore[arg-type]
    assert bytes(sink.data) == PAYLOAD
    with pytest.raises(OSError, match="No space left on device"):
        _write_all(Dribble(room=100), PAYLOAD)  # type: ignore[arg-type]


# --- Issue 22.4: the deadline and the minimum rate hold when no byte arrives (plain and Hub downloads). ---


def _fetch(hub_server: HubServer, tmp_path: Path, where: str, fault: str, **limits: float) -> None:
    """One download of a faulty file, plain (the Scenic bucket) or from a Hub repo."""
    if where == "plain":
        url = hub_server.add_file("a/checkpoint", PAYLOAD, fault=fault)
        download_url(url, tmp_path / "checkpoint", progress=False, limits=_limits(**limits) if limits else None)
    else:
        hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True, fault=fault)
        hf_download(REPO, "model.safetensors", limits=_limits(**limits) if limits else None)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["plain", "hub"])
@pytest.mark.parametrize("fault", ["stall", "drip_body", "drip_headers", "slowloris"])
def test_the_deadline_holds_whatever_the_server_does(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, fault: str
) -> None:
    """A server that hangs mid-body for 600 s, sends a byte every 5 s in the body or the headers, or serves
    20 bytes/s: VIVIT_DOWNLOAD_TIMEOUT=2 ends the download (before: still being read after 100-120 s, and a
    Hub download had no deadline at all). The bound is generous: only a real hang fails it."""
    import time

    monkeypatch.setenv("VIVIT_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("VIVIT_DOWNLOAD_MIN_RATE", "0")
    start = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=r"did not finish within 2 s \(VIVIT_DOWNLOAD_TIMEOUT\)"):
        _fetch(hub_server, tmp_path, where, fault)
    assert time.monotonic() - start < 30
    if where == "plain":
        assert _listing(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("where", ["plain", "hub"])
def test_the_minimum_rate_holds_when_no_byte_arrives(hub_server: HubServer, tmp_path: Path, where: str) -> None:
    """Half the file, then silence: the rate rule drops the connection (and the retry) although no read
    returns; before, only a socket timeout could, and each retry restarted the window."""
    import time

    start = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=r"failed after 2 attempts \(too slow: \d+ bytes/s over the last"):
        _fetch(hub_server, tmp_path, where, "stall", min_rate=1000, rate_window_s=1.0, retries=1, read_timeout_s=600)
    assert time.monotonic() - start < 30
    path = "/files/a/checkpoint" if where == "plain" else f"/{REPO}/resolve/main/model.safetensors"
    assert hub_server.count(path) == 2


def test_download_limits_from_the_environment_reach_hub_downloads(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVIT_DOWNLOAD_RETRIES", "1")
    hub_server.add_repo_file(REPO, "model.safetensors", PAYLOAD, lfs=True, fault="503")
    with pytest.raises(WeightsDownloadError, match=r"after 2 attempts.*503"):
        hf_download(REPO, "model.safetensors")
    assert hub_server.count(f"/{REPO}/resolve/main/model.safetensors") == 2
