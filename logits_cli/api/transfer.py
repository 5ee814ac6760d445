"""The transfer engine: parallel ranged, resumable, verified archive downloads (docs/ARCHITECTURE.md §3,
docs/protocol.md §6.3).

``download_checkpoint`` fetches a checkpoint's archive into ``DEST/.NAME.part`` with several
``Range`` requests written at their offsets with ``os.pwrite``, records progress in the
journal ``DEST/.NAME.part.json`` so a later process can resume, verifies size and digest,
then extracts atomically into ``DEST/NAME`` (``extract.py``). ``DEST/.NAME.part.lock`` keeps
two processes off the same part file. Progress is reported through a callback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import httpx

from logits_cli import models
from logits_cli.api.download_options import DownloadOptions, DownloadResult, ProgressCallback
from logits_cli.api.extract import extract_checkpoint
from logits_cli.api.limits import LowSpeedGuard, RetryBudget, TooSlow, per_connection_limit
from logits_cli.api.retry import RetryPolicy, is_retryable_status
from logits_cli.api.transport_errors import HTTPX_ERRORS, error_for_httpx, is_transient_httpx_error
from logits_cli.api.verify import damaged_files, read_manifest
from logits_cli.errors import (
    BusyError,
    ConflictError,
    IntegrityError,
    LogitsError,
    NotFoundError,
    UnavailableError,
    UnexpectedResponseError,
    error_for_status,
)
from logits_cli.uri import CheckpointRef, validate_name

MiB = 1024 * 1024
MIN_SEGMENT = 8 * MiB
MAX_SEGMENT = 64 * MiB
# httpx.ASGITransport collects each response body in memory, so the embedded backend gets
# small bounded ranges: memory stays at connections × this.
EMBEDDED_SEGMENT = 4 * MiB
# The hasher follows the contiguous prefix, which the last segments of all connections
# complete together: smaller segments leave less to hash after the last byte arrives.
SEGMENTS_PER_CONNECTION = 8
MAX_FRUITLESS_ATTEMPTS = 5  # docs/protocol.md §6.3 step 4
URL_REFRESH_MARGIN_S = 30.0
JOURNAL_FLUSH_INTERVAL_S = 0.1  # bounds what a kill loses to ~0.1 s of transfer
HASH_CHUNK = 8 * MiB
# Received bytes are written by a thread, in batches of about this size: one batch per
# connection is written while the next one arrives, so memory stays at connections × 2 ×
# this, and the event loop never waits on the page cache.
WRITE_BATCH = 2 * MiB
MAX_BATCH_BUFFERS = 256  # well under IOV_MAX for one pwritev
JOURNAL_FORMAT = 1
# The headers that describe the whole archive; kept in the journal so a resumed process
# that has nothing left to fetch can still verify against them.
VALIDATOR_HEADERS = ("etag", "repr-digest", "x-goog-hash")


# -- digests (docs/protocol.md §6.3 step 6) -----------------------------------------------------


@dataclass(frozen=True)
class ExpectedDigest:
    algorithm: str  # "sha256" | "md5" | "crc32c"
    value: bytes
    source: str  # where it came from, for messages


_REPR_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):")
_ETAG_SHA256 = re.compile(r'"sha256:([0-9a-fA-F]{64})"')
_ETAG_MD5 = re.compile(r'"([0-9a-fA-F]{32})"')
_GOOG_HASH = re.compile(r"(?:^|,)\s*(md5|crc32c)=([A-Za-z0-9+/=]+)")


def _b64(text: str, length: int) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == length else None


def choose_digest(
    headers: Mapping[str, str], checkpoint_sha256: str | None
) -> ExpectedDigest | None:
    """The first available digest, in the order of docs/protocol.md §6.3 step 6."""
    repr_digest = headers.get("repr-digest", "")
    if match := _REPR_SHA256.search(repr_digest):
        value = _b64(match.group(1), 32)
        if value is not None:
            return ExpectedDigest("sha256", value, "Repr-Digest")
    etag = headers.get("etag", "")
    if match := _ETAG_SHA256.fullmatch(etag):
        return ExpectedDigest("sha256", bytes.fromhex(match.group(1)), "ETag")
    if checkpoint_sha256 and re.fullmatch(r"[0-9a-fA-F]{64}", checkpoint_sha256):
        return ExpectedDigest("sha256", bytes.fromhex(checkpoint_sha256), "checkpoint sha256")
    goog: dict[str, str] = {
        m.group(1): m.group(2) for m in _GOOG_HASH.finditer(headers.get("x-goog-hash", ""))
    }
    for algorithm, length in (("md5", 16), ("crc32c", 4)):
        if algorithm in goog and (value := _b64(goog[algorithm], length)) is not None:
            return ExpectedDigest(algorithm, value, f"x-goog-hash {algorithm}")
    if match := _ETAG_MD5.fullmatch(etag):
        return ExpectedDigest("md5", bytes.fromhex(match.group(1)), "ETag md5")
    return None


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


class Crc32c:
    """CRC-32C (Castagnoli), as Google Cloud Storage reports it. Pure Python, hence slow; it is
    only used when a server offers no sha256 and no md5."""

    _TABLE = _crc32c_table()

    def __init__(self) -> None:
        self._crc = 0xFFFFFFFF

    def update(self, data: bytes) -> None:
        crc, table = self._crc, self._TABLE
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ 0xFFFFFFFF).to_bytes(4, "big")


def _hasher(algorithm: str) -> Any:
    return Crc32c() if algorithm == "crc32c" else hashlib.new(algorithm)


def _hash_range(
    fd: int, offset: int, count: int, hashers: dict[str, Any], buffer: memoryview
) -> None:
    """Feed ``count`` bytes of the file at ``offset`` to ``hashers``, read into ``buffer``
    (reused, so hashing allocates nothing)."""
    while count > 0:
        got = os.preadv(fd, [buffer[: min(count, len(buffer))]], offset)
        if not got:
            raise IntegrityError("the part file is shorter than its journal says")
        for hasher in hashers.values():
            hasher.update(buffer[:got])
        offset += got
        count -= got


def _write_at(fd: int, chunks: list[bytes], offset: int) -> None:
    """All of ``chunks`` back to back at ``offset``, with as few system calls as possible."""
    pending = [memoryview(chunk) for chunk in chunks]
    while pending:
        written = os.pwritev(fd, pending, offset)
        if written == 0:
            raise OSError(errno.EIO, "the part file accepted no bytes")
        offset += written
        while pending and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if pending and written:
            pending[0] = pending[0][written:]


def hash_file(path: Path, algorithms: set[str]) -> dict[str, bytes]:
    """Digests of the whole file, one read pass for all ``algorithms``."""
    hashers = {name: _hasher(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.digest() for name, hasher in hashers.items()}


# -- signed URL with expiry (docs/protocol.md §6.3 steps 1 and 4) --------------------------------


class SignedUrl:
    """The current signed URL, fetched again when it is about to expire or was refused.

    A fresh URL is fetched before a request when less than 30 s remain; for URLs whose whole
    lifetime is shorter than that, when less than half of it remains (otherwise every request
    would fetch a new one).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[models.CheckpointArchiveUrlResponse]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = asyncio.Lock()
        self._url: str | None = None
        self._expires = 0.0
        self._margin = URL_REFRESH_MARGIN_S
        self.generation = 0

    async def _refresh(self) -> None:
        answer = await self._fetch()
        now = self._clock()
        self._url = answer.url
        self._expires = answer.expires.timestamp()
        self._margin = min(URL_REFRESH_MARGIN_S, max(0.0, self._expires - now) / 2)
        self.generation += 1

    async def get(self) -> tuple[str, int]:
        async with self._lock:
            if self._url is None or self._expires - self._clock() < self._margin:
                await self._refresh()
            assert self._url is not None
            return self._url, self.generation

    async def renew(self, generation: int) -> None:
        """Fetch a new URL unless another request already replaced ``generation``."""
        async with self._lock:
            if generation == self.generation:
                await self._refresh()

    def expired(self) -> bool:
        return self._url is not None and self._clock() >= self._expires


