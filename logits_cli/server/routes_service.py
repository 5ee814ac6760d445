"""Service endpoints (docs/protocol.md §5.1, §2.2, §2.3)."""

from __future__ import annotations

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import AuthError, NotFoundError, UnavailableError
from logits_cli.store import sessions

from .endpoint import Call, route
from .request_body import TELEMETRY_BODY_LIMIT
from .responses import json_response


async def healthz(call: Call) -> Response:
    """503 when the store cannot take writes, a full disk included (docs/protocol.md §5.1)."""
    problem = await call.run(call.store.health_problem, min_free_bytes=call.settings.min_free_bytes)
    if problem is not None:
        raise UnavailableError(problem)
    return json_response(models.HealthResponse())


async def capabilities(call: Call) -> Response:
    known = await call.run(call.store.known_base_models)
    # Every catalog model takes training runs; none can sample, since this reference server
    # runs no model (sampling requests fail, docs/protocol.md §11.5).
    supported = [
        models.SupportedModel(
            model_name=name, max_context_length=context, trainable=True, sampleable=False
        )
        for name, context in known
    ]
    return json_response(models.ServerCapabilities(supported_models=supported))


async def client_config(call: Call) -> Response:
    # Only our own field: the SDK's tuning knobs keep their defaults, and
    # credential_default_source must never say "credential_cmd" (§8.6).
    return json_response(models.ClientConfigResponse(pjwt_auth_enabled=call.settings.jwt_auth))


async def auth_token(call: Call) -> Response:
    if not call.settings.jwt_auth:
        raise NotFoundError("JWT authentication is not enabled on this server")
    if call.used_jwt:
        # A JWT must not mint its successor, or a revoked API key would live on forever.
        raise AuthError("a JWT is obtained with an API key")
    jwt = call.context.signer.issue_jwt(call.user, ttl=call.settings.jwt_ttl, key_id=call.key_id)
    return json_response(models.AuthTokenResponse(jwt=jwt))


async def create_session(call: Call) -> Response:
    request = call.parse(models.CreateSessionRequest)
    session_id = await call.run(
        call.store.create_session,
        call.user,
        tags=request.tags,
        user_metadata=request.user_metadata,
        sdk_version=request.sdk_version,
        project_id=request.project_id,
    )
    return json_response(models.CreateSessionResponse(session_id=session_id))


async def session_heartbeat(call: Call) -> Response:
    request = call.parse(models.SessionHeartbeatRequest)
    # 410 once the session is finished (docs/protocol.md §11.1).
    await call.run(sessions.heartbeat, call.store, call.user, request.session_id)
    return json_response(models.HeartbeatResponse())


async def telemetry(call: Call) -> Response:
    return json_response(models.TelemetryResponse())


ROUTES = [
    route("/api/v1/healthz", healthz, ["GET"], authenticated=False),
    route("/api/v1/get_server_capabilities", capabilities, ["GET"]),
    # Answers that change nothing skip idempotency records: a replay would add nothing.
    route("/api/v1/client/config", client_config, ["POST"], idempotent=False),
    route("/api/v1/auth/token", auth_token, ["POST"], idempotent=False),
    route("/api/v1/create_session", create_session, ["POST"]),
    route("/api/v1/session_heartbeat", session_heartbeat, ["POST"], idempotent=False),
    route(
        "/api/v1/telemetry",
        telemetry,
        ["POST"],
        authenticated=False,
        idempotent=False,
        max_body=TELEMETRY_BODY_LIMIT,
    ),
]
