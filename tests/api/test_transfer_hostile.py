"""The transfer engine against hostile blob servers (issue 8, rows F4, F6, F7, F14).

A real server answers the API (runs, checkpoints, listings, signed URLs); the client's
``archive_url`` then hands out a URL of ``tests/hostile_server.py`` instead, which serves the
real archive's bytes, or hand-made ones, in the worst ways a server can: a trickle, a stall
after a little data, a lying length, an endless body, a gzip bomb, 50,000 junk members.
Every wait is bounded with a generous limit; the pre-fix behaviour was minutes or forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from transfer_support import (
    GOOD_FILES,
    build_tar,
    complete_document,
    listing,
    make_checkpoint,
    ref_of,
    remote_client,
    server_blob,
)

from logits_cli import models
from logits_cli.api import DownloadOptions
from logits_cli.api.extract import MAX_MEMBERS
from logits_cli.api.limits import MAX_SEGMENT_ATTEMPTS, LowSpeedGuard, RetryBudget, TooSlow
from logits_cli.api.verify import verify_checkpoint_dir
from logits_cli.errors import (
    AuthError,
    DownloadUrlRefusedError,
    IntegrityError,
    LogitsError,
    UnavailableError,
)
from tests.hostile_server import Request, head, hostile, trickle

LIMIT_S = 60.0  # a guard against a hung test only; the pre-fix behaviour was minutes/forever
MiB = 1024 * 1024
FAST = DownloadOptions(connections=1, stall_timeout=5, low_speed_time=1.0)
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _range_of(request: Request, size: int) -> tuple[int, int]:
    match = _RANGE.fullmatch(request.headers.get("range", ""))
    if match is None:
        return 0, size - 1
    first, last = int(match.group(1)), match.group(2)
    return first, min(size - 1, int(last)) if last else size - 1


def ranged(
    blob: bytes, send: Callable[[socket.socket, bytes], None], **extra: str
) -> Callable[[Request, socket.socket], None]:
    """206 answers with honest headers for the requested range; ``send`` delivers the body."""

    def respond(request: Request, sock: socket.socket) -> None:
        first, last = _range_of(request, len(blob))
        piece = blob[first : last + 1]
        headers = {
            "Content-Type": "application/x-tar",
            "Content-Range": f"bytes {first}-{last}/{len(blob)}",
            "Content-Length": str(len(piece)),
            **extra,
        }
        sock.sendall(head(206, headers, "Partial Content"))
        send(sock, piece)

    return respond


def hold_open(sock: socket.socket) -> None:
    """Keep a connection silent until the client closes it (or the server stops)."""
    sock.settimeout(LIMIT_S)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


class PeakRss:
    """The process's peak resident memory while the block runs, sampled in a thread."""

    def __enter__(self) -> PeakRss:
        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def run_hostile(
    server: Any,
    tmp_path: Path,
    respond: Callable[[Any], Callable[[Request, socket.socket], None]],
    *,
    options: DownloadOptions = FAST,
    archive: Callable[[models.Checkpoint], bytes] | None = None,
    listed: Callable[[models.Checkpoint], models.Checkpoint] = lambda c: c,
    dest: Path | None = None,
) -> tuple[models.Checkpoint, Any, float, PeakRss, list[Request]]:
    """Download a real checkpoint whose blob URL points at a hostile server.

    ``respond(blob)`` builds the responder from the archive bytes: the real blob, or
    ``archive(checkpoint)`` (then the listing is changed to promise exactly that archive). ``listed``
    may change what the listing promises further. Returns (checkpoint as listed, result or
    exception, seconds taken, peak memory, requests the hostile server saw).
    """
    dest = dest or tmp_path / "dest"

    async def scenario(srv: Any) -> tuple[models.Checkpoint, Any]:
        async with remote_client(server, tmp_path / "home") as client:
            real = await make_checkpoint(client)
            blob = server_blob(server.store, real).read_bytes()
            promised = real
            if archive is not None:
                blob = archive(real)
                promised = real.model_copy(
                    update={"size_bytes": len(blob), "sha256": _sha256(blob)}
                )
            srv.respond = respond(blob)
            promised = listed(promised)
            original_get = client.get_checkpoint

            async def get_checkpoint(ref: Any) -> models.Checkpoint:
                await original_get(ref)  # the real server still answers the metadata call
                return promised

            async def archive_url(ref: Any) -> models.CheckpointArchiveUrlResponse:
                expires = datetime.now(UTC) + timedelta(hours=1)
                return models.CheckpointArchiveUrlResponse(url=f"{srv.base_url}/b", expires=expires)

            client.get_checkpoint = get_checkpoint  # type: ignore[method-assign]
            client.archive_url = archive_url  # type: ignore[method-assign]
            try:
                outcome: Any = await client.download(ref_of(real), dest, options=options)
            except LogitsError as exc:
                outcome = exc
            return promised, outcome

    with hostile(lambda request, sock: None) as srv, PeakRss() as memory:
        started = time.monotonic()
        checkpoint, outcome = asyncio.run(scenario(srv))
        elapsed = time.monotonic() - started
    return checkpoint, outcome, elapsed, memory, srv.requests


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def journal_bytes(dest: Path, name: str = "ckpt") -> int:
    return sum(json.loads((dest / f".{name}.part.json").read_text())["filled"])


