"""Downloading pretrained weights within limits: plain URLs (Scenic's bucket) and Hugging Face Hub files.

* Hub files: `hf_download` calls `huggingface_hub.hf_hub_download` (its cache layout, file lock,
  resumption and progress bar), adding a fast failure when the endpoint cannot be reached, retries
  of HTTP 5xx/429 and dropped connections (huggingface_hub retries neither 5xx nor a dropped GET
  mid-body with backoff) and one-line errors.
* Plain URLs: `download_url` streams with the standard library into a temporary file beside the
  destination, resuming with `Range` after a drop, and refuses what is not the file: an error page
  (HTML, JSON or text, however it starts), a compressed body, fewer bytes than announced, a body
  whose MD5 differs from Google Cloud Storage's `x-goog-hash`, a pinned SHA-256 that does not match,
  or a file that fails a format check. Neither `torch.hub.download_url_to_file` (no resume, retry
  or deadline) nor huggingface_hub's `http_get` (no deadline, transparent gzip, its own retries)
  keeps these tested behaviours, so this part is vivit's own.
* Both run under one `_Monitor` (`DownloadLimits`): a total deadline and a minimum rate, enforced by
  a watchdog thread that shuts the connection's socket down, so they hold when no byte arrives at
  all, when a server trickles its headers, and inside huggingface_hub. The sockets a download opens
  are found through a `socket.connect` audit hook (the one way to see them in any HTTP client).

Every failure is a `WeightsDownloadError` (its `no_network` is true for offline mode and unreachable
hosts), or a `vivit.weights.cache.CacheError` for a folder that cannot be written.

Environment variables, read at each call: ``VIVIT_DOWNLOAD_TIMEOUT`` (seconds, default 7200),
``VIVIT_DOWNLOAD_MIN_RATE`` (bytes/s over 60 s, default 32768; 0 disables), ``VIVIT_DOWNLOAD_RETRIES``
(default 3), ``VIVIT_SCENIC_BASE_URL``, ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, ``HF_ENDPOINT``,
``HF_HOME``, ``HF_HUB_CACHE`` (huggingface_hub reads these at import; they are passed explicitly).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import logging
import math
import os
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ..files import free_space, remove_quietly, temp_path
from .cache import cache_dir, cache_write_error
from .formats import describe_text, printable

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
_ERROR_TYPES = ("text/html", "application/xhtml+xml", "application/json", "application/problem+json", "text/xml")


class WeightsDownloadError(RuntimeError):
    """Pretrained weights could not be downloaded (network, server, offline mode, bad content).

    Attributes:
        no_network: True when offline mode is on or the host cannot be reached at all.
    """

    def __init__(self, message: str, *, no_network: bool = False) -> None:
        super().__init__(message)
        self.no_network = no_network


@dataclass(frozen=True)
class DownloadLimits:
    """How long and how slowly a download may run, and how often it is retried.

    Attributes:
        deadline_s: Total seconds, retries and waits included (``VIVIT_DOWNLOAD_TIMEOUT``, default
            7200: a 2.5 GB Scenic train state at 350 KB/s).
        min_rate: Bytes per second that must arrive, averaged over `rate_window_s`, or the connection
            is dropped (and retried) even if no byte arrives at all (``VIVIT_DOWNLOAD_MIN_RATE``,
            default 32768; 0 off). Hub downloads measure it with the kernel's TCP counters (Linux).
        rate_window_s: The averaging window of `min_rate`, in seconds (default 60).
        retries: Further attempts after a transient failure (``VIVIT_DOWNLOAD_RETRIES``, default 3).
        backoff_s: Wait before the first retry, doubled for each further one (1, 2, 4 s), or the
            server's ``Retry-After`` if longer (at most 60 s); always within the deadline.
        read_timeout_s: Seconds without any byte before a plain download's connection is dropped.
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
    """The base URL of the Scenic ViViT checkpoints (``$VIVIT_SCENIC_BASE_URL`` or Google's bucket), no trailing slash."""
    return (os.environ.get("VIVIT_SCENIC_BASE_URL") or _DEFAULT_SCENIC_BASE_URL).rstrip("/")


