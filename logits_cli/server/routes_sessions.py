"""Sessions of the SDK 0.38 dialect (docs/protocol.md §11.1) and the dynamic client config."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import UsageError
from logits_cli.store import sessions

from .endpoint import Call, route
from .responses import json_response
from .routes_checkpoints import _access_scope, _page

_DATETIME: TypeAdapter[datetime] = TypeAdapter(models.UTCDateTime)
SESSIONS_PAGE = (20, 100)  # (default, maximum) of ``limit`` for GET /sessions


def _session_id(call: Call) -> str:
    session_id = str(call.request.path_params["session_id"])
    if not session_id or len(session_id) > 200:
        raise UsageError("invalid session id")
    return session_id


async def finish_session(call: Call) -> Response:
    body = call.json()
    reason = body.get("reason", {"type": "success"})
    if not isinstance(reason, dict) or not isinstance(reason.get("type"), str):
        raise UsageError("invalid field reason: expected an object with a string 'type'")
    detail = body.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise UsageError("invalid field detail: expected a string")
    session_id = _session_id(call)

    def finish() -> None:
        sessions.finish_session(call.store, call.user, session_id, reason["type"], detail)
        # The service unloads a session's models when it ends; the rows can rebuild them.
        call.store.free_session_states(session_id)

    await call.run(finish)
    return json_response({})


async def list_sessions(call: Call) -> Response:
    limit, offset = _page(call, *SESSIONS_PAGE)
    _access_scope(call)  # validated; only the caller's own sessions are ever listed
    found = await call.run(
        lambda: sessions.list_sessions(call.store, call.user, limit=limit, offset=offset)
    )
    return json_response(models.ListSessionsResponse(sessions=found))


async def get_session(call: Call) -> Response:
    _access_scope(call)
    session_id = _session_id(call)
    answer = await call.run(lambda: sessions.get_session(call.store, call.user, session_id))
    return json_response(answer)


def _string_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise UsageError(f"invalid field {name}: expected a list of strings")
    return value


def _cursor(value: Any) -> tuple[datetime, str] | None:
    if value is None:
        return None
    try:
        at = _DATETIME.validate_python(value["last_created_at"])
        after = value["last_session_id"]
    except (KeyError, TypeError, ValueError, ValidationError):
        raise UsageError("invalid field cursor") from None
    if not isinstance(after, str):
        raise UsageError("invalid field cursor.last_session_id")
    return at, after


async def search_sessions(call: Call) -> Response:
    body = call.json()
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise UsageError("invalid field session_id: expected a string")
    metadata = body.get("user_metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise UsageError("invalid field user_metadata: expected an object of strings")
    statuses = body.get("statuses")
    if statuses is not None and (
        not isinstance(statuses, list)
        or not statuses
        or not all(isinstance(s, dict) and s.get("type") in sessions.STATUS_TYPES for s in statuses)
    ):
        raise UsageError("invalid field statuses")
    limit = body.get("limit", sessions.SEARCH_LIMIT[0])
    if type(limit) is not int or not 1 <= limit <= sessions.SEARCH_LIMIT[1]:
        raise UsageError(f"limit must be an integer from 1 to {sessions.SEARCH_LIMIT[1]}")
    owner = body.get("owner") or {"type": "own"}
    if not isinstance(owner, dict) or owner.get("type") not in ("own", "accessible", "user"):
        raise UsageError("invalid field owner")
    project_ids = _string_list(body, "project_ids")
    cursor = _cursor(body.get("cursor"))
    answer = await call.run(
        lambda: sessions.search_sessions(
            call.store,
            call.user,
            session_id=session_id,
            project_ids=project_ids,
            user_metadata=metadata,
            statuses=statuses,
            limit=limit,
            cursor=cursor,
        )
    )
    return json_response(answer)


async def dynamic_config(call: Call) -> Response:
    # Every flag keeps the SDK's default: nothing here changes how a client behaves.
    return json_response({})


ROUTES = [
    route("/api/v1/sessions", list_sessions, ["GET"]),
    route("/api/v1/sessions/search", search_sessions, ["POST"], idempotent=False),
    route("/api/v1/sessions/{session_id}", get_session, ["GET"]),
    route("/api/v1/sessions/{session_id}/finish", finish_session, ["POST"]),
    route("/api/v1/client/dynamic_config", dynamic_config, ["POST", "GET"], idempotent=False),
]
