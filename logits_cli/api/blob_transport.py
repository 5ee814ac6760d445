"""The transport of blob downloads: HTTP/1.1 over httpcore with large socket reads.

httpcore asks the network for 64 KiB at a time; on loopback and fast links the per-read cost
of the async stack (not the network) then bounds a download. ``BlobTransport`` asks for
``BLOB_READ_SIZE`` per read and raises the httpx exceptions httpx's own transport would.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

# What blob connections ask the socket for, whatever httpcore requests.
BLOB_READ_SIZE = 1024 * 1024

# The httpcore exceptions httpx would raise in their place; subclasses come first so the
# most specific match wins.
_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((to for source, to in _HTTPCORE_ERRORS if isinstance(exc, source)), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _ReadAheadStream(httpcore.AsyncNetworkStream):
    """An anyio stream (TLS included) asked for ``read_size`` bytes per read."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, read_size: int) -> None:
        self._inner = inner
        self._read_size = read_size

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, self._read_size), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _ReadAheadStream(await self._inner.start_tls(*args, **kwargs), self._read_size)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _ReadAheadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, read_size: int) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._read_size = read_size

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _ReadAheadStream(await self._inner.connect_tcp(*args, **kwargs), self._read_size)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _SocketStream(httpcore.AsyncNetworkStream):
    """A plain TCP socket read directly: a read is one ``recv`` when data is waiting, which
    it nearly always is on a fast link, with no transport, protocol or queue in between
    (anyio's asyncio streams also cap each read at 256 KiB)."""

    def __init__(self, sock: socket.socket, read_size: int) -> None:
        self._sock = sock
        self._read_size = read_size

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        size = max(max_bytes, self._read_size)
        try:
            return self._sock.recv(size)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.get_running_loop().sock_recv(self._sock, size)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("timed out reading") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_sendall(self._sock, buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out writing") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._sock.close()

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":  # an idle pooled connection with data waiting is dead
            readable, _, _ = select.select([self._sock], [], [], 0)
            return bool(readable)
        return None


class _SocketBackend(httpcore.AsyncNetworkBackend):
    """Plain TCP connections as ``_SocketStream``; only for ``http://`` URLs."""

    def __init__(self, read_size: int) -> None:
        self._read_size = read_size

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        source = (local_address, 0) if local_address else None
        try:
            # The standard library tries each address of the name in turn.
            sock = await asyncio.to_thread(socket.create_connection, (host, port), timeout, source)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("timed out connecting") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _SocketStream(sock, self._read_size)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _BodyStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._inner.aclose()


class BlobTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over httpcore's connection pools (``network_backend`` is httpcore's public
    hook for the socket layer), reading ``read_size`` bytes at a time: plain sockets read
    directly for ``http://``, anyio's TLS streams for ``https://``. Certificates are verified
    as by httpx's own transport, honouring ``SSL_CERT_FILE``/``SSL_CERT_DIR``."""

    def __init__(self, *, read_size: int = BLOB_READ_SIZE) -> None:
        limits = httpx.Limits()
        pool_options: dict[str, Any] = {
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
        }
        self._plain_pool = httpcore.AsyncConnectionPool(
            network_backend=_SocketBackend(read_size), **pool_options
        )
        self._pool_options = pool_options
        self._read_size = read_size
        # Made on the first https:// request: loading the CA bundle costs ~40 ms, which a
        # download from a plain-http origin (or read in threads, blob_direct.py) never needs.
        self._tls_pool: httpcore.AsyncConnectionPool | None = None

    def _tls(self) -> httpcore.AsyncConnectionPool:
        if self._tls_pool is None:
            self._tls_pool = httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=True),
                network_backend=_ReadAheadBackend(self._read_size),
                **self._pool_options,
            )
        return self._tls_pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        pool = self._plain_pool if request.url.scheme == "http" else self._tls()
        with _httpx_errors():
            answer = await pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_BodyStream(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        try:
            await self._plain_pool.aclose()
        finally:
            if self._tls_pool is not None:
                await self._tls_pool.aclose()


def env_proxies_configured() -> bool:
    """Whether ``HTTP(S)_PROXY``/``ALL_PROXY`` are set: httpx honours them only for clients
    built without a custom transport."""
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))
