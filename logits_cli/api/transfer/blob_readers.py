"""Reading one range of a blob into the part file: one interface (``BlobReader``), the two
readers downloads use, and the choice between them per URL (``BlobReaders``).

- ``DirectBlobReader``: ``http.client`` in worker threads (``api/blob_direct.py``), every
  origin the client reaches over the network itself: a served server on 127.0.0.1 or
  elsewhere, an object store's presigned URLs (S3, moto, GCS). Each body goes from the
  socket to the file without a turn of the event loop per chunk.
- ``HttpxBlobReader``: through the client's ``httpx.AsyncClient``, for what the direct
  reader cannot reach: the embedded server (an in-process ASGI transport mounted on its
  origin), a test's mounted transport, and every origin while an environment proxy is set.

Both raise the httpx exceptions for network failures (``transport_errors.py`` maps them),
``TimeoutError`` for a stall, ``TooSlow`` and ``BodyOverflow``; ``attempts.py`` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from logits_cli.api.blob_direct import (
    ERROR_BODY_LIMIT,
    BlobClient,
    ConnectionSlot,
    DirectReader,
    DirectRequest,
)
from logits_cli.api.limits import LowSpeedGuard, TooSlow
from logits_cli.api.transfer.body_bounds import BodyOverflow, UnsizedBody
from logits_cli.api.transfer.part_file import PartFile
from logits_cli.api.transfer.tuning import JOURNAL_FLUSH_INTERVAL_S, MAX_BATCH_BUFFERS, WRITE_BATCH


@dataclass(frozen=True)
class BlobHead:
    """A blob answer's status and headers; of an answer other than 200 or 206, at most
    ``ERROR_BODY_LIMIT`` bytes of its body (for the error's message)."""

    status: int
    headers: httpx.Headers
    error_body: bytes = b""

    def as_response(self) -> httpx.Response:
        return httpx.Response(self.status, headers=self.headers, content=self.error_body)


@dataclass(frozen=True)
class BodyTarget:
    """Where an accepted body goes: from ``position`` of the part file, never past ``limit``
    (None: until the connection ends), counted in segment ``index`` under ``layout``;
    ``unsized`` bounds a body no source gave a size for."""

    index: int
    layout: int
    position: int
    limit: int | None
    unsized: UnsizedBody | None = None


# Judges an answer's head (raising to refuse it) and says where its body goes.
Accept = Callable[[BlobHead], BodyTarget]


@dataclass(frozen=True)
class ReadLimits:
    stall_timeout: float  # no byte for this long: TimeoutError
    low_speed_limit: float  # bytes/s of one connection, held for ``low_speed_time``: TooSlow
    low_speed_time: float


class BlobReader(Protocol):
    async def read_range(
        self, url: str, headers: dict[str, str], connection: ConnectionSlot, accept: Accept
    ) -> int:
        """GET ``url`` with ``headers`` (``Range``, ``If-Range``) on ``connection``; hand the
        answer's head to ``accept``; write the body where it says, counting each write in
        the part file. Returns where the body ended; whatever arrived before a failure is
        written and counted."""
        ...


class BlobReaders:
    """The readers of one download and the connections its workers keep, chosen per URL:
    the direct reader wherever ``BlobClient.direct_reader`` allows it, httpx elsewhere."""

    def __init__(
        self, http: httpx.AsyncClient, part: PartFile, limits: ReadLimits, *, connections: int
    ) -> None:
        self._http = http
        self._part = part
        self._limits = limits
        self._through_httpx = HttpxBlobReader(http, part, limits)
        self._direct: DirectBlobReader | None = None
        # One thread per connection, shut down (and waited for) before the part file closes.
        self._threads = ThreadPoolExecutor(
            max_workers=connections, thread_name_prefix="logits-read"
        )
        self._connections: list[ConnectionSlot] = []

    def connection(self) -> ConnectionSlot:
        """A kept-alive connection for one worker (used by the direct reader)."""
        slot = ConnectionSlot()
        self._connections.append(slot)
        return slot

    def for_url(self, url: str) -> BlobReader:
        direct = self._http.direct_reader(url) if isinstance(self._http, BlobClient) else None
        if direct is None:
            return self._through_httpx
        if self._direct is None or self._direct.reader is not direct:
            self._direct = DirectBlobReader(direct, self._threads, self._part, self._limits)
        return self._direct

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        for slot in self._connections:
            slot.close()


class DirectBlobReader:
    """Each request in a reader thread (``blob_direct.py``), its body pumped into the part
    file by ``pump_direct`` in that thread."""

    def __init__(
        self,
        reader: DirectReader,
        threads: ThreadPoolExecutor,
        part: PartFile,
        limits: ReadLimits,
    ) -> None:
        self.reader = reader
        self._threads = threads
        self._part = part
        self._limits = limits

    async def read_range(
        self, url: str, headers: dict[str, str], connection: ConnectionSlot, accept: Accept
    ) -> int:
        request = self.reader.request(connection, url, headers, self._limits.stall_timeout)
        pumping = False
        try:
            await self._in_thread(request, request.open)
            target = accept(BlobHead(request.status, request.headers, request.error_body))
            loop = asyncio.get_running_loop()
            part = self._part

            def written(at: int, count: int) -> None:
                if part.count_written(target.index, count, target.layout):
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(part.announce, at)

            limits = self._limits
            speed = LowSpeedGuard(limits.low_speed_limit, limits.low_speed_time, time.monotonic())
            pumping = True
            ended: int = await self._in_thread(
                request, pump_direct, request, part, target, written, speed
            )
            return ended
        finally:
            if not pumping:
                request.release()  # the pump releases it itself, in its thread

    async def _in_thread(self, request: DirectRequest, function: Any, *args: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._threads, function, *args)
        try:
            return await future
        except asyncio.CancelledError:
            request.abort()  # wakes the thread; the fetcher waits for it before closing
            raise


def pump_direct(
    request: DirectRequest,
    part: PartFile,
    target: BodyTarget,
    written: Callable[[int, int], None],
    speed: LowSpeedGuard,
) -> int:
    """In a reader thread: the rest of ``request``'s body into the part file from
    ``target.position`` (never past its limit) through one reused buffer of ``WRITE_BATCH``
    bytes, written whenever it is full; ``written(offset, count)`` is told of each write
    once it is on disk. Returns where the body ended. A body of unknown size is stopped
    before DEST's free space runs low."""
    buffer = memoryview(bytearray(WRITE_BATCH))
    position, limit, unsized = target.position, target.limit, target.unsized
    filled = received = 0
    flushed = time.monotonic()

    def flush() -> None:
        nonlocal position, filled
        if filled:
            part.write_in_thread(buffer[:filled], position)
            written(position, filled)
            position += filled
        filled = 0

    try:
        while count := request.readinto(buffer[filled:]):
            if limit is not None and position + filled + count > limit:
                # Never past the promised size: not one byte of this read is written.
                flush()
                raise BodyOverflow(limit)
            if unsized is not None:
                unsized.check_room(position + filled + count)
            filled += count
            received += count
            now = time.monotonic()
            # Full, or held for as long as the journal may lag: a slow body is journaled
            # (and resumable) as it arrives, not once 2 MiB of it have.
            if filled == len(buffer) or now - flushed >= JOURNAL_FLUSH_INTERVAL_S:
                flush()
                flushed = now
            speed.update(now, received)
        flush()
        return position
    except (TimeoutError, TooSlow, httpx.HTTPError):
        flush()  # whatever arrived is good up to here
        raise
    finally:
        request.release()


class HttpxBlobReader:
    """Each request through the client's ``httpx.AsyncClient``, its body written in batches
    by the part file's write thread."""

    def __init__(self, http: httpx.AsyncClient, part: PartFile, limits: ReadLimits) -> None:
        self._http = http
        self._part = part
        self._limits = limits

    async def read_range(
        self, url: str, headers: dict[str, str], connection: ConnectionSlot, accept: Accept
    ) -> int:
        loop = asyncio.get_running_loop()
        stall_timeout = self._limits.stall_timeout
        async with asyncio.timeout(stall_timeout) as stall:
            request = self._http.build_request("GET", url, headers=headers)
            response = await self._http.send(request, stream=True)
            try:
                status = response.status_code
                error_body = b""
                if status not in (200, 206):
                    error_body = (await bounded_error_answer(response)).content
                target = accept(BlobHead(status, response.headers, error_body))
                position, limit, unsized = target.position, target.limit, target.unsized
                writer = BatchWriter(self._part, target.index, target.layout, position)
                try:
                    # Re-arming the timer on every chunk would cost a timer each;
                    # re-arming at most every quarter period with a quarter of slack
                    # declares a stall after 1 to 1.25 times stall_timeout without a byte.
                    slack = stall_timeout / 4
                    rearmed = loop.time()
                    stall.reschedule(rearmed + stall_timeout + slack)
                    speed = LowSpeedGuard(
                        self._limits.low_speed_limit, self._limits.low_speed_time, rearmed
                    )
                    received = 0
                    async for chunk in response.aiter_raw():
                        now = loop.time()
                        if now - rearmed > slack:
                            stall.reschedule(now + stall_timeout + slack)
                            rearmed = now
                        if limit is not None and position + len(chunk) > limit:
                            raise BodyOverflow(limit)  # not one byte past it is written
                        if unsized is not None:
                            unsized.check_room(position + len(chunk))
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
        return position


class BatchWriter:
    """Writes one response body at its offsets through the part file's write thread:
    chunks are gathered into batches, one batch is written while the next arrives, and the
    journal counts a batch only once it is on disk."""

    def __init__(self, part: PartFile, index: int, layout: int, offset: int) -> None:
        self._part = part
        self._index = index
        self._layout = layout
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
        self._in_flight = (self._part.write(chunks, offset), offset, size)

    async def _land(self) -> None:
        if self._in_flight is None:
            return
        future, offset, size = self._in_flight
        self._in_flight = None
        await future
        self._part.written(self._index, offset, size, self._layout)


async def bounded_error_answer(response: httpx.Response) -> httpx.Response:
    """The error answer with at most ``ERROR_BODY_LIMIT`` bytes of its body, as the direct
    reader keeps: a hostile 403 may stream forever."""
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= ERROR_BODY_LIMIT:
            break
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(kept[:ERROR_BODY_LIMIT])
    )
