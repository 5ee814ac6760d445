"""The request layer against a malicious server (tests/hostile_server.py): answers that drip,
answers that never end, answers that lie about their size, redirect loops, a full disk.

Each case ends in bounded time with the documented class and exit code (docs/ARCHITECTURE.md §4), and
the endless answers leave the process's memory bounded (psutil).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from logits_cli import config, errors
from logits_cli.api import LogitsClient, open_client
from logits_cli.api.answers import AnswerLimits
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transport_errors import error_for_httpx
from tests.hostile_server import HostileServer, Request, head, hostile

pytestmark = pytest.mark.anyio

KEY = "tml-" + "h" * 43
MiB = 1 << 20
RUN = "run-1"
FAST_RETRIES = RetryPolicy(deadline_s=4.0, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_client(
    srv: HostileServer,
    tmp_path: Path,
    *,
    limits: AnswerLimits | None = None,
    policy: RetryPolicy = FAST_RETRIES,
) -> LogitsClient:
    settings = config.resolve(
        env={"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": srv.base_url, "LOGITS_API_KEY": KEY}
    )
    return open_client(settings, retry_policy=policy, limits=limits)


def json_answer(sock: socket.socket, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    sock.sendall(head(status, headers) + data)


def api(routes: dict[str, Callable[[Request, socket.socket], None]]) -> Callable:
    """A responder: ``client/config`` answers ``{}``; ``routes`` maps paths below /api/v1/."""

    def respond(request: Request, sock: socket.socket) -> None:
        endpoint = request.path.removeprefix("/api/v1/")
        if endpoint == "client/config":
            json_answer(sock, 200, {})
        elif endpoint in routes:
            routes[endpoint](request, sock)
        else:
            json_answer(sock, 404, {"detail": "no such route", "code": "not_found"})

    return respond


def drip(request: Request, sock: socket.socket) -> None:
    """A JSON answer of 1,000 bytes (leading blanks are valid JSON) at 5 bytes a second."""
    body = b" " * 986 + b'{"status":"ok"}'
    sock.sendall(head(200, {"Content-Type": "application/json", "Content-Length": "1001"}))
    for byte in range(len(body)):
        sock.sendall(body[byte : byte + 1])
        time.sleep(0.2)


def endless_chunked(request: Request, sock: socket.socket) -> None:
    """A checkpoint listing that never ends, chunked, without Content-Length (up to 2 GiB)."""
    entry = b'{"checkpoint_id":"weights/x","checkpoint_type":"training"},'
    piece = entry * (MiB // len(entry))
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    sock.sendall(head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
    sock.sendall(b'11\r\n{"checkpoints": [\r\n')
    for _ in range(2048):
        sock.sendall(chunk)


def lying_length(request: Request, sock: socket.socket) -> None:
    """Claims a terabyte, then sends as much as the client will take (up to 2 GiB)."""
    sock.sendall(head(200, {"Content-Type": "application/json", "Content-Length": str(10**12)}))
    piece = b" " * MiB
    for _ in range(2048):
        sock.sendall(piece)


class PeakRss:
    """Samples this process's RSS every 10 ms in a thread; ``growth`` is peak minus start."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start

    @contextmanager
    def watching(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._done.set()
            self._thread.join(timeout=5)
            self.peak = max(self.peak, self._process.memory_info().rss)


# -- F4: deadline and minimum rate ------------------------------------------------------


async def test_dripping_answer_fails_unavailable_within_the_deadline(tmp_path: Path) -> None:
    # Before the fix: 200 s for this answer (httpx's read timeout restarts on every byte);
    # an endless drip hung forever.
    limits = AnswerLimits(attempt_deadline_s=3.0)
    with hostile(api({"healthz": drip})) as srv:
        started = time.monotonic()
        async with make_client(srv, tmp_path, limits=limits) as client:
            with pytest.raises(errors.UnavailableError) as caught:
                await client.health()
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert caught.value.exit_code == errors.EXIT_UNAVAILABLE
    message = str(caught.value)
    assert message.startswith(
        "no complete answer within 3 s from 127.0.0.1 (GET /api/v1/healthz); gave up after "
    ), message
    assert len(srv.requests) >= 2  # a timeout is retried, within the retry budget


async def test_dripping_headers_are_bounded_by_the_deadline_too(tmp_path: Path) -> None:
    def drip_headers(request: Request, sock: socket.socket) -> None:
        raw = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 500 + b"\r\n"
        for byte in range(len(raw)):
            sock.sendall(raw[byte : byte + 1])
            time.sleep(0.2)

    limits = AnswerLimits(attempt_deadline_s=3.0)
    with hostile(api({"healthz": drip_headers})) as srv:
        started = time.monotonic()
        async with make_client(srv, tmp_path, limits=limits) as client:
            with pytest.raises(errors.UnavailableError, match=r"^no complete answer within 3 s"):
                await client.health()
        assert time.monotonic() - started < 30


async def test_answer_below_the_minimum_rate_is_abandoned(tmp_path: Path) -> None:
    # No deadline at all: the minimum rate alone must end the drip.
    limits = AnswerLimits(attempt_deadline_s=None, low_speed_window_s=1.0)
    with hostile(api({"healthz": drip})) as srv:
        started = time.monotonic()
        async with make_client(srv, tmp_path, limits=limits) as client:
            with pytest.raises(errors.UnavailableError) as caught:
                await client.health()
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert str(caught.value).startswith(
        "the answer arrived slower than 1 KiB/s for 1 s from 127.0.0.1 (GET /api/v1/healthz)"
    ), str(caught.value)


async def test_a_slow_but_steady_answer_longer_than_the_window_succeeds(tmp_path: Path) -> None:
    def steady(request: Request, sock: socket.socket) -> None:
        body = b" " * (16 * 1024 - 15) + b'{"status":"ok"}'
        sock.sendall(head(200, {"Content-Type": "application/json", "Content-Length": "16384"}))
        for start in range(0, len(body), 4096):  # 4 KiB every 0.4 s: ~10 KiB/s for ~1.6 s
            sock.sendall(body[start : start + 4096])
            time.sleep(0.4)

    limits = AnswerLimits(low_speed_window_s=1.0)
    with hostile(api({"healthz": steady})) as srv:
        async with make_client(srv, tmp_path, limits=limits) as client:
            assert (await client.health()).status == "ok"
    assert len(srv.requests) == 1


# -- F5: size cap ---------------------------------------------------------------------------


async def test_endless_chunked_listing_is_cut_off_at_64_mib_with_bounded_memory(
    tmp_path: Path,
) -> None:
    # Before the fix the whole body was held: the CLI reached 6.4 GB on such a listing.
    with hostile(api({"checkpoints": endless_chunked})) as srv:
        async with make_client(srv, tmp_path) as client:
            with (
                PeakRss().watching() as rss,
                pytest.raises(errors.UnexpectedResponseError) as caught,
            ):
                async for _ in client.iter_all_checkpoints():
                    pass
    assert str(caught.value) == (
        "the answer from 127.0.0.1 to GET /api/v1/checkpoints is larger than 64 MiB; "
        "refusing to read it"
    )
    assert caught.value.exit_code == errors.EXIT_ERROR
    assert rss.growth < 200 * MiB, rss.growth
    assert len([r for r in srv.requests if r.path.endswith("/checkpoints")]) == 1  # not retried


async def test_a_small_cap_bounds_memory_to_match(tmp_path: Path) -> None:
    with hostile(api({"checkpoints": endless_chunked})) as srv:
        async with make_client(srv, tmp_path, limits=AnswerLimits(max_answer_bytes=MiB)) as client:
            with (
                PeakRss().watching() as rss,
                pytest.raises(errors.UnexpectedResponseError, match="larger than 1 MiB"),
            ):
                async for _ in client.iter_all_checkpoints():
                    pass
    assert rss.growth < 40 * MiB, rss.growth


async def test_huge_content_length_is_refused_before_reading(tmp_path: Path) -> None:
    with hostile(api({"healthz": lying_length})) as srv:
        started = time.monotonic()
        async with make_client(srv, tmp_path) as client:
            with (
                PeakRss().watching() as rss,
                pytest.raises(errors.UnexpectedResponseError) as caught,
            ):
                await client.health()
        elapsed = time.monotonic() - started
    assert str(caught.value) == (
        "the answer from 127.0.0.1 to GET /api/v1/healthz is larger than 64 MiB; "
        "refusing to read it"
    )
    assert caught.value.hint and "logits config show" in caught.value.hint
    assert rss.growth < 40 * MiB, rss.growth
    assert elapsed < 30


async def test_a_gzip_bomb_is_capped_after_decompression(tmp_path: Path) -> None:
    import gzip

    bomb = gzip.compress(b" " * (80 * MiB), compresslevel=9)  # ~80 KiB on the wire

    def respond(request: Request, sock: socket.socket) -> None:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(bomb)),
        }
        sock.sendall(head(200, headers) + bomb)

    with hostile(api({"healthz": respond})) as srv:
        async with make_client(srv, tmp_path) as client:
            with pytest.raises(errors.UnexpectedResponseError, match="larger than 64 MiB"):
                await client.health()