# -- F4: minimum rate and bounded retries -----------------------------------------------------


def test_a_trickling_server_is_given_up_on_within_bounded_time(module_server, tmp_path):
    # ~2 KB/s: under the 64 KiB/s limit, but never silent long enough for the stall detector.
    def respond(blob: bytes) -> Any:
        return ranged(blob, lambda sock, piece: trickle(sock, piece, chunk=100, every_s=0.05))

    _, outcome, elapsed, _, requests = run_hostile(module_server, tmp_path, respond)
    assert isinstance(outcome, UnavailableError), outcome
    assert "slower than the minimum rate" in outcome.message
    assert f"{MAX_SEGMENT_ATTEMPTS} failed attempts" in outcome.message
    assert len(requests) == MAX_SEGMENT_ATTEMPTS
    assert elapsed < LIMIT_S  # the archive alone would take over a minute at this rate
    # Every attempt made a little progress: the journal keeps it for a later resume.
    assert 0 < journal_bytes(tmp_path / "dest") < 133120


def test_progress_then_stall_on_every_attempt_is_bounded_in_count(module_server, tmp_path):
    # 1,000 bytes then silence, every time: each attempt "progresses", so the old rule
    # (5 attempts in a row *without* progress) never gave up.
    def respond(blob: bytes) -> Any:
        def send(sock: socket.socket, piece: bytes) -> None:
            sock.sendall(piece[:1000])
            hold_open(sock)

        return ranged(blob, send)

    options = DownloadOptions(connections=1, stall_timeout=0.3, low_speed_limit=0)
    _, outcome, elapsed, _, requests = run_hostile(
        module_server, tmp_path, respond, options=options
    )
    assert isinstance(outcome, UnavailableError), outcome
    assert outcome.message == (
        f"download failed: no data for 0.3 s ({MAX_SEGMENT_ATTEMPTS} failed attempts)"
    )
    assert len(requests) == MAX_SEGMENT_ATTEMPTS
    assert journal_bytes(tmp_path / "dest") == 1000 * MAX_SEGMENT_ATTEMPTS
    assert elapsed < LIMIT_S


def test_the_overall_timeout_cancels_a_trickle_and_keeps_the_resumable_part(
    module_server, tmp_path
):
    def respond(blob: bytes) -> Any:
        return ranged(blob, lambda sock, piece: trickle(sock, piece, chunk=100, every_s=0.05))

    options = DownloadOptions(connections=1, low_speed_limit=0, timeout=1.5)
    _, outcome, elapsed, _, _ = run_hostile(module_server, tmp_path, respond, options=options)
    assert isinstance(outcome, UnavailableError)
    assert outcome.message == "download did not finish within 1.5 s"
    assert elapsed < LIMIT_S
    assert listing(tmp_path / "dest") == [".ckpt.part", ".ckpt.part.json"]
    assert journal_bytes(tmp_path / "dest") > 0


