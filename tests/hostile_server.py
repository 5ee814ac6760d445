"""A small malicious HTTP server for the failures a real server will not produce (issue 8).

It listens on 127.0.0.1 in a background thread. Every connection reads one request (request
line and headers; a body is read when ``Content-Length`` says so) and hands it to the test's
``respond(request, sock)`` function, which writes whatever raw bytes it likes on the socket:
a trickle, a lying ``Content-Length``, an endless body, a redirect loop, a gzip bomb. The
function returns when it is done; the connection is then closed.

Every wait is bounded: ``stop()`` (or leaving the ``with`` block) closes the listening socket
and every open connection, so a test that gives up never leaves a thread writing forever.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


Responder = Callable[[Request, socket.socket], None]


def head(status: int, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    """A raw status line plus headers, ready for ``sock.sendall``."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def trickle(sock: socket.socket, data: bytes, *, chunk: int, every_s: float) -> None:
    """Send ``data`` ``chunk`` bytes at a time, sleeping ``every_s`` between sends."""
    for start in range(0, len(data), chunk):
        sock.sendall(data[start : start + chunk])
        time.sleep(every_s)


def http_date(seconds_off: float = 0) -> str:
    """An HTTP ``Date`` for now plus ``seconds_off``: a server whose clock is off."""
    return email.utils.formatdate(time.time() + seconds_off, usegmt=True)


def s3_error(status: int, code: str, message: str, *, date: str | None = None) -> bytes:
    """An object store's error answer (S3's XML body), e.g. 403 ``AccessDenied`` "Request
    has expired" for a presigned URL its signing credentials no longer cover."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
    ).encode()
    headers = {
        "Content-Type": "application/xml",
        "Content-Length": str(len(body)),
        "Date": date or http_date(),
    }
    return head(status, headers, "Forbidden") + body


def endless(sock: socket.socket, *, limit_s: float = 60.0) -> int:
    """Zeros until the client hangs up (or ``limit_s`` passes); returns the bytes sent."""
    zeros, sent = b"\0" * 65536, 0
    give_up = time.monotonic() + limit_s
    with contextlib.suppress(OSError):
        while time.monotonic() < give_up:
            sock.sendall(zeros)
            sent += len(zeros)
    return sent


class HostileServer:
    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="hostile", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            request = _read_request(conn)
            if request is None:
                return
            self.requests.append(request)
            self.respond(request, conn)
        except OSError:
            pass  # the client gave up, or stop() closed the socket: both are expected
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Request(method, target, headers, rest[:length])


@contextlib.contextmanager
def hostile(respond: Responder) -> Iterator[HostileServer]:
    with HostileServer(respond) as server:
        yield server
