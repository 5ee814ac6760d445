"""The blob readers of the transfer engine (api/transfer/blob_readers.py): which one each
download path really uses, and every lower-level failure under either (sockets, TLS,
``http.client``, h11 through httpcore) mapped, the way httpx maps httpcore's, to one class of
our error tree (api/transport_errors.py is the one map)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import http.server
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from transfer_support import (
    FAST_RETRIES,
    embedded_client,
    make_checkpoint,
    ref_of,
    remote_client,
)

from logits_cli import errors, models
from logits_cli.api.blob_direct import BlobClient
from logits_cli.api.transfer.blob_readers import BlobReaders
from logits_cli.api.transfer.fetcher import RangedFetcher
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transport_errors import (
    error_for_httpx,
    httpx_error_for,
    is_transient_httpx_error,
)
from tests.hostile_server import HostileServer, Request, head

# -- which reader each download path uses ---------------------------------------------------


@pytest.fixture
def readers_used(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """(reader class, port of the URL) of every request the engine makes."""
    used: list[tuple[str, int | None]] = []
    choose = BlobReaders.for_url

    def spy(self: BlobReaders, url: str) -> Any:
        reader = choose(self, url)
        used.append((type(reader).__name__, httpx.URL(url).port))
        return reader

    monkeypatch.setattr(BlobReaders, "for_url", spy)
    return used


async def download_one(client: Any, dest: Path) -> Path:
    checkpoint = await make_checkpoint(client)
    result = await client.download(ref_of(checkpoint), dest)
    assert result.bytes_fetched > 0
    return Path(result.path)


def test_the_embedded_server_is_read_through_httpx(
    tmp_path: Path, readers_used: list[tuple[str, int | None]]
) -> None:
    async def scenario() -> Path:
        async with embedded_client(tmp_path / "home") as client:
            return await download_one(client, tmp_path / "dest")

    assert asyncio.run(scenario()).is_dir()
    assert readers_used and {name for name, _ in readers_used} == {"HttpxBlobReader"}


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres+s3"], indirect=True)
def test_a_served_origin_and_presigned_s3_urls_are_read_directly(
    live_server: Any,
    tmp_path: Path,
    readers_used: list[tuple[str, int | None]],
    store_backend: str,
) -> None:
    async def scenario() -> Path:
        async with remote_client(live_server, tmp_path / "home") as client:
            return await download_one(client, tmp_path / "dest")

    assert asyncio.run(scenario()).is_dir()
    assert readers_used and {name for name, _ in readers_used} == {"DirectBlobReader"}
    served = httpx.URL(live_server.base_url).port
    # The sqlite back end serves blobs itself; the team back end hands out moto's URLs.
    assert {port == served for _, port in readers_used} == {store_backend == "sqlite"}


@contextlib.contextmanager
def forwarding_proxy() -> Iterator[tuple[int, list[tuple[str, str, str | None]]]]:
    """An HTTP forward proxy (absolute-URI requests passed on to their origin); yields its
    port and the (method, URL, Range) of every request it carried."""
    seen: list[tuple[str, str, str | None]] = []

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            seen.append((self.command, self.path, self.headers.get("Range")))
            url = httpx.URL(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy")}
            upstream = http.client.HTTPConnection(url.host, url.port, timeout=30)
            try:
                upstream.request(self.command, url.raw_path.decode(), body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
            finally:
                upstream.close()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = forward

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_proxied_origin_is_read_through_httpx_and_the_proxy(
    live_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    readers_used: list[tuple[str, int | None]],
) -> None:
    async def scenario() -> Path:
        async with remote_client(live_server, tmp_path / "home") as client:
            return await download_one(client, tmp_path / "dest")

    with forwarding_proxy() as (port, seen):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert asyncio.run(asyncio.wait_for(scenario(), 120)).is_dir()
    assert readers_used and {name for name, _ in readers_used} == {"HttpxBlobReader"}
    ranged = [url for method, url, byte_range in seen if method == "GET" and byte_range]
    assert ranged and all(url.startswith(live_server.base_url) for url in ranged)


# -- the standard library's failures, as httpx's own transport would raise them -------------

RESET = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


@pytest.mark.parametrize(
    ("failure", "connecting", "sending", "expected"),
    [
        (TimeoutError("timed out"), True, False, httpx.ConnectTimeout),
        (TimeoutError("timed out"), False, False, TimeoutError),  # a stall: retried as one
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True, False, httpx.ConnectError),
        (socket.gaierror(socket.EAI_NONAME, "Name unknown"), True, False, httpx.ConnectError),
        (RESET, False, False, httpx.ReadError),
        (RESET, False, True, httpx.RemoteProtocolError),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), False, True, httpx.RemoteProtocolError),
        (http.client.RemoteDisconnected("closed"), False, True, httpx.RemoteProtocolError),
        (ssl.SSLError(1, "[SSL] wrong version number"), True, False, httpx.ConnectError),
        (ssl.SSLCertVerificationError(1, "verify failed"), True, False, httpx.ConnectError),
        (ssl.SSLEOFError(8, "EOF in violation of protocol"), False, False, httpx.ConnectError),
        (http.client.IncompleteRead(b"", 10), False, False, httpx.RemoteProtocolError),
        (http.client.LineTooLong("header line"), False, True, httpx.RemoteProtocolError),
        (http.client.BadStatusLine("HTTP/1.1 two hundred"), False, True, httpx.RemoteProtocolError),
        (ValueError("invalid literal for int() with base 16"), False, False, httpx.RemoteProtocolError),
        (httpx.RemoteProtocolError("illegal header line"), False, False, httpx.RemoteProtocolError),
    ],
    ids=[
        "timeout-connecting", "timeout-reading", "refused", "unknown-host", "reset-reading",
        "reset-sending", "broken-pipe", "remote-disconnected", "ssl-error", "ssl-certificate",
        "ssl-eof", "incomplete-read", "line-too-long", "bad-status-line", "bad-chunk-size",
        "h11-through-httpcore",
    ],
)  # fmt: skip
def test_every_lower_level_failure_maps_to_one_class_of_the_error_tree(
    failure: BaseException, connecting: bool, sending: bool, expected: type[BaseException]
) -> None:
    mapped = httpx_error_for(failure, connecting=connecting, sending=sending)
    assert type(mapped) is expected
    if expected is TimeoutError:
        return  # the engine's stall, never an httpx error
    assert isinstance(mapped, httpx.HTTPError) and is_transient_httpx_error(mapped)
    error = error_for_httpx(mapped, host="blobs.example", url_from_server=True)
    assert type(error) is errors.UnavailableError and error.exit_code == 6
    assert error.message.endswith("talking to blobs.example")


def test_what_is_not_a_transport_failure_passes_unchanged() -> None:
    for other in (KeyboardInterrupt(), RuntimeError("a bug")):
        assert httpx_error_for(other, connecting=False) is other


# -- the same failures from real sockets, through each reader --------------------------------


def fetch_through(url: str, dest: Path, *, direct: bool, stall_timeout: float = 5.0) -> Any:
    """What the engine makes of ``url``: its bytes, or the error it ends with."""

    async def sign() -> models.CheckpointArchiveUrlResponse:
        expires = datetime.now(UTC) + timedelta(hours=1)
        return models.CheckpointArchiveUrlResponse(url=url, expires=expires)

    async def scenario() -> bytes:
        async with BlobClient(
            direct=direct, max_redirects=5, follow_redirects=True, timeout=10.0
        ) as http:
            fetcher = RangedFetcher(
                http,
                SignedUrl(sign),
                dest / "blob.part",
                dest / "blob.journal",
                {"url": url},
                expected_size=None,
                checkpoint_sha256=None,
                segment_size=1 << 20,
                connections=1,
                stall_timeout=stall_timeout,
                policy=FAST_RETRIES,
                write_back=False,
            )
            await fetcher.run()
            return (dest / "blob.part").read_bytes()

    dest.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(asyncio.wait_for(scenario(), 60))
    except errors.LogitsError as error:
        return error


def garbage_status(request: Request, sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 two hundred OK\r\n\r\n")


def endless_header(request: Request, sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 206 Partial Content\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n")


def bad_chunk_size(request: Request, sock: socket.socket) -> None:
    chunked = {"Content-Range": "bytes 0-9/10", "Transfer-Encoding": "chunked"}
    sock.sendall(head(206, chunked) + b"zz\r\nabc\r\n")


def hang_up(request: Request, sock: socket.socket) -> None:
    pass  # closed without an answer


def reset(request: Request, sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


def stall(request: Request, sock: socket.socket) -> None:
    sock.sendall(head(206, {"Content-Range": "bytes 0-9/10", "Content-Length": "10"}))
    time.sleep(2)


READERS = pytest.mark.parametrize("direct", [True, False], ids=["direct", "httpx"])


@READERS
@pytest.mark.parametrize(
    ("respond", "names"),
    [
        (garbage_status, {"RemoteProtocolError"}),
        (endless_header, {"RemoteProtocolError"}),
        (bad_chunk_size, {"RemoteProtocolError"}),
        (hang_up, {"RemoteProtocolError"}),
        (reset, {"RemoteProtocolError", "ReadError"}),
    ],
    ids=["garbage-status", "header-too-long", "bad-chunk-size", "hang-up", "reset"],
)
def test_a_server_breaking_http_ends_in_exit_6_through_either_reader(
    tmp_path: Path, direct: bool, respond: Any, names: set[str]
) -> None:
    with HostileServer(respond) as server:
        result = fetch_through(f"{server.base_url}/blob", tmp_path, direct=direct)
    assert type(result) is errors.UnavailableError and result.exit_code == 6, result
    reason = result.message.removeprefix("download failed: network error (").split(")")[0]
    assert reason in names, result.message
    assert result.message.endswith("(5 attempts in a row without progress)")


@READERS
def test_a_refused_connection_ends_in_exit_6_through_either_reader(
    tmp_path: Path, direct: bool
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    result = fetch_through(f"http://127.0.0.1:{port}/blob", tmp_path, direct=direct)
    assert type(result) is errors.UnavailableError, result
    assert result.message.startswith("download failed: network error (ConnectError)")


@READERS
def test_a_stalled_body_is_retried_then_ends_in_exit_6_through_either_reader(
    tmp_path: Path, direct: bool
) -> None:
    with HostileServer(stall) as server:
        url = f"{server.base_url}/blob"
        result = fetch_through(url, tmp_path, direct=direct, stall_timeout=0.3)
        assert len(server.requests) == 5
    assert type(result) is errors.UnavailableError, result
    assert result.message.startswith("download failed: no data for 0.3 s")


@contextlib.contextmanager
def tls_server(context: ssl.SSLContext, body: bytes) -> Iterator[int]:
    """An HTTPS server answering every GET with ``body`` whole; yields its port."""

    class Whole(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Whole)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@READERS
def test_https_blobs_verify_against_ssl_cert_file_through_either_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    body = b"the archive" * 1000
    with tls_server(context, body) as port:
        url = f"https://localhost:{port}/blob"
        refused = fetch_through(url, tmp_path / "untrusted", direct=direct)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        fetched = fetch_through(url, tmp_path / "trusted", direct=direct)
    # An unknown issuer is refused (a TLS failure is a ConnectError, as httpx says).
    assert type(refused) is errors.UnavailableError, refused
    assert refused.message.startswith("download failed: network error (ConnectError)")
    assert fetched == body
