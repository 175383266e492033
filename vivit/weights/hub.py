"""Downloading pretrained weights: plain URLs and Hugging Face Hub files.

Two sources are supported:

* plain URLs (the Scenic checkpoints on Google Cloud Storage), fetched with the standard library
  by :func:`download_url` into vivit's own cache (:func:`~vivit.weights.cache.cache_dir`);
* Hugging Face Hub repositories, fetched by :func:`hf_download` through ``huggingface_hub`` and
  stored in the usual Hugging Face cache.

A plain download is bounded (:class:`DownloadLimits`): a total deadline, a minimum transfer
rate, retries with exponential backoff on connection errors, dropped or stalled connections and
HTTP 5xx/429 (resuming with a ``Range`` request when the server allows), and checks of what
arrives: the status, ``Content-Length``, ``Content-Encoding`` (only ``identity`` is accepted),
error pages recognised by their content (HTML/XML behind whitespace or a comment, JSON error
bodies, plain text), Google Cloud Storage's ``x-goog-hash`` MD5, a pinned SHA-256, and an
optional format check of the finished file. Every failure is a :class:`WeightsDownloadError`, so
that the next source of an entry is tried. An unreachable host (no network: DNS failure,
connection refused, no route) fails at once, without retries.

Environment variables, all read when a function is called (not at import):

* ``VIVIT_CACHE``: vivit's cache folder (default ``$HF_HOME/vivit``, else ``~/.cache/vivit``);
* ``VIVIT_SCENIC_BASE_URL``: where the Scenic checkpoints live (a mirror, or a test server);
* ``VIVIT_DOWNLOAD_TIMEOUT`` (seconds, default 7200), ``VIVIT_DOWNLOAD_MIN_RATE`` (bytes per
  second over the last 60 s, default 32768; 0 disables), ``VIVIT_DOWNLOAD_RETRIES`` (default 3):
  see :class:`DownloadLimits`;
* ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) = ``1``/``true``/``yes``/``on``: no network;
  cached files are still used;
* ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``: Hub mirror and cache location. huggingface_hub
  reads these once, when it is imported; :func:`hf_download` passes them explicitly so that a
  change made later (in a notebook, or by a test) is honored as well.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ..files import free_space, remove_quietly, temp_path
from .cache import cache_dir, cache_write_error

__all__ = [
    "DownloadLimits",
    "WeightsDownloadError",
    "cache_dir",
    "download_url",
    "hf_download",
    "is_offline",
    "scenic_base_url",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_DEFAULT_SCENIC_BASE_URL = "https://storage.googleapis.com/scenic-bucket/vivit"
_TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
_CHUNK_SIZE = 1 << 20
_SNIFF_BYTES = 512
# Connection errors that mean "this host cannot be reached from here": retrying will not help.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
)
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_ERROR_CONTENT_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "application/json",
    "application/problem+json",
    "text/xml",
    "application/xml",
)


class WeightsDownloadError(RuntimeError):
    """Pretrained weights could not be downloaded (network, server, offline mode, bad content)."""


@dataclass(frozen=True)
class DownloadLimits:
    """How long and how slowly a plain download may run, and how often it is retried.

    Attributes:
        deadline_s: Total seconds for the whole download, retries and waits included
            (``VIVIT_DOWNLOAD_TIMEOUT``, default 7200: a 2.5 GB Scenic train state at 350 KB/s).
        min_rate: Bytes per second that must arrive, averaged over `rate_window_s`; a slower
            connection is dropped and retried (``VIVIT_DOWNLOAD_MIN_RATE``, default 32768; 0 off).
        rate_window_s: The averaging window of `min_rate`, in seconds (default 60).
        retries: Further attempts after a transient failure (``VIVIT_DOWNLOAD_RETRIES``, default 3).
        backoff_s: Wait before the first retry, doubled for each further one (1, 2, 4 s), or the
            server's ``Retry-After`` if it asks for longer (at most 60 s); always within the deadline.
        read_timeout_s: Seconds without any byte (connecting, or while receiving) before the
            connection is dropped and retried (default 30).
        max_bytes: Largest file accepted (default 64 GiB).
    """

    deadline_s: float = 7200.0
    min_rate: float = 32768.0
    rate_window_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    read_timeout_s: float = 30.0
    max_bytes: int = 64 << 30

    @classmethod
    def from_env(cls, **overrides: Any) -> DownloadLimits:
        """The defaults, with ``VIVIT_DOWNLOAD_TIMEOUT``/``_MIN_RATE``/``_RETRIES`` and `overrides` applied.

        Raises:
            ValueError: If an environment variable is not a non-negative number.
        """
        values: dict[str, Any] = {}
        for env, field, kind in (
            ("VIVIT_DOWNLOAD_TIMEOUT", "deadline_s", float),
            ("VIVIT_DOWNLOAD_MIN_RATE", "min_rate", float),
            ("VIVIT_DOWNLOAD_RETRIES", "retries", int),
        ):
            text = os.environ.get(env, "").strip()
            if not text:
                continue
            try:
                value = kind(text)
            except ValueError:
                value = -1
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{env}={text!r}: expected a non-negative number")
            values[field] = value
        return replace(cls(), **values, **overrides)


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
        os.environ.get(name, "").strip().lower() in _TRUE_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
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


# ---------------------------------------------------------------- recognising what arrived
def _printable(text: str, limit: int = 120) -> str:
    """Text from a server for a one-line message: whitespace collapsed, control characters escaped."""
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_error_text(text: str) -> str:
    """The message of a JSON error body (``error``/``message``/``detail``), else the text itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    for _ in range(3):  # {"error": {"message": ...}} (Google APIs) or {"error": "..."}
        if not isinstance(body, dict):
            break
        found = next((body[k] for k in ("error", "message", "detail", "Message", "Error") if k in body), None)
        if found is None:
            break
        body = found
    return body if isinstance(body, str) else text


