"""A body nobody gives a size for (no listed size or sha256, a 200 without
``Content-Length``) that ends before its first byte: its size is then unknown, never 0, so
the download retries, and fails with exit 6 (unavailable) rather than installing an empty
file when no attempt ever sends the body (issue 21, F6)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from transfer_support import listing

from logits_cli.api import DownloadOptions
from logits_cli.errors import EXIT_UNAVAILABLE
from tests.api.test_url_refusals import (
    ADAPTER,
    EXTERNAL,
    WEIGHTS,
    Deployment,
    cli_download,
    download,
)
from tests.hostile_server import Request, head, hostile


def cut_off(sock: socket.socket, how: str) -> None:
    """A 200 with no size, then the connection ends before any byte: a clean close (FIN),
    which HTTP reads as an empty body, or a reset (RST)."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(head(200, {"Connection": "close"}, "OK"))


@pytest.mark.parametrize("how", ["closed", "reset"])
@pytest.mark.parametrize("path", [WEIGHTS, EXTERNAL], ids=["archive", "files"])
def test_an_unsized_body_that_never_arrives_fails_with_exit_6_and_installs_nothing(
    path: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def never(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        attempts.append(request.path)
        cut_off(sock, how)

    with hostile(Deployment(never, listed_size=False)) as server:
        result = cli_download(server, tmp_path, path, monkeypatch)
    assert result.exit_code == EXIT_UNAVAILABLE == 6, result.stderr
    assert "download failed" in result.stderr, result.stderr
    assert len(attempts) > 1  # retried, not taken as a finished empty file
    assert listing(tmp_path / "dest") == []


@pytest.mark.parametrize("how", ["closed", "reset"])
@pytest.mark.parametrize("path", [WEIGHTS, EXTERNAL], ids=["archive", "files"])
def test_an_unsized_body_cut_off_once_is_downloaded_whole_by_the_next_attempt(
    path: str, how: str, tmp_path: Path
) -> None:
    attempts: list[str] = []

    def once(request: Request, sock: socket.socket, rank: int, data: bytes) -> None:
        attempts.append(request.path)
        if len(attempts) == 1:
            cut_off(sock, how)
        else:
            sock.sendall(head(200, {"Connection": "close"}, "OK") + data)  # ends at EOF

    with hostile(Deployment(once, listed_size=False)) as server:
        result = download(server, tmp_path, path, DownloadOptions(connections=2))
    assert not isinstance(result, Exception), result
    assert len(attempts) >= 2
    if path == WEIGHTS:
        assert listing(tmp_path / "dest") == ["ckpt"]
        assert (tmp_path / "dest" / "ckpt" / "adapter_model.safetensors").read_bytes() == (
            b"A" * 600_000
        )
    else:
        for name, content in ADAPTER.items():
            assert (tmp_path / "dest" / "e1" / name).read_bytes() == content
