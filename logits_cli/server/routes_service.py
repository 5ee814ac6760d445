"""Service endpoints (docs/protocol.md §5.1, §2.2, §2.3)."""

from __future__ import annotations

import logging
import math
import threading
import time

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import AuthError, NotFoundError, UnavailableError
from logits_cli.store import sessions
from logits_cli.store.object_store import ObjectStore

from .endpoint import Call, route
from .request_body import TELEMETRY_BODY_LIMIT
from .responses import json_response

logger = logging.getLogger("logits.server")


# How long healthz waits for the object store, and how long one answer of it is reused: a
# load balancer polling every few seconds costs the bucket one request per 10 s.
BUCKET_PROBE_SECONDS = 5.0
BUCKET_PROBE_REUSE_SECONDS = 10.0
BUCKET_UNREACHABLE = "the store's object store is not reachable"


class BucketProbe:
    """Whether the object store answers (a HEAD of the bucket), asked by one thread of its
    own at a time, so a hung endpoint holds no request for longer than
    BUCKET_PROBE_SECONDS. The answer names neither endpoint nor bucket (healthz needs no
    key); the reason goes to the server's log."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects
        self._guard = threading.Lock()
        self._done = threading.Event()
        self._done.set()  # no probe running
        self._started = 0.0
        self._checked = -math.inf
        self._problem: str | None = None

    def problem(self) -> str | None:
        """Blocks at most BUCKET_PROBE_SECONDS."""
        with self._guard:
            now = time.monotonic()
            if self._done.is_set():
                if now - self._checked < BUCKET_PROBE_REUSE_SECONDS:
                    return self._problem
                self._done = threading.Event()
                self._started = now
                threading.Thread(
                    target=self._probe, args=(self._done,), name="bucket-probe", daemon=True
                ).start()
            done, wait = self._done, self._started + BUCKET_PROBE_SECONDS - now
        if wait > 0 and done.wait(wait):
            with self._guard:
                return self._problem
        return BUCKET_UNREACHABLE

    def _probe(self, done: threading.Event) -> None:
        problem: str | None = None
        try:
            self._objects.check()
        except Exception as exc:  # any failure means the same to a load balancer
            logger.warning("healthz: %s", exc)
            problem = BUCKET_UNREACHABLE
        with self._guard:
            self._problem, self._checked = problem, time.monotonic()
        done.set()


def _bucket_probe(call: Call) -> BucketProbe | None:
    """The app's one probe of its object store (None with local blobs)."""
    objects = call.store.objects
    if objects is None:
        return None
    state = call.request.app.state
    probe: BucketProbe | None = getattr(state, "bucket_probe", None)
    if probe is None:  # made on the event loop's thread: no race
        probe = state.bucket_probe = BucketProbe(objects)
    return probe


async def healthz(call: Call) -> Response:
    """503 when the store cannot take writes, a full disk included, or when its database or
    object store does not answer (docs/protocol.md §5.1); never where they are."""
    problem = await call.run(call.store.health_problem, min_free_bytes=call.settings.min_free_bytes)
    probe = _bucket_probe(call)
    if problem is None and probe is not None:
        problem = await call.run(probe.problem)
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
