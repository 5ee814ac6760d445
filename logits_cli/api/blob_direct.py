"""Blocking range reads of signed blob URLs, for the transfer engine's worker threads.

Why not httpx here: on a fast link the engine is bound by CPU, and an async body read costs
an event-loop turn plus h11's buffer copies per chunk (docs/ARCHITECTURE.md §3). A worker
thread that reads the body with one ``recv`` per chunk and ``pwrite``s it holds the GIL for
neither call: `tests/bench/download_files.py` and `tests/bench/download.py` show the gain
against curl. The standard library's ``http.client`` speaks HTTP/1.1 (status line, headers,
chunked or sized bodies, TLS through ``ssl``); this module adds the pieces httpx gives the
rest of the client: redirects, one kept-alive connection per thread and origin, an abort
from another thread, and every failure raised as the httpx exception httpx would raise
(``transport_errors.httpx_error_for``), so the engine handles both paths alike.

``BlobClient`` is the ``httpx.AsyncClient`` of blob URLs (with httpx's own transport: the
engine reads through it what this module does not take); ``direct_reader(url)`` says whether
a URL may take this path: not for origins mounted on another transport (the embedded
server, a test's mock transport) and not when an environment proxy is configured
(``env_proxies_configured``). The engine's two readers are in ``transfer/blob_readers.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import threading
import urllib.request
from typing import Any

import httpx

from logits_cli import __version__
from logits_cli.api.transport_errors import CLOSED_CONNECTION_ERRORS, httpx_error_for

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
ERROR_BODY_LIMIT = 64 * 1024  # what is kept of an error answer's body, for its message
USER_AGENT = f"logits/{__version__}"


def env_proxies_configured() -> bool:
    """Whether ``HTTP(S)_PROXY``/``ALL_PROXY`` are set: httpx then routes blob requests
    through the proxy, which the direct reader does not know how to."""
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))


class _Response(http.client.HTTPResponse):
    """``readinto_once``: into the caller's buffer with at most one read from the socket, so a
    slow server is seen as slow (``readinto`` blocks until the buffer is full) and no buffer
    is allocated per read (``read1``)."""

    _drained = False

    def readinto_once(self, buffer: memoryview) -> int:
        if self.fp is None or self._method == "HEAD":  # type: ignore[attr-defined]
            return 0
        if self.chunked:  # rare for blob stores: the standard library's chunk parser
            data = self.read1(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        if self.length is not None and len(buffer) > self.length:
            buffer = buffer[: self.length]
        if not self._drained:
            # The head was read through the file's buffer (io.DEFAULT_BUFFER_SIZE), which may
            # hold the body's first bytes. Asked for more than that buffer, readinto1 copies
            # them and then blocks in one more read of the socket, losing them if that read
            # times out; asked for at most that much, it returns just what it holds.
            buffer = buffer[: io.DEFAULT_BUFFER_SIZE]
            self._drained = True
        count = self.fp.readinto1(buffer) if buffer else 0
        if not count:
            self._close_conn()  # type: ignore[attr-defined]
        elif self.length is not None:
            self.length -= count
            if not self.length:
                self._close_conn()  # type: ignore[attr-defined]
        return count


class BlobClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that also hands out a ``DirectReader`` for the URLs it would
    send over the network itself."""

    def __init__(self, *, direct: bool, max_redirects: int, **kwargs: Any) -> None:
        super().__init__(max_redirects=max_redirects, **kwargs)
        mounts = kwargs.get("mounts") or {}
        self._mounted = tuple(mounts)
        self._reader = DirectReader(max_redirects=max_redirects) if direct else None

    def direct_reader(self, url: str) -> DirectReader | None:
        if self._reader is None or any(
            pattern == "all://" or url.startswith(pattern) for pattern in self._mounted
        ):
            return None
        return self._reader if httpx.URL(url).scheme in ("http", "https") else None


class DirectReader:
    """Opens ``DirectRequest``s. Each of the engine's connections is a ``ConnectionSlot``:
    its requests run one after another (in whichever worker thread), so a slot keeps one
    connection alive between them."""

    def __init__(self, *, max_redirects: int) -> None:
        self.max_redirects = max_redirects
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    def request(
        self, slot: ConnectionSlot, url: str, headers: dict[str, str], timeout: float
    ) -> DirectRequest:
        return DirectRequest(self, slot, url, headers, timeout)

    def ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl is None:
                # As httpx verifies: certifi or SSL_CERT_FILE / SSL_CERT_DIR.
                self._ssl = httpx.create_ssl_context(trust_env=True)
            return self._ssl


