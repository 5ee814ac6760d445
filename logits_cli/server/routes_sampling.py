"""Sampling sessions (docs/protocol.md §11.5), for SDK 0.24 and 0.38 alike.

Creating a sampling session validates the checkpoint or base model and records it, so
``create_sampling_client`` and ``save_weights_and_get_sampling_client`` succeed. The reference
server runs no model: a sample request is accepted as a future that fails at once with code
``sampling_unavailable`` (category ``user``). The SDK retries neither a failed future nor a
4xx, so a program sampling here stops with that error instead of retrying for minutes, and
no token is ever made up.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import JobFailedError, UsageError
from logits_cli.store import sessions

from .endpoint import Call, route
from .futures import request_digest
from .responses import json_response

SAMPLING_UNAVAILABLE = "sampling_unavailable"


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"invalid field {name}: expected a string")
    return value


async def create_sampling_session(call: Call) -> Response:
    body = call.json()
    session_id = body.get("session_id")
    seq_id = body.get("sampling_session_seq_id")
    if not isinstance(session_id, str):
        raise UsageError("invalid field session_id: field required")
    if type(seq_id) is not int:
        raise UsageError("invalid field sampling_session_seq_id: expected an integer")
    base_model = _optional_string(body, "base_model")
    model_path = _optional_string(body, "model_path")
    sampler_id = await call.run(
        lambda: sessions.create_sampling_session(
            call.store,
            call.user,
            session_id=session_id,
            seq_id=seq_id,
            base_model=base_model,
            model_path=model_path,
        )
    )
    return json_response(models.CreateSamplingSessionResponse(sampling_session_id=sampler_id))


async def get_sampler(call: Call) -> Response:
    sampler_id = call.request.path_params["sampler_id"]
    answer = await call.run(lambda: sessions.get_sampler(call.store, call.user, sampler_id))
    return json_response(answer)


def _unavailable() -> dict[str, Any]:
    raise JobFailedError(
        "this server stores and serves checkpoints but runs no model: sampling is unavailable"
        " here (code sampling_unavailable)",
        category="user",
        failure_code=SAMPLING_UNAVAILABLE,
    )


async def sample(call: Call) -> Response:
    body = call.json()
    sampler_id = body.get("sampling_session_id")
    if not isinstance(sampler_id, str):
        raise UsageError("invalid field sampling_session_id: field required")
    # 404 for a sampling session that is unknown or not the caller's, before any future.
    await call.run(lambda: sessions.get_sampler(call.store, call.user, sampler_id))
    request_id = await call.context.futures.submit(
        call.user,
        operation="sample",
        model_id=None,
        job=_unavailable,
        body_sha256=request_digest(body),
    )
    return json_response(models.FutureHandle(request_id=request_id))


ROUTES = [
    route("/api/v1/create_sampling_session", create_sampling_session, ["POST"]),
    route("/api/v1/samplers/{sampler_id}", get_sampler, ["GET"]),
    route("/api/v1/asample", sample, ["POST"]),
]
