"""The segment engine: one signed URL into one part file, parallel ranged requests, journaled,
hashed while written; ``checked.fetch_and_check`` adds the digest check and one fresh retry."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from logits_cli.api.blob_direct import ConnectionSlot
from logits_cli.api.download_options import ProgressCallback, report_phase, report_resumed
from logits_cli.api.limits import RetryBudget, per_connection_limit
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transfer.attempts import ArchiveChanged, RetryableFailure, SegmentAttempts
from logits_cli.api.transfer.blob_readers import BlobReaders, ReadLimits
from logits_cli.api.transfer.digests import ExpectedDigest, choose_digest
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.part_file import PartFile, PrefixHasher
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transfer.tuning import (
    EMBEDDED_SEGMENT,
    MAX_FRUITLESS_ATTEMPTS,
    MAX_SEGMENT,
    MIN_SEGMENT,
    SEGMENTS_PER_CONNECTION,
)
from logits_cli.config import DEFAULT_MAX_UNSIZED_DOWNLOAD
from logits_cli.errors import UnavailableError, UnexpectedResponseError


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


class RangedFetcher:
    """Fill ``part`` with the archive behind ``urls``, journaled in ``journal_path``.

    One probe request goes first and learns the size, entity tag and digests (and whether
    the server honours ``Range``); the other connections start once it has its headers.
    Composed of the part file (``PartFile``), its hasher (``PrefixHasher``), the blob
    readers (``BlobReaders``) and the attempts of one segment (``SegmentAttempts``); this
    class schedules segments over connections and retries them.
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
        """``write_back``: the part file is what gets installed (``PartFile``); False for
        an archive that is extracted and then deleted, which never needs the disk.
        ``max_unsized``: where a body no source gives a size for is cut (body_bounds.py)."""
        self._urls = urls
        self._identity = identity
        self._checkpoint_sha256 = checkpoint_sha256
        self._connections = max(1, connections)
        self._progress = progress
        self._policy = policy or RetryPolicy()
        self._part = PartFile(
            part,
            journal_path,
            expected_size=expected_size,
            progress=progress,
            write_back=write_back,
        )
        self._hasher = PrefixHasher(self._part, self._expected_digest)
        limits = ReadLimits(
            stall_timeout=stall_timeout,
            low_speed_limit=per_connection_limit(low_speed_limit, self._connections),
            low_speed_time=low_speed_time,
        )
        self._readers = BlobReaders(http, self._part, limits, connections=self._connections)
        self._attempts = SegmentAttempts(
            self._part,
            urls,
            self._readers,
            identity,
            expected_size=expected_size,
            segment_size=segment_size,
            max_unsized=max_unsized,
            stall_timeout=stall_timeout,
        )
        self._pending: deque[int] = deque()

    async def run(self) -> FetchResult:
        part = self._part
        journal = part.open(self._identity)
        resumed = journal is not None and journal.done_bytes > 0
        if journal is not None and resumed:  # the terminal says so ("resumed at X of Y")
            report_resumed(self._progress, journal.done_bytes, journal.size)
        try:
            for restart in range(2):
                try:
                    await self._fetch_all(journal)
                    break
                except ArchiveChanged:
                    if restart:
                        raise UnexpectedResponseError(
                            "the archive changed on the server during the download"
                        ) from None
                    journal = None
                    part.replace_journal(None)
            part.fetched_all()
            if not self._hasher.caught_up:
                report_phase(self._progress, "verifying")  # the hash catches up
            digests = await self._hasher.digests()
            size = await part.finish()
            return FetchResult(
                size=size,
                expected=self._expected_digest(),
                digests=digests,
                bytes_fetched=part.fetched,
                resumed=resumed,
            )
        finally:
            # Every thread that touches the file descriptor is done before it closes.
            await self._hasher.stop()
            self._readers.close()
            part.close()

    def _expected_digest(self) -> ExpectedDigest | None:
        journal = self._part.journal
        return choose_digest(journal.headers if journal else {}, self._checkpoint_sha256)

    async def _fetch_all(self, journal: Journal | None) -> None:
        self._part.begin(journal)
        attempts = self._attempts
        attempts.restart()
        self._pending.clear()
        self._hasher.start()
        if journal is not None and journal.complete:
            return
        probe = 0
        if journal is not None:
            probe = next(i for i in range(len(journal.filled)) if journal.missing(i) > 0)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._worker(probe))
                await attempts.planned.wait()
                journal = self._part.journal
                assert journal is not None
                if not attempts.ranges_ignored:
                    self._pending.extend(
                        i
                        for i in range(len(journal.filled))
                        if i != probe and journal.missing(i) > 0
                    )
                    for _ in range(min(self._connections - 1, len(self._pending))):
                        group.create_task(self._worker(None))
        except BaseExceptionGroup as failures:
            # Workers fail together (siblings are cancelled); the first failure is the story.
            raise failures.exceptions[0] from None

    async def _worker(self, first: int | None) -> None:
        connection = self._readers.connection()
        index = first if first is not None else self._next_segment()
        while index is not None:
            await self._fetch_segment(index, connection)
            index = self._next_segment()

    def _next_segment(self) -> int | None:
        return self._pending.popleft() if self._pending else None

    def _segment_filled(self, index: int) -> int:
        journal = self._part.journal
        return journal.filled[index] if journal is not None else 0

    async def _fetch_segment(self, index: int, connection: ConnectionSlot) -> None:
        attempts = self._attempts
        fruitless = 0
        budget = RetryBudget()
        while True:
            index = attempts.current(index)
            journal = self._part.journal
            if journal is not None and journal.missing(index) <= 0 and not attempts.unsized_open:
                return
            before = self._segment_filled(index)
            url, generation = await self._urls.get()
            try:
                await attempts.attempt(index, url, connection)
                if self._segment_filled(attempts.current(index)) == before:
                    raise RetryableFailure("the server sent an empty body")
                fruitless = 0
            except RetryableFailure as failure:
                progressed = self._segment_filled(attempts.current(index)) > before
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