def is_offline() -> bool:
    """Whether offline mode is on (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), read at each call."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_error(what: str, where: str) -> WeightsDownloadError:
    return WeightsDownloadError(
        f"Cannot download {what}: offline mode is on (HF_HUB_OFFLINE) and it is not in the cache ({where}); "
        "unset HF_HUB_OFFLINE, or pass a local checkpoint.",
        no_network=True,
    )


# ---------------------------------------------------------------- the watchdog
class _Stopped(Exception):
    """Raised by the audit hook when a tripped download tries to connect again (not an OSError, so
    that no HTTP client mistakes it for a network error worth retrying)."""


_LOCAL = threading.local()  # .monitor: the download running in this thread
_HOOK_LOCK = threading.Lock()
_HOOKED = False
_TCP_INFO = getattr(socket, "TCP_INFO", None)


@dataclass
class _Conn:
    """A connection a download opened: its socket object, descriptor, peer and last received-byte count.

    The object alone is not enough: wrapping for TLS (`ssl.wrap_socket`) detaches it and moves its
    descriptor to a new `SSLSocket`, so the descriptor is kept and used while it still leads to the
    same peer.
    """

    sock: socket.socket
    fd: int
    address: Any
    thread: int
    received: int = 0

    @contextmanager
    def live(self) -> Iterator[socket.socket | None]:
        """The connection's socket now (None if it is gone)."""
        if self.sock.fileno() != -1:
            yield self.sock
            return
        try:
            other = socket.socket(fileno=self.fd)
        except OSError:
            yield None
            return
        try:
            same = tuple(other.getpeername())[:2] == tuple(self.address)[:2]
        except OSError:
            same = False
        try:
            yield other if same else None
        finally:
            other.detach()  # the descriptor belongs to the SSLSocket (or to someone else)


_CONNS: dict[int, _Conn] = {}  # descriptor -> connection opened under a monitor (kept-alive ones are adopted)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    monitor = getattr(_LOCAL, "monitor", None)
    if monitor is not None:
        monitor.watch(args[0], args[1])


def _install_hook() -> None:
    global _HOOKED
    with _HOOK_LOCK:
        if not _HOOKED:
            sys.addaudithook(_audit)  # permanent (Python has no removal); a no-op outside a download
            _HOOKED = True


