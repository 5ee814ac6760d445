"""Handling one response body: writing it in batches at its offsets (from the event loop
through a write thread, or wholly in a reader thread), and reading the headers that validate
it or explain a failure."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from logits_cli.api.blob_direct import DirectRequest
from logits_cli.api.limits import LowSpeedGuard, TooSlow
from logits_cli.api.transfer.body_bounds import BodyOverflow, UnsizedBody
from logits_cli.api.transfer.tuning import (
    JOURNAL_FLUSH_INTERVAL_S,
    MAX_BATCH_BUFFERS,
    VALIDATOR_HEADERS,
    WRITE_BATCH,
)
from logits_cli.diskio import pwrite_all

# -- the segment engine ---------------------------------------------------------------------

if TYPE_CHECKING:
    from logits_cli.api.transfer.fetcher import RangedFetcher


class BatchWriter:
    """Writes one response body at its offsets through the fetcher's write thread: chunks
    are gathered into batches, one batch is written while the next arrives, and the
    journal counts a batch only once it is on disk."""

    def __init__(self, fetcher: RangedFetcher, fd: int, index: int, offset: int) -> None:
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
            self._fetcher._write_thread, pwrite_all, self._fd, chunks, offset
        )
        self._in_flight = (future, offset, size)

    async def _land(self) -> None:
        if self._in_flight is None:
            return
        future, offset, size = self._in_flight
        self._in_flight = None
        await future
        self._fetcher._written(self._index, offset, size, self._layout)


def response_validators(headers: httpx.Headers) -> dict[str, str]:
    found = {}
    for name in VALIDATOR_HEADERS:
        values = headers.get_list(name)
        if values:
            found[name] = ", ".join(values)
    if found.get("etag", "").startswith("W/"):
        del found["etag"]  # a weak tag cannot guard byte ranges
    return found


# An object store's error body (S3, GCS's XML API, MinIO, R2): <Error><Code>…<Message>….
_XML_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{1,300})</Message>")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_DETAIL_SHOWN = 160


def error_detail(response: httpx.Response) -> tuple[str | None, str | None]:
    """(detail, code) of an error answer: our JSON body, or an object store's XML one."""
    try:
        body = response.json()
    except ValueError:
        return _xml_error_detail(response.content[:65536])
    if not isinstance(body, dict):
        return None, None
    detail, code = body.get("detail"), body.get("code")
    return (detail if isinstance(detail, str) else None, code if isinstance(code, str) else None)


def _xml_error_detail(body: bytes) -> tuple[str | None, str | None]:
    code, message = _XML_CODE.search(body), _XML_MESSAGE.search(body)
    return (
        message.group(1).decode("latin-1") if message else None,
        code.group(1).decode("latin-1") if code else None,
    )


def refusal_text(status: int, detail: str | None, code: str | None) -> str:
    """``HTTP 403 AccessDenied: Request has expired``: what a blob server said, shown to the
    user, so only printable ASCII and a bounded length of it (the server chose the text)."""
    said = ": ".join(part for part in (code, detail) if part)
    said = _UNPRINTABLE.sub(" ", said).strip()
    if len(said) > MAX_DETAIL_SHOWN:
        said = said[: MAX_DETAIL_SHOWN - 1] + "…"
    return f"HTTP {status} {said}" if said else f"HTTP {status}"


def pump_direct(
    request: DirectRequest,
    fd: int,
    position: int,
    limit: int | None,
    written: Callable[[int, int], None],
    speed: LowSpeedGuard,
    write_lock: threading.Lock,
    unsized: UnsizedBody | None = None,
) -> int:
    """In a reader thread: the rest of ``request``'s body into ``fd`` from ``position``
    (never past ``limit``) through one reused buffer of ``WRITE_BATCH`` bytes, written
    whenever it is full; ``written(offset, count)`` is told of each write once it is on
    disk. Returns where the body ended. A body of unknown size (``unsized``) is stopped
    before DEST's free space runs low."""
    buffer = memoryview(bytearray(WRITE_BATCH))
    filled = received = 0
    flushed = time.monotonic()

    def flush() -> None:
        nonlocal position, filled
        if filled:
            # One writer at a time: concurrent writes to one file serialize on the inode's
            # lock in the kernel anyway, and its waiters spin there, burning the CPU the
            # other connections (and, on loopback, the server) need.
            with write_lock:
                pwrite_all(fd, [buffer[:filled]], position)
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
