"""Downloading and caching of pretrained weights.

Two sources are supported:

* plain URLs (the Scenic checkpoints on Google Cloud Storage), fetched with the standard library
  by :func:`download_url` into vivit's own cache (:func:`cache_dir`);
* Hugging Face Hub repositories, fetched by :func:`hf_download` through ``huggingface_hub`` and
  stored in the usual Hugging Face cache.

Environment variables, all read when a function is called (not at import):

* ``VIVIT_CACHE``: vivit's cache folder (default ``$HF_HOME/vivit``, else ``~/.cache/vivit``);
* ``VIVIT_SCENIC_BASE_URL``: where the Scenic checkpoints live (a mirror, or a test server);
* ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) = ``1``/``true``/``yes``/``on``: no network;
  cached files are still used;
* ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``: Hub mirror and cache location. huggingface_hub
  reads these once, when it is imported; :func:`hf_download` passes them explicitly so that a
  change made later (in a notebook, or by a test) is honored as well.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "WeightsDownloadError",
    "atomic_write",
    "cache_dir",
    "download_url",
    "hf_download",
    "is_offline",
    "scenic_base_url",
    "sha256_file",
]

_DEFAULT_SCENIC_BASE_URL = "https://storage.googleapis.com/scenic-bucket/vivit"
_TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
_CHUNK_SIZE = 1 << 20
# Seconds without any data before a connection or read is abandoned.
_TIMEOUT_S = 60.0
_HTML_PREFIXES = (b"<!doctype", b"<html", b"<head", b"<body")


class WeightsDownloadError(RuntimeError):
    """Pretrained weights could not be downloaded (network, server, offline mode, bad content)."""


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


def scenic_base_url() -> str:
    """Return the base URL of the Scenic ViViT checkpoints, without a trailing slash.

    ``$VIVIT_SCENIC_BASE_URL`` if set, else Google's public Scenic bucket.
    """
    return (os.environ.get("VIVIT_SCENIC_BASE_URL") or _DEFAULT_SCENIC_BASE_URL).rstrip("/")


def is_offline() -> bool:
    """Return whether offline mode is on (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``).

    The environment is read at each call, unlike huggingface_hub which reads it at import.
    """
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE_VALUES
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file, read in chunks.

    Args:
        path: The file to hash.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_path(dest: Path) -> Path:
    """Return an unused hidden temporary path next to ``dest``.

    Same folder, so that the final rename is atomic; random suffix, so that concurrent writers
    never share a file.

    Args:
        dest: The final destination.
    """
    return dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file if it exists, never masking the error being handled."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_write(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: readers see either no file or the complete one.

    Yields a temporary path in the destination's folder; write the file there. When the block
    exits normally the temporary file is renamed onto ``dest`` (replacing any existing file);
    when it raises, the temporary file is removed and ``dest`` is left untouched.

    Args:
        dest: The final path. Its parent folders are created.

    Example:
        >>> with atomic_write(cache_dir() / "model.safetensors") as tmp:
        ...     safetensors.torch.save_file(state_dict, tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_write: nothing was written to {tmp} for {dest}")
        os.replace(tmp, dest)
    finally:
        _remove_quietly(tmp)


def _offline_error(what: str, where: str) -> WeightsDownloadError:
    """Build the error raised when a download is needed but offline mode is on.

    Args:
        what: What could not be fetched (a URL, or repo and file).
        where: Where the file was expected in the cache.
    """
    return WeightsDownloadError(
        f"Cannot download {what}: offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set) "
        f"and the file is not in the cache ({where}). Unset HF_HUB_OFFLINE to allow downloads, "
        "download the file on a machine with network access and copy it into the cache, or pass "
        "the path of a local checkpoint instead."
    )


def _looks_like_html(content_type: str, head: bytes) -> bool:
    """Tell whether a response is a web page rather than a binary file.

    Args:
        content_type: The Content-Type header ('' if absent).
        head: The first bytes of the body.
    """
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    return head.lstrip()[:16].lower().startswith(_HTML_PREFIXES)


def _stream_to(response: Any, out: BinaryIO, url: str, total: int | None, progress: bool) -> str:
    """Copy an HTTP response body into ``out``, hashing it and showing progress.

    Args:
        response: The open ``urllib`` response.
        out: The temporary file.
        url: The URL, for messages.
        total: The announced Content-Length, if any.
        progress: Whether to show a progress bar.

    Returns:
        The hex SHA-256 of the body.
    """
    from huggingface_hub.utils import tqdm  # honors HF_HUB_DISABLE_PROGRESS_BARS

    digest = hashlib.sha256()
    received = 0
    name = url.rsplit("/", 1)[-1] or url
    content_type = response.headers.get("Content-Type", "")
    with tqdm(  # type: ignore[no-untyped-call]
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
        chunk = response.read(_CHUNK_SIZE)
        if _looks_like_html(content_type, chunk[:64]):
            raise WeightsDownloadError(
                f"Downloading {url} returned an HTML page (Content-Type {content_type or 'unset'}) "
                "instead of the binary checkpoint: a proxy, captive portal, login or error page "
                "answered. Check the URL and your network, or download the file by hand and pass "
                "its local path."
            )
        while chunk:
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
            chunk = response.read(_CHUNK_SIZE)
    if total is not None and received != total:
        raise WeightsDownloadError(
            f"Download of {url} was truncated: received {received} of {total} bytes. "
            "The connection dropped; retry, or check your network."
        )
    return digest.hexdigest()


def _open_url(url: str) -> Any:
    """Open a URL for streaming, turning failures into :class:`WeightsDownloadError`.

    Args:
        url: The URL to GET.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "vivit", "Accept-Encoding": "identity"})
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()  # an HTTPError holds the open connection; release it before raising
        raise WeightsDownloadError(
            f"Downloading {url} failed with HTTP {err.code} {err.reason}. "
            + (
                "The file does not exist at that address: check the URL (or VIVIT_SCENIC_BASE_URL)."
                if err.code in (403, 404, 410)
                else "The server had a problem: retry later, or download the file by hand and pass "
                "its local path."
            )
        ) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsDownloadError(
            f"Could not connect to download {url} ({reason}). Check your network connection and "
            "proxy settings; without network, set HF_HUB_OFFLINE=1 and pass the path of a local "
            "checkpoint."
        ) from err


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Download a URL to a file, atomically, verifying its size and optionally its hash.

    The body is streamed to a hidden ``.<name>.<random>.part`` file next to ``dest`` while its
    SHA-256 is computed, then renamed onto ``dest``. On any failure the partial file is removed
    and ``dest`` is left as it was. The cache is not consulted: call this only when ``dest`` is
    missing.

    Args:
        url: The http(s) URL to fetch.
        dest: The destination file. Its parent folders are created.
        expected_sha256: If given, the hex SHA-256 the file must have.
        progress: Whether to show a progress bar (also silenced by
            ``HF_HUB_DISABLE_PROGRESS_BARS=1``).

    Returns:
        The hex SHA-256 of the downloaded file.

    Raises:
        WeightsDownloadError: In offline mode (before any request), on connection errors, HTTP
            errors, an HTML page instead of the file, a truncated body, or a hash mismatch.
    """
    dest = Path(dest)
    if is_offline():
        raise _offline_error(url, str(dest))
    tmp = _temp_path(dest)
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(tmp, "wb")  # noqa: SIM115 - closed by the with statement below
        except OSError as err:
            raise WeightsDownloadError(
                f"Cannot download {url}: cannot write to {dest.parent} ({err}). Check permissions "
                "and free space, or point VIVIT_CACHE at a writable folder."
            ) from err
        with out, _open_url(url) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            try:
                digest = _stream_to(response, out, url, total, progress)
            except (http.client.HTTPException, OSError) as err:
                # http.client reports a body cut short as IncompleteRead; sockets as OSError.
                raise WeightsDownloadError(
                    f"Download of {url} was interrupted ({type(err).__name__}: {err}). "
                    "The file is incomplete; retry, or check your network."
                ) from err
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise WeightsDownloadError(
                f"Downloaded {url} but its SHA-256 is {digest}, expected {expected_sha256}. The file "
                "is corrupt or was changed on the server; retry, or report the mismatch."
            )
        os.replace(tmp, dest)
    finally:
        _remove_quietly(tmp)
    return digest


def _hf_cache_dir() -> str | None:
    """Return the Hub cache folder from the current environment.

    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``; ``None`` lets huggingface_hub apply its own
    defaults (which also cover ``XDG_CACHE_HOME`` and legacy variables).
    """
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hf_offline() -> bool:
    """Return whether offline mode is on, by the environment now or huggingface_hub's import-time view."""
    from huggingface_hub import constants

    return is_offline() or bool(constants.HF_HUB_OFFLINE)