def test_low_speed_guard_averages_over_its_window():
    guard = LowSpeedGuard(limit=1000, window=10, now=0)
    for second in range(1, 10):
        guard.update(second, 500 * second)  # 500 B/s, but the window is not full yet
    with pytest.raises(TooSlow):
        guard.update(10, 5000)
    fast = LowSpeedGuard(limit=1000, window=10, now=0)
    for second in range(1, 40):
        fast.update(second, 2000 * second)  # never raises
    burst = LowSpeedGuard(limit=1000, window=10, now=0)
    burst.update(5, 50_000)  # a fast start does not excuse a stall later
    with pytest.raises(TooSlow):
        for second in range(6, 30):
            burst.update(second, 50_000 + second)
    assert LowSpeedGuard(limit=0, window=10, now=0).enabled is False


def test_retry_budget_bounds_count_and_time():
    by_count = RetryBudget(max_attempts=3, window=1000)
    assert [by_count.failed(t) for t in (0, 1, 2)] == [None, None, "3 failed attempts"]
    by_time = RetryBudget(max_attempts=100, window=60)
    assert by_time.failed(0) is None
    assert by_time.failed(59) is None
    assert by_time.failed(61) == "still failing after 61 s of retries"


# -- F6: encodings, lying lengths, endless bodies, full disks --------------------------------


def test_a_gzip_content_encoding_is_refused_without_inflating(module_server, tmp_path):
    bomb = gzip.compress(b"\0" * (256 * MiB), compresslevel=9)  # ~250 KB on the wire

    def respond(blob: bytes) -> Any:
        def answer(request: Request, sock: socket.socket) -> None:
            sock.sendall(
                head(200, {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}, "OK")
            )
            sock.sendall(bomb)

        return answer

    _, outcome, elapsed, memory, _ = run_hostile(module_server, tmp_path, respond)
    assert isinstance(outcome, IntegrityError), outcome
    assert outcome.exit_code == 7
    assert outcome.message == "the server applied Content-Encoding 'gzip' to the archive; refused"
    assert listing(tmp_path / "dest") == []
    assert memory.growth < 100 * MiB
    assert elapsed < LIMIT_S


def test_the_request_asks_for_identity_encoding(module_server, tmp_path):
    def respond(blob: bytes) -> Any:
        return ranged(blob, lambda sock, piece: sock.sendall(piece))

    _, outcome, _, _, requests = run_hostile(module_server, tmp_path, respond)
    assert not isinstance(outcome, Exception), outcome
    assert verify_checkpoint_dir(outcome.path).ok
    assert {r.headers.get("accept-encoding") for r in requests} == {"identity"}


def endless_200(blob: bytes, *, length: str | None = None) -> Any:
    """200 to a range request, no (or a lying) Content-Length, the blob then zeros forever."""

    def answer(request: Request, sock: socket.socket) -> None:
        headers = {"Content-Type": "application/x-tar"}
        if length is not None:
            headers["Content-Length"] = length
        sock.sendall(head(200, headers, "OK"))
        sock.sendall(blob)
        zeros = b"\0" * 65536
        give_up = time.monotonic() + LIMIT_S
        while time.monotonic() < give_up:
            sock.sendall(zeros)

    return answer


def test_an_endless_body_is_cut_at_the_promised_size(module_server, tmp_path):
    checkpoint, outcome, elapsed, memory, _ = run_hostile(module_server, tmp_path, endless_200)
    assert isinstance(outcome, IntegrityError), outcome
    assert (
        outcome.message == f"the server sent more than the {checkpoint.size_bytes} bytes promised"
    )
    assert listing(tmp_path / "dest") == []  # invalid content is not kept for a resume
    assert memory.growth < 100 * MiB
    assert elapsed < LIMIT_S


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_endless_body_of_unknown_size_fills_no_disk_and_leaves_nothing(
    module_server, tmp_path, small_filesystem
):
    # The listing promises no size, the body has none: it stops before the free space of
    # DEST falls under the reserve (8 MiB on this 16 MiB filesystem), not at ENOSPC. What it
    # wrote cannot be resumed (a stream of unknown length), so none of it stays.
    def unknown(checkpoint: models.Checkpoint) -> models.Checkpoint:
        return checkpoint.model_copy(update={"size_bytes": None})

    _, outcome, elapsed, _, _ = run_hostile(
        module_server,
        tmp_path,
        endless_200,
        listed=unknown,
        dest=small_filesystem / "dest",
        options=DownloadOptions(connections=1, low_speed_time=5),
    )
    assert type(outcome) is LogitsError, outcome
    assert outcome.exit_code == 1
    assert re.fullmatch(
        r"stopped a download of unknown size after \d+ bytes: less than 8 MiB would be left "
        r"free in .*/small/dest",
        outcome.message,
    ), outcome.message
    assert listing(small_filesystem / "dest") == []
    assert psutil.disk_usage(str(small_filesystem)).used < MiB
    assert elapsed < LIMIT_S