class ConnectionSlot:
    """One kept-alive connection (to one origin at a time)."""

    def __init__(self) -> None:
        self._origin: tuple[str, str, int] | None = None
        self.connection: http.client.HTTPConnection | None = None

    def connect(
        self, reader: DirectReader, url: httpx.URL, timeout: float
    ) -> http.client.HTTPConnection:
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, url.host, port)
        if self.connection is None or origin != self._origin:
            self.close()
            if url.scheme == "https":
                self.connection = http.client.HTTPSConnection(
                    url.host, port, timeout=timeout, context=reader.ssl_context()
                )
            else:
                self.connection = http.client.HTTPConnection(url.host, port, timeout=timeout)
            self.connection.response_class = _Response
            self._origin = origin
        self.connection.timeout = timeout
        if self.connection.sock is not None:
            self.connection.sock.settimeout(timeout)
        return self.connection

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


class DirectRequest:
    """One GET, followed through redirects. ``open``, ``read`` and ``release`` run in a
    worker thread, one at a time; ``abort`` may be called from any thread and wakes a
    blocked read."""

    def __init__(
        self,
        reader: DirectReader,
        slot: ConnectionSlot,
        url: str,
        headers: dict[str, str],
        timeout: float,
    ) -> None:
        self._reader = reader
        self._slot = slot
        self._url = url
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._timeout = timeout
        self._response: http.client.HTTPResponse | None = None
        self._aborted = threading.Event()
        self.status = 0
        self.headers = httpx.Headers()
        self.error_body = b""

    def open(self) -> None:
        """Send the request and read the answer's head (and an error answer's body)."""
        url = httpx.URL(self._url)
        for _ in range(self._reader.max_redirects + 1):
            self._send(url)
            assert self._response is not None
            location = self._response.getheader("location")
            if self.status in REDIRECT_STATUSES and location:
                self._read_guarded(memoryview(bytearray(ERROR_BODY_LIMIT)))
                self.release()
                url = url.join(location)
                continue
            if self.status not in (200, 206):
                buffer = memoryview(bytearray(ERROR_BODY_LIMIT))
                self.error_body = bytes(buffer[: self._read_guarded(buffer)])
            return
        raise httpx.TooManyRedirects(f"more than {self._reader.max_redirects} redirects")

    def readinto(self, buffer: memoryview) -> int:
        """Body bytes into ``buffer`` with at most one read from the network; 0 at its end."""
        return self._read_guarded(buffer)

    def release(self) -> None:
        """Keep the connection for the slot's next request if the body was read to its end,
        else close it."""
        response, self._response = self._response, None
        if response is not None and not (response.isclosed() and not response.will_close):
            self._slot.close()

    def abort(self) -> None:
        self._aborted.set()
        connection = self._slot.connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    # -- in the worker thread -------------------------------------------------------------

    def _send(self, url: httpx.URL) -> None:
        target = url.raw_path.decode("ascii")
        for attempt in range(2):
            if self._aborted.is_set():
                raise httpx.ReadError("the download was stopped")
            connection = self._slot.connect(self._reader, url, self._timeout)
            reused = connection.sock is not None
            try:
                connection.request("GET", target, headers=self._headers)
                self._response = connection.getresponse()
                break
            except BaseException as exc:
                connecting = connection.sock is None
                self._slot.close()
                if reused and attempt == 0 and isinstance(exc, CLOSED_CONNECTION_ERRORS):
                    continue  # a kept-alive connection the server had closed: once more
                raise httpx_error_for(exc, connecting=connecting, sending=True) from exc
        assert self._response is not None
        self.status = self._response.status
        self.headers = httpx.Headers(self._response.getheaders())

    def _read_guarded(self, buffer: memoryview) -> int:
        response = self._response
        if response is None:
            return 0
        try:
            assert isinstance(response, _Response)
            return response.readinto_once(buffer)
        except BaseException as exc:
            self._response = None
            self._slot.close()
            if self._aborted.is_set():
                raise httpx.ReadError("the download was stopped") from exc
            raise httpx_error_for(exc, connecting=False) from exc
