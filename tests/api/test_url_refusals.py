"""Signed URLs a blob store refuses, clocks that disagree, bodies nobody gave a size for
(issue 21 rows G9 and F6, and the 20-minutes-fast clock).

A whole deployment is played by ``tests/hostile_server.py``: the listing, the archive answer
(``…/archive?format=json``) or URL map (``…/external_weights_urls``) handing out a new URL
``/blob/N/…`` on each call, and the blob answers, as an object store would send them (S3's
XML errors, ``Date`` headers, no ``Content-Length``). The server counts the URL requests it
received. The first ``weights/`` download against a base URL also asks ``…/archive`` once to
learn the generation (api/files_generation.py): that request is counted too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from transfer_support import FAST_RETRIES, build_tar, complete_document, listing

from logits_cli.api import DownloadOptions, open_client
from logits_cli.api.transfer import signed_url
from logits_cli.api.transfer.journal import Journal
from logits_cli.config import Settings
from logits_cli.errors import (
    EXIT_URL_REFUSED,
    DownloadUrlRefusedError,
    LogitsError,
)
from logits_cli.uri import CheckpointRef
from tests.cli.conftest import invoke
from tests.hostile_server import (
    HostileServer,
    Request,
    endless,
    head,
    hostile,
    http_date,
    s3_error,
)

RUN = "5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0"
WEIGHTS = f"tinker://{RUN}/weights/ckpt"
EXTERNAL = f"tinker://{RUN}/external_weights/e1"
MiB = 1 << 20

_HEADER = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
ADAPTER = {
    "adapter_config.json": b'{"r": 2, "peft_type": "LORA"}',
    "adapter_model.safetensors": struct.pack("<Q", len(_HEADER)) + _HEADER + b"\0" * 8,
}
# ~600 KB of adapter weights: several 64 KiB segments, so several requests per download.
FILES = {"adapter_config.json": b'{"r": 4}\n', "adapter_model.safetensors": b"A" * 600_000}
ARCHIVE = build_tar([*FILES.items(), ("checkpoint_complete", complete_document(FILES, WEIGHTS))])
EXPIRED_MESSAGE = "Request has expired"

Blob = Callable[[Request, socket.socket, int, bytes], None]


class Deployment:
    """The responder: the API of one run with ``weights/ckpt`` and ``external_weights/e1``,
    and blob URLs answered by ``blob(request, sock, rank, data)``, where ``rank`` counts the
    distinct URLs the blob server has seen (0 for the first one used)."""

    def __init__(
        self,
        blob: Blob,
        *,
        listed_size: bool = True,
        expires_in: float = 3600.0,
        files: dict[str, bytes] | None = None,
    ) -> None:
        self.blob = blob
        self.listed_size = listed_size
        self.expires_in = expires_in
        self.files = files or ADAPTER
        self.url_requests = 0
        self.seen: list[str] = []

    def __call__(self, request: Request, sock: socket.socket) -> None:
        base = f"http://{request.headers.get('host', '')}"
        path = request.path
        if path.endswith(f"/training_runs/{RUN}/checkpoints"):
            return _json(sock, 200, {"checkpoints": self._rows(), "cursor": None})
        expires = (datetime.now(UTC) + timedelta(seconds=self.expires_in)).isoformat()
        if path.endswith("/weights/ckpt/archive"):
            self.url_requests += 1
            url = f"{base}/blob/{self.url_requests}/archive"
            return _json(sock, 200, {"url": url, "expires": expires})
        if path.endswith("/external_weights/e1/external_weights_urls"):
            self.url_requests += 1
            urls = {name: f"{base}/blob/{self.url_requests}/{name}" for name in self.files}
            return _json(sock, 200, {"urls": urls, "expires": expires})
        if path.startswith("/blob/"):
            number, name = path.removeprefix("/blob/").split("/", 1)
            if number not in self.seen:
                self.seen.append(number)
            data = ARCHIVE if name == "archive" else self.files[name]
            return self.blob(request, sock, self.seen.index(number), data)
        return _json(sock, 404, {"detail": "no such route", "code": "not_found"})

    def _rows(self) -> list[dict[str, Any]]:
        archive = {
            "checkpoint_id": "weights/ckpt",
            "checkpoint_type": "training",
            "time": "2026-12-01T00:00:00Z",
            "tinker_path": WEIGHTS,
        }
        if self.listed_size:
            archive |= {"size_bytes": len(ARCHIVE), "sha256": hashlib.sha256(ARCHIVE).hexdigest()}
        external = {
            "checkpoint_id": "external_weights/e1",
            "checkpoint_type": "external",
            "time": "2026-12-01T00:00:00Z",
            "tinker_path": EXTERNAL,
        }
        return [archive, external]


def _json(sock: socket.socket, status: int, document: Any) -> None:
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    sock.sendall(head(status, headers) + body)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def serve(request: Request, sock: socket.socket, data: bytes, *, date: str | None = "now") -> None:
    """An honest object store: 206 for a range, with ``Date`` (``None``: without one)."""
    match = _RANGE.fullmatch(request.headers.get("range", ""))
    first = int(match.group(1)) if match else 0
    last = min(len(data) - 1, int(match.group(2))) if match and match.group(2) else len(data) - 1
    piece = data[first : last + 1]
    headers = {
        "Content-Range": f"bytes {first}-{last}/{len(data)}",
        "Content-Length": str(len(piece)),
    }
    if date is not None:
        headers["Date"] = http_date() if date == "now" else date
    sock.sendall(head(206, headers, "Partial Content") + piece)


def refuse(request: Request, sock: socket.socket) -> None:
    """S3's answer to a presigned URL signed with credentials that have since expired."""
    sock.sendall(s3_error(403, "AccessDenied", EXPIRED_MESSAGE))