async def test_a_compressed_answer_within_the_cap_is_decoded(tmp_path: Path) -> None:
    import gzip

    body = gzip.compress(b'{"status": "ok"}')

    def respond(request: Request, sock: socket.socket) -> None:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(body)),
        }
        sock.sendall(head(200, headers) + body)

    with hostile(api({"healthz": respond})) as srv:
        async with make_client(srv, tmp_path) as client:
            assert (await client.health()).status == "ok"


# -- F10: a full server disk ----------------------------------------------------------------


async def test_507_is_reported_at_once_as_the_servers_disk(tmp_path: Path) -> None:
    def full(request: Request, sock: socket.socket) -> None:
        body = {"detail": "the server's store has no space left", "code": "insufficient_storage"}
        json_answer(sock, 507, body)

    with hostile(api({"training_runs": full})) as srv:
        # A long retry budget: before the fix, 507 was retried for all of it.
        policy = RetryPolicy(deadline_s=120.0)
        started = time.monotonic()
        async with make_client(srv, tmp_path, policy=policy) as client:
            with pytest.raises(errors.InsufficientStorageError) as caught:
                await client.iter_runs().__anext__()
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert len([r for r in srv.requests if r.path.endswith("/training_runs")]) == 1
    assert str(caught.value) == (
        "the server has no space left to store this: "
        "the server's store has no space left (HTTP 507)"
    )
    assert caught.value.exit_code == errors.EXIT_UNAVAILABLE
    assert caught.value.hint is not None and "server's disk is full" in caught.value.hint


