"""JSON answers and the one rendering of errors as ``{"detail", "code"}`` (docs/protocol.md §4.2, §4.4)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from logits_cli.errors import InsufficientStorageError, LogitsError
from logits_cli.store.store import STORAGE_FULL_ERRNOS

logger = logging.getLogger("logits.server")

# Seconds a client should wait before retrying a 429 or 503 (§4.4: whole seconds, 1–60).
DEFAULT_RETRY_AFTER = 1

_HTTP_EXCEPTION_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
}


def json_response(
    content: BaseModel | dict[str, Any] | list[Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """UTF-8 JSON with an explicit ``Content-Length`` (JSONResponse renders the body up front)."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return JSONResponse(content, status_code=status_code, headers=headers)


def status_headers(status: int) -> dict[str, str]:
    """Headers §4.4 attaches to some error statuses."""
    if status == 409:
        # Stops the SDK's inner retry layer, which would otherwise retry a 409 (§10.1).
        return {"x-should-retry": "false"}
    if status in (429, 503):
        return {"retry-after": str(DEFAULT_RETRY_AFTER)}
    return {}


def error_body(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    all_headers = status_headers(status) | dict(headers or {})
    return json_response({"detail": detail, "code": code}, status_code=status, headers=all_headers)


def storage_full(exc: BaseException) -> InsufficientStorageError | None:
    """The 507 a full disk or quota deserves, when ``exc`` (or what caused it) is one:
    ``ENOSPC``/``EDQUOT`` from the file system, ``SQLITE_FULL`` from the database."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_FULL_ERRNOS:
            break
        if isinstance(current, sqlite3.Error) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "disk is full" in str(current)
        ):
            break
        current = current.__cause__ or current.__context__
    else:
        return None
    logger.warning("the store has no space left: %s", current)
    return InsufficientStorageError("the server's store has no space left")


def error_response(exc: BaseException) -> Response:
    """Render any exception; unexpected ones become 500 ``internal`` without leaking details."""
    full = storage_full(exc)
    if full is not None:
        exc = full
    if isinstance(exc, LogitsError):
        return error_body(exc.http_status, exc.code, exc.message)
    if isinstance(exc, HTTPException):
        code = _HTTP_EXCEPTION_CODES.get(exc.status_code, "internal")
        detail = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
        }.get(exc.status_code, str(exc.detail))
        return error_body(exc.status_code, code, detail, headers=dict(exc.headers or {}))
    logger.error("unexpected server error", exc_info=exc)
    return error_body(500, "internal", "internal server error")