# -- journal ---------------------------------------------------------------------------------


@dataclass
class Journal:
    """Which bytes of the part file are good. ``filled[i]`` counts the bytes written from the
    start of segment ``i``; a segment is always filled from its start, so resuming is simple."""

    identity: dict[str, Any]
    size: int
    segment_size: int
    filled: list[int]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def plan(
        cls, identity: dict[str, Any], size: int, segment_size: int, headers: dict[str, str]
    ) -> Journal:
        count = max(1, -(-size // segment_size)) if segment_size else 1
        return cls(identity, size, segment_size, [0] * count, headers)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.segment_size
        return start, min(self.size, start + self.segment_size)

    def missing(self, index: int) -> int:
        start, end = self.bounds(index)
        return end - start - self.filled[index]

    @property
    def done_bytes(self) -> int:
        return sum(self.filled)

    @property
    def complete(self) -> bool:
        return all(self.missing(i) <= 0 for i in range(len(self.filled)))

    def save(self, path: Path) -> None:
        """Atomic replace. No fsync: a kill keeps the page cache, and after a power loss the
        final digest check catches whatever the journal claims wrongly."""
        scratch = path.with_name(path.name + ".tmp")
        document = {
            "format": JOURNAL_FORMAT,
            "identity": self.identity,
            "size": self.size,
            "segment_size": self.segment_size,
            "filled": self.filled,
            "headers": self.headers,
        }
        scratch.write_text(json.dumps(document, sort_keys=True))
        os.replace(scratch, path)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        try:
            document = json.loads(path.read_text())
            if document.get("format") != JOURNAL_FORMAT:
                return None
            journal = cls(
                identity=dict(document["identity"]),
                size=int(document["size"]),
                segment_size=int(document["segment_size"]),
                filled=[int(n) for n in document["filled"]],
                headers={str(k): str(v) for k, v in document["headers"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if journal.size <= 0 or journal.segment_size <= 0:
            return None  # a stream of unknown length cannot be resumed
        expected = Journal.plan(journal.identity, journal.size, journal.segment_size, {})
        if len(journal.filled) != len(expected.filled) or any(
            n < 0 or journal.missing(i) < 0 for i, n in enumerate(journal.filled)
        ):
            return None
        return journal


# -- the segment engine ---------------------------------------------------------------------


class _RetryableFailure(Exception):
    def __init__(
        self, reason: str, *, response: httpx.Response | None = None, renew_url: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.renew_url = renew_url


class _ArchiveChanged(Exception):
    """The server's archive no longer matches the journal (size or entity tag changed)."""


@dataclass(frozen=True)
class FetchResult:
    size: int
    expected: ExpectedDigest | None  # the digest to check against, if the server offers one
    digests: dict[str, bytes]  # of the whole file: sha256 and the expected digest's algorithm
    bytes_fetched: int
    resumed: bool


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def choose_segment_size(size: int | None, *, connections: int, embedded: bool) -> int:
    """8–64 MiB, aiming at a few segments per connection; small bounded ranges over ASGI."""
    if embedded:
        return EMBEDDED_SEGMENT
    if size is None:
        return MIN_SEGMENT
    wanted = size // max(1, connections * SEGMENTS_PER_CONNECTION)
    return max(MIN_SEGMENT, min(MAX_SEGMENT, wanted))


class ArchiveFetcher:
    """Fill ``part`` with the archive behind ``urls``, journaled in ``journal_path``.

    One probe request goes first and learns the size, entity tag and digests (and whether
    the server honours ``Range``); the other connections start once it has its headers.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        urls: SignedUrl,
        part: Path,
        journal_path: Path,
        identity: dict[str, Any],
        *,
        expected_size: int | None,
        checkpoint_sha256: str | None,
        segment_size: int,
        connections: int,
        stall_timeout: float,
        progress: ProgressCallback | None = None,
        policy: RetryPolicy | None = None,
        low_speed_limit: float = 0,
        low_speed_time: float = 0,
    ) -> None:
        self._http = http
        self._urls = urls
        self._part = part
        self._journal_path = journal_path
        self._identity = identity
        self._expected_size = expected_size
        self._checkpoint_sha256 = checkpoint_sha256
        self._segment_size = segment_size
        self._connections = max(1, connections)
        self._stall_timeout = stall_timeout
        self._progress = progress
        self._policy = policy or RetryPolicy()
        self._low_speed_limit = per_connection_limit(low_speed_limit, self._connections)
        self._low_speed_time = low_speed_time
        self._journal: Journal | None = None
        self._planned = asyncio.Event()
        self._pending: deque[int] = deque()
        self._ranges_ignored = False
        self._fetched = 0
        self._done = 0
        self._last_flush = 0.0
        # Hashing follows the contiguous filled prefix while segments arrive, so verifying
        # needs no second pass over the file. ``_layout`` changes whenever the journal is
        # replaced (bytes on disk no longer valid), which makes the hasher start over.
        self._layout = 0
        self._grown = asyncio.Event()
        self._hash_waits_at: int | None = None  # the offset whose arrival wakes the hasher
        self._fetch_done = False
        self._hash_task: asyncio.Task[dict[str, bytes]] | None = None
        # Its own thread, shut down (and waited for) before the file descriptor is closed,
        # so a cancelled hash never reads from a closed or reused descriptor.
        self._hash_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-hash")
        self._closing = threading.Event()  # stops the hash thread early
        # The same for writes. One thread suffices: the kernel serializes writes to one file.
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-write")

    # -- entry point ----------------------------------------------------------------------

    async def run(self) -> FetchResult:
        journal = Journal.load(self._journal_path)
        if journal is not None and not self._journal_matches(journal):
            journal = None
        resumed = journal is not None and journal.done_bytes > 0
        if journal is None:
            # A new file rather than truncating the old one: on ext4, a file truncated to
            # zero is flushed to disk synchronously when closed.
            with contextlib.suppress(FileNotFoundError):
                self._part.unlink()
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for restart in range(2):
                try:
                    await self._fetch_all(fd, journal)
                    break
                except _ArchiveChanged:
                    if restart:
                        raise UnexpectedResponseError(
                            "the archive changed on the server during the download"
                        ) from None
                    journal = None
                    self._replace_journal(None)
            assert self._journal is not None and self._hash_task is not None
            self._fetch_done = True
            self._grown.set()
            digests = await self._hash_task
            if os.fstat(fd).st_size != self._journal.size:
                raise IntegrityError(
                    f"downloaded {os.fstat(fd).st_size} bytes, expected {self._journal.size}"
                )
            return FetchResult(
                size=self._journal.size,
                expected=self._expected_digest(),
                digests=digests,
                bytes_fetched=self._fetched,
                resumed=resumed,
            )
        finally:
            self._closing.set()
            if self._hash_task is not None and not self._hash_task.done():
                self._hash_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._hash_task
            self._hash_thread.shutdown(wait=True, cancel_futures=True)
            self._write_thread.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
            if self._journal is not None:
                self._journal.save(self._journal_path)

    def _replace_journal(self, journal: Journal | None) -> None:
        self._journal = journal
        self._layout += 1
        self._grown.set()

    def _expected_digest(self) -> ExpectedDigest | None:
        headers = self._journal.headers if self._journal is not None else {}
        return choose_digest(headers, self._checkpoint_sha256)

    def _prefix_end(self) -> int:
        """Where the contiguous run of good bytes from offset 0 ends."""
        journal = self._journal
        if journal is None:
            return 0
        for index, filled in enumerate(journal.filled):
            start, end = journal.bounds(index)
            if start + filled < end:
                return start + filled
        return journal.size

    async def _hash_prefix(self, fd: int) -> dict[str, bytes]:
        buffer = memoryview(bytearray(HASH_CHUNK))
        while True:
            layout = self._layout
            expected = self._expected_digest()
            algorithms = {"sha256"} | ({expected.algorithm} if expected else set())
            hashers = {name: _hasher(name) for name in algorithms}
            position = 0
            while layout == self._layout:
                end = self._prefix_end()
                if position < end:
                    position = await asyncio.get_running_loop().run_in_executor(
                        self._hash_thread,
                        self._hash_available,
                        fd,
                        position,
                        hashers,
                        buffer,
                        layout,
                    )
                elif self._fetch_done:
                    return {name: hasher.digest() for name, hasher in hashers.items()}
                else:
                    self._grown.clear()
                    self._hash_waits_at = end
                    await self._grown.wait()
                    self._hash_waits_at = None

    def _hash_available(
        self, fd: int, position: int, hashers: dict[str, Any], buffer: memoryview, layout: int
    ) -> int:
        """In the hash thread: hash from ``position`` for as long as the good prefix is ahead,
        and return where hashing stopped. Staying in the thread rather than returning to the
        busy event loop after each buffer is what lets hashing keep pace with the network.
        ``filled`` only grows while ``layout`` holds, so a prefix read here is never too far."""
        while layout == self._layout and not self._closing.is_set():
            end = self._prefix_end()
            if position >= end:
                break
            count = min(end - position, len(buffer))
            _hash_range(fd, position, count, hashers, buffer)
            position += count
        return position

    def _journal_matches(self, journal: Journal) -> bool:
        if not self._part.is_file() or self._part.stat().st_size != journal.size:
            return False
        if journal.identity != self._identity:
            return False
        return self._expected_size is None or journal.size == self._expected_size

    async def _fetch_all(self, fd: int, journal: Journal | None) -> None:
        self._journal = journal
        self._planned = asyncio.Event()
        self._pending.clear()
        self._done = journal.done_bytes if journal is not None else 0
        self._report()
        if self._hash_task is None:
            self._hash_task = asyncio.create_task(self._hash_prefix(fd))
        if journal is not None and journal.complete:
            return
        probe = 0
        if journal is not None:
            probe = next(i for i in range(len(journal.filled)) if journal.missing(i) > 0)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._worker(fd, probe))
                await self._planned.wait()
                journal = self._journal
                assert journal is not None
                if not self._ranges_ignored:
                    self._pending.extend(
                        i
                        for i in range(len(journal.filled))
                        if i != probe and journal.missing(i) > 0
                    )
                    for _ in range(min(self._connections - 1, len(self._pending))):
                        group.create_task(self._worker(fd, None))
        except BaseExceptionGroup as failures:
            # Workers fail together (siblings are cancelled); the first failure is the story.
            raise failures.exceptions[0] from None

    async def _worker(self, fd: int, first: int | None) -> None:
        index = first if first is not None else self._next_segment()
        while index is not None:
            await self._fetch_segment(fd, index)
            index = self._next_segment()

    def _next_segment(self) -> int | None:
        return self._pending.popleft() if self._pending else None

    # -- one segment ----------------------------------------------------------------------

    def _current(self, index: int) -> int:
        """Once the server is found to ignore ``Range``, the whole file is segment 0."""
        return 0 if self._ranges_ignored else index

    def _segment_filled(self, index: int) -> int:
        return self._journal.filled[index] if self._journal is not None else 0

    async def _fetch_segment(self, fd: int, index: int) -> None:
        fruitless = 0
        budget = RetryBudget()
        while True:
            index = self._current(index)
            if self._journal is not None and self._journal.missing(index) <= 0:
                return
            before = self._segment_filled(index)
            url, generation = await self._urls.get()
            try:
                await self._attempt(fd, index, url)
                if self._segment_filled(self._current(index)) == before:
                    raise _RetryableFailure("the server sent an empty body")
                fruitless = 0
            except _RetryableFailure as failure:
                progressed = self._segment_filled(self._current(index)) > before
                fruitless = 0 if progressed else fruitless + 1
                if fruitless >= MAX_FRUITLESS_ATTEMPTS:
                    raise UnavailableError(
                        f"download failed: {failure.reason} "
                        f"({fruitless} attempts in a row without progress)"
                    ) from None
                if give_up := budget.failed(time.monotonic()):
                    raise UnavailableError(
                        f"download failed: {failure.reason} ({give_up})"
                    ) from None
                if failure.renew_url or self._urls.expired():
                    await self._urls.renew(generation)
                elif not progressed:
                    await asyncio.sleep(self._policy.delay(fruitless - 1, failure.response))

    async def _attempt(self, fd: int, index: int, url: str) -> None:
        headers = {}
        if self._journal is None:
            offset, last = 0, self._segment_size - 1
        else:
            start, end = self._journal.bounds(index)
            offset, last = start + self._journal.filled[index], end - 1
        if not self._ranges_ignored:
            headers["Range"] = f"bytes={offset}-{last}"
            if self._journal is not None and self._journal.headers.get("etag"):
                headers["If-Range"] = self._journal.headers["etag"]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._stall_timeout) as stall:
                request = self._http.build_request("GET", url, headers=headers)
                response = await self._http.send(request, stream=True)
                try:
                    position, limit = await self._accept(fd, response, offset, last)
                    writer = _BatchWriter(self, fd, self._current(index), position)
                    try:
                        # Re-arming the timer on every chunk would cost a timer each;
                        # re-arming at most every quarter period with a quarter of slack
                        # declares a stall after 1 to 1.25 times stall_timeout without a byte.
                        slack = self._stall_timeout / 4
                        rearmed = loop.time()
                        stall.reschedule(rearmed + self._stall_timeout + slack)
                        speed = LowSpeedGuard(self._low_speed_limit, self._low_speed_time, rearmed)
                        received = 0
                        async for chunk in response.aiter_raw():
                            now = loop.time()
                            if now - rearmed > slack:
                                stall.reschedule(now + self._stall_timeout + slack)
                                rearmed = now
                            if limit is not None and position + len(chunk) > limit:
                                # Never past the promised size: not one byte is written.
                                raise IntegrityError(
                                    f"the server sent more than the {limit} bytes promised"
                                )
                            position += len(chunk)
                            received += len(chunk)
                            await writer.add(chunk)
                            speed.update(now, received)
                    finally:
                        # Whatever arrived is good up to here; and no write may still be
                        # running once this attempt is over.
                        await writer.finish()
                finally:
                    await response.aclose()
        except TimeoutError:
            raise _RetryableFailure(
                f"no data for {self._stall_timeout:g} s", renew_url=self._urls.expired()
            ) from None
        except TooSlow as slow:
            raise _RetryableFailure(str(slow), renew_url=self._urls.expired()) from None
        except HTTPX_ERRORS as exc:
            if not is_transient_httpx_error(exc):  # a redirect loop fails the same way again
                raise error_for_httpx(
                    exc, host=httpx.URL(url).host or "the blob server", url_from_server=True
                ) from None
            raise _RetryableFailure(
                f"network error ({type(exc).__name__})", renew_url=self._urls.expired()
            ) from None
        if self._journal is not None and self._ranges_ignored:
            if self._journal.size and position != self._journal.size:
                raise _RetryableFailure("the connection closed before the end of the archive")
            if not self._journal.size:  # size learned only now: the body ran until EOF
                self._journal.size = self._journal.segment_size = position

    async def _accept(
        self, fd: int, response: httpx.Response, offset: int, last: int
    ) -> tuple[int, int | None]:
        """Check the answer's status and headers; return where its body goes and where it
        must stop (None: until the connection's end)."""
        status = response.status_code
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if status in (200, 206) and encoding not in ("", "identity"):
            # docs/protocol.md §6.2: ranges and digests are of the raw archive; a decoded body
            # could also be any size at all (a gzip bomb).
            raise IntegrityError(
                f"the server applied Content-Encoding {encoding!r} to the archive; refused"
            )
        if status == 206:
            return self._accept_range(fd, response, offset, last)
        if status == 200:
            return self._accept_whole(fd, response)
        await response.aread()
        detail, code = _error_detail(response)
        if status == 416:
            raise _ArchiveChanged()
        if status == 403 and (code == "url_expired" or self._urls.expired()):
            raise _RetryableFailure("the download URL expired", renew_url=True)
        if is_retryable_status(status):
            raise _RetryableFailure(f"HTTP {status}", response=response)
        if status == 404:
            raise NotFoundError(
                "the archive is no longer available (deleted, expired or overwritten)"
            )
        raise error_for_status(status, code, detail or f"archive download refused (HTTP {status})")

    def _accept_range(
        self, fd: int, response: httpx.Response, offset: int, last: int
    ) -> tuple[int, int | None]:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None:
            raise UnexpectedResponseError("a partial response had no valid Content-Range")
        first, final, total_text = match.groups()
        if int(first) != offset or int(final) > last or total_text == "*":
            raise UnexpectedResponseError("a partial response covered the wrong byte range")
        total = int(total_text)
        validators = _validators(response.headers)
        if self._journal is None:
            if self._expected_size is not None and total != self._expected_size:
                raise IntegrityError(
                    f"the server's archive has {total} bytes, the listing says {self._expected_size}"
                )
            os.ftruncate(fd, total)
            self._replace_journal(
                Journal.plan(self._identity, total, self._segment_size, validators)
            )
            self._planned.set()
        elif total != self._journal.size or (
            self._journal.headers.get("etag")
            and validators.get("etag")
            and validators["etag"] != self._journal.headers["etag"]
        ):
            raise _ArchiveChanged()
        else:
            self._journal.headers.update(validators)
            self._planned.set()
        return offset, int(final) + 1

    def _accept_whole(self, fd: int, response: httpx.Response) -> tuple[int, int | None]:
        """A 200 to a range request: the server ignores ``Range`` (or, for a resumed file,
        the entity changed). Only the probe may take it: the body becomes the whole file."""
        if self._planned.is_set() and not self._ranges_ignored:
            raise _ArchiveChanged()
        length_text = response.headers.get("content-length")
        size = int(length_text) if length_text and length_text.isdigit() else self._expected_size
        if size is not None and self._expected_size is not None and size != self._expected_size:
            raise IntegrityError(
                f"the server's archive has {size} bytes, the listing says {self._expected_size}"
            )
        self._ranges_ignored = True
        os.ftruncate(fd, size or 0)
        self._replace_journal(
            Journal.plan(self._identity, size or 0, size or 0, _validators(response.headers))
        )
        self._done = 0
        self._planned.set()
        return 0, size

    def _written(self, index: int, offset: int, count: int, layout: int) -> None:
        """``count`` bytes of segment ``index`` are on disk at ``offset``."""
        if layout != self._layout:
            return  # written under a journal that has since been replaced
        assert self._journal is not None
        self._journal.filled[index] += count
        self._fetched += count
        self._done += count
        if self._hash_waits_at is not None and offset == self._hash_waits_at:
            self._grown.set()  # only the write at the prefix's end lets the hasher go on
        self._report()
        now = time.monotonic()
        if now - self._last_flush >= JOURNAL_FLUSH_INTERVAL_S:
            self._last_flush = now
            self._journal.save(self._journal_path)

    def _report(self) -> None:
        if self._progress is not None:
            total = self._journal.size if self._journal is not None else self._expected_size
            self._progress(self._done, total)


class _BatchWriter:
    """Writes one response body at its offsets through the fetcher's write thread: chunks
    are gathered into batches, one batch is written while the next arrives, and the
    journal counts a batch only once it is on disk."""

    def __init__(self, fetcher: ArchiveFetcher, fd: int, index: int, offset: int) -> None:
        self._fetcher = fetcher
        self._fd = fd
        self._index = index
        self._layout = fetcher._layout
        self._offset = offset  # where the batch being gathered goes
        self._chunks: list[bytes] = []
        self._size = 0
        self._in_flight: tuple[asyncio.Future[None], int, int] | None = None

    async def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size >= WRITE_BATCH or len(self._chunks) >= MAX_BATCH_BUFFERS:
            await self._submit()

    async def finish(self) -> None:
        if self._chunks:
            await self._submit()
        await self._land()

    async def _submit(self) -> None:
        await self._land()
        chunks, offset, size = self._chunks, self._offset, self._size
        self._chunks, self._size = [], 0
        self._offset += size
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._fetcher._write_thread, _write_at, self._fd, chunks, offset
        )
        self._in_flight = (future, offset, size)

    async def _land(self) -> None:
        if self._in_flight is None:
            return
        future, offset, size = self._in_flight
        self._in_flight = None
        await future
        self._fetcher._written(self._index, offset, size, self._layout)


def _validators(headers: httpx.Headers) -> dict[str, str]:
    found = {}
    for name in VALIDATOR_HEADERS:
        values = headers.get_list(name)
        if values:
            found[name] = ", ".join(values)
    if found.get("etag", "").startswith("W/"):
        del found["etag"]  # a weak tag cannot guard byte ranges
    return found


def _error_detail(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    detail, code = body.get("detail"), body.get("code")
    return (detail if isinstance(detail, str) else None, code if isinstance(code, str) else None)


# -- the whole download ---------------------------------------------------------------------


def _part_paths(dest_dir: Path, name: str) -> tuple[Path, Path, Path]:
    part = dest_dir / f".{name}.part"
    return part, part.with_name(part.name + ".json"), part.with_name(part.name + ".lock")


def _discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _install_file(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, moving an existing ``target`` aside first: on ext4, a
    rename over an existing file flushes the renamed file to disk synchronously."""
    if not target.exists() and not target.is_symlink():
        os.rename(source, target)
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, aside)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(aside, target)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink()


def _local_copy(
    final: Path, checkpoint: models.Checkpoint, *, archive_only: bool
) -> tuple[bool, list[str]]:
    """Whether ``final`` already holds our download of exactly this checkpoint (no network
    needed), and what is wrong with its files: missing or resized ones, found from the
    manifest's names and sizes without re-hashing. A damaged copy is replaced."""
    if archive_only:
        if not final.is_file() or checkpoint.sha256 is None:
            return False, []
        if checkpoint.size_bytes is not None and final.stat().st_size != checkpoint.size_bytes:
            return False, []
        return hash_file(final, {"sha256"})["sha256"].hex() == checkpoint.sha256.lower(), []
    try:
        manifest = read_manifest(final)
    except (IntegrityError, OSError):  # OSError: DEST is no directory; reported later
        return False, []
    if checkpoint.sha256 is not None:
        same = manifest.archive_sha256 == checkpoint.sha256.lower()
    else:
        same = (
            manifest.tinker_path == checkpoint.tinker_path
            and manifest.archive_size == checkpoint.size_bytes
            and manifest.created == checkpoint.time
        )
    return same, damaged_files(final, manifest) if same else []


def _sweep_leftovers(dest_dir: Path, name: str) -> None:
    """Remove what a killed process left mid-extraction or mid-replace. Only called while
    holding the part lock, so no live process is using them. The patterns are exact, so
    the files of a checkpoint whose name merely starts like these are never touched."""
    escaped = re.escape(name)
    leftover_name = re.compile(
        rf"\.{escaped}\.(tmp-[a-z0-9_]{{8}}|old-[0-9a-f]{{8}}|tar\.old-[0-9]+)"
    )
    for leftover in dest_dir.iterdir():
        if not leftover_name.fullmatch(leftover.name):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            _discard(leftover)


def _check_free_space(dest_dir: Path, part: Path, size: int | None, *, archive_only: bool) -> None:
    if size is None:
        return
    try:
        on_disk = part.stat().st_blocks * 512  # a resumed, sparse part file: only what is written
    except FileNotFoundError:
        on_disk = 0
    needed = max(0, size - on_disk) + (0 if archive_only else size)
    free = shutil.disk_usage(dest_dir).free
    if free < needed:
        raise LogitsError(
            f"not enough free space in {dest_dir}: {needed} bytes needed, {free} available"
        )


def _prepare_destination(dest_dir: Path, lock_path: Path) -> None:
    """Create ``dest_dir`` and prove it writable by creating the lock file, so an unwritable
    destination is reported as such, not as a lock that seems held (``-o /proc/self``)."""
    hint = "choose a directory you can write to with -o DIR"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LogitsError(f"cannot create {dest_dir}: {exc.strerror or exc}", hint=hint) from None
    try:
        os.close(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError as exc:
        raise LogitsError(
            f"cannot create files in {dest_dir}: {exc.strerror or exc}", hint=hint
        ) from None


async def _lock_part(lock_path: Path, wait: float) -> filelock.BaseFileLock:
    """Hold the part file's lock, polling for up to ``wait`` seconds (non-blocking attempts
    keep Ctrl-C and cancellation immediate)."""
    lock = filelock.FileLock(lock_path, timeout=0)
    give_up = time.monotonic() + wait
    while True:
        try:
            lock.acquire()
            return lock
        except filelock.Timeout:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise BusyError(
                    f"another process is downloading into {lock_path.parent} "
                    f"(lock {lock_path.name} is held)",
                    hint="let it finish, or pass --lock-wait 10m to wait for it",
                ) from None
            await asyncio.sleep(min(0.2, remaining))


def _discard_unresumable(part: Path, journal_path: Path, *, invalid: bool) -> None:
    """After a failure keep only what a later run can resume: a part file with a journal
    that counts some good bytes. Invalid content (an integrity failure) goes too."""
    journal = None if invalid else Journal.load(journal_path)
    if journal is None or journal.done_bytes == 0 or not part.is_file():
        _discard(part, journal_path, journal_path.with_name(journal_path.name + ".tmp"))


def _unlock_part(lock: filelock.BaseFileLock, lock_path: Path) -> None:
    # Unlinking while still holding the lock is safe: filelock notices a lock taken on an
    # unlinked file and retries on the new one.
    _discard(lock_path)
    lock.release()


async def download_checkpoint(
    client: Any,
    ref: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions | None = None,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Fetch, verify and extract one checkpoint into ``dest_dir/NAME`` (docs/ARCHITECTURE.md §3).

    ``options.timeout`` bounds all of it: metadata, waiting for the part lock, the transfer
    (extraction, once started, is finished so DEST stays consistent). When it runs out the
    transfer is cancelled and what was fetched stays resumable."""
    options = options or DownloadOptions()
    try:
        async with asyncio.timeout(options.timeout) as deadline:
            return await _download(client, ref, Path(dest_dir), options, progress)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise UnavailableError(f"download did not finish within {options.timeout:g} s") from None
    except OSError as exc:
        # Network failures are httpx errors, handled inside; an OSError here is local:
        # a full disk, a read-only or unwritable destination.
        raise LogitsError(
            f"cannot write the download in {dest_dir}: {exc.strerror or exc}"
        ) from exc


async def _download(
    client: Any,
    ref: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
) -> DownloadResult:
    ref = await client.resolve(ref)
    checkpoint: models.Checkpoint = await client.get_checkpoint(ref)
    name = validate_name(checkpoint.name)
    final = dest_dir / (f"{name}.tar" if options.archive_only else name)
    part, journal_path, lock_path = _part_paths(dest_dir, name)

    repaired: list[str] = []
    if not options.force:
        present, repaired = await asyncio.to_thread(
            _local_copy, final, checkpoint, archive_only=options.archive_only
        )
        if present and not repaired:
            return DownloadResult(checkpoint, final, bytes_fetched=0, skipped=True, resumed=False)
        if repaired:
            options = dataclasses.replace(options, force=True)  # our own copy, damaged
        elif final.exists() or final.is_symlink():
            raise ConflictError(
                f"{final} already exists and holds something else",
                hint="pass --force to replace it",
            )

    _prepare_destination(dest_dir, lock_path)
    lock = await _lock_part(lock_path, options.lock_wait)
    try:
        _sweep_leftovers(dest_dir, name)
        _check_free_space(dest_dir, part, checkpoint.size_bytes, archive_only=options.archive_only)
        fetched, resumed, archive_sha256, size = await _fetch_verified(
            client, ref, checkpoint, part, journal_path, options, progress
        )
        if options.archive_only:
            _install_file(part, final)
            _discard(journal_path)
        else:
            finish = asyncio.to_thread(
                _extract_and_finish,
                part,
                journal_path,
                dest_dir,
                name,
                checkpoint,
                archive_sha256,
                size,
                options,
            )
            await _complete_even_if_cancelled(finish)
    except BaseException as exc:
        _discard_unresumable(part, journal_path, invalid=isinstance(exc, IntegrityError))
        raise
    finally:
        _unlock_part(lock, lock_path)
    return DownloadResult(
        checkpoint,
        final,
        bytes_fetched=fetched,
        skipped=False,
        resumed=resumed,
        repaired=tuple(repaired),
    )


def _extract_and_finish(
    part: Path,
    journal_path: Path,
    dest_dir: Path,
    name: str,
    checkpoint: models.Checkpoint,
    archive_sha256: str,
    size: int,
    options: DownloadOptions,
) -> None:
    try:
        extract_checkpoint(
            part,
            dest_dir,
            name,
            checkpoint=checkpoint,
            archive_sha256=archive_sha256,
            archive_size=size,
            force=options.force,
        )
    except IntegrityError:
        _discard(part, journal_path)  # verified bytes, bad content: nothing to resume
        raise
    if options.keep_archive:
        _install_file(part, dest_dir / f"{name}.tar")
    else:
        _discard(part)
    _discard(journal_path)


async def _complete_even_if_cancelled(work: Awaitable[None]) -> None:
    """Await ``work`` (a thread, which cannot be interrupted) to its end even when this task
    is cancelled, so the part lock is held until DEST is consistent; then re-raise."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # marks it retrieved: the caller asked about the cancellation
        raise


async def _fetch_verified(
    client: Any,
    ref: CheckpointRef,
    checkpoint: models.Checkpoint,
    part: Path,
    journal_path: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
) -> tuple[int, bool, str, int]:
    """Fetch into ``part`` and verify it; one fresh download after a digest mismatch.
    Returns (bytes fetched, resumed, archive sha256 hex, size)."""
    embedded = bool(getattr(client, "embedded", False))
    segment_size = options.segment_size or choose_segment_size(
        checkpoint.size_bytes, connections=options.connections, embedded=embedded
    )
    if embedded:
        segment_size = min(segment_size, EMBEDDED_SEGMENT)
    identity = {
        "tinker_path": checkpoint.tinker_path,
        "size": checkpoint.size_bytes,
        "sha256": checkpoint.sha256,
    }
    urls = SignedUrl(lambda: client.archive_url(ref))
    return await fetch_and_check(
        client.blob_http,
        urls,
        part,
        journal_path,
        identity,
        checkpoint.size_bytes,
        checkpoint.sha256,
        segment_size,
        options,
        progress,
        getattr(client, "retry_policy", None),
    )


async def fetch_and_check(
    http: httpx.AsyncClient,
    urls: SignedUrl,
    part: Path,
    journal_path: Path,
    identity: dict[str, Any],
    expected_size: int | None,
    expected_sha256: str | None,
    segment_size: int,
    options: DownloadOptions,
    progress: ProgressCallback | None,
    policy: RetryPolicy | None,
) -> tuple[int, bool, str, int]:
    fetched_total = 0
    resumed_first: bool | None = None
    for _ in range(2):
        fetcher = ArchiveFetcher(
            http,
            urls,
            part,
            journal_path,
            identity,
            expected_size=expected_size,
            checkpoint_sha256=expected_sha256,
            segment_size=segment_size,
            connections=options.connections,
            stall_timeout=options.stall_timeout,
            progress=progress,
            policy=policy,
            low_speed_limit=options.low_speed_limit,
            low_speed_time=options.low_speed_time,
        )
        result = await fetcher.run()
        fetched_total += result.bytes_fetched
        if resumed_first is None:
            resumed_first = result.resumed
        expected = result.expected
        digests = result.digests
        if expected is not None and expected.algorithm not in digests:
            # The digest on offer changed while resuming: one more pass over the file.
            digests = digests | await asyncio.to_thread(hash_file, part, {expected.algorithm})
        if expected is None or digests[expected.algorithm] == expected.value:
            return fetched_total, bool(resumed_first), digests["sha256"].hex(), result.size
        _discard(part, journal_path)
    source = expected.source if expected is not None else "its digest"
    raise IntegrityError(
        f"the downloaded {part.name.removesuffix('.part')} does not match its digest "
        f"({source}), twice"
    )