def _describe_hf(repo_id: str, filename: str, revision: str | None) -> str:
    """Name a Hub file for messages."""
    return f"'{filename}' from the Hugging Face Hub repo '{repo_id}' (revision '{revision or 'main'}')"


def _summary(err: Exception) -> str:
    """Condense an exception message to its first two lines (Hub errors run over many lines)."""
    lines = [line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()]
    return ". ".join(lines[:2]) or type(err).__name__


def _hf_advice(err: Exception) -> str:
    """Say what to do about a huggingface_hub exception (other than offline mode).

    Args:
        err: The exception raised by ``hf_hub_download``.
    """
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # First match wins, and order matters: these classes inherit from one another.
    advice: list[tuple[type[BaseException], str]] = [
        (
            LocalEntryNotFoundError,
            "The Hub could not be reached (network error, proxy or firewall, or the Hub is "
            "down) and the file is not in the local cache. Check your connection (and "
            "HF_ENDPOINT if you use a mirror), or pass the path of a local checkpoint.",
        ),
        (
            GatedRepoError,
            "The repository is gated: accept its terms on the Hub and log in "
            "(`hf auth login`, or set HF_TOKEN).",
        ),
        (
            RepositoryNotFoundError,
            "The repository does not exist or is private: check the repo id, and log in if it is private.",
        ),
        (
            RevisionNotFoundError,
            "The repository has no such revision (branch, tag, commit or 'refs/pr/N'): check the revision.",
        ),
        (
            EntryNotFoundError,
            "The repository has no such file at that revision: check the file name and revision.",
        ),
        (
            HfHubHTTPError,
            "The Hub answered with an error: retry later, or pass the path of a local checkpoint.",
        ),
        (ValueError, "Check the repo id, file name and revision."),
    ]
    for kind, text in advice:
        if isinstance(err, kind):
            return text
    return "Check your network connection (and HF_ENDPOINT), or pass the path of a local checkpoint."


