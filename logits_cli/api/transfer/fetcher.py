"""The segment engine: one signed URL into one part file, parallel ranged requests, journaled,
hashed while written; ``fetch_and_check`` adds the digest check and one fresh retry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from logits_cli.api.blob_direct import ConnectionSlot
from logits_cli.api.download_options import ProgressCallback, report_phase
from logits_cli.api.limits import RetryBudget, per_connection_limit
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transfer.attempts import ArchiveChanged, RetryableFailure, SegmentAttempts
from logits_cli.api.transfer.digests import ExpectedDigest, choose_digest, hash_range, new_hasher
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transfer.tuning import (
    EMBEDDED_SEGMENT,
    HASH_CHUNK,
    JOURNAL_FLUSH_INTERVAL_S,
    MAX_FRUITLESS_ATTEMPTS,
    MAX_SEGMENT,
    MIN_SEGMENT,
    SEGMENTS_PER_CONNECTION,
    WRITEBACK_EVERY,
)
from logits_cli.config import DEFAULT_MAX_UNSIZED_DOWNLOAD
from logits_cli.diskio import open_own_file
from logits_cli.errors import IntegrityError, UnavailableError, UnexpectedResponseError


@dataclass(frozen=True)
class FetchResult:
    size: int
    expected: ExpectedDigest | None  # the digest to check against, if the server offers one
    digests: dict[str, bytes]  # of the whole file: sha256 and the expected digest's algorithm
    bytes_fetched: int
    resumed: bool


def choose_segment_size(size: int | None, *, connections: int, embedded: bool) -> int:
    """8–64 MiB, aiming at a few segments per connection; small bounded ranges over ASGI."""
    if embedded:
        return EMBEDDED_SEGMENT
    if size is None:
        return MIN_SEGMENT
    wanted = size // max(1, connections * SEGMENTS_PER_CONNECTION)
    return max(MIN_SEGMENT, min(MAX_SEGMENT, wanted))


class RangedFetcher(SegmentAttempts):
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
        write_back: bool = True,
        max_unsized: int = DEFAULT_MAX_UNSIZED_DOWNLOAD,
    ) -> None:
        """``write_back``: the part file is what gets installed (``_written_back``); False
        for an archive that is extracted and then deleted, which never needs the disk.
        ``max_unsized``: where a body no source gives a size for is cut (body_bounds.py)."""
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
        self._max_unsized = max_unsized
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
        # Requests read in threads (blob_direct.py): one thread and one kept-alive
        # connection per worker; shut down, like the others, before the descriptor closes.
        self._reader_threads = ThreadPoolExecutor(
            max_workers=self._connections, thread_name_prefix="logits-read"
        )
        # Writeback while the download goes on (``_written_back``), in a thread of its own,
        # shut down like the others before the descriptor closes.
        self._flush_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-flush")
        self._flushing: Future[None] | None = None
        # The first failure of one: Linux reports a writeback error to one fsync only, so
        # the install's own fsync may never see it; the download fails with it instead.
        self._flush_error: BaseException | None = None
        self._unflushed = 0
        self._write_back = write_back
        self._fd = -1
        self._slots: list[ConnectionSlot] = []
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()  # the journal's counts, also kept by reader threads

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
        # Never through a symlink or into another user's file planted at the part's name.
        fd = self._fd = open_own_file(self._part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for restart in range(2):
                try:
                    await self._fetch_all(fd, journal)
                    break
                except ArchiveChanged:
                    if restart:
                        raise UnexpectedResponseError(
                            "the archive changed on the server during the download"
                        ) from None
                    journal = None
                    self._replace_journal(None)
            assert self._journal is not None and self._hash_task is not None
            self._fetch_done = True
            self._grown.set()
            if not self._hash_task.done():
                report_phase(self._progress, "verifying")  # the hash catches up
            digests = await self._hash_task
            if self._flushing is not None:
                await asyncio.wrap_future(self._flushing)
            if self._flush_error is not None:
                raise self._flush_error
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
            self._reader_threads.shutdown(wait=True, cancel_futures=True)
            self._flush_thread.shutdown(wait=True, cancel_futures=True)
            for slot in self._slots:
                slot.close()
            os.close(fd)
            if self._journal is not None:
                self._journal.save(self._journal_path)

    def _replace_journal(self, journal: Journal | None) -> None:
        with self._count_lock:
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
            hashers = {name: new_hasher(name) for name in algorithms}
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
            hash_range(fd, position, count, hashers, buffer)
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
        slot = ConnectionSlot()
        self._slots.append(slot)
        index = first if first is not None else self._next_segment()
        while index is not None:
            await self._fetch_segment(fd, index, slot)
            index = self._next_segment()

    def _next_segment(self) -> int | None:
        return self._pending.popleft() if self._pending else None

    # -- one segment ----------------------------------------------------------------------

    def _current(self, index: int) -> int:
        """Once the server is found to ignore ``Range``, the whole file is segment 0."""
        return 0 if self._ranges_ignored else index

    def _segment_filled(self, index: int) -> int:
        return self._journal.filled[index] if self._journal is not None else 0

    async def _fetch_segment(self, fd: int, index: int, slot: ConnectionSlot) -> None:
        fruitless = 0
        budget = RetryBudget()
        while True:
            index = self._current(index)
            if self._journal is not None and self._journal.missing(index) <= 0:
                return
            before = self._segment_filled(index)
            url, generation = await self._urls.get()
            try:
                await self._attempt(fd, index, url, slot)
                if self._segment_filled(self._current(index)) == before:
                    raise RetryableFailure("the server sent an empty body")
                fruitless = 0
            except RetryableFailure as failure:
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
                    await self._urls.renew(generation, refusal=failure.refusal)
                elif not progressed:
                    await asyncio.sleep(self._policy.delay(fruitless - 1, failure.response))

    def _written(self, index: int, offset: int, count: int, layout: int) -> None:
        """``count`` bytes of segment ``index`` are on disk at ``offset`` (event loop)."""
        if self._count_written(index, count, layout):
            self._announce(offset)

    def _count_written(self, index: int, count: int, layout: int) -> bool:
        """Count bytes on disk in the journal. Reader threads call this themselves, before
        the loop hears of the write, so the journal saved when the fetcher stops holds
        every write, even one whose announcement the loop never got to run."""
        with self._count_lock:
            if layout != self._layout:
                return False  # written under a journal that has since been replaced
            assert self._journal is not None
            self._journal.filled[index] += count
            self._fetched += count
            self._done += count
            self._written_back(count)
            return True

    def _written_back(self, count: int) -> None:
        """Every WRITEBACK_EVERY bytes, an fdatasync in the background (none while one runs):
        the disk writes while the network delivers, and the install's final fsync finds
        little left to write instead of the whole file (caller holds ``_count_lock``)."""
        self._unflushed += count
        if not self._write_back or self._unflushed < WRITEBACK_EVERY:
            return
        if self._flushing is None or self._flushing.done():
            self._unflushed = 0
            with contextlib.suppress(RuntimeError):  # shutting down: nothing more to start
                self._flushing = self._flush_thread.submit(os.fdatasync, self._fd)
                self._flushing.add_done_callback(self._note_flush)

    def _note_flush(self, flushed: Future[None]) -> None:
        error = None if flushed.cancelled() else flushed.exception()
        if error is not None and self._flush_error is None:
            self._flush_error = error

    def _announce(self, offset: int) -> None:
        if self._hash_waits_at is not None and offset == self._hash_waits_at:
            self._grown.set()  # only the write at the prefix's end lets the hasher go on
        self._report()
        now = time.monotonic()
        if now - self._last_flush >= JOURNAL_FLUSH_INTERVAL_S:
            self._last_flush = now
            assert self._journal is not None
            self._journal.save(self._journal_path)

    def _report(self) -> None:
        if self._progress is not None:
            total = self._journal.size if self._journal is not None else self._expected_size
            self._progress(self._done, total)
