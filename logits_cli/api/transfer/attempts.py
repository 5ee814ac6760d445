"""One request of the segment engine (fetcher.py): its headers, the answer's status and
ranges checked, its body written to the part file, either read in a worker thread
(blob_direct.py) or through httpx (the embedded server, proxies)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

from logits_cli.api.blob_direct import (
    ERROR_BODY_LIMIT,
    BlobClient,
    ConnectionSlot,
    DirectReader,
    DirectRequest,
)
from logits_cli.api.limits import LowSpeedGuard, TooSlow
from logits_cli.api.retry import is_retryable_status
from logits_cli.api.transfer.body_bounds import (
    BodyOverflow,
    UnsizedBody,
    check_room_for,
    overflow_error,
)
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.responses import (
    BatchWriter,
    error_detail,
    pump_direct,
    refusal_text,
    response_validators,
)
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transport_errors import HTTPX_ERRORS, error_for_httpx, is_transient_httpx_error
from logits_cli.errors import (
    IntegrityError,
    NotFoundError,
    UnexpectedResponseError,
    error_for_status,
)

if TYPE_CHECKING:
    from logits_cli.api.transfer.fetcher import RangedFetcher

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class RetryableFailure(Exception):
    """An attempt failed in a way another attempt may not (the fetcher retries it)."""

    def __init__(
        self,
        reason: str,
        *,
        response: httpx.Response | None = None,
        renew_url: bool = False,
        refusal: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.renew_url = renew_url or refusal is not None
        self.refusal = refusal  # what the blob server said refusing the URL (401/403)


class ArchiveChanged(Exception):
    """The server's archive no longer matches the journal (size or entity tag changed)."""


