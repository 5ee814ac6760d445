"""The one wrapper every endpoint goes through: body, authentication, idempotency, errors.

Handlers are ``async def handler(call: Call) -> Response``; they raise classes of
``logits_cli.errors`` and never render errors themselves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from logits_cli.errors import AuthError, UnavailableError, UsageError
from logits_cli.store.store import LOCAL_USER, IdempotencyRecord, Store

from .futures import FutureRunner
from .request_body import (
    DEFAULT_BODY_LIMIT,
    check_request_strings,
    parse_json_object,
    read_body,
)
from .responses import error_response, status_headers
from .settings import ServerSettings
from .tokens import Signer

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_MUTATING_METHODS = ("POST", "PUT", "DELETE")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Statuses never recorded for replay (§4.5): the same request may well succeed later.
_UNRECORDED_STATUSES = (401, 408, 429)
_JWT_PREFIX = "eyJ"


@dataclass(frozen=True)
class ServerContext:
    """What every handler needs; one per app (``app.state.context``)."""

    store: Store
    settings: ServerSettings
    signer: Signer
    futures: FutureRunner


@dataclass
class Call:
    request: Request
    context: ServerContext
    user: str  # "" on endpoints that need no credential
    body: bytes
    used_jwt: bool = False
    key_id: str | None = None  # the API key (its store id) the credential stands for

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def settings(self) -> ServerSettings:
        return self.context.settings

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body counts as ``{}``."""
        return parse_json_object(self.body)

    def parse(self, model: type[M], data: dict[str, Any] | None = None) -> M:
        return parse_fields(model, self.json() if data is None else data)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking store work off the event loop."""
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


def parse_fields(model: type[M], data: dict[str, Any], *, location: str = "") -> M:
    """Strictly typed validation of the fields ``model`` defines; other keys are ignored."""
    known = {key: value for key, value in data.items() if key in model.model_fields}
    try:
        return model.model_validate(known, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in (location, *first["loc"]) if part != "") or "body"
        raise UsageError(f"invalid field {where}: {first['msg'].lower()}") from None


Handler = Callable[[Call], Awaitable[Response]]


def route(
    path: str,
    handler: Handler,
    methods: Sequence[str],
    *,
    authenticated: bool = True,
    idempotent: bool = True,
    max_body: int = DEFAULT_BODY_LIMIT,
) -> Route:
    """``max_body``: the endpoint's body limit in bytes (413 above it; README, server section)."""

    async def endpoint(request: Request) -> Response:
        context: ServerContext = request.app.state.context
        body_read = False
        try:
            call = Call(request, context, "", b"")
            # Credentials first: a caller without one never gets the server to read a byte.
            if authenticated:
                call.user, call.used_jwt, call.key_id = await _authenticate(request, context)
            check_request_strings(request)
            call.body = await read_body(request, max_body)
            body_read = True
            key = request.headers.get("x-idempotency-key")
            if (
                idempotent
                and authenticated
                and key is not None
                and request.method in _MUTATING_METHODS
            ):
                return await _idempotent(call, handler, key)
            return await handler(call)
        except Exception as exc:
            response = error_response(exc)
            if not body_read and _has_body(request):
                # The unread body is still on the wire: end the connection instead of
                # reading (or letting the client send) it.
                response.headers["connection"] = "close"
            return response

    return Route(path, endpoint, methods=list(methods))


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0"


async def _authenticate(request: Request, context: ServerContext) -> tuple[str, bool, str | None]:
    """The caller's user id, whether it presented a JWT, and its API key's id (§2.1, §2.3).

    A JWT names the key it was minted with; it is honoured only while that key is
    unrevoked, so revoking a key ends its JWTs at once.
    """
    if not context.settings.auth:
        return LOCAL_USER, False, None
    credential = request.headers.get("x-api-key", "").strip()
    if not credential:
        raise AuthError("missing X-API-Key header")
    store = context.store
    if context.settings.jwt_auth and credential.startswith(_JWT_PREFIX):
        claims = context.signer.verify_jwt_claims(credential)
        owner = await anyio.to_thread.run_sync(store.user_for_key_id, claims.key_id)
        if owner is None or owner != claims.subject:
            raise AuthError("the API key this token was issued for is revoked; use a valid key")
        return claims.subject, True, claims.key_id
    user = await anyio.to_thread.run_sync(store.authenticate, credential)
    if user is None:
        raise AuthError("invalid or revoked API key")
    return user, False, store.key_id(credential)


async def _idempotent(call: Call, handler: Handler, key: str) -> Response:
    """§4.5: replay a recorded answer, refuse a reused key, or run once and record."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise UsageError("X-Idempotency-Key must be 1-255 visible ASCII characters")
    request = call.request
    scope = (call.user, request.method, request.url.path, key)
    body_sha256 = hashlib.sha256(call.body).hexdigest()
    store = call.store
    existing = await call.run(store.idempotency_claim, scope, body_sha256)
    if existing is not None:
        return _replay(existing, body_sha256)
    recorded = False
    try:
        try:
            response = await handler(call)
        except Exception as exc:
            response = error_response(exc)
        if 200 <= response.status_code < 300 or (
            400 <= response.status_code < 500 and response.status_code not in _UNRECORDED_STATUSES
        ):
            await call.run(
                store.idempotency_finish,
                scope,
                status=response.status_code,
                body=bytes(response.body),
                content_type=response.headers.get("content-type"),
                location=response.headers.get("location"),
            )
            recorded = True
        return response
    finally:
        if not recorded:
            # Shielded: a client that disconnects must not leave the key "running" forever.
            with anyio.CancelScope(shield=True):
                await call.run(store.idempotency_release, scope)


def _replay(record: IdempotencyRecord, body_sha256: str) -> Response:
    if record.body_sha256 != body_sha256:
        raise UsageError("X-Idempotency-Key was already used with a different request body")
    if record.state != "done" or record.status is None:
        raise UnavailableError("an identical request is still running; retry shortly")
    response = Response(
        record.body or b"", status_code=record.status, headers=status_headers(record.status)
    )
    if record.content_type:
        response.headers["content-type"] = record.content_type
    if record.location:
        response.headers["location"] = record.location
    response.headers["idempotent-replayed"] = "true"
    return response
