"""JSON answers and the one rendering of errors as ``{"detail", "code"}`` (protocol.md §4.2, §4.4)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from logits_cli.errors import LogitsError

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


def error_response(exc: BaseException) -> Response:
    """Render any exception; unexpected ones become 500 ``internal`` without leaking details."""
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
