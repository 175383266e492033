"""A local stand-in for the Hugging Face Hub and for plain file hosting, for offline tests.

The server speaks just enough of the Hub protocol for ``huggingface_hub.hf_hub_download``:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with the headers the client relies on:
  ``X-Repo-Commit`` (40-hex commit), ``ETag`` (quoted git blob sha1), ``Content-Length``, and for
  LFS files ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``; revisions arrive URL-encoded
  (``refs%2Fpr%2F3``); a commit hash works as a revision too;
* errors flagged the way the Hub does, through ``X-Error-Code``: ``RepoNotFound`` (401),
  ``RevisionNotFound`` (404), ``EntryNotFound`` (404);
* ``Range: bytes=N-`` requests (used by the client to resume).

Plain files are served under ``/files/<path>`` (the Scenic bucket stand-in, with its
``x-goog-hash: crc32c=...,md5=...`` header). Every request is
recorded, so a test can assert that a call touched no network (`count` counts one path's GETs).
Faults can be injected per file (GET requests only), for every request or only the first
``fail_times`` ones (then the file is served normally, honoring ``Range``):

* ``"slow_start"``: the file is served normally after a pause of ``SLOW_START_S`` (so that
  concurrent clients overlap);
* ``"truncate"``: Content-Length announces the whole file, half is sent, the connection closes;
* ``"short_length"``: Content-Length announces 64 bytes less than the body that is sent;
* ``"slowloris"``: the body trickles at one byte every ``SLOW_INTERVAL_S``;
* ``"slow_headers"``: the status line, then the headers one byte every ``SLOW_INTERVAL_S``;
* ``"stall"``: headers and half the body, then nothing for ``STALL_S`` (a connection that hangs);
* ``"drip_body"`` / ``"drip_headers"``: the body, or the status line and headers, one byte every
  ``DRIP_S`` (never fast enough for a minimum rate, never quiet long enough for a socket timeout);
* ``"gzip"``: the body gzip-compressed, with ``Content-Encoding: gzip``;
* ``"html"``: an HTML error page with status 200 and ``Content-Type: text/html``;
* ``"html_comment"``: an HTML page behind whitespace and a comment, as ``application/octet-stream``;
* ``"json_error"``: a JSON error body (``{"error": {"message": ...}}``) with status 200, as
  ``application/octet-stream``;
* ``"404"``, ``"500"``, ``"503"``, ``"429"`` (with ``Retry-After: 0``): that status with a JSON body.

Use the ``hub_server`` fixture (tests/conftest.py makes it visible to every test).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

__all__ = ["FAULTS", "HubServer", "hub_server"]

FAULTS = (
    "slow_start",
    "truncate",
    "short_length",
    "slowloris",
    "slow_headers",
    "stall",
    "drip_body",
    "drip_headers",
    "gzip",
    "html",
    "html_comment",
    "json_error",
    "404",
    "500",
    "503",
    "429",
)
SLOW_INTERVAL_S = 0.05
SLOW_START_S = 1.0
STALL_S = 600.0
DRIP_S = 5.0
_HTML_PAGE = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Sign in</body></html>"
_HTML_COMMENT_PAGE = b"\n\n   <!-- served by cache-7 -->\n<html><body>Access denied</body></html>"
_JSON_ERROR = b'{"error": {"code": 403, "message": "Quota exceeded for this bucket"}}'


@dataclass
class _Entry:
    """One servable file.

    Args:
        data: The file contents.
        fault: One of :data:`FAULTS`, or ``None`` to serve normally.
        lfs: Whether the Hub would store it with LFS (adds the ``X-Linked-*`` headers).
        fail_times: Apply the fault to this many GETs only (None: to every GET).
    """

    data: bytes
    fault: str | None = None
    lfs: bool = False
    fail_times: int | None = None
    failed: int = 0

    def take_fault(self) -> str | None:
        """The fault for the next GET (counting it), or None once `fail_times` faults were served."""
        if self.fault is None or (self.fail_times is not None and self.failed >= self.fail_times):
            return None
        self.failed += 1
        return self.fault


def _commit_for(repo_id: str, revision: str) -> str:
    """Return a stable fake 40-hex commit hash for a repo revision."""
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def _git_blob_sha1(data: bytes) -> str:
    """Return the git blob hash of ``data``: the ETag the Hub gives non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """A threaded HTTP server on 127.0.0.1 serving Hub repo files and plain files from memory.

    Args:
        host: The interface to bind; only loopback is meant to be used.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._repo_files: dict[tuple[str, str, str], _Entry] = {}
        self._files: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._host = host
        self._httpd = _Server((host, 0), _Handler)
        self._httpd.hub = self
        self.stopping = threading.Event()  # ends the waits of stalling and dripping handlers
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        port = self._httpd.server_address[1]
        return f"http://{self._host}:{port}"

    def start(self) -> HubServer:
        """Start serving in a background thread; returns ``self``."""
        # A short poll interval keeps shutdown (and so each test's teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add_repo_file(
        self,
        repo_id: str,
        filename: str,
        data: bytes,
        *,
        revision: str = "main",
        lfs: bool = False,
        fault: str | None = None,
        fail_times: int | None = None,
    ) -> str:
        """Publish a file in a Hub repository.

        Args:
            repo_id: The repository, e.g. ``"org/name"``.
            filename: The path inside the repository.
            data: The contents.
            revision: The branch, tag or ref (e.g. ``"refs/pr/3"``).
            lfs: Serve it as an LFS file (``X-Linked-Etag`` = sha256).
            fault: One of :data:`FAULTS`, applied to GET requests.
            fail_times: Apply the fault to the first this-many GETs only (None: to all).

        Returns:
            The commit hash the server reports for this revision.
        """
        _check_fault(fault)
        with self._lock:
            self._repo_files[(repo_id, revision, filename)] = _Entry(data, fault, lfs, fail_times)
        return _commit_for(repo_id, revision)

    def add_file(self, path: str, data: bytes, *, fault: str | None = None, fail_times: int | None = None) -> str:
        """Publish a plain file at ``/files/<path>``.

        Args:
            path: The path below ``/files/``.
            data: The contents.
            fault: One of :data:`FAULTS`.
            fail_times: Apply the fault to the first this-many GETs only (None: to all).

        Returns:
            The file's full URL.
        """
        _check_fault(fault)
        path = path.lstrip("/")
        with self._lock:
            self._files[path] = _Entry(data, fault, fail_times=fail_times)
        return f"{self.url}/files/{path}"

    def count(self, path: str, method: str = "GET") -> int:
        """How many `method` requests a path (e.g. ``/files/a/checkpoint``) has received."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p == path)

    @property
    def request_count(self) -> int:
        """How many requests the server has received so far."""
        with self._lock:
            return len(self.requests)

    def record(self, method: str, path: str) -> None:
        """Log a request (called by the handler)."""
        with self._lock:
            self.requests.append((method, path))

    def take_fault(self, entry: _Entry) -> str | None:
        """The fault to apply to one GET of `entry` (thread-safe)."""
        with self._lock:
            return entry.take_fault()

    def find_file(self, path: str) -> _Entry | None:
        """Look up a plain file by its path below ``/files/``."""
        with self._lock:
            return self._files.get(path)

    def resolve(self, repo_id: str, revision: str, filename: str) -> tuple[str, _Entry | None, str | None]:
        """Look up a repo file, the way the Hub resolves it.

        Args:
            repo_id: The repository.
            revision: A branch/tag/ref name or a commit hash reported earlier.
            filename: The path inside the repository.

        Returns:
            ``(error code or '', entry, commit hash)``.
        """
        with self._lock:
            revisions = {rev for repo, rev, _ in self._repo_files if repo == repo_id}
            if not revisions:
                return "RepoNotFound", None, None
            by_commit = {_commit_for(repo_id, rev): rev for rev in revisions}
            revision = by_commit.get(revision, revision)
            if revision not in revisions:
                return "RevisionNotFound", None, None
            commit = _commit_for(repo_id, revision)
            entry = self._repo_files.get((repo_id, revision, filename))
            return ("" if entry else "EntryNotFound"), entry, commit