# -- F13: redirect loops --------------------------------------------------------------------


async def test_a_blob_redirect_loop_maps_to_unavailable_naming_the_host(tmp_path: Path) -> None:
    def loop(request: Request, sock: socket.socket) -> None:
        headers = {
            "Location": "/blob/again?sig=S3cr3t",
            "Content-Length": "0",
            "Connection": "close",
        }
        sock.sendall(head(302, headers))

    with hostile(loop) as srv:
        async with make_client(srv, tmp_path) as client:
            with pytest.raises(httpx.TooManyRedirects) as caught:
                await client.blob_http.get(f"{srv.base_url}/blob/start?sig=S3cr3t")
    error = error_for_httpx(caught.value, host="127.0.0.1", url_from_server=True)
    assert type(error) is errors.UnavailableError
    assert error.message == "too many redirects from 127.0.0.1"
    assert error.exit_code == errors.EXIT_UNAVAILABLE
    assert "S3cr3t" not in error.message and "S3cr3t" not in (error.hint or "")
    assert len(srv.requests) == 6  # the first request and 5 redirects, then it stops


# -- the same through the real CLI: exit codes and the stderr lines --------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[HostileServer], None]:
    def point_at(srv: HostileServer) -> None:
        monkeypatch.setenv("LOGITS_BASE_URL", srv.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", KEY)

    return point_at


def test_cli_save_on_a_full_server_disk_exits_6_at_once(
    cli_env: Callable[[HostileServer], None],
) -> None:
    from tests.cli.conftest import invoke

    def full(request: Request, sock: socket.socket) -> None:
        body = {"detail": "the server's store has no space left", "code": "insufficient_storage"}
        json_answer(sock, 507, body)

    with hostile(api({"save_weights": full})) as srv:
        cli_env(srv)
        started = time.monotonic()
        result = invoke(["ckpt", "save", "step-1", "--run", RUN])
        elapsed = time.monotonic() - started
    assert result.exit_code == errors.EXIT_UNAVAILABLE, result.stderr
    assert result.stderr.splitlines() == [
        "Error: the server has no space left to store this: "
        "the server's store has no space left (HTTP 507)",
        "Hint: the server's disk is full: ask its operator to free space there, or delete "
        "checkpoints you no longer need (`logits ckpt rm`)",
    ]
    assert [r.path for r in srv.requests].count("/api/v1/save_weights") == 1
    assert elapsed < 30  # before the fix: 2 minutes of retries


def test_cli_ls_of_an_endless_listing_exits_1_with_one_line(
    cli_env: Callable[[HostileServer], None],
) -> None:
    from tests.cli.conftest import invoke

    with hostile(api({"checkpoints": endless_chunked})) as srv:
        cli_env(srv)
        with PeakRss().watching() as rss:
            result = invoke(["ckpt", "ls", "--json"])
    assert result.exit_code == errors.EXIT_ERROR, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        "Error: the answer from 127.0.0.1 to GET /api/v1/checkpoints is larger than 64 MiB; "
        "refusing to read it"
    )
    assert "Traceback" not in result.stderr
    assert rss.growth < 200 * MiB, rss.growth


