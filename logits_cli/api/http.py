"""The request layer under ``LogitsClient``: URLs, credentials, retries and error mapping.

* URLs are built by plain joining (docs/protocol.md §1.2): the base URL's path prefix survives.
* Credentials (§2): the API key is read lazily, once; before the first authenticated request
  the client bootstraps with ``client/config`` and, when the server asks for it, swaps the key
  for a JWT that is refreshed when 60 s or less remain, and once more after a 401.
* Retries follow §9 (see ``retry.py``); POST, PUT and DELETE carry one ``X-Idempotency-Key``
  per call, reused on every retry of that call.
* Every attempt reads its answer within a deadline, a minimum rate and a size cap
  (``answers.py``: 120 s, 1 KiB/s over 30 s, 64 MiB by default; ``AnswerLimits``).
* Every httpx exception and every non-2xx answer becomes a class of ``errors.py``
  (``transport_errors.py``, ``RequestLayer.error_for``): network failures, timeouts and broken
  HTTP are ``UnavailableError`` (exit 6), retried when a repeat may cure them; a redirect loop
  is ``UnavailableError`` at once; a URL or request httpx cannot send is ``ConfigError`` (exit
  2) when it came from the configuration and ``UnexpectedResponseError`` (exit 1) when the
  server handed it out. 507 (the server's disk is full) is not retried. Messages are one line
  and never hold the key, the JWT or a URL token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import httpx

from logits_cli import errors, models
from logits_cli.api.answer_reading import AnswerReader, one_line
from logits_cli.api.answers import (
    AnswerLimits,
    AnswerTimeout,
    AnswerTooLarge,
    fetch_answer,
    format_size,
)
from logits_cli.api.retry import Deadline, RetryPolicy, is_retryable_status
from logits_cli.api.transport_errors import (
    FULL_DISK_HINT,
    FULL_DISK_SUMMARY,
    HTTPX_ERRORS,
    describe_httpx_error,
    error_for_httpx,
    explain_full_disk,
    is_transient_httpx_error,
    is_unreachable,
)

API_PREFIX = "api/v1/"
CONNECT_TIMEOUT_S = 5.0
# How long a refused connection or an unknown host is retried (gh, hf and aws fail in seconds).
UNREACHABLE_BUDGET_S = 8.0
READ_TIMEOUT_S = 60.0
JWT_REFRESH_MARGIN_S = 60.0
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "DELETE"})

# Names other modules import from here, some defined in transport_errors.py.
__all__ = [
    "API_PREFIX",
    "CONNECT_TIMEOUT_S",
    "FULL_DISK_HINT",
    "FULL_DISK_SUMMARY",
    "HTTPX_ERRORS",
    "RequestLayer",
    "TransientFailure",
    "default_timeout",
    "describe_httpx_error",
    "error_for_httpx",
    "explain_full_disk",
    "is_transient_httpx_error",
    "join_url",
    "jwt_expiry",
    "new_idempotency_key",
    "one_line",
]


def join_url(base_url: str, endpoint: str) -> str:
    """``base_url`` + ``/api/v1/<endpoint>``, keeping any path prefix of the base (§1.2).

    The last line of defence against re-targeting: httpx folds dot segments away, so
    ``training_runs/../checkpoints`` would become the user-wide listing. Callers validate
    their parts (``uri.py``); an endpoint that still holds a dot or encoded segment is a
    usage error here, before anything is sent."""
    for segment in endpoint.split("?", 1)[0].split("/"):
        lowered = segment.lower()
        if (segment and segment.strip(".") == "") or "%2e" in lowered or "%2f" in lowered:
            raise errors.UsageError(
                f"refusing to send a request whose path has a dot segment: {segment!r}"
            )
    base = base_url if base_url.endswith("/") else base_url + "/"
    return base + API_PREFIX + endpoint.lstrip("/")


def default_timeout(read: float = READ_TIMEOUT_S) -> httpx.Timeout:
    """5 s to connect, ``read`` seconds for everything else (§9)."""
    return httpx.Timeout(read, connect=CONNECT_TIMEOUT_S)


def new_idempotency_key() -> str:
    return f"logits-{uuid.uuid4()}"


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a compact JWS, read without verifying it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


class RequestLayer(AnswerReader):
    """One ``httpx.AsyncClient`` plus the credential state of one ``LogitsClient``.

    ``api_key`` is called at most once, when the first authenticated request needs it; None
    (embedded backend) sends no credential at all.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        api_key: Callable[[], str | None] | None,
        policy: RetryPolicy,
        sdk_version: str,
        limits: AnswerLimits | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.base_url = base_url
        self.policy = policy
        self.limits = limits or AnswerLimits()
        self._api_key_source = api_key
        self._api_key: str | None = None
        self._sdk_version = sdk_version
        self._wall_clock = wall_clock
        super().__init__(httpx.URL(base_url).host or "the server")
        self._bootstrapped = False
        self._bootstrap_lock = asyncio.Lock()
        self._jwt_enabled = False
        self._jwt: str | None = None
        self._jwt_expiry: float | None = None
        self._jwt_lock = asyncio.Lock()

    def url(self, endpoint: str) -> str:
        return join_url(self.base_url, endpoint)

    # -- credentials ----------------------------------------------------------------------
    def _key(self) -> str | None:
        if self._api_key_source is None:
            return None
        if self._api_key is None:
            key = self._api_key_source()
            if not key:
                raise errors.AuthError(
                    f"no API key is configured for {self._host}",
                    hint="set LOGITS_API_KEY or LOGITS_API_KEY_CMD",
                )
            if not (key.isascii() and key.isprintable()):
                raise errors.AuthError(
                    "the API key holds characters an HTTP header cannot carry",
                    hint="check LOGITS_API_KEY or LOGITS_API_KEY_CMD",
                )
            self._api_key = key
            self._secrets.add(key)
        return self._api_key

    async def _credential(self, *, allow_jwt: bool) -> tuple[str | None, bool]:
        """(header value, whether it is a JWT)."""
        if allow_jwt and self._jwt_enabled:
            if self._jwt is None or self._jwt_expiring():
                await self.refresh_jwt(stale=self._jwt)
            return self._jwt, True
        return self._key(), False

    def _jwt_expiring(self) -> bool:
        if self._jwt_expiry is None:
            return False
        return self._jwt_expiry - self._wall_clock() <= JWT_REFRESH_MARGIN_S

    async def refresh_jwt(self, *, stale: str | None) -> None:
        """Exchange the API key for a new JWT, unless a concurrent caller already replaced
        ``stale``."""
        async with self._jwt_lock:
            if self._jwt is not None and self._jwt != stale:
                return
            response = await self._send(
                "POST", "auth/token", json={}, allow_jwt=False, bootstrap=False
            )
            token = self.parse(response, models.AuthTokenResponse).jwt
            self._secrets.add(token)
            self._jwt, self._jwt_expiry = token, jwt_expiry(token)

    async def bootstrap(self) -> None:
        """``client/config`` once per client (§2.2); a 404 means ``{}``."""
        if self._bootstrapped:
            return
        async with self._bootstrap_lock:
            if self._bootstrapped:
                return
            response = await self._send(
                "POST",
                "client/config",
                json=models.ClientConfigRequest(sdk_version=self._sdk_version).model_dump(),
                allow_jwt=False,
                bootstrap=False,
                accept=(404,),
            )
            if response.status_code == 404:
                config = models.ClientConfigResponse()
            else:
                config = self.parse(response, models.ClientConfigResponse)
            self._jwt_enabled = config.pjwt_auth_enabled
            self._bootstrapped = True

    # -- sending --------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        accept: Collection[int] = (),
        authenticated: bool = True,
    ) -> httpx.Response:
        """Send with retries (§9). Returns a 2xx answer or one whose status is in ``accept``;
        raises the mapped error for anything else."""
        return await self._send(
            method,
            endpoint,
            json=json,
            params=params,
            accept=accept,
            authenticated=authenticated,
        )

    async def _send(
        self,
        method: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        accept: Collection[int] = (),
        authenticated: bool = True,
        allow_jwt: bool = True,
        bootstrap: bool = True,
    ) -> httpx.Response:
        if authenticated and bootstrap:
            await self.bootstrap()
        key = new_idempotency_key() if method in IDEMPOTENT_METHODS else None
        deadline = self.policy.start()
        # Refused connections and unknown hosts get seconds, not the whole budget.
        unreachable_deadline = Deadline(
            self.policy.clock() + UNREACHABLE_BUDGET_S, self.policy.clock
        )
        attempt = 0
        while True:
            response: httpx.Response | None = None
            failure: TransientFailure | None = None
            try:
                response = await self.attempt(
                    method,
                    endpoint,
                    json=json,
                    params=params,
                    idempotency_key=key,
                    authenticated=authenticated,
                    allow_jwt=allow_jwt,
                    deadline_s=self._attempt_deadline(attempt, deadline),
                )
            except TransientFailure as exc:
                failure = exc
            else:
                status = response.status_code
                if 200 <= status <= 299 or status in accept:
                    return response
                if not is_retryable_status(status):
                    raise self.error_for(response)
            budget = deadline
            if failure is not None and failure.unreachable:
                budget = min(deadline, unreachable_deadline, key=lambda d: d.expires_at)
            if not await self.policy.pause(attempt, budget, response):
                if failure is not None:
                    raise failure.error(attempts=attempt + 1)
                assert response is not None
                raise self.error_for(response, attempts=attempt + 1)
            attempt += 1

    def _attempt_deadline(self, attempt: int, budget: Deadline) -> float | None:
        return self.limits.attempt_deadline(attempt, budget.remaining())

    async def attempt(
        self,
        method: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        authenticated: bool = True,
        allow_jwt: bool = True,
        timeout: httpx.Timeout | None = None,
        deadline_s: float | None = None,
    ) -> httpx.Response:
        """One request, whatever its status; after a 401 on a JWT, refresh it and repeat once.

        ``deadline_s`` bounds the whole answer (None: the limits' full attempt deadline).
        Raises ``TransientFailure`` for errors a retry may cure and the mapped error of
        ``error_for_httpx`` (or ``UnexpectedResponseError`` for an oversized answer) for the
        others.
        """
        if deadline_s is None:
            deadline_s = self.limits.attempt_deadline_s
        request = (method, endpoint, json, params, idempotency_key, authenticated, allow_jwt)
        response, sent_jwt = await self._attempt_once(*request, timeout, deadline_s)
        if response.status_code == 401 and sent_jwt is not None:
            await self.refresh_jwt(stale=sent_jwt)
            response, _ = await self._attempt_once(*request, timeout, deadline_s)
        return response

    async def _attempt_once(
        self,
        method: str,
        endpoint: str,
        json: Any,
        params: dict[str, Any] | None,
        idempotency_key: str | None,
        authenticated: bool,
        allow_jwt: bool,
        timeout: httpx.Timeout | None,
        deadline_s: float | None,
    ) -> tuple[httpx.Response, str | None]:
        """The answer, and the JWT it was sent with (None when it carried the API key)."""
        headers: dict[str, str] = {}
        credential, is_jwt = (None, False)
        if authenticated:
            credential, is_jwt = await self._credential(allow_jwt=allow_jwt)
            if credential is not None:
                headers["X-API-Key"] = credential
        if idempotency_key is not None:
            headers["X-Idempotency-Key"] = idempotency_key
        where = f"{method} /{API_PREFIX}{endpoint}"
        try:
            request = self.http.build_request(
                method,
                self.url(endpoint),
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response = await fetch_answer(self.http, request, self.limits, deadline_s=deadline_s)
        except AnswerTimeout as exc:
            raise TransientFailure(f"{exc.reason} from {self._host} ({where})") from None
        except AnswerTooLarge as exc:
            raise errors.UnexpectedResponseError(
                f"the answer from {self._host} to {where} is larger than "
                f"{format_size(exc.limit)}; refusing to read it",
                hint="check that the base URL points at a Tinker-compatible service "
                "(`logits config show`)",
            ) from None
        except HTTPX_ERRORS as exc:
            if is_transient_httpx_error(exc):
                message = f"{describe_httpx_error(exc)} talking to {self._host} ({where})"
                raise TransientFailure(message, unreachable=is_unreachable(exc)) from None
            raise error_for_httpx(exc, host=self._host, where=where) from None
        return response, credential if is_jwt else None


class TransientFailure(Exception):
    """A connection error or timeout that a retry may cure. ``unreachable``: the host
    refused the connection or its name does not resolve, which a few seconds of retries
    cure (a server restarting) but minutes do not (a wrong base URL)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable

    def error(self, *, attempts: int = 1) -> errors.UnavailableError:
        message = self.message
        if attempts > 1:
            message = f"{message}; gave up after {attempts} attempts"
        return errors.UnavailableError(message)
