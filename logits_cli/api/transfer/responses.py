"""Handling one response body: writing it in batches at its offsets, and reading the
headers that validate it or explain a failure."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from logits_cli.api.transfer.digests import (
    write_at,
)
from logits_cli.api.transfer.tuning import (
    MAX_BATCH_BUFFERS,
    VALIDATOR_HEADERS,
    WRITE_BATCH,
)

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
            self._fetcher._write_thread, write_at, self._fd, chunks, offset
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


def error_detail(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    detail, code = body.get("detail"), body.get("code")
    return (detail if isinstance(detail, str) else None, code if isinstance(code, str) else None)
