"""Reading request bodies within a limit, and parsing them as JSON a client cannot abuse.

Bodies are read only after authentication (``endpoint.route``) and never beyond the
endpoint's limit: a declared ``Content-Length`` above it is refused before a byte is read,
and a chunked body is counted as it streams and cut off at the limit (413, docs/protocol.md
§4.4). Parsed JSON is held to what the store can keep: bounded nesting, valid Unicode
(no lone surrogates), no NUL characters (nor in the path or query: PostgreSQL's text
cannot keep one), integers that fit a signed 64-bit column, finite numbers. Anything
else is a client mistake (400), never a 500 or a failed future.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

from logits_cli.errors import PayloadTooLargeError, UsageError

MIB = 1 << 20
# Every body the wire protocol defines is a few KiB; telemetry batches from the SDK stay far
# below 1 MiB too. A route that needs more says so with ``route(..., max_body=...)``.
DEFAULT_BODY_LIMIT = MIB
TELEMETRY_BODY_LIMIT = MIB
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
# No text the protocol defines (ids, names, cursors, versions, metadata) holds a NUL, and
# PostgreSQL's text columns cannot keep one: refused wherever a request carries text.
NUL_REFUSED = "holds a NUL character, which no field of the protocol allows"


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body is larger than this endpoint's limit of {limit} bytes"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLargeError as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not declared.isdigit():
            raise UsageError("Content-Length must be a non-negative integer")
        if len(declared.lstrip("0")) > 18 or int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise UsageError(f"request body holds {name}, which is not a JSON number")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body counts as ``{}``."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise UsageError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, integers over 4,300 digits
        raise UsageError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    check_json_value(data)
    return data


def check_json_value(value: Any) -> None:
    """UsageError for anything the store could not keep or would choke on (iterative walk)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise UsageError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise UsageError("request body holds an integer outside the signed 64-bit range")
        elif isinstance(item, float) and not math.isfinite(item):
            raise UsageError("request body holds a number too large to represent")


def _check_text(text: str) -> None:
    if _SURROGATE.search(text):
        raise UsageError("request body holds a lone UTF-16 surrogate, which is not valid Unicode")
    if "\x00" in text:
        raise UsageError(f"request body {NUL_REFUSED}")


def check_request_strings(request: Request) -> None:
    """UsageError when the path or query holds a NUL (percent-encoded as ``%00``): the
    same 400 on either database, where PostgreSQL's text columns would fail the request
    with a 500 (SQLite keeps the NUL, and a lookup then finds nothing)."""
    params = request.path_params
    if any("\x00" in str(value) for value in params.values()):
        raise UsageError(f"request path {NUL_REFUSED}")
    query = request.query_params
    if any("\x00" in name or "\x00" in value for name, value in query.multi_items()):
        raise UsageError(f"request query {NUL_REFUSED}")
