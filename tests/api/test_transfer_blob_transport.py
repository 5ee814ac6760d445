"""``LogitsClient.blob_http`` and its ``BlobTransport`` (api/http.py): plain sockets for
``http://``, anyio's TLS for ``https://``, httpx's errors, environment proxies respected."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transfer_support import make_checkpoint, ref_of, remote_client, server_blob

from logits_cli.api import open_client
from logits_cli.api.http import BlobTransport
from logits_cli.config import Settings


def test_blob_http_fetches_the_archive_over_one_kept_alive_connection(
    live_server: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            url = (await client.archive_url(ref_of(checkpoint))).url
            blob = server_blob(live_server.store, checkpoint).read_bytes()
            local_ends = []
            for headers in ({}, {"Range": "bytes=10-99"}):
                response = await client.blob_http.get(url, headers=headers)
                local_ends.append(
                    response.extensions["network_stream"].get_extra_info("client_addr")
                )
                if headers:
                    assert response.status_code == 206 and response.content == blob[10:100]
                else:
                    assert response.status_code == 200 and response.content == blob
            assert local_ends[0] == local_ends[1]

    asyncio.run(scenario())


def test_connection_failures_are_httpx_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=BlobTransport()) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/blob")

    asyncio.run(scenario())


@contextlib.contextmanager
def recording_server(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[str]]]:
    """A plain HTTP server answering every GET with its request line; yields its port and
    the request lines seen."""
    seen: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.requestline)
            body = b"from " + self.requestline.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, seen
    finally:
        server.shutdown()
        server.server_close()


def _remote_settings(home: Path) -> Settings:
    return Settings(
        home=home,
        base_url="http://api.invalid",
        profile=None,
        run=None,
        debug=False,
        api_key_value="tml-unused",
    )


def test_an_environment_proxy_carries_blob_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with open_client(_remote_settings(tmp_path / "home")) as client:
            response = await client.blob_http.get("http://blobs.invalid/api/v1/blobs/tok")
            assert response.status_code == 200

    with recording_server() as (port, seen):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        asyncio.run(scenario())
    assert seen == ["GET http://blobs.invalid/api/v1/blobs/tok HTTP/1.1"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_blobs_verify_against_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def fetch(url: str) -> httpx.Response:
        async with open_client(_remote_settings(tmp_path / "home")) as client:
            return await client.blob_http.get(url)

    with recording_server(context) as (port, _):
        url = f"https://localhost:{port}/api/v1/blobs/tok"
        with pytest.raises(httpx.ConnectError):  # an unknown issuer is refused
            asyncio.run(fetch(url))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        response = asyncio.run(fetch(url))
    assert response.status_code == 200
    assert response.text == "from GET /api/v1/blobs/tok HTTP/1.1"
