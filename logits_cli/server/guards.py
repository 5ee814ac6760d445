"""ASGI guard refusing request paths that could re-target an endpoint (docs/protocol.md §3.3).

A dot segment (``.``, ``..``, raw or percent-encoded as ``%2e``) or an encoded separator
(``%2f``, ``%5c``) inside a segment changes what the path means once decoded or normalised:
``/training_runs/%2e%2e/checkpoints`` is the user-wide listing, ``/training_runs/R%2fx`` has
two segments after decoding. Such a request is answered 400 from its raw path
(``scope["raw_path"]``) and never reaches the router.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from logits_cli.errors import UsageError

from .responses import error_response

_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)


def path_problem(raw_path: bytes) -> str | None:
    """Why ``raw_path`` is refused, or None when it is safe to route."""
    path = raw_path.split(b"?", 1)[0]
    if _ENCODED_SEPARATOR.search(path) or b"\\" in path:
        return "request path holds an encoded '/' or a '\\' inside a segment"
    for segment in path.split(b"/"):
        decoded = unquote_to_bytes(segment)
        if decoded and decoded.strip(b".") == b"":
            return "request path holds a dot segment ('.' or '..')"
    return None


class PathGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            problem = path_problem(raw_path)
            if problem is not None:
                response = error_response(UsageError(problem))
                response.headers["connection"] = "close"  # any body stays unread
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