def _text_body(head: bytes) -> str | None:
    """Describe a body that is text (an error page), or None for binary data.

    A checkpoint is binary: a safetensors file has NUL bytes within its first 8 (the header
    length), a Flax msgpack file starts with a map byte (0x80-0x8f, 0xde, 0xdf) that is not valid
    UTF-8 text. So a first block that decodes as UTF-8 without NUL or other control characters is
    a page of some kind, whatever it starts with (whitespace, a BOM, an HTML comment, JSON).

    Args:
        head: The first bytes of the body (up to `_SNIFF_BYTES`).
    """
    if not head or b"\0" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut at the end of the block
            return None
        text = head[: err.start].decode("utf-8")
    if any(not (c.isprintable() or c in "\t\r\n") for c in text.lstrip("\ufeff")):
        return None
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        return f"an HTML/XML page ({_printable(stripped)})"
    if stripped.startswith(("{", "[")):
        return f"a JSON document ({_printable(_json_error_text(stripped))})"
    return f"a text page ({_printable(stripped)})"


def _error_body(response: Any) -> str:
    """A short description of an HTTP error response's body ('' if empty or unreadable)."""
    try:
        head = response.read(_SNIFF_BYTES)
    except Exception:
        return ""
    text = _text_body(head) if head else None
    return f"; the server said: {text}" if text else ""


