"""Waiting for a future: ``POST /api/v1/retrieve_future`` until it finishes (docs/protocol.md §5.2, §9).

* ``try_again`` (and a 408) means pending: poll again at once, since the server long-polls.
* 5xx, 429 and connection errors back off as in §9; their deadline counts only consecutive
  failures, and every ``try_again`` resets it.
* 404 and 410 end the wait. The original request is never resubmitted: that could create a
  second checkpoint.
* The caller's own ``timeout`` bounds the whole wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
from pydantic import BaseModel

from logits_cli import errors, models
from logits_cli.api.http import (
    CONNECT_TIMEOUT_S,
    RequestLayer,
    TransientFailure,
    new_idempotency_key,
)
from logits_cli.api.retry import Deadline, is_retryable_status
from logits_cli.api.transport_errors import explain_full_disk

# At least the server's poll hold (10 s) + 20 s (§9).
FUTURE_READ_TIMEOUT_S = 45.0

FAILURE_CATEGORIES = frozenset({"user", "server", "unknown"})

R = TypeVar("R", bound=BaseModel)


async def wait_for_future(
    layer: RequestLayer,
    handle: models.FutureHandle,
    result_model: type[R],
    *,
    what: str,
    on_pending: Callable[[float], None] | None = None,
    timeout: float | None = None,
) -> R:
    """The future's result as ``result_model``; its failure as an ``errors.py`` class.

    ``what`` names the operation in messages ("save of step-100").
    """
    policy = layer.policy
    started = policy.clock()
    caller_expiry = None if timeout is None else started + timeout
    failures = 0
    failure_deadline: Deadline | None = None
    body = models.RetrieveFutureRequest(request_id=handle.request_id).model_dump()
    while True:
        now = policy.clock()
        if caller_expiry is not None and now >= caller_expiry:
            raise _timed_out(what, now - started, handle)
        read_timeout = FUTURE_READ_TIMEOUT_S
        if caller_expiry is not None:
            read_timeout = min(read_timeout, caller_expiry - now)
        response: httpx.Response | None = None
        failure: TransientFailure | None = None
        try:
            # Each poll is its own call: a replayed ``try_again`` would never end the wait.
            response = await layer.attempt(
                "POST",
                "retrieve_future",
                json=body,
                idempotency_key=new_idempotency_key(),
                timeout=httpx.Timeout(read_timeout, connect=min(CONNECT_TIMEOUT_S, read_timeout)),
            )
        except TransientFailure as exc:
            failure = exc
        else:
            status = response.status_code
            if 200 <= status <= 299:
                outcome = layer.json_body(response)
                if not _is_pending(outcome):
                    return _finished(layer, response, outcome, result_model, what)
            if status == 408 or 200 <= status <= 299:
                failures, failure_deadline = 0, None
                if on_pending is not None:
                    on_pending(policy.clock() - started)
                continue
            if not is_retryable_status(status):
                raise layer.error_for(response, context=f"waiting for {what}")

        now = policy.clock()
        if caller_expiry is not None and now >= caller_expiry:
            raise _timed_out(what, now - started, handle)
        if failure_deadline is None:
            failure_deadline = policy.start()
            if caller_expiry is not None and caller_expiry < failure_deadline.expires_at:
                failure_deadline = Deadline(caller_expiry, policy.clock)
        if not await policy.pause(failures, failure_deadline, response):
            if failure is not None:
                raise failure.error(attempts=failures + 1)
            assert response is not None
            raise layer.error_for(response, attempts=failures + 1, context=f"waiting for {what}")
        failures += 1


def _is_pending(outcome: object) -> bool:
    return isinstance(outcome, dict) and outcome.get("type") == "try_again"


def _finished(
    layer: RequestLayer,
    response: httpx.Response,
    outcome: object,
    result_model: type[R],
    what: str,
) -> R:
    if isinstance(outcome, dict) and "error" in outcome:
        failed = layer.validate(response, models.RequestFailed, outcome)
        message = layer.redact(" ".join(failed.error.split())) or "the server gave no reason"
        category = failed.category if failed.category in FAILURE_CATEGORIES else "unknown"
        error = errors.error_for_failed_future(f"{what} failed: {message}", category, failed.code)
        raise explain_full_disk(error)
    return layer.validate(response, result_model, outcome)


def _timed_out(what: str, elapsed: float, handle: models.FutureHandle) -> errors.UnavailableError:
    return errors.UnavailableError(
        f"timed out waiting for {what} after {elapsed:.0f} s",
        hint=f"the server may still finish request {handle.request_id}",
    )