def _kernel_bytes(sock: socket.socket) -> int | None:
    """Bytes the kernel has received on a TCP socket (Linux `tcp_info.tcpi_bytes_received`), or None."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    return struct.unpack_from("=Q", info, 128)[0] if len(info) >= 136 else None


class _Monitor:
    """The deadline and minimum rate of one download, enforced by a watchdog thread.

    The thread wakes a few times per rate window; when a rule fails it records why (`reason`) and
    shuts down every socket the download opened (`watch`), which ends any blocked read in any HTTP
    client; a later connection attempt raises `_Stopped`. `received` says how many bytes arrived:
    the plain download counts them itself, a Hub download reads the kernel's counters.
    """

    def __init__(self, what: str, limits: DownloadLimits, received: Callable[[], int] | None = None) -> None:
        self.what, self.limits = what, limits
        self.deadline = time.monotonic() + limits.deadline_s
        self.reason: str | None = None
        self.slow = False  # the reason is the minimum rate (worth a retry), not the deadline
        self._received = received or self._kernel_received
        self._counted = received is not None  # whether byte counts are known (kernel counters: once one is read)
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._samples: deque[tuple[float, int]] = deque()
        self.restart_rate()

    def _kernel_received(self) -> int:
        with self._lock:
            for conn in self._conns:
                with conn.live() as sock:
                    count = _kernel_bytes(sock) if sock is not None else None
                if count is not None:
                    conn.received = count  # the last count survives the socket's closing
                    self._counted = True
            return sum(conn.received for conn in self._conns)

    def watch(self, sock: socket.socket, address: Any) -> None:
        """A connection this download opens (called by the audit hook, before it connects)."""
        if self.reason is not None:
            raise _Stopped(self.reason)
        conn = _Conn(sock, sock.fileno(), address, threading.get_ident())
        with self._lock:
            self._conns.append(conn)
        _CONNS[conn.fd] = conn

    def restart_rate(self) -> None:
        """Start a new rate window (after a retry) and clear a rate failure."""
        self._samples = deque([(time.monotonic(), self._received())])
        if self.slow:
            self.reason, self.slow = None, False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def deadline_message(self, got: str) -> str:
        return (
            f"Download of {self.what} did not finish within {self.limits.deadline_s:g} s (VIVIT_DOWNLOAD_TIMEOUT); "
            f"{got} bytes arrived. The server or the network is too slow: retry later, raise VIVIT_DOWNLOAD_TIMEOUT, "
            "or download the file by hand and pass its local path."
        )

    def _trip(self, reason: str, slow: bool) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason, self.slow = reason, slow
            for conn in self._conns:
                with conn.live() as sock:
                    try:
                        if sock is not None:
                            sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def _check(self) -> None:
        now = time.monotonic()
        if now >= self.deadline:
            self._trip("deadline", slow=False)
            return
        limits = self.limits
        arrived = self._received()
        if limits.min_rate <= 0 or self.reason is not None or not self._counted:
            return
        self._samples.append((now, arrived))
        while len(self._samples) > 2 and self._samples[1][0] <= now - limits.rate_window_s:
            self._samples.popleft()
        since, base = self._samples[0]
        if now - since >= limits.rate_window_s and (arrived - base) / (now - since) < limits.min_rate:
            rate = (arrived - base) / (now - since)
            self._trip(
                f"too slow: {rate:,.0f} bytes/s over the last {now - since:.1f} s, below the minimum of "
                f"{limits.min_rate:,.0f} (VIVIT_DOWNLOAD_MIN_RATE)",
                slow=True,
            )

    def _run(self) -> None:
        tick = min(1.0, max(self.limits.rate_window_s / 8, 0.02))
        while not self._done.wait(min(tick, max(self.remaining(), 0.0) + 0.01)):
            self._check()

    @contextmanager
    def running(self) -> Iterator[_Monitor]:
        """Watch this thread's connections while the block runs (including ones left open by an earlier
        download in this thread: huggingface_hub keeps connections alive)."""
        _install_hook()
        for fd, conn in list(_CONNS.items()):
            with conn.live() as sock:
                if sock is None:
                    del _CONNS[fd]
                elif conn.thread == threading.get_ident() and conn not in self._conns:
                    conn.received = _kernel_bytes(sock) or 0
                    self._conns.append(conn)
        self.restart_rate()
        self._done.clear()
        _LOCAL.monitor = self
        thread = threading.Thread(target=self._run, name="vivit-download-watchdog", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            _LOCAL.monitor = None
            self._done.set()
            thread.join()


# ---------------------------------------------------------------- plain URLs
class _Retry(Exception):
    """A transient failure: the attempt may be repeated (after `wait` seconds, if given)."""

    def __init__(self, reason: str, wait: float | None = None, restart: bool = False) -> None:
        super().__init__(reason)
        self.wait = wait
        self.restart = restart  # the partial file is useless: start again from byte 0


def _unreachable(reason: BaseException) -> bool:
    """Whether a connection error means the host cannot be reached at all (no network, nothing listening)."""
    return isinstance(reason, socket.gaierror) or (isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS)


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


def _write_all(out: BinaryIO, data: bytes) -> None:
    """Write all of `data` to an unbuffered file: a raw write may write less than asked and say so only in
    its return value (a file-size limit, a disk filling up mid-chunk)."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        if not written:  # 0, or None from a non-blocking file: nothing more will go
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