# ---------------------------------------------------------------- connections with a deadline
class _Watchdog:
    """Closes the current connection's socket when the deadline passes, unblocking any read.

    Socket timeouts bound one read; a server that sends one byte every few seconds (in the
    headers or the body) never trips them. This timer bounds the whole download.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def cancel(self) -> None:
        self._timer.cancel()


_WATCHDOG = threading.local()


def _watched(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            watchdog = getattr(_WATCHDOG, "current", None)
            if watchdog is not None:
                watchdog.watch(self.sock)

    return Watched


_WatchedHTTP = _watched(http.client.HTTPConnection)
_WatchedHTTPS = _watched(http.client.HTTPSConnection)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_WatchedHTTP, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_WatchedHTTPS, req, context=getattr(self, "_context", None))


def _opener() -> urllib.request.OpenerDirector:
    # build_opener keeps urllib's proxy (HTTP(S)_PROXY, NO_PROXY) and redirect handling.
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


class _Retry(Exception):
    """A transient failure: the attempt may be repeated (after `wait` seconds, if given)."""

    def __init__(self, reason: str, wait: float | None = None, restart: bool = False) -> None:
        super().__init__(reason)
        self.wait = wait
        self.restart = restart  # the partial file is useless: start again from byte 0


def _unreachable(reason: BaseException) -> bool:
    """Whether a connection error means the host cannot be reached at all (no network, nothing listening)."""
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _unreachable_message(url: str, reason: BaseException, advice: str) -> str:
    host = urlsplit(url).netloc or url
    why = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason) or type(reason).__name__
    return f"Cannot download {url}: cannot reach {host} ({why}). {advice}"


def _scenic_advice() -> str:
    return (
        "Check your network connection and proxy settings. Without network: copy a converted file into "
        f"{cache_dir() / 'converted'} (set VIVIT_CACHE to use another cache folder), or set "
        "VIVIT_SCENIC_BASE_URL to a mirror you can reach, or pass the path of a local checkpoint."
    )


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


@dataclass
class _Progress:
    """What has arrived so far (kept across attempts, so that a retry can resume)."""

    received: int = 0
    resumable: bool = False
    total: int | None = None
    server_md5: str | None = None

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def restart(self, out: BinaryIO) -> None:
        out.seek(0)
        out.truncate()
        self.received, self.total, self.server_md5 = 0, None, None
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)


def _goog_md5(value: str | None) -> str | None:
    """The hex MD5 in a Google Cloud Storage ``x-goog-hash`` header (``crc32c=...,md5=<base64>``)."""
    for part in (value or "").split(","):
        key, _, encoded = part.strip().partition("=")
        if key == "md5":
            try:
                return base64.b64decode(encoded, validate=True).hex()
            except ValueError:
                return None
    return None


class _Transfer:
    """One download: attempts, resumption, rate and deadline checks, writing."""

    def __init__(self, url: str, out: BinaryIO, folder: Path, limits: DownloadLimits, progress: bool) -> None:
        self.url, self.out, self.folder, self.limits, self.show = url, out, folder, limits, progress
        self.state = _Progress()
        self.start = time.monotonic()
        self.deadline = self.start + limits.deadline_s
        self.opener = _opener()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def deadline_error(self) -> WeightsDownloadError:
        got = f"{self.state.received:,}" + (f" of {self.state.total:,}" if self.state.total else "")
        return WeightsDownloadError(
            f"Download of {self.url} did not finish within {self.limits.deadline_s:g} s (VIVIT_DOWNLOAD_TIMEOUT); "
            f"{got} bytes arrived. The server or the network is too slow: retry later, raise VIVIT_DOWNLOAD_TIMEOUT, "
            "or download the file by hand and pass its local path."
        )

    def run(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self.attempt()
                return
            except _Retry as err:
                if err.restart:
                    self.state.restart(self.out)
                if self.limits.retries < attempt:
                    raise WeightsDownloadError(
                        f"Download of {self.url} failed after {attempt} attempt{'s' if attempt > 1 else ''} ({err}). "
                        "Retry later, check your network, or download the file by hand and pass its local path."
                    ) from None
                wait = self.limits.backoff_s * 2 ** (attempt - 1)
                wait = min(max(wait, err.wait or 0.0), 60.0)
                if wait >= self.remaining():
                    raise self.deadline_error() from None
                logger.warning(
                    "download of %s: %s; retrying in %.1f s (%d/%d)", self.url, err, wait, attempt, self.limits.retries
                )
                time.sleep(wait)

    def attempt(self) -> None:
        if self.remaining() <= 0:
            raise self.deadline_error()
        headers = {"User-Agent": "vivit", "Accept-Encoding": "identity"}
        if self.state.received and self.state.resumable:
            headers["Range"] = f"bytes={self.state.received}-"
        request = urllib.request.Request(self.url, headers=headers)
        watchdog = _Watchdog(self.remaining())
        _WATCHDOG.current = watchdog
        try:
            response = self.open(request, watchdog)
            with response:
                self.receive(response, watchdog)
        finally:
            _WATCHDOG.current = None
            watchdog.cancel()

    def open(self, request: urllib.request.Request, watchdog: _Watchdog) -> Any:
        try:
            return self.opener.open(request, timeout=min(self.limits.read_timeout_s, max(self.remaining(), 0.001)))
        except urllib.error.HTTPError as err:
            with err:
                body = _error_body(err)
            if watchdog.expired:
                raise self.deadline_error() from None
            status = f"HTTP {err.code} {err.reason}{body}"
            if err.code in _RETRY_STATUSES or err.code >= 500:
                raise _Retry(status, wait=_retry_after(err.headers.get("Retry-After"))) from None
            if err.code == 416:  # our Range is past the end: the file changed, start over
                raise _Retry(status, restart=True) from None
            advice = (
                "The file does not exist at that address: check the URL (or VIVIT_SCENIC_BASE_URL)."
                if err.code in (403, 404, 410)
                else "Check the URL, or download the file by hand and pass its local path."
            )
            raise WeightsDownloadError(f"Downloading {self.url} failed with {status}. {advice}") from None
        except urllib.error.URLError as err:
            if watchdog.expired:
                raise self.deadline_error() from None
            reason = err.reason if isinstance(err.reason, BaseException) else OSError(str(err.reason))
            if _unreachable(reason):
                raise WeightsDownloadError(_unreachable_message(self.url, reason, _scenic_advice())) from None
            raise _Retry(f"could not connect: {_printable(str(reason))}") from None
        except (http.client.HTTPException, OSError) as err:  # the connection dropped before the headers
            if watchdog.expired:
                raise self.deadline_error() from None
            raise _Retry(f"the connection failed ({type(err).__name__}: {_printable(str(err))})") from None

    def check_headers(self, response: Any) -> None:
        """Status, encoding, type and length of a response, before its body is stored."""
        state, headers = self.state, response.headers
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            raise WeightsDownloadError(
                f"Downloading {self.url}: the server sent a {encoding!r}-encoded body although an unencoded file "
                "was requested (Accept-Encoding: identity); a misconfigured server or proxy. Download the file by "
                "hand (and decompress it) and pass its local path."
            )
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type in _ERROR_CONTENT_TYPES:
            text = _text_body(response.read(_SNIFF_BYTES)) or "no readable text"
            raise WeightsDownloadError(self.page_message(f"a {content_type} document: {text}"))
        status = response.status
        if status == 206 and state.received:
            first = (headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if first != str(state.received):
                raise _Retry(f"the server resumed at the wrong offset ({headers.get('Content-Range')})", restart=True)
        elif status == 200:
            if state.received:
                state.restart(self.out)  # the server ignored the Range request and sends everything
        else:
            raise WeightsDownloadError(f"Downloading {self.url}: unexpected HTTP status {status} {response.reason}.")
        length = headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            raise _Retry(f"invalid Content-Length {length[:40]!r}")
        total = state.received + int(length) if length is not None else None
        if state.total is not None and total is not None and total != state.total:
            raise _Retry("the file's size changed between attempts", restart=True)
        state.total = total if total is not None else state.total
        if state.total is not None and state.total > self.limits.max_bytes:
            raise WeightsDownloadError(
                f"Downloading {self.url}: the server announces {state.total:,} bytes, more than the "
                f"{self.limits.max_bytes:,} a checkpoint may have; wrong URL?"
            )
        free = free_space(self.folder)
        if state.total is not None and free is not None and free < state.total - state.received:
            raise cache_write_error(OSError(errno.ENOSPC, "no space"), self.folder, f"the download of {self.url}")
        state.resumable = (headers.get("Accept-Ranges") or "").strip().lower() == "bytes"
        state.server_md5 = state.server_md5 or _goog_md5(headers.get("x-goog-hash"))

    def page_message(self, what: str) -> str:
        return (
            f"Downloading {self.url} returned {what}, not the binary checkpoint: a proxy, captive portal, login "
            "or error page answered. Check the URL and your network, or download the file by hand and pass its local path."
        )

    def receive(self, response: Any, watchdog: _Watchdog) -> None:
        from huggingface_hub.utils import tqdm  # honors HF_HUB_DISABLE_PROGRESS_BARS

        self.check_headers(response)
        state, limits = self.state, self.limits
        window: deque[tuple[float, int]] = deque([(time.monotonic(), state.received)])
        head = b""
        name = self.url.rsplit("/", 1)[-1] or self.url
        with tqdm(  # type: ignore[no-untyped-call]
            total=state.total,
            initial=state.received,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=not self.show,
        ) as bar:
            while True:
                try:
                    chunk = response.read1(_CHUNK_SIZE) if hasattr(response, "read1") else response.read(_CHUNK_SIZE)
                except (http.client.HTTPException, OSError) as err:
                    if watchdog.expired:
                        raise self.deadline_error() from None
                    raise _Retry(
                        f"the connection dropped ({type(err).__name__}: {_printable(str(err)) or 'timed out'})"
                    ) from None
                if watchdog.expired:
                    raise self.deadline_error()
                self.check_rate(window, state.received + len(head) + len(chunk))
                if state.received == 0:  # collect the first block, to tell a page from a checkpoint
                    head += chunk
                    if chunk and len(head) < _SNIFF_BYTES:
                        continue
                    page = _text_body(head[:_SNIFF_BYTES])
                    if page:
                        raise WeightsDownloadError(self.page_message(page))
                    chunk, head = head, b""
                if not chunk:
                    break
                try:
                    _write_all(self.out, chunk)
                except OSError as err:
                    raise cache_write_error(err, self.folder, f"the download of {self.url}") from None
                state.received += len(chunk)
                state.sha256.update(chunk)
                state.md5.update(chunk)
                bar.update(len(chunk))
                if state.received > limits.max_bytes:
                    raise WeightsDownloadError(
                        f"Downloading {self.url}: more than {limits.max_bytes:,} bytes arrived; wrong URL?"
                    )
        if state.total is not None and state.received < state.total:
            raise _Retry(
                f"the body was truncated: the connection closed after {state.received:,} of {state.total:,} bytes"
            )

    def check_rate(self, window: deque[tuple[float, int]], arrived: int) -> None:
        """Drop a connection slower than `min_rate` over the last `rate_window_s`.

        Args:
            window: (time, bytes arrived) samples of this attempt.
            arrived: Bytes arrived so far.
        """
        limits = self.limits
        if limits.min_rate <= 0:
            return
        now = time.monotonic()
        window.append((now, arrived))
        while len(window) > 2 and window[1][0] <= now - limits.rate_window_s:
            window.popleft()
        since, base = window[0]
        if now - since >= limits.rate_window_s:
            rate = (arrived - base) / (now - since)
            if rate < limits.min_rate:
                raise _Retry(
                    f"too slow: {rate:,.0f} bytes/s over the last {now - since:.1f} s, below the minimum of "
                    f"{limits.min_rate:,.0f} (VIVIT_DOWNLOAD_MIN_RATE)"
                )


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    progress: bool = True,
    limits: DownloadLimits | None = None,
    validate: Callable[[Path], None] | None = None,
) -> str:
    """Download a URL to a file, atomically, with bounded time and checked content.

    The body is streamed to a hidden ``.<name>.<pid>.<random>.part`` file next to ``dest`` while
    its SHA-256 is computed, then renamed onto ``dest``. On any failure the partial file is
    removed and ``dest`` is left as it was. The cache is not consulted: call this only when
    ``dest`` is missing. See the module docstring for the checks and :class:`DownloadLimits` for
    the time limits and retries.

    Args:
        url: The http(s) URL of a binary checkpoint.
        dest: The destination file. Its parent folders are created.
        expected_sha256: If given, the hex SHA-256 the file must have.
        progress: Whether to show a progress bar (also silenced by
            ``HF_HUB_DISABLE_PROGRESS_BARS=1``).
        limits: Deadline, minimum rate, retries (default: `DownloadLimits.from_env()`).
        validate: Called with the finished temporary file before it is renamed; a ValueError from
            it (e.g. a checkpoint cut short by a wrong Content-Length) makes the download fail, and
            be retried once from the start.

    Returns:
        The hex SHA-256 of the downloaded file.

    Raises:
        WeightsDownloadError: In offline mode (before any request), if the host is unreachable,
            on HTTP errors, an error page instead of the file, an encoded or truncated body, a
            deadline or rate failure after the retries, a hash mismatch or a failed `validate`.
        CacheError: (an OSError) if the destination folder is full or not writable; the message
            names the folder and ``VIVIT_CACHE``.
    """
    dest = Path(dest)
    if is_offline():
        raise _offline_error(url, str(dest))
    limits = limits or DownloadLimits.from_env()
    tmp = temp_path(dest)
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(tmp, "w+b", buffering=0)  # noqa: SIM115 - closed by the with below; unbuffered: a full disk fails in write(), not at close
        except OSError as err:
            raise cache_write_error(err, dest.parent, f"the download of {url}") from None
        with out:
            transfer = _Transfer(url, out, dest.parent, limits, progress)
            for checked in (False, True):
                transfer.run()
                try:
                    out.flush()
                    _check_download(transfer, tmp, expected_sha256, validate)
                    break
                except _Retry as err:
                    if checked or transfer.remaining() <= 0:
                        raise WeightsDownloadError(f"Downloaded {url} but {err}") from None
                    logger.warning("download of %s: %s; downloading it again", url, err)
                    transfer.state.restart(out)
        os.replace(tmp, dest)
    finally:
        remove_quietly(tmp)
    return transfer.state.sha256.hexdigest()


def _write_all(out: BinaryIO, data: bytes) -> None:
    """Write all of `data` to an unbuffered file. A raw write may write less than asked and say so only in
    its return value: a file-size limit or a disk filling up mid-chunk truncated downloads silently."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        if not written:  # 0, or None from a non-blocking file: nothing more will go
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _check_download(
    transfer: _Transfer, tmp: Path, expected_sha256: str | None, validate: Callable[[Path], None] | None
) -> None:
    """Hashes and format of a finished download; `_Retry` if the body may have been garbled in transit."""
    state = transfer.state
    if state.server_md5 and state.md5.hexdigest() != state.server_md5:
        raise _Retry(f"its MD5 {state.md5.hexdigest()} differs from the server's x-goog-hash {state.server_md5}")
    digest = state.sha256.hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise WeightsDownloadError(
            f"Downloaded {transfer.url} but its SHA-256 is {digest}, expected {expected_sha256}. The file is corrupt "
            "or was changed on the server; retry, or report the mismatch."
        )
    if validate is not None:
        try:
            validate(tmp)
        except ValueError as err:
            raise _Retry(f"it is not a valid checkpoint: {_printable(str(err), 300)}") from None


