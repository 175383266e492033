"""Tests for downloading and caching weights, against a local Hub stand-in (no internet)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from hubserver import HubServer, hub_server  # noqa: F401 - the fixture is used by name

from vivit.weights import hub
from vivit.weights.hub import (
    WeightsDownloadError,
    atomic_write,
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
    assert hub_server.request_count == 0


def test_hf_download_pull_request_revision(hub_server: HubServer) -> None:
    commit = hub_server.add_repo_file(
        REPO, "model.safetensors", b"from the PR", revision="refs/pr/3", lfs=True
    )
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
    with pytest.raises(WeightsDownloadError, match="Could not connect") as info:
        download_url(url, tmp_path / "checkpoint")
    assert url in str(info.value)
    assert _listing(tmp_path) == []


def test_download_url_unwritable_destination(hub_server: HubServer, tmp_path: Path) -> None:
    url = hub_server.add_file("a/checkpoint", PAYLOAD)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where a folder is needed
    with pytest.raises(WeightsDownloadError, match="cannot write"):
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