def _check_fault(fault: str | None) -> None:
    """Reject unknown fault names early, so that a typo does not silently serve the file."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding a reference to the :class:`HubServer` state for its handlers."""

    # Handler threads must not keep the test process alive.
    daemon_threads = True
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    """Request handler; the shared state is ``self.server.hub``."""

    server_version = "vivit-test-hub"

    @property
    def hub(self) -> HubServer:
        """The owning server's state."""
        assert isinstance(self.server, _Server)
        return self.server.hub

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        """Answer a HEAD request."""
        self._dispatch(head=True)

    def do_GET(self) -> None:
        """Answer a GET request."""
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        """Route a request to plain files or to the Hub resolver."""
        raw_path = urlsplit(self.path).path
        self.hub.record(self.command, raw_path)
        if raw_path.startswith("/files/"):
            entry = self.hub.find_file(unquote(raw_path[len("/files/") :]))
            if entry is None:
                self._send_error(404, {})
            else:
                # Like Google Cloud Storage (the Scenic bucket): the whole object's MD5, base64.
                md5 = base64.b64encode(hashlib.md5(entry.data).digest()).decode()
                self._send_entry(entry, {"x-goog-hash": f"crc32c=AAAAAA==,md5={md5}"}, head)
        elif "/resolve/" in raw_path:
            self._serve_resolve(raw_path, head)
        else:
            self._send_error(404, {})

    def _serve_resolve(self, raw_path: str, head: bool) -> None:
        """Serve ``/{repo_id}/resolve/{revision}/{filename}``."""
        repo_part, _, rest = raw_path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        code, entry, commit = self.hub.resolve(unquote(repo_part), unquote(revision), unquote(filename))
        headers = {"X-Repo-Commit": commit} if commit else {}
        if entry is None:
            headers["X-Error-Code"] = code
            # The Hub answers 401 for unknown (or private) repos to anonymous users.
            self._send_error(401 if code == "RepoNotFound" else 404, headers)
            return
        headers["ETag"] = f'"{_git_blob_sha1(entry.data)}"'
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(entry.data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(entry.data))
        # Faults hit the download (GET), not the metadata probe, like a flaky CDN would.
        self._send_entry(entry if not head else _Entry(entry.data, lfs=entry.lfs), headers, head)

    def _send_error(self, status: int, headers: dict[str, str]) -> None:
        """Send a small JSON error body."""
        body = b'{"error": "not found"}' if status == 404 else b'{"error": "error"}'
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_entry(self, entry: _Entry, headers: dict[str, str], head: bool) -> None:
        """Send a file, honoring its fault and a ``Range: bytes=N-`` header."""
        fault = None if head else self.hub.take_fault(entry)
        if fault == "slow_start":
            time.sleep(SLOW_START_S)
            fault = None
        if fault in ("404", "500", "503", "429"):
            if fault == "429":
                headers = {**headers, "Retry-After": "0"}
            self._send_error(int(fault), headers)
            return
        pages = {
            "html": (_HTML_PAGE, "text/html; charset=utf-8"),
            "html_comment": (_HTML_COMMENT_PAGE, None),
            "json_error": (_JSON_ERROR, None),
        }
        if fault in pages:
            page, content_type = pages[fault]
            self.send_response(200)
            self.send_header("Content-Type", content_type or "application/octet-stream")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        data, status = entry.data, 200
        start = _range_start(self.headers.get("Range"))
        if fault is None and start is not None and 0 < start < len(data):
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        if fault == "gzip":
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        if fault in ("slow_headers", "drip_headers"):
            interval = SLOW_INTERVAL_S if fault == "slow_headers" else DRIP_S
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n".encode()
            self._trickle(head + b"X-Padding: x" * 10000, interval)
            return
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        length = len(data) - 64 if fault == "short_length" else len(data)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        if fault == "truncate":
            # Announce the full length, send half, then drop the connection.
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault in ("slowloris", "drip_body"):
            self._trickle(data, SLOW_INTERVAL_S if fault == "slowloris" else DRIP_S)
            return
        if fault == "stall":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.hub.stopping.wait(STALL_S)
            self.close_connection = True
            return
        self.wfile.write(data)
        if fault == "short_length":
            self.close_connection = True

    def _trickle(self, data: bytes, interval: float) -> None:
        """Send `data` one byte every `interval` seconds, until it is sent, the client leaves or the server stops."""
        self.close_connection = True
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if self.hub.stopping.wait(interval):
                    return
        except OSError:
            pass