def _convert_hf_error(
    err: Exception, repo_id: str, filename: str, revision: str | None
) -> WeightsDownloadError:
    """Translate a huggingface_hub exception into a :class:`WeightsDownloadError`.

    Args:
        err: The exception raised by ``hf_hub_download``.
        repo_id: The repository.
        filename: The file in the repository.
        revision: The requested revision.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    what = _describe_hf(repo_id, filename, revision)
    if isinstance(err, LocalEntryNotFoundError) and _hf_offline():
        return _offline_error(what, f"Hugging Face cache {_hf_cache_dir() or constants.HF_HUB_CACHE}")
    return WeightsDownloadError(
        f"Could not download {what}: {type(err).__name__}: {_summary(err)}. {_hf_advice(err)}"
    )


def hf_download(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """Download one file from a Hugging Face Hub repository into the Hugging Face cache.

    A file already cached for this revision is returned without any network request: released
    weights never change, and this keeps loading fast and working without network. Otherwise
    ``huggingface_hub.hf_hub_download`` fetches it (with its progress bar, resumption and cache
    layout). ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read from the
    environment at call time.

    Args:
        repo_id: The repository, e.g. ``"google/vivit-b-16x2-kinetics400"``.
        filename: The file inside the repository, e.g. ``"model.safetensors"``.
        revision: A branch, tag, commit hash or pull-request ref such as ``"refs/pr/3"``;
            default ``"main"``.

    Returns:
        The local path of the file (inside the cache's ``snapshots`` folder).

    Raises:
        WeightsDownloadError: If the file is not cached and cannot be downloaded (offline mode,
            unknown repo/revision/file, network or server error).
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = _hf_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    try:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache,
            endpoint=endpoint,
            local_files_only=_hf_offline(),
        )
    except Exception as err:  # huggingface_hub and its HTTP client raise many unrelated types
        raise _convert_hf_error(err, repo_id, filename, revision) from err
    return Path(path)
