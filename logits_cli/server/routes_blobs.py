"""The signed-URL blob endpoint (docs/protocol.md §6).

Starlette's FileResponse streams the file and implements Range, If-Range and HEAD, but its
edge cases differ from §6.2 (400 on a malformed Range, multipart answers, plain-text 416,
If-Range compared as strings). The Range decision is therefore taken here, and FileResponse
only ever sees no Range at all or one canonical ``bytes=a-b``.
"""

from __future__ import annotations

import base64
import os
import re
from email.utils import formatdate, parsedate_to_datetime
from typing import Literal

from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from logits_cli.errors import NotFoundError, RangeNotSatisfiableError
from logits_cli.store import exports
from logits_cli.store.store import BlobInfo

from .endpoint import Call, route
from .responses import error_body

_SINGLE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
_CHUNK_SIZE = 2 * 1024 * 1024  # not 64 KiB (FileResponse): fewer thread hops; tests/bench/serve.py

RangeDecision = tuple[int, int] | Literal["whole", "unsatisfiable"]
# Positions with more digits than this exceed any file; they are not converted to int at
# all (Python refuses str-to-int conversions over 4,300 digits, which used to be a 500).
_MAX_POSITION_DIGITS = 18
_BEYOND_ANY_FILE = 1 << 63


def _position(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    if len(significant) > _MAX_POSITION_DIGITS:
        return _BEYOND_ANY_FILE
    return int(significant)


def decide_range(range_header: str | None, size: int) -> RangeDecision:
    """The §6.2 table: an inclusive ``(first, last)``, the whole file, or unsatisfiable."""
    if range_header is None:
        return "whole"
    match = _SINGLE_RANGE.fullmatch(range_header.strip())
    if match is None:  # malformed, another unit, or several ranges
        return "whole"
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return "whole"
    if not first_text:  # suffix: the last n bytes
        suffix = _position(last_text)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    first = _position(first_text)
    last = _position(last_text) if last_text else None
    if last is not None and last < first:
        return "whole"  # an invalid range-spec is ignored (RFC 9110 §14.2)
    if first >= size:
        return "unsatisfiable"
    return first, size - 1 if last is None else min(last, size - 1)


def if_range_matches(if_range: str | None, etag: str, last_modified: str) -> bool:
    """True when there is no If-Range or it names this exact representation."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison: a weak tag never matches
    try:
        return parsedate_to_datetime(value) == parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return False


class ArchiveResponse(FileResponse):
    """FileResponse serving exactly the range we decided, and nothing from the request."""

    chunk_size = _CHUNK_SIZE

    def __init__(
        self,
        blob: BlobInfo,
        byte_range: tuple[int, int] | None,
        headers: dict[str, str],
        stat_result: os.stat_result,
        media_type: str = "application/x-tar",
    ) -> None:
        super().__init__(
            blob.path,
            headers=headers,
            media_type=media_type,
            stat_result=stat_result,
        )
        self._byte_range = byte_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kept = [
            (name, value)
            for name, value in scope["headers"]
            if name.lower() not in (b"range", b"if-range")
        ]
        if self._byte_range is not None:
            first, last = self._byte_range
            kept.append((b"range", f"bytes={first}-{last}".encode("ascii")))
        await super().__call__({**scope, "headers": kept}, receive, send)


def archive_headers(blob: BlobInfo, run_id: str, kind: str, name: str) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(blob.sha256)).decode("ascii")
    return {
        "etag": f'"sha256:{blob.sha256}"',
        "repr-digest": f"sha-256=:{digest}:",
        "last-modified": formatdate(blob.created.timestamp(), usegmt=True),
        "cache-control": "private, no-transform",
        "accept-ranges": "bytes",
        "content-disposition": f'attachment; filename="{run_id}_{kind}_{name}.tar"',
    }


async def blob(call: Call) -> Response:
    claim = call.context.signer.verify_blob_token(call.request.path_params["token"])
    file = claim.file
    if file is not None:  # one file of an external_weights export (docs/protocol.md §11.3)
        info = await call.run(
            exports.export_blob_for, call.store, claim.run_id, claim.name, file, claim.sha256
        )
    else:
        info = await call.run(
            call.store.blob_for, claim.run_id, claim.kind, claim.name, claim.sha256
        )
    try:
        stat_result = await call.run(os.stat, info.path)
    except FileNotFoundError:
        raise NotFoundError("checkpoint archive not found") from None
    headers = archive_headers(info, claim.run_id, claim.kind, claim.name)
    if file is not None:
        headers["content-disposition"] = f'attachment; filename="{file.rsplit("/", 1)[-1]}"'
    request_headers = call.request.headers
    decision: RangeDecision = "whole"
    if if_range_matches(request_headers.get("if-range"), headers["etag"], headers["last-modified"]):
        decision = decide_range(request_headers.get("range"), stat_result.st_size)
    if decision == "unsatisfiable":
        error = RangeNotSatisfiableError("requested range is outside the archive")
        return error_body(
            error.http_status,
            error.code,
            error.message,
            headers={"content-range": f"bytes */{stat_result.st_size}"},
        )
    byte_range = None if decision == "whole" else decision
    media_type = "application/octet-stream" if file is not None else "application/x-tar"
    return ArchiveResponse(info, byte_range, headers, stat_result, media_type)


ROUTES = [
    # The token is the credential (§6.1): no X-API-Key, and nothing to replay.
    route("/api/v1/blobs/{token}", blob, ["GET"], authenticated=False, idempotent=False),
]