class SegmentAttempts:
    """The per-request half of ``RangedFetcher`` (which holds the state declared here)."""

    _http: httpx.AsyncClient
    _urls: SignedUrl
    _part: Path
    _max_unsized: int
    _unsized: UnsizedBody | None = None  # the bounds of a body no source gave a size for
    _identity: dict[str, Any]
    _expected_size: int | None
    _segment_size: int
    _stall_timeout: float
    _low_speed_limit: float
    _low_speed_time: float
    _journal: Journal | None
    _planned: asyncio.Event
    _ranges_ignored: bool
    _done: int
    _layout: int
    _reader_threads: ThreadPoolExecutor
    _write_lock: threading.Lock

    def _current(self, index: int) -> int:
        raise NotImplementedError

    def _replace_journal(self, journal: Journal | None) -> None:
        raise NotImplementedError

    def _count_written(self, index: int, count: int, layout: int) -> bool:
        raise NotImplementedError

    def _announce(self, offset: int) -> None:
        raise NotImplementedError

    async def _attempt(self, fd: int, index: int, url: str, slot: ConnectionSlot) -> None:
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
        direct = self._direct_reader(url)
        try:
            if direct is not None:
                request = direct.request(slot, url, headers, self._stall_timeout)
                position = await self._attempt_direct(request, fd, index, url, offset, last)
            else:
                position = await self._attempt_httpx(fd, index, url, headers, offset, last)
        except BodyOverflow as overflow:
            raise overflow_error(overflow, self._unsized) from None
        except TimeoutError:
            raise RetryableFailure(
                f"no data for {self._stall_timeout:g} s", renew_url=self._urls.expired()
            ) from None
        except TooSlow as slow:
            raise RetryableFailure(str(slow), renew_url=self._urls.expired()) from None
        except HTTPX_ERRORS as exc:
            if not is_transient_httpx_error(exc):  # a redirect loop fails the same way again
                raise error_for_httpx(
                    exc, host=httpx.URL(url).host or "the blob server", url_from_server=True
                ) from None
            raise RetryableFailure(
                f"network error ({type(exc).__name__})", renew_url=self._urls.expired()
            ) from None
        if self._journal is not None and self._ranges_ignored:
            if self._journal.size and position != self._journal.size:
                raise RetryableFailure("the connection closed before the end of the archive")
            if not self._journal.size:  # size learned only now: the body ran until EOF
                self._journal.size = self._journal.segment_size = position

    def _direct_reader(self, url: str) -> DirectReader | None:
        return self._http.direct_reader(url) if isinstance(self._http, BlobClient) else None

    async def _attempt_direct(
        self, request: DirectRequest, fd: int, index: int, url: str, offset: int, last: int
    ) -> int:
        """One request in a reader thread (blob_direct.py): its body goes from the socket to
        the part file without a turn of the event loop per chunk."""
        pumping = False
        try:
            await self._in_reader_thread(request, request.open)
            response = httpx.Response(
                request.status, headers=request.headers, content=request.error_body
            )
            position, limit = await self._accept(fd, response, url, offset, last)
            loop = asyncio.get_running_loop()
            current, layout = self._current(index), self._layout

            def written(at: int, count: int) -> None:
                if self._count_written(current, count, layout):
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(self._announce, at)

            speed = LowSpeedGuard(self._low_speed_limit, self._low_speed_time, time.monotonic())
            pumping = True
            ended: int = await self._in_reader_thread(
                request,
                pump_direct,
                request,
                fd,
                position,
                limit,
                written,
                speed,
                self._write_lock,
                self._unsized,
            )
            return ended
        finally:
            if not pumping:
                request.release()  # the pump releases it itself, in its thread

    async def _in_reader_thread(self, request: DirectRequest, function: Any, *args: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._reader_threads, function, *args)
        try:
            return await future
        except asyncio.CancelledError:
            request.abort()  # wakes the thread; run() waits for it before closing the file
            raise

    async def _attempt_httpx(
        self, fd: int, index: int, url: str, headers: dict[str, str], offset: int, last: int
    ) -> int:
        """One request through httpx (the embedded server, mounted and proxied origins)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._stall_timeout) as stall:
            request = self._http.build_request("GET", url, headers=headers)
            response = await self._http.send(request, stream=True)
            try:
                position, limit = await self._accept(fd, response, url, offset, last)
                unsized = self._unsized
                writer = BatchWriter(
                    cast("RangedFetcher", self), fd, self._current(index), position
                )
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

    async def _accept(
        self, fd: int, response: httpx.Response, url: str, offset: int, last: int
    ) -> tuple[int, int | None]:
        """Check the answer's status and headers; return where its body goes and where it
        must stop (None: until the connection's end)."""
        status = response.status_code
        self._urls.note_server_date(response.headers.get("date"))
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if status in (200, 206) and encoding not in ("", "identity"):
            # docs/protocol.md §6.2: ranges and digests are of the raw archive; a decoded body
            # could also be any size at all (a gzip bomb).
            raise IntegrityError(
                f"the server applied Content-Encoding {encoding!r} to the archive; refused"
            )
        if status in (200, 206):
            self._urls.accepted(url)
        if status == 206:
            return self._accept_range(fd, response, offset, last)
        if status == 200:
            return self._accept_whole(fd, response)
        detail, code = error_detail(await bounded_error_answer(response))
        if status == 416:
            raise ArchiveChanged()
        if status in (401, 403):
            # A blob URL carries no credential of ours: a refusal is about the URL (expired,
            # signed with credentials the store no longer takes), never about the API key.
            said = refusal_text(status, detail, code)
            raise RetryableFailure(f"the download URL was refused ({said})", refusal=said)
        if is_retryable_status(status):
            raise RetryableFailure(f"HTTP {status}", response=response)
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
        validators = response_validators(response.headers)
        if self._journal is None:
            if self._expected_size is not None and total != self._expected_size:
                raise IntegrityError(
                    f"the server's archive has {total} bytes, the listing says {self._expected_size}"
                )
            if self._expected_size is None:
                check_room_for(fd, self._part.parent, total)
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
            raise ArchiveChanged()
        else:
            self._journal.headers.update(validators)
            self._planned.set()
        return offset, int(final) + 1

    def _accept_whole(self, fd: int, response: httpx.Response) -> tuple[int, int | None]:
        """A 200 to a range request: the server ignores ``Range`` (or, for a resumed file,
        the entity changed). Only the probe may take it: the body becomes the whole file."""
        if self._planned.is_set() and not self._ranges_ignored:
            raise ArchiveChanged()
        length_text = response.headers.get("content-length")
        size = int(length_text) if length_text and length_text.isdigit() else self._expected_size
        if size is not None and self._expected_size is not None and size != self._expected_size:
            raise IntegrityError(
                f"the server's archive has {size} bytes, the listing says {self._expected_size}"
            )
        self._unsized = None
        if size is None:  # no source gives a size: bounded by the cap and the free space
            self._unsized = UnsizedBody(self._part.parent, self._max_unsized)
        elif self._expected_size is None:
            check_room_for(fd, self._part.parent, size)
        self._ranges_ignored = True
        os.ftruncate(fd, size or 0)
        self._replace_journal(
            Journal.plan(
                self._identity, size or 0, size or 0, response_validators(response.headers)
            )
        )
        self._done = 0
        self._planned.set()
        return 0, size if size is not None else self._max_unsized


async def bounded_error_answer(response: httpx.Response) -> httpx.Response:
    """The error answer with at most ``ERROR_BODY_LIMIT`` bytes of its body, as the direct
    reader keeps (blob_direct.py): a hostile 403 may stream forever."""
    if response.is_stream_consumed:
        return response  # already read whole (the direct reader's bounded body)
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= ERROR_BODY_LIMIT:
            break
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(kept[:ERROR_BODY_LIMIT])
    )