def download(
    server: HostileServer, tmp_path: Path, path: str, options: DownloadOptions | None = None
) -> Any:
    """``client.download`` of ``path`` into ``tmp_path/dest``: its result or its error."""
    settings = Settings(
        home=tmp_path / "home",
        base_url=server.base_url,
        profile=None,
        run=None,
        debug=False,
        api_key_value="tml-hostile-test-key",
    )
    options = options or DownloadOptions(connections=2, segment_size=64 * 1024)

    async def scenario() -> Any:
        async with open_client(settings, retry_policy=FAST_RETRIES) as client:
            try:
                return await client.download(
                    CheckpointRef.parse(path), tmp_path / "dest", options=options
                )
            except LogitsError as exc:
                return exc

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def cli_download(
    server: HostileServer, tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", "tml-hostile-test-key")
    return invoke(["ckpt", "download", path, "-o", str(tmp_path / "dest"), "-q"])


def one_error(stderr: str, path: str) -> str:
    """The command's stderr is one ``Error:`` line (a single download's failure is not
    logged a second time), no ``Hint:``; returns the message."""
    [error] = stderr.splitlines()
    assert error.startswith("Error: "), stderr
    return error.removeprefix("Error: ")


REFUSED_TWICE = re.compile(
    r"127\.0\.0\.1 refused the download URL \(HTTP 403 AccessDenied: Request has expired\), "
    r"and a fresh one too; not a problem of your API key: .*"
)


# -- G9: a 403 on a URL whose listed expiry is still ahead --------------------------------------


@pytest.mark.parametrize("path", [WEIGHTS, EXTERNAL], ids=["archive", "files"])
def test_a_store_refusing_a_fresh_url_too_fails_about_the_url_with_exit_11(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = Deployment(lambda request, sock, rank, data: refuse(request, sock))
    with hostile(deployment) as server:
        result = cli_download(server, tmp_path, path, monkeypatch)
        blob_requests = [r.path for r in server.requests if r.path.startswith("/blob/")]
    assert result.exit_code == EXIT_URL_REFUSED == 11, result.stderr
    message = one_error(result.stderr, path)
    assert REFUSED_TWICE.fullmatch(message), message
    assert "LOGITS_API_KEY" not in result.stderr  # no API-key hint
    # One URL, refused; one fresh URL (per file: the map is fetched again once), refused.
    probe = 1 if path == WEIGHTS else 0
    assert deployment.url_requests == probe + 2
    assert len(deployment.seen) == 2
    files_at_once = 1 if path == WEIGHTS else len(ADAPTER)
    assert len(blob_requests) <= 2 * files_at_once
    assert listing(tmp_path / "dest") == []  # no part, no journal, no .e1.files/


def test_a_fresh_url_after_a_refusal_completes_the_download(tmp_path: Path) -> None:
    def blob(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        if rank == 0:
            return refuse(request, sock)
        serve(request, sock, data)

    with hostile(Deployment(blob)) as server:
        result = download(server, tmp_path, WEIGHTS)
    assert not isinstance(result, Exception), result
    assert (result.path / "adapter_model.safetensors").read_bytes() == FILES[
        "adapter_model.safetensors"
    ]
    assert listing(tmp_path / "dest") == ["ckpt"]


def test_refusals_after_progress_keep_only_a_resumable_part(tmp_path: Path) -> None:
    # The first URL serves the first segments, then the store refuses every URL: the bytes
    # that arrived stay, with their journal, for the next run to resume.
    served: list[int] = []

    def blob(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        if rank == 0 and len(served) < 2:
            served.append(1)
            return serve(request, sock, data)
        refuse(request, sock)

    deployment = Deployment(blob)
    with hostile(deployment) as server:
        result = download(
            server, tmp_path, WEIGHTS, DownloadOptions(connections=1, segment_size=65536)
        )
    assert isinstance(result, DownloadUrlRefusedError), result
    assert deployment.url_requests == 1 + 2
    dest = tmp_path / "dest"
    assert listing(dest) == [".ckpt.part", ".ckpt.part.json"]
    journal = Journal.load(dest / ".ckpt.part.json")
    assert journal is not None and journal.done_bytes == 2 * 65536


def test_urls_refused_again_and_again_are_bounded_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each URL serves one request, then is refused: never twice in a row, so only the bound
    # on early renewals ends it (after 4 of them, with pauses between).
    monkeypatch.setattr(signed_url, "EARLY_RENEWAL_BACKOFF_S", 0.05)
    answered: set[int] = set()

    def blob(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        if rank not in answered:
            answered.add(rank)
            return serve(request, sock, data)
        refuse(request, sock)

    deployment = Deployment(blob)
    with hostile(deployment) as server:
        result = download(
            server, tmp_path, WEIGHTS, DownloadOptions(connections=1, segment_size=16384)
        )
    assert isinstance(result, DownloadUrlRefusedError), result
    assert result.exit_code == 11
    assert re.fullmatch(
        r"4 fresh download URLs from 127\.0\.0\.1 in \d+ s were each refused or expired early "
        r"\(HTTP 403 AccessDenied: Request has expired\); not a problem of your API key: "
        r"check this machine's clock, or tell the service's operator",
        result.message,
    ), result.message
    assert deployment.url_requests == 1 + 1 + signed_url.MAX_EARLY_URL_RENEWALS


# -- a client clock 20 minutes fast ----------------------------------------------------------


@pytest.mark.parametrize("date", ["server", None], ids=["with-date", "without-date"])
def test_a_fast_clock_does_not_renew_urls_that_look_expired_on_arrival(
    date: str | None, tmp_path: Path
) -> None:
    # The server's clock is 20 minutes behind ours: its 15-minute URLs are 5 minutes in the
    # past by our clock when they arrive. Before: one URL request per segment (10 here).
    # With the blob server's Date the offset is known; without, the URL is used until refused.
    def blob(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        serve(request, sock, data, date=http_date(-20 * 60) if date else None)

    deployment = Deployment(blob, expires_in=-5 * 60)
    with hostile(deployment) as server:
        result = download(
            server, tmp_path, WEIGHTS, DownloadOptions(connections=2, segment_size=65536)
        )
        blob_requests = [r for r in server.requests if r.path.startswith("/blob/")]
    assert not isinstance(result, Exception), result
    assert len(blob_requests) == -(-len(ARCHIVE) // 65536)  # one per segment: 10
    assert deployment.url_requests == 1 + 1  # the generation probe, then one URL for all


def test_the_server_date_corrects_the_expiry_on_our_clock() -> None:
    now = [10_000.0]
    fetched: list[int] = []

    async def fetch() -> Any:
        from logits_cli import models

        fetched.append(1)
        # The server's clock is 1200 s behind: its 900 s URL ends 300 s before our now.
        expires = datetime.fromtimestamp(now[0] - 1200 + 900, UTC)
        return models.CheckpointArchiveUrlResponse(url=f"u{len(fetched)}", expires=expires)

    async def scenario() -> None:
        urls = signed_url.SignedUrl(fetch, clock=lambda: now[0])
        assert (await urls.get())[0] == "u1"
        assert not urls.expired()  # our clock cannot judge it: not "expired" either
        assert (await urls.get())[0] == "u1"
        urls.note_server_date(http_date_at(now[0] - 1200))
        now[0] += 900 - 31  # more than 30 s left on the server's clock
        assert (await urls.get())[0] == "u1" and not urls.expired()
        now[0] += 2  # less than 30 s left there: replaced before the request
        assert (await urls.get())[0] == "u2"
        assert len(fetched) == 2

    asyncio.run(scenario())


def http_date_at(timestamp: float) -> str:
    import email.utils

    return email.utils.formatdate(timestamp, usegmt=True)


# -- F6: an endless body of unknown size -------------------------------------------------------


def endless_200(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
    sock.sendall(head(200, {"Content-Type": "application/octet-stream"}, "OK"))
    endless(sock)


@pytest.mark.parametrize("path", [WEIGHTS, EXTERNAL], ids=["archive", "files"])
def test_an_endless_body_without_any_size_stops_at_the_cap(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITS_MAX_UNSIZED_DOWNLOAD", "3M")  # the documented setting
    deployment = Deployment(endless_200, listed_size=False)
    with hostile(deployment) as server:
        result = cli_download(server, tmp_path, path, monkeypatch)
    assert result.exit_code == 1, result.stderr
    assert one_error(result.stderr, path) == (
        "the server sent more than 3 MiB without saying how large the file is; "
        "refused (LOGITS_MAX_UNSIZED_DOWNLOAD=SIZE allows more)"
    )
    assert listing(tmp_path / "dest") == []


def test_a_body_without_any_size_under_the_cap_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITS_MAX_UNSIZED_DOWNLOAD", "1M")

    def whole(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        sock.sendall(head(200, {"Connection": "close"}, "OK") + data)  # ends at EOF

    with hostile(Deployment(whole, listed_size=False)) as server:
        result = download(server, tmp_path, WEIGHTS, DownloadOptions(connections=2))
    assert not isinstance(result, Exception), result
    assert listing(tmp_path / "dest") == ["ckpt"]


def test_a_bad_cap_setting_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITS_MAX_UNSIZED_DOWNLOAD", "lots")
    with hostile(Deployment(endless_200)) as server:
        result = cli_download(server, tmp_path, WEIGHTS, monkeypatch)
        assert server.requests == []
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "Error: LOGITS_MAX_UNSIZED_DOWNLOAD must be a size such as 64G, 500M or 1T; got 'lots'"
    ]


def test_a_size_only_the_answer_gives_is_checked_against_the_free_space(tmp_path: Path) -> None:
    # No listed size; the answer claims a petabyte: refused on arrival, before any write.
    def huge(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        headers = {"Content-Range": f"bytes 0-65535/{1 << 50}", "Content-Length": "65536"}
        sock.sendall(head(206, headers, "Partial Content") + b"\0" * 65536)

    with hostile(Deployment(huge, listed_size=False)) as server:
        result = download(server, tmp_path, WEIGHTS)
    assert type(result) is LogitsError, result
    assert re.fullmatch(
        rf"not enough free space in .*/dest: {1 << 50} bytes needed, \d+ available", result.message
    ), result.message
    assert listing(tmp_path / "dest") == []


def test_an_endless_error_body_is_read_only_up_to_its_limit() -> None:
    # Through httpx (embedded and proxied origins) a 403's body was read whole: a hostile
    # one streams forever. Only ERROR_BODY_LIMIT bytes of it are kept, as the direct
    # reader does.
    from logits_cli.api.blob_direct import ERROR_BODY_LIMIT
    from logits_cli.api.transfer.blob_readers import bounded_error_answer

    async def forever() -> Any:
        while True:
            yield b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>" * 100

    async def scenario() -> Any:
        import httpx

        return await bounded_error_answer(httpx.Response(403, content=forever()))

    kept = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert kept.status_code == 403 and len(kept.content) == ERROR_BODY_LIMIT
