"""The part file of one download: its descriptor, its journal (which bytes are good), the
layout counter, the locks and byte counters, and what follows a write (writeback, progress,
the journal saved, the hasher woken).

The fetcher (fetcher.py) opens and closes it; the code that issues requests (attempts.py)
replaces its journal when an answer gives the file's size, and the blob readers
(blob_readers.py) write bodies into it and count them. The hasher (``PrefixHasher``) reads
the contiguous good prefix while the rest arrives, so verifying needs no second pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from logits_cli.api.download_options import ProgressCallback
from logits_cli.api.transfer.digests import ExpectedDigest, hash_range, new_hasher
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.tuning import HASH_CHUNK, JOURNAL_FLUSH_INTERVAL_S, WRITEBACK_EVERY
from logits_cli.diskio import open_own_file, pwrite_all
from logits_cli.errors import IntegrityError


class PartFile:
    """``path`` being filled, journaled in ``journal_path``.

    ``layout`` changes whenever the journal is replaced (the bytes on disk are then no
    longer valid): a write counted under an older layout is dropped, and the hasher starts
    over. ``write_back``: the part file is what gets installed (see ``_written_back``);
    False for an archive that is extracted and then deleted, which never needs the disk.
    """

    def __init__(
        self,
        path: Path,
        journal_path: Path,
        *,
        expected_size: int | None,
        progress: ProgressCallback | None,
        write_back: bool,
    ) -> None:
        self.path = path
        self.journal_path = journal_path
        self.fd = -1
        self.journal: Journal | None = None  # replaced only through ``replace_journal``
        self.layout = 0
        self.fetched = 0  # bytes this process wrote
        self.done = 0  # good bytes under the current journal
        self.all_fetched = False  # no more writes will come: the hasher finishes
        # Reader threads write under it: concurrent writes to one file serialize on the
        # inode's lock in the kernel anyway, and its waiters spin there, burning the CPU the
        # other connections (and, on loopback, the server) need.
        self.write_lock = threading.Lock()
        self._count_lock = threading.Lock()  # the counts, also kept by reader threads
        self._expected_size = expected_size
        self._progress = progress
        self._write_back = write_back
        self._last_save = 0.0
        self._grown = asyncio.Event()
        self._hash_waits_at: int | None = None  # the offset whose arrival wakes the hasher
        # Writes from the event loop go through one thread (the kernel serializes writes to
        # one file). Both threads are shut down, and waited for, before the file closes.
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-write")
        self._flush_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-flush")
        self._flushing: Future[None] | None = None
        # The first failure of one: Linux reports a writeback error to one fsync only, so
        # the install's own fsync may never see it; the download fails with it instead.
        self._flush_error: BaseException | None = None
        self._unflushed = 0

    # -- opening and closing --------------------------------------------------------------

    def open(self, identity: dict[str, Any]) -> Journal | None:
        """Open the file, keeping it if it still matches the journal of an earlier run of
        this same download (returned, for ``begin``); else starting afresh."""
        journal = Journal.load(self.journal_path)
        if journal is not None and not self._matches(journal, identity):
            journal = None
        if journal is None:
            # A new file rather than truncating the old one: on ext4, a file truncated to
            # zero is flushed to disk synchronously when closed.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        # Never through a symlink or into another user's file planted at the part's name.
        self.fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return journal

    def _matches(self, journal: Journal, identity: dict[str, Any]) -> bool:
        if not self.path.is_file() or self.path.stat().st_size != journal.size:
            return False
        if journal.identity != identity:
            return False
        return self._expected_size is None or journal.size == self._expected_size

    def begin(self, journal: Journal | None) -> None:
        """Start filling (again) under ``journal`` (None: the size is not known yet)."""
        self.journal = journal
        self.done = journal.done_bytes if journal is not None else 0
        self.report()

    def replace_journal(self, journal: Journal | None) -> None:
        """The bytes on disk are no longer what ``journal`` says: writes of the old layout
        are dropped and the hasher starts over."""
        with self._count_lock:
            self.journal = journal
            self.layout += 1
            self.done = journal.done_bytes if journal is not None else 0
        self._grown.set()

    def close(self) -> None:
        """After every reader thread is done: wait for the write and flush threads, close
        the file, save the journal (what a later run resumes from)."""
        self._write_thread.shutdown(wait=True, cancel_futures=True)
        self._flush_thread.shutdown(wait=True, cancel_futures=True)
        os.close(self.fd)
        if self.journal is not None:
            self.journal.save(self.journal_path)

    async def finish(self) -> int:
        """Once every byte is fetched: the writeback settled, and the file exactly as large
        as the journal says. Returns that size."""
        assert self.journal is not None
        if self._flushing is not None:
            await asyncio.wrap_future(self._flushing)
        if self._flush_error is not None:
            raise self._flush_error
        if os.fstat(self.fd).st_size != self.journal.size:
            raise IntegrityError(
                f"downloaded {os.fstat(self.fd).st_size} bytes, expected {self.journal.size}"
            )
        return self.journal.size

    # -- writing and counting -------------------------------------------------------------

    def write(self, chunks: Sequence[bytes | memoryview], offset: int) -> asyncio.Future[None]:
        """Write ``chunks`` at ``offset`` in the write thread (from the event loop); count
        them with ``written`` once the returned future is done."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._write_thread, pwrite_all, self.fd, chunks, offset)

    def write_in_thread(self, data: memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` from a reader thread."""
        with self.write_lock:
            pwrite_all(self.fd, [data], offset)

    def written(self, index: int, offset: int, count: int, layout: int) -> None:
        """``count`` bytes of segment ``index`` are on disk at ``offset`` (event loop)."""
        if self.count_written(index, count, layout):
            self.announce(offset)

    def count_written(self, index: int, count: int, layout: int) -> bool:
        """Count bytes on disk in the journal. Reader threads call this themselves, before
        the loop hears of the write, so the journal saved when the fetcher stops holds
        every write, even one whose announcement the loop never got to run."""
        with self._count_lock:
            if layout != self.layout:
                return False  # written under a journal that has since been replaced
            assert self.journal is not None
            self.journal.filled[index] += count
            self.fetched += count
            self.done += count
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
                self._flushing = self._flush_thread.submit(os.fdatasync, self.fd)
                self._flushing.add_done_callback(self._note_flush)

    def _note_flush(self, flushed: Future[None]) -> None:
        error = None if flushed.cancelled() else flushed.exception()
        if error is not None and self._flush_error is None:
            self._flush_error = error

    def announce(self, offset: int) -> None:
        """A counted write at ``offset`` (event loop): progress, the journal now and then,
        and the hasher if it waits for exactly these bytes."""
        if self._hash_waits_at is not None and offset == self._hash_waits_at:
            self._grown.set()  # only the write at the prefix's end lets the hasher go on
        self.report()
        now = time.monotonic()
        if now - self._last_save >= JOURNAL_FLUSH_INTERVAL_S:
            self._last_save = now
            assert self.journal is not None
            self.journal.save(self.journal_path)

    def report(self) -> None:
        if self._progress is not None:
            total = self.journal.size if self.journal is not None else self._expected_size
            self._progress(self.done, total)

    # -- the good prefix ------------------------------------------------------------------

    def prefix_end(self) -> int:
        """Where the contiguous run of good bytes from offset 0 ends."""
        journal = self.journal
        if journal is None:
            return 0
        for index, filled in enumerate(journal.filled):
            start, end = journal.bounds(index)
            if start + filled < end:
                return start + filled
        return journal.size

    async def wait_for_bytes_at(self, offset: int) -> None:
        """Until bytes land at ``offset``, the journal is replaced, or all are fetched."""
        self._grown.clear()
        self._hash_waits_at = offset
        await self._grown.wait()
        self._hash_waits_at = None

    def fetched_all(self) -> None:
        self.all_fetched = True
        self._grown.set()


class PrefixHasher:
    """Hashes the part file's good prefix as it grows, in a thread of its own (shut down,
    and waited for, before the file closes, so a cancelled hash never reads a closed or
    reused descriptor). ``expected`` names the digest on offer, hashed besides sha256."""

    def __init__(self, part: PartFile, expected: Callable[[], ExpectedDigest | None]) -> None:
        self._part = part
        self._expected = expected
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logits-hash")
        self._closing = threading.Event()  # stops the hash thread early
        self._task: asyncio.Task[dict[str, bytes]] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._hash_prefix())

    @property
    def caught_up(self) -> bool:
        return self._task is not None and self._task.done()

    async def digests(self) -> dict[str, bytes]:
        """The whole file's digests, once ``part.fetched_all()``."""
        assert self._task is not None
        return await self._task

    async def stop(self) -> None:
        self._closing.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def _hash_prefix(self) -> dict[str, bytes]:
        part = self._part
        buffer = memoryview(bytearray(HASH_CHUNK))
        while True:
            layout = part.layout
            expected = self._expected()
            algorithms = {"sha256"} | ({expected.algorithm} if expected else set())
            hashers = {name: new_hasher(name) for name in algorithms}
            position = 0
            while layout == part.layout:
                end = part.prefix_end()
                if position < end:
                    position = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._hash_available, position, hashers, buffer, layout
                    )
                elif part.all_fetched:
                    return {name: hasher.digest() for name, hasher in hashers.items()}
                else:
                    await part.wait_for_bytes_at(end)

    def _hash_available(
        self, position: int, hashers: dict[str, Any], buffer: memoryview, layout: int
    ) -> int:
        """In the hash thread: hash from ``position`` for as long as the good prefix is ahead,
        and return where hashing stopped. Staying in the thread rather than returning to the
        busy event loop after each buffer is what lets hashing keep pace with the network.
        ``filled`` only grows while ``layout`` holds, so a prefix read here is never too far."""
        part = self._part
        while layout == part.layout and not self._closing.is_set():
            end = part.prefix_end()
            if position >= end:
                break
            count = min(end - position, len(buffer))
            hash_range(part.fd, position, count, hashers, buffer)
            position += count
        return position