def test_a_lying_content_length_on_a_whole_answer_is_refused(module_server, tmp_path):
    def respond(blob: bytes) -> Any:
        return endless_200(blob, length=str(len(blob) * 1000))

    checkpoint, outcome, _, _, _ = run_hostile(module_server, tmp_path, respond)
    assert isinstance(outcome, IntegrityError), outcome
    assert outcome.message == (
        f"the server's archive has {checkpoint.size_bytes * 1000} bytes, "
        f"the listing says {checkpoint.size_bytes}"
    )
    assert listing(tmp_path / "dest") == []


# -- F7: archives with many members ----------------------------------------------------------


def junk_archive(tinker_path: str, junk: int) -> bytes:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = list(GOOD_FILES.items())
    members += [(f"junk-{i:05d}", b"") for i in range(junk)]
    members.append(("checkpoint_complete", complete_document(GOOD_FILES, tinker_path)))
    return build_tar(members)


def test_fifty_thousand_junk_members_are_refused_and_nothing_is_installed(module_server, tmp_path):
    def archive(checkpoint: models.Checkpoint) -> bytes:
        return junk_archive(checkpoint.tinker_path, 50_000)

    def respond(blob: bytes) -> Any:
        return ranged(blob, lambda sock, piece: sock.sendall(piece))

    _, outcome, elapsed, _, _ = run_hostile(module_server, tmp_path, respond, archive=archive)
    assert isinstance(outcome, IntegrityError), outcome
    assert outcome.exit_code == 7
    assert outcome.message == (
        f"the archive has more than {MAX_MEMBERS} members; a checkpoint has a few"
    )
    assert listing(tmp_path / "dest") == []
    assert elapsed < LIMIT_S


# -- F14: refused downloads leave nothing ----------------------------------------------------


def test_a_401_from_the_blob_server_leaves_no_part_file(module_server, tmp_path):
    # A blob URL carries no key of ours: a 401 is about the URL (issue 21 G9), not the key.
    def respond(blob: bytes) -> Any:
        def answer(request: Request, sock: socket.socket) -> None:
            body = b'{"detail":"no","code":"unauthenticated"}'
            sock.sendall(head(401, {"Content-Length": str(len(body))}, "Unauthorized") + body)

        return answer

    _, outcome, _, _, requests = run_hostile(module_server, tmp_path, respond)
    assert isinstance(outcome, DownloadUrlRefusedError), outcome
    assert not isinstance(outcome, AuthError) and outcome.exit_code == 11
    assert "(HTTP 401 unauthenticated: no), and a fresh one too" in outcome.message
    assert len(requests) == 2  # the URL, then a fresh one
    assert listing(tmp_path / "dest") == []


def test_a_size_mismatch_leaves_no_part_file(module_server, tmp_path):
    def respond(blob: bytes) -> Any:
        return ranged(blob + b"\0" * 10240, lambda sock, piece: sock.sendall(piece))

    checkpoint, outcome, _, _, _ = run_hostile(module_server, tmp_path, respond)
    assert isinstance(outcome, IntegrityError), outcome
    assert outcome.message == (
        f"the server's archive has {checkpoint.size_bytes + 10240} bytes, "
        f"the listing says {checkpoint.size_bytes}"
    )
    assert listing(tmp_path / "dest") == []


def test_an_archive_with_a_dotdot_member_leaves_nothing(module_server, tmp_path):
    info = tarfile.TarInfo("..")
    info.type = tarfile.REGTYPE

    def archive(checkpoint: models.Checkpoint) -> bytes:
        return build_tar([info, *GOOD_FILES.items()])

    def respond(blob: bytes) -> Any:
        return ranged(blob, lambda sock, piece: sock.sendall(piece))

    _, outcome, _, _, _ = run_hostile(module_server, tmp_path, respond, archive=archive)
    assert isinstance(outcome, IntegrityError), outcome
    assert outcome.message == "unsafe archive member name '..'"
    assert listing(tmp_path / "dest") == []