def _one_checkpoint_then_a_redirect_loop(port_of: Callable[[], int]) -> Callable:
    checkpoint = {
        "checkpoint_id": "weights/step-1",
        "checkpoint_type": "training",
        "time": "2025-06-01T12:00:05Z",
        "tinker_path": f"logits://{RUN}/weights/step-1",
        "size_bytes": 10240,
        "public": False,
        "expires_at": None,
    }

    def listing(request: Request, sock: socket.socket) -> None:
        json_answer(sock, 200, {"checkpoints": [checkpoint], "cursor": None})

    def archive(request: Request, sock: socket.socket) -> None:
        url = f"http://127.0.0.1:{port_of()}/blob/start?sig=S3cr3t"
        json_answer(sock, 200, {"url": url, "expires": "2099-01-01T00:00:00Z"})

    api_answers = api(
        {
            f"training_runs/{RUN}/checkpoints": listing,
            f"training_runs/{RUN}/checkpoints/weights/step-1/archive": archive,
        }
    )

    def respond(request: Request, sock: socket.socket) -> None:
        if request.path.startswith("/blob/"):
            headers = {"Location": "/blob/again?sig=S3cr3t", "Content-Length": "0"}
            sock.sendall(head(302, headers | {"Connection": "close"}))
        else:
            api_answers(request, sock)

    return respond


def test_cli_download_through_a_redirect_loop_exits_6_naming_the_host(
    cli_env: Callable[[HostileServer], None], tmp_path: Path
) -> None:
    from tests.cli.conftest import invoke

    holder: list[HostileServer] = []
    with hostile(_one_checkpoint_then_a_redirect_loop(lambda: holder[0].port)) as srv:
        holder.append(srv)
        cli_env(srv)
        result = invoke(["ckpt", "download", f"logits://{RUN}/weights/step-1", "-o", str(tmp_path)])
    assert result.exit_code == errors.EXIT_UNAVAILABLE, result.stderr
    assert "too many redirects from 127.0.0.1" in result.stderr, result.stderr
    assert "S3cr3t" not in result.stderr and "internal error" not in result.stderr