def _range_start(value: str | None) -> int | None:
    """Parse the start of a ``bytes=N-`` range header (the only form the client sends)."""
    if not value or not value.startswith("bytes=") or not value.endswith("-"):
        return None
    number = value[len("bytes=") : -1]
    return int(number) if number.isdigit() else None


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """Run a :class:`HubServer` and point vivit and huggingface_hub at it.

    Sets ``HF_ENDPOINT`` to the server, ``VIVIT_SCENIC_BASE_URL`` to ``<server>/files``, and
    ``HF_HOME`` and ``VIVIT_CACHE`` to fresh temporary folders; clears offline mode. Because
    huggingface_hub reads its settings at import, the matching ``huggingface_hub.constants`` are
    patched too, so that code calling huggingface_hub directly is also confined to the server
    and the temporary cache (and never sends a real token to it).
    """
    from huggingface_hub import constants

    server = HubServer().start()
    hf_home = tmp_path / "hf_home"
    env = {
        "HF_ENDPOINT": server.url,
        "VIVIT_SCENIC_BASE_URL": f"{server.url}/files",
        "HF_HOME": str(hf_home),
        "VIVIT_CACHE": str(tmp_path / "vivit_cache"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    patched: dict[str, object] = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
    }
    for name, setting in patched.items():
        monkeypatch.setattr(constants, name, setting)
    # Retries wait milliseconds, not seconds, so that tests of flaky servers stay fast.
    from vivit.weights.hub import DownloadLimits

    defaults = DownloadLimits.from_env
    monkeypatch.setattr(
        DownloadLimits, "from_env", classmethod(lambda cls, **kw: defaults(**{"backoff_s": 0.01, **kw}))
    )
    try:
        yield server
    finally:
        server.stop()