# ---------------------------------------------------------------- Hugging Face Hub
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
            "The repository is gated: accept its terms on the Hub and log in (`hf auth login`, or set HF_TOKEN).",
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


# Errors of huggingface_hub's HTTP client (httpx and its forks) that a later attempt may not meet.
_TRANSIENT_CLIENT_ERRORS = frozenset({"TransportError", "NetworkError", "ProtocolError", "TimeoutException"})
# Local disk problems: the Hugging Face cache is full, read-only, not a folder or not ours.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR})


def _hf_transient(err: BaseException) -> bool:
    """Whether a failed ``hf_hub_download`` is worth another attempt: the Hub answered 408, 429 or 5xx,
    or the connection dropped or stalled (not: a missing repo/file, offline mode, a full disk)."""
    from huggingface_hub.utils import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        return isinstance(status, int) and (status in (408, 429) or status >= 500)
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return False
    return bool({cls.__name__ for cls in type(err).__mro__} & _TRANSIENT_CLIENT_ERRORS) or isinstance(
        err, (ConnectionError, TimeoutError)
    )


def _convert_hf_error(
    err: Exception, repo_id: str, filename: str, revision: str | None, attempts: int = 1
) -> WeightsDownloadError:
    """Translate a huggingface_hub exception into a :class:`WeightsDownloadError`.

    Args:
        err: The exception raised by ``hf_hub_download``.
        repo_id: The repository.
        filename: The file in the repository.
        revision: The requested revision.
        attempts: How many times the download was tried.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    what = _describe_hf(repo_id, filename, revision)
    cache = _hf_cache_dir() or constants.HF_HUB_CACHE
    if isinstance(err, LocalEntryNotFoundError) and _hf_offline():
        return _offline_error(what, f"Hugging Face cache {cache}")
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return WeightsDownloadError(
            f"Could not write {what} into the Hugging Face cache {cache} ({os.strerror(err.errno or 0)}: "
            f"{err.filename or cache}). Free space there, or set HF_HOME (or HF_HUB_CACHE) to a writable folder "
            "with room, or pass the path of a local checkpoint."
        )
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    return WeightsDownloadError(
        f"Could not download {what}{tried}: {type(err).__name__}: {_summary(err)}. {_hf_advice(err)}"
    )


# Probe results per (host, port): (when, error or None). A failed probe is remembered briefly so
# that an entry's next Hub source fails as fast as the first.
_PROBES: dict[tuple[str, int], tuple[float, OSError | None]] = {}
_PROBE_TIMEOUT_S = 3.0
_PROBE_MEMORY_S = 10.0


def _probe_target(endpoint: str) -> tuple[str, int]:
    """The (host, port) a request to `endpoint` connects to first: its proxy if one applies."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or "", proxied.port or 80
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _reachable(endpoint: str) -> OSError | None:
    """Try a TCP connection to the Hub endpoint (or its proxy); the error if it cannot be reached.

    Only "unreachable" failures count (DNS failure, refused, no route, timeout): huggingface_hub
    would retry them for about 25 s (six warnings) before giving up.
    """
    target = _probe_target(endpoint)
    now = time.monotonic()
    known = _PROBES.get(target)
    if known is not None and now - known[0] < _PROBE_MEMORY_S:
        return known[1]
    error: OSError | None = None
    try:
        with socket.create_connection(target, timeout=_PROBE_TIMEOUT_S):
            pass
    except (socket.gaierror, TimeoutError) as err:
        error = err
    except OSError as err:
        error = err if err.errno in _UNREACHABLE_ERRNOS else None
    _PROBES[target] = (now, error)
    return error