class _Transfer:
    """One plain download: attempts, resumption, the checks of what arrives, writing."""

    def __init__(self, url: str, out: BinaryIO, folder: Path, limits: DownloadLimits, progress: bool) -> None:
        self.url, self.out, self.folder, self.limits, self.show = url, out, folder, limits, progress
        self.received, self.resumable = 0, False
        self.total: int | None = None
        self.server_md5: str | None = None
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        self.head = b""  # the first block, held back until it is known not to be a page
        self.monitor = _Monitor(url, limits, lambda: self.received + len(self.head))
        self.opener = urllib.request.build_opener()  # keeps urllib's proxy (HTTP(S)_PROXY, NO_PROXY) handling

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.received, self.total, self.server_md5 = 0, None, None
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)

    def deadline_error(self) -> WeightsDownloadError:
        got = f"{self.received:,}" + (f" of {self.total:,}" if self.total else "")
        return WeightsDownloadError(self.monitor.deadline_message(got))

    def run(self) -> None:
        """Attempts until one completes; `_Retry` failures are retried with backoff."""
        with self.monitor.running():
            attempt = 0
            while True:
                attempt += 1
                try:
                    self.attempt()
                    return
                except _Retry as err:
                    if err.restart:
                        self.restart()
                    if self.limits.retries < attempt:
                        raise WeightsDownloadError(
                            f"Download of {self.url} failed after {attempt} attempt{'s' if attempt > 1 else ''} "
                            f"({err}). Retry later, check your network, or download the file by hand and pass its "
                            "local path."
                        ) from None
                    wait = min(max(self.limits.backoff_s * 2 ** (attempt - 1), err.wait or 0.0), 60.0)
                    if wait >= self.monitor.remaining():
                        raise self.deadline_error() from None
                    logger.warning("download of %s: %s; retrying in %.1f s", self.url, err, wait)
                    time.sleep(wait)
                    self.monitor.restart_rate()

    def stopped(self) -> Exception | None:
        """The error for a connection the watchdog shut down, if it did."""
        if self.monitor.reason is None:
            return None
        return _Retry(self.monitor.reason) if self.monitor.slow else self.deadline_error()

    def attempt(self) -> None:
        if self.monitor.remaining() <= 0:
            raise self.deadline_error()
        headers = {"User-Agent": "vivit", "Accept-Encoding": "identity"}
        if self.received and self.resumable:
            headers["Range"] = f"bytes={self.received}-"
        timeout = min(self.limits.read_timeout_s, max(self.monitor.remaining(), 0.001))
        try:
            response = self.opener.open(urllib.request.Request(self.url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            with err:
                body = describe_text(err.read(_SNIFF_BYTES)) if not self.monitor.reason else None
            raise self.stopped() or self.http_error(err, body) from None
        except _Stopped:
            raise self.stopped() or self.deadline_error() from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            stopped = self.stopped()
            if stopped:
                raise stopped from None
            reason = getattr(err, "reason", err)
            reason = reason if isinstance(reason, BaseException) else OSError(str(reason))
            if _unreachable(reason):
                host = urlsplit(self.url).netloc or self.url
                why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
                raise WeightsDownloadError(
                    f"Cannot download {self.url}: cannot reach {host} ({why}). Check your network connection and "
                    f"proxy settings, or set VIVIT_SCENIC_BASE_URL to a mirror you can reach.",
                    no_network=True,
                ) from None
            raise _Retry(f"the connection failed ({type(err).__name__}: {printable(str(reason))})") from None
        with response:
            self.check_headers(response)
            self.receive(response)

    def http_error(self, err: urllib.error.HTTPError, body: str | None) -> Exception:
        status = f"HTTP {err.code} {err.reason}" + (f"; the server said: {body}" if body else "")
        if err.code in _RETRY_STATUSES or err.code >= 500:
            after = (err.headers.get("Retry-After") or "").strip()
            return _Retry(status, wait=float(after) if after.isdigit() else None)
        if err.code == 416:  # our Range is past the end: the file changed, start over
            return _Retry(status, restart=True)
        advice = (
            "The file does not exist at that address: check the URL (or VIVIT_SCENIC_BASE_URL)."
            if err.code in (403, 404, 410)
            else "Check the URL, or download the file by hand and pass its local path."
        )
        return WeightsDownloadError(f"Downloading {self.url} failed with {status}. {advice}")

    def page_error(self, what: str) -> WeightsDownloadError:
        return WeightsDownloadError(
            f"Downloading {self.url} returned {what}, not the binary checkpoint: a proxy, captive portal, login "
            "or error page answered. Check the URL and your network, or download the file by hand and pass its local path."
        )

    def check_headers(self, response: Any) -> None:
        """Status, encoding, type and length of a response, before its body is stored."""
        headers = response.headers
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            raise WeightsDownloadError(
                f"Downloading {self.url}: the server sent a {encoding!r}-encoded body although an unencoded file "
                "was requested (Accept-Encoding: identity); a misconfigured server or proxy. Download the file by "
                "hand (and decompress it) and pass its local path."
            )
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type in _ERROR_TYPES or content_type == "application/xml":
            text = describe_text(response.read(_SNIFF_BYTES)) or "no readable text"
            raise self.page_error(f"a {content_type} document: {text}")
        if response.status == 206 and self.received:
            first = (headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if first != str(self.received):
                raise _Retry(f"the server resumed at the wrong offset ({headers.get('Content-Range')})", restart=True)
        elif response.status == 200:
            if self.received:
                self.restart()  # the server ignored the Range request and sends everything
        else:
            raise WeightsDownloadError(f"Downloading {self.url}: unexpected HTTP status {response.status}.")
        length = headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            raise _Retry(f"invalid Content-Length {length[:40]!r}")
        total = self.received + int(length) if length is not None else None
        if self.total is not None and total is not None and total != self.total:
            raise _Retry("the file's size changed between attempts", restart=True)
        self.total = total if total is not None else self.total
        if self.total is not None and self.total > self.limits.max_bytes:
            raise WeightsDownloadError(
                f"Downloading {self.url}: the server announces {self.total:,} bytes, more than the "
                f"{self.limits.max_bytes:,} a checkpoint may have; wrong URL?"
            )
        free = free_space(self.folder)
        if self.total is not None and free is not None and free < self.total - self.received:
            raise cache_write_error(OSError(errno.ENOSPC, "no space"), self.folder, f"the download of {self.url}")
        self.resumable = (headers.get("Accept-Ranges") or "").strip().lower() == "bytes"
        self.server_md5 = self.server_md5 or _goog_md5(headers.get("x-goog-hash"))

    def receive(self, response: Any) -> None:
        from huggingface_hub.utils import tqdm  # honours HF_HUB_DISABLE_PROGRESS_BARS

        name = self.url.rsplit("/", 1)[-1] or self.url
        bar = tqdm(  # type: ignore[no-untyped-call]
            total=self.total, initial=self.received, unit="B", unit_scale=True, desc=name, disable=not self.show
        )
        with bar:
            while True:
                try:
                    chunk = response.read1(_CHUNK_SIZE)
                except (http.client.HTTPException, OSError) as err:
                    raise self.stopped() or _Retry(
                        f"the connection dropped ({type(err).__name__}: {printable(str(err)) or 'timed out'})"
                    ) from None
                stopped = self.stopped()
                if stopped:
                    raise stopped
                if self.received == 0:  # collect the first block, to tell a page from a checkpoint
                    self.head += chunk
                    if chunk and len(self.head) < _SNIFF_BYTES:
                        continue
                    page = describe_text(self.head[:_SNIFF_BYTES])
                    if page:
                        raise self.page_error(page)
                    chunk, self.head = self.head, b""
                if not chunk:
                    break
                try:
                    _write_all(self.out, chunk)
                except OSError as err:
                    raise cache_write_error(err, self.folder, f"the download of {self.url}") from None
                self.received += len(chunk)
                self.sha256.update(chunk)
                self.md5.update(chunk)
                bar.update(len(chunk))
                if self.received > self.limits.max_bytes:
                    raise WeightsDownloadError(
                        f"Downloading {self.url}: more than {self.limits.max_bytes:,} bytes arrived; wrong URL?"
                    )
        if self.total is not None and self.received < self.total:
            raise _Retry(
                f"the body was truncated: the connection closed after {self.received:,} of {self.total:,} bytes"
            )

    def check(self, tmp: Path, expected_sha256: str | None, validate: Callable[[Path], None] | None) -> None:
        """Hashes and format of a finished download; `_Retry` if the body may have been garbled in transit."""
        if self.server_md5 and self.md5.hexdigest() != self.server_md5:
            raise _Retry(f"its MD5 {self.md5.hexdigest()} differs from the server's x-goog-hash {self.server_md5}")
        digest = self.sha256.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise WeightsDownloadError(
                f"Downloaded {self.url} but its SHA-256 is {digest}, expected {expected_sha256}. The file is corrupt "
                "or was changed on the server; retry, or report the mismatch."
            )
        if validate is not None:
            try:
                validate(tmp)
            except ValueError as err:
                raise _Retry(f"it is not a valid checkpoint: {printable(str(err), 300)}") from None


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

    The body goes to a hidden ``.<name>.<pid>.<random>.part`` file beside `dest`, then is renamed onto
    it; on any failure the partial file is removed and `dest` is left as it was.

    Args:
        url: The http(s) URL of a binary checkpoint.
        dest: The destination file (its folders are created).
        expected_sha256: If given, the hex SHA-256 the file must have.
        progress: Whether to show a progress bar (also silenced by ``HF_HUB_DISABLE_PROGRESS_BARS=1``).
        limits: Deadline, minimum rate, retries (default: `DownloadLimits.from_env()`).
        validate: Called with the finished temporary file; a ValueError from it makes the download
            fail, after one more attempt from the start.

    Returns:
        The hex SHA-256 of the downloaded file.

    Raises:
        WeightsDownloadError: Offline mode (before any request), an unreachable host, HTTP errors, an
            error page, an encoded or truncated body, the deadline or minimum rate after the retries,
            a hash mismatch or a failed `validate`.
        CacheError: (an OSError) if the destination folder is full or not writable (naming it and
            ``VIVIT_CACHE``).
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
            for last in (False, True):
                transfer.run()
                try:
                    transfer.check(tmp, expected_sha256, validate)
                    break
                except _Retry as err:
                    if last or transfer.monitor.remaining() <= 0:
                        raise WeightsDownloadError(f"Downloaded {url} but {err}") from None
                    logger.warning("download of %s: %s; downloading it again", url, err)
                    transfer.restart()
        os.replace(tmp, dest)
    finally:
        remove_quietly(tmp)
    return transfer.sha256.hexdigest()


# ---------------------------------------------------------------- Hugging Face Hub
def _hf_cache_dir() -> str | None:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``; None lets huggingface_hub apply its own defaults."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return is_offline() or bool(constants.HF_HUB_OFFLINE)


def _describe_hf(repo_id: str, filename: str, revision: str | None) -> str:
    return f"'{filename}' from the Hugging Face Hub repo '{repo_id}' (revision '{revision or 'main'}')"


# First match wins: these huggingface_hub classes inherit from one another.
_HF_ADVICE = (
    (
        "LocalEntryNotFoundError",
        "The Hub could not be reached (network error, proxy or firewall, or the Hub is down) and the file is not "
        "in the local cache. Check your connection (and HF_ENDPOINT if you use a mirror), or pass the path of a "
        "local checkpoint.",
    ),
    (
        "GatedRepoError",
        "The repository is gated: accept its terms on the Hub and log in (`hf auth login`, or set HF_TOKEN).",
    ),
    (
        "RepositoryNotFoundError",
        "The repository does not exist or is private: check the repo id, and log in if it is private.",
    ),
    (
        "RevisionNotFoundError",
        "The repository has no such revision (branch, tag, commit or 'refs/pr/N'): check the revision.",
    ),
    ("EntryNotFoundError", "The repository has no such file at that revision: check the file name and revision."),
    ("HfHubHTTPError", "The Hub answered with an error: retry later, or pass the path of a local checkpoint."),
    ("ValueError", "Check the repo id, file name and revision."),
)
# Errors of huggingface_hub's HTTP client (httpx and its forks) that a later attempt may not meet.
_TRANSIENT_CLIENT_ERRORS = frozenset({"TransportError", "NetworkError", "ProtocolError", "TimeoutException"})
# Local disk problems: the Hugging Face cache is full, read-only, not a folder or not ours.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR})


def _hf_transient(err: BaseException) -> bool:
    """Whether a failed ``hf_hub_download`` is worth another attempt: the Hub answered 408, 429 or 5xx,
    or the connection dropped or stalled (not: a missing repo/file, offline mode, a full disk)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in (408, 429) or status >= 500
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return False
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & _TRANSIENT_CLIENT_ERRORS) or isinstance(err, (ConnectionError, TimeoutError))


def _convert_hf_error(err: Exception, what: str, attempts: int = 1) -> WeightsDownloadError:
    """A huggingface_hub exception as one `WeightsDownloadError` line that says what to do."""
    from huggingface_hub import constants

    names = {cls.__name__ for cls in type(err).__mro__}
    cache = _hf_cache_dir() or constants.HF_HUB_CACHE
    if "LocalEntryNotFoundError" in names and _hf_offline():
        return _offline_error(what, f"Hugging Face cache {cache}")
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return WeightsDownloadError(
            f"Could not write {what} into the Hugging Face cache {cache} ({os.strerror(err.errno or 0)}: "
            f"{err.filename or cache}). Free space there, or set HF_HOME (or HF_HUB_CACHE) to a writable folder "
            "with room, or pass the path of a local checkpoint."
        )
    advice = next(
        (text for name, text in _HF_ADVICE if name in names),
        "Check your network connection (and HF_ENDPOINT), or pass the path of a local checkpoint.",
    )
    lines = [line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()]
    summary = ". ".join(lines[:2]) or type(err).__name__
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    return WeightsDownloadError(f"Could not download {what}{tried}: {type(err).__name__}: {summary}. {advice}")


# Probe results per (host, port): (when, error or None), remembered briefly so that an entry's next
# Hub source fails as fast as the first.
_PROBES: dict[tuple[str, int], tuple[float, OSError | None]] = {}


def _reachable(endpoint: str) -> OSError | None:
    """One TCP connection (3 s at most) to the Hub endpoint or its proxy: the error if it cannot be reached.

    huggingface_hub retries unreachable hosts for about 25 s (six warnings) before giving up; this
    fails at once. Only DNS failure, refusal, no route and timeouts count.
    """
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    now = time.monotonic()
    known = _PROBES.get((host, port))
    if known is not None and now - known[0] < 10.0:
        return known[1]
    error: OSError | None = None
    try:
        with socket.create_connection((host, port), timeout=3.0):
            pass
    except (socket.gaierror, TimeoutError) as err:
        error = err
    except OSError as err:
        error = err if err.errno in _UNREACHABLE_ERRNOS else None
    _PROBES[(host, port)] = (now, error)
    return error


def hf_download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    expected_sha256: str | None = None,
    limits: DownloadLimits | None = None,
) -> Path:
    """Download one file of a Hugging Face Hub repository into the Hugging Face cache.

    A file already cached for this revision is returned without any request (released weights never
    change; this keeps loading fast and offline-proof). Otherwise the endpoint is probed (one TCP
    connection, 3 s at most: an unreachable Hub fails at once), then ``huggingface_hub.hf_hub_download``
    fetches the file under the deadline and minimum rate of `limits`, retried after HTTP 5xx/429 and
    dropped or stalled connections (it resumes). ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE`` and
    ``HF_HUB_OFFLINE`` are read at call time. (Files that huggingface_hub fetches through hf_xet are
    transferred by native code that the deadline cannot interrupt; it is checked between attempts.)

    Args:
        repo_id: The repository, e.g. ``"google/vivit-b-16x2-kinetics400"``.
        filename: The file, e.g. ``"model.safetensors"``.
        revision: A branch, tag, commit hash or ``"refs/pr/N"``; default ``"main"``.
        expected_sha256: If given, a downloaded file must have this SHA-256 (else it is removed).
        limits: Deadline, minimum rate and retries (default: `DownloadLimits.from_env()`).

    Returns:
        The local path of the file (inside the cache's ``snapshots`` folder).

    Raises:
        WeightsDownloadError: Not cached and not downloadable (offline mode, unreachable endpoint,
            unknown repo/revision/file, network or server error, deadline, hash mismatch).
    """
    import huggingface_hub
    from huggingface_hub import constants

    cache = _hf_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    what = _describe_hf(repo_id, filename, revision)
    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    except Exception as err:  # huggingface_hub validates the ids
        raise _convert_hf_error(err, what) from err
    if isinstance(cached, str):
        return Path(cached)
    if _hf_offline():  # fail here, without huggingface_hub (it may still contact the Hub)
        raise _offline_error(what, f"Hugging Face cache {cache or constants.HF_HUB_CACHE}")
    hub = endpoint or constants.ENDPOINT
    unreachable = _reachable(hub)
    if unreachable is not None:
        why = unreachable.strerror or str(unreachable) or type(unreachable).__name__
        raise WeightsDownloadError(
            f"Cannot reach the Hugging Face Hub at {hub} ({why}), and {what} is not in the Hugging Face "
            "cache. Check your network connection and proxy (HF_ENDPOINT for a mirror); without network, "
            "set HF_HUB_OFFLINE=1 and pass the path of a local checkpoint.",
            no_network=True,
        )
    limits = limits or DownloadLimits.from_env()
    monitor = _Monitor(what, limits)
    with monitor.running():
        for attempt in range(1, limits.retries + 2):
            try:
                path = Path(
                    huggingface_hub.hf_hub_download(
                        repo_id, filename, revision=revision, cache_dir=cache, endpoint=endpoint
                    )
                )
                break
            except Exception as err:  # huggingface_hub and its HTTP client raise many unrelated types
                if (monitor.reason is not None and not monitor.slow) or monitor.remaining() <= 0:
                    raise WeightsDownloadError(monitor.deadline_message("some")) from None
                if monitor.slow:
                    error: Exception = WeightsDownloadError(monitor.reason or "too slow")
                elif isinstance(err, _Stopped) or not _hf_transient(err):
                    raise _convert_hf_error(err, what, attempts=attempt) from err
                else:
                    error = err
                if attempt > limits.retries:
                    if isinstance(error, WeightsDownloadError):
                        raise WeightsDownloadError(
                            f"Download of {what} failed after {attempt} attempt{'s' if attempt > 1 else ''} ({error})."
                        ) from None
                    raise _convert_hf_error(err, what, attempts=attempt) from err
                wait = min(limits.backoff_s * 2 ** (attempt - 1), 60.0)
                if wait >= monitor.remaining():
                    raise WeightsDownloadError(monitor.deadline_message("some")) from None
                logger.warning("download of %s: %s; retrying in %.1f s", what, printable(str(error)), wait)
                time.sleep(wait)  # huggingface_hub resumes from its .incomplete file
                monitor.restart_rate()
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
