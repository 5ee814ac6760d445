"""One attempt at one segment (fetcher.py schedules and retries them): the request's headers,
the answer's status and ranges checked against the part file (whose journal the first answer
plans), its body read into the part file by a blob reader (blob_readers.py), and every
failure sorted into retryable or final."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import httpx

from logits_cli.api.blob_direct import ConnectionSlot
from logits_cli.api.limits import TooSlow
from logits_cli.api.retry import is_retryable_status
from logits_cli.api.transfer.blob_readers import BlobHead, BlobReaders, BodyTarget
from logits_cli.api.transfer.body_bounds import (
    BodyOverflow,
    UnsizedBody,
    check_room_for,
    overflow_error,
)
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.part_file import PartFile
from logits_cli.api.transfer.responses import error_detail, refusal_text, response_validators
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transport_errors import HTTPX_ERRORS, error_for_httpx, is_transient_httpx_error
from logits_cli.errors import (
    IntegrityError,
    NotFoundError,
    UnexpectedResponseError,
    error_for_status,
)

CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


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
    """Issues the requests of one download into ``part``. The first answer plans the
    journal (``planned`` is set then); a server found to ignore ``Range`` makes the whole
    file segment 0 (``ranges_ignored``) and only its first request may take it."""

    def __init__(
        self,
        part: PartFile,
        urls: SignedUrl,
        readers: BlobReaders,
        identity: dict[str, Any],
        *,
        expected_size: int | None,
        segment_size: int,
        max_unsized: int,
        stall_timeout: float,
    ) -> None:
        self._part = part
        self._urls = urls
        self._readers = readers
        self._identity = identity
        self._expected_size = expected_size
        self._segment_size = segment_size
        self._max_unsized = max_unsized
        self._stall_timeout = stall_timeout
        self._unsized: UnsizedBody | None = None  # the bounds of a body of no known size
        self.planned = asyncio.Event()
        self.ranges_ignored = False
        # A body of no known size has not ended cleanly yet: its journal's size (0) is then
        # no size at all, and the file is not complete whatever the journal's counts say.
        self.unsized_open = False

    def restart(self) -> None:
        """A new pass over the part file: its first answer plans (or confirms) the journal."""
        self.planned = asyncio.Event()

    def current(self, index: int) -> int:
        """Once the server is found to ignore ``Range``, the whole file is segment 0."""
        return 0 if self.ranges_ignored else index

    async def attempt(self, index: int, url: str, connection: ConnectionSlot) -> None:
        """One request for what segment ``index`` still misses."""
        journal = self._part.journal
        headers = {}
        if journal is None:
            offset, last = 0, self._segment_size - 1
        else:
            start, end = journal.bounds(index)
            offset, last = start + journal.filled[index], end - 1
        if not self.ranges_ignored:
            headers["Range"] = f"bytes={offset}-{last}"
            if journal is not None and journal.headers.get("etag"):
                headers["If-Range"] = journal.headers["etag"]

        def accept(head: BlobHead) -> BodyTarget:
            return self._accept(head, url, index, offset, last)

        try:
            reader = self._readers.for_url(url)
            position = await reader.read_range(url, headers, connection, accept)
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
        journal = self._part.journal
        if journal is not None and self.ranges_ignored:
            if self.unsized_open:  # only a clean end of the stream gives its size
                if position == 0:  # nothing learnt: the size stays unknown, not 0
                    raise RetryableFailure("the server sent an empty body")
                journal.size = journal.segment_size = position
                self.unsized_open = False
            elif position != journal.size:
                raise RetryableFailure("the connection closed before the end of the archive")

    def _accept(self, head: BlobHead, url: str, index: int, offset: int, last: int) -> BodyTarget:
        """Check the answer's status and headers; say where its body goes and where it must
        stop (None: until the connection's end)."""
        status = head.status
        self._urls.note_server_date(head.headers.get("date"))
        encoding = head.headers.get("content-encoding", "").strip().lower()
        if status in (200, 206) and encoding not in ("", "identity"):
            # docs/protocol.md §6.2: ranges and digests are of the raw archive; a decoded body
            # could also be any size at all (a gzip bomb).
            raise IntegrityError(
                f"the server applied Content-Encoding {encoding!r} to the archive; refused"
            )
        if status in (200, 206):
            self._urls.accepted(url)
        if status == 206:
            position, limit = self._accept_range(head.headers, offset, last)
        elif status == 200:
            position, limit = self._accept_whole(head.headers)
        else:
            raise self._refused(head)
        return BodyTarget(self.current(index), self._part.layout, position, limit, self._unsized)

    def _refused(self, head: BlobHead) -> Exception:
        status = head.status
        response = head.as_response()
        detail, code = error_detail(response)
        if status == 416:
            return ArchiveChanged()
        if status in (401, 403):
            # A blob URL carries no credential of ours: a refusal is about the URL (expired,
            # signed with credentials the store no longer takes), never about the API key.
            said = refusal_text(status, detail, code)
            return RetryableFailure(f"the download URL was refused ({said})", refusal=said)
        if is_retryable_status(status):
            return RetryableFailure(f"HTTP {status}", response=response)
        if status == 404:
            return NotFoundError(
                "the archive is no longer available (deleted, expired or overwritten)"
            )
        return error_for_status(status, code, detail or f"archive download refused (HTTP {status})")

    def _accept_range(
        self, headers: httpx.Headers, offset: int, last: int
    ) -> tuple[int, int | None]:
        match = CONTENT_RANGE.fullmatch(headers.get("content-range", "").strip())
        if match is None:
            raise UnexpectedResponseError("a partial response had no valid Content-Range")
        first, final, total_text = match.groups()
        if int(first) != offset or int(final) > last or total_text == "*":
            raise UnexpectedResponseError("a partial response covered the wrong byte range")
        total = int(total_text)
        validators = response_validators(headers)
        part, journal = self._part, self._part.journal
        if journal is None:
            if self._expected_size is not None and total != self._expected_size:
                raise IntegrityError(
                    f"the server's archive has {total} bytes, the listing says {self._expected_size}"
                )
            if self._expected_size is None:
                check_room_for(part.fd, part.path.parent, total)
            os.ftruncate(part.fd, total)
            part.replace_journal(
                Journal.plan(self._identity, total, self._segment_size, validators)
            )
            self.planned.set()
        elif total != journal.size or (
            journal.headers.get("etag")
            and validators.get("etag")
            and validators["etag"] != journal.headers["etag"]
        ):
            raise ArchiveChanged()
        else:
            journal.headers.update(validators)
            self.planned.set()
        return offset, int(final) + 1

    def _accept_whole(self, headers: httpx.Headers) -> tuple[int, int | None]:
        """A 200 to a range request: the server ignores ``Range`` (or, for a resumed file,
        the entity changed). Only the probe may take it: the body becomes the whole file."""
        if self.planned.is_set() and not self.ranges_ignored:
            raise ArchiveChanged()
        length_text = headers.get("content-length")
        size = int(length_text) if length_text and length_text.isdigit() else self._expected_size
        if size is not None and self._expected_size is not None and size != self._expected_size:
            raise IntegrityError(
                f"the server's archive has {size} bytes, the listing says {self._expected_size}"
            )
        part = self._part
        self._unsized = None
        if size is None:  # no source gives a size: bounded by the cap and the free space
            self._unsized = UnsizedBody(part.path.parent, self._max_unsized)
        elif self._expected_size is None:
            check_room_for(part.fd, part.path.parent, size)
        self.ranges_ignored = True
        self.unsized_open = size is None
        os.ftruncate(part.fd, size or 0)
        part.replace_journal(
            Journal.plan(self._identity, size or 0, size or 0, response_validators(headers))
        )
        self.planned.set()
        return 0, size if size is not None else self._max_unsized