def hf_download(
    repo_id: str, filename: str, *, revision: str | None = None, expected_sha256: str | None = None
) -> Path:
    """Download one file from a Hugging Face Hub repository into the Hugging Face cache.

    A file already cached for this revision is returned without any network request: released
    weights never change, and this keeps loading fast and working without network. Otherwise the
    endpoint is probed with one TCP connection (at most 3 s): if it cannot be reached (no network,
    DNS failure, connection refused) the call fails at once with one line, instead of
    huggingface_hub's 25 s of retries. Then ``huggingface_hub.hf_hub_download`` fetches it (with
    its progress bar, resumption, file lock and cache layout). ``HF_ENDPOINT``,
    ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read from the environment at call time.

    Args:
        repo_id: The repository, e.g. ``"google/vivit-b-16x2-kinetics400"``.
        filename: The file inside the repository, e.g. ``"model.safetensors"``.
        revision: A branch, tag, commit hash or pull-request ref such as ``"refs/pr/3"``;
            default ``"main"``.
        expected_sha256: If given, a freshly downloaded file must have this SHA-256 (a mismatch
            removes it from the cache).

    Returns:
        The local path of the file (inside the cache's ``snapshots`` folder).

    Raises:
        WeightsDownloadError: If the file is not cached and cannot be downloaded (offline mode,
            unreachable endpoint, unknown repo/revision/file, network or server error, hash mismatch).
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cache = _hf_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    what = _describe_hf(repo_id, filename, revision)
    try:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        offline = _hf_offline()
        if offline:  # not cached: fail here, without huggingface_hub (it may still contact the Hub for telemetry)
            raise _offline_error(what, f"Hugging Face cache {cache or constants.HF_HUB_CACHE}")
        if not offline:
            hub = endpoint or constants.ENDPOINT
            unreachable = _reachable(hub)
            if unreachable is not None:
                why = unreachable.strerror or str(unreachable) or type(unreachable).__name__
                raise WeightsDownloadError(
                    f"Cannot reach the Hugging Face Hub at {hub} ({why}), and {what} is not in the Hugging Face "
                    "cache. Check your network connection and proxy (HF_ENDPOINT for a mirror); without network, "
                    "set HF_HUB_OFFLINE=1 and pass the path of a local checkpoint."
                )
        limits = DownloadLimits.from_env()
        for attempt in range(limits.retries + 1):
            try:
                path = Path(
                    hf_hub_download(
                        repo_id,
                        filename,
                        revision=revision,
                        cache_dir=cache,
                        endpoint=endpoint,
                        local_files_only=offline,
                    )
                )
                break
            except Exception as err:  # huggingface_hub and its HTTP client raise many unrelated types
                if attempt == limits.retries or not _hf_transient(err):
                    raise _convert_hf_error(err, repo_id, filename, revision, attempts=attempt + 1) from err
                # a 5xx/429 answer or a dropped connection: wait and try again (the client resumes)
                time.sleep(min(limits.backoff_s * 2**attempt, 60.0))
    except WeightsDownloadError:
        raise
    except Exception as err:  # huggingface_hub and its HTTP client raise many unrelated types
        raise _convert_hf_error(err, repo_id, filename, revision) from err
    if expected_sha256 is not None:
        digest = sha256_file(path)
        if digest != expected_sha256.lower():
            for stale in {path.resolve(), path}:
                remove_quietly(stale)
            raise WeightsDownloadError(
                f"Downloaded {what} but its SHA-256 is {digest}, expected {expected_sha256}; it was removed "
                "from the cache. The file was changed on the Hub or corrupted; report the mismatch."
            )
    return path
