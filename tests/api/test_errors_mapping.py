"""Every answer and every transport failure becomes a class of ``errors.py`` with a one-line
message that holds no secret (docs/ARCHITECTURE.md §4, docs/protocol.md §4.4)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from logits_cli import config, errors
from logits_cli.api import open_client
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transport_errors import (
    HTTPX_ERRORS,
    error_for_httpx,
    is_transient_httpx_error,
)

pytestmark = pytest.mark.anyio

KEY = "tml-" + "S3cr3t" * 7 + "x"
RUN = "run-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _jwt() -> str:
    claims = json.dumps({"exp": time.time() + 3600, "sub": "alice"}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.SIGNATUREsignature"


JWT = _jwt()


def expected_exit(status: int) -> int:
    if status in (400, 413):
        return errors.EXIT_USAGE
    if status in (401, 402, 403):
        return errors.EXIT_AUTH
    if status in (404, 410):
        return errors.EXIT_NOT_FOUND
    if status == 409:
        return errors.EXIT_CONFLICT
    if status in (408, 429) or status >= 500:
        return errors.EXIT_UNAVAILABLE
    return errors.EXIT_ERROR


BODIES = {
    "echoing json": lambda status: httpx.Response(
        status,
        json={"detail": f"denied for {KEY} and {JWT}\nsecond line", "code": "weird_code"},
    ),
    "json without code": lambda status: httpx.Response(status, json={"detail": "nope"}),
    "fastapi list detail": lambda status: httpx.Response(status, json={"detail": [{"msg": "x"}]}),
    "html": lambda status: httpx.Response(status, text=f"<html><body>{KEY}</body></html>"),
    "empty": lambda status: httpx.Response(status),
}


@pytest.mark.parametrize("body", sorted(BODIES))
async def test_status_mapping_is_total_and_leaks_nothing(body: str, tmp_path: Path) -> None:
    status_now = 400

    def handler(request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.removeprefix("/api/v1/")
        if endpoint == "client/config":
            return httpx.Response(200, json={"pjwt_auth_enabled": True})
        if endpoint == "auth/token":
            return httpx.Response(200, json={"jwt": JWT})
        return BODIES[body](status_now)

    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    settings = config.resolve(
        env={
            "LOGITS_HOME": str(tmp_path),
            "LOGITS_BASE_URL": "https://svc.example.org",
            "LOGITS_API_KEY": KEY,
        }
    )
    policy = RetryPolicy(deadline_s=2.0, sleep=sleep, clock=lambda: clock[0])
    async with open_client(
        settings, retry_policy=policy, transport=httpx.MockTransport(handler)
    ) as client:
        for status_now in range(400, 600):
            with pytest.raises(errors.LogitsError) as caught:
                await client.get_run(RUN)
            error = caught.value
            message = str(error)
            assert error.exit_code == expected_exit(status_now), (status_now, type(error))
            assert message and "\n" not in message
            assert KEY not in message and JWT not in message
            assert "S3cr3t" not in message and "SIGNATURE" not in message
            if error.hint:
                assert KEY not in error.hint and JWT not in error.hint


async def test_known_codes_refine_their_status(tmp_path: Path) -> None:
    answers = {
        (403, "url_expired"): errors.UrlExpiredError,
        (403, "bad_signature"): errors.BadSignatureError,
        (409, "already_public"): errors.AlreadyPublicError,
        (409, "already_private"): errors.AlreadyPrivateError,
        (410, "gone"): errors.GoneError,
        (429, "rate_limited"): errors.RateLimitedError,
        (500, "internal"): errors.InternalServerError,
        (503, "unavailable"): errors.UnavailableError,
        # A code that belongs to another status does not override the status.
        (404, "already_public"): errors.NotFoundError,
    }
    current: list[tuple[int, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("client/config"):
            return httpx.Response(200, json={})
        status, code = current[0]
        return httpx.Response(status, json={"detail": "d", "code": code})

    settings = config.resolve(
        env={
            "LOGITS_HOME": str(tmp_path),
            "LOGITS_BASE_URL": "http://host.test",
            "LOGITS_API_KEY": KEY,
        }
    )
    policy = RetryPolicy(deadline_s=0.0)
    async with open_client(
        settings, retry_policy=policy, transport=httpx.MockTransport(handler)
    ) as client:
        for answer, error_class in answers.items():
            current[:] = [answer]
            with pytest.raises(errors.LogitsError) as caught:
                await client.get_run(RUN)
            assert type(caught.value) is error_class, answer


WHERE = f"(GET /api/v1/training_runs/{RUN})"
UNAVAILABLE = [
    (httpx.ConnectError, "cannot connect"),
    (httpx.ConnectTimeout, "connection timed out"),
    (httpx.ReadTimeout, "timed out waiting for the answer"),
    (httpx.WriteTimeout, "timed out sending the request"),
    (httpx.PoolTimeout, "timed out waiting for a free connection"),
    (httpx.ReadError, "connection dropped while reading the answer"),
    (httpx.WriteError, "connection dropped while sending the request"),
    (httpx.CloseError, "connection failed while closing"),
    (httpx.RemoteProtocolError, "the server broke the HTTP protocol"),
    (httpx.ProxyError, "proxy error"),
    (httpx.DecodingError, "cannot decode the answer"),
]
# The request itself cannot be sent: with a configured base URL, that is the configuration.
UNSENDABLE = [
    (httpx.LocalProtocolError, "invalid HTTP request"),
    (httpx.UnsupportedProtocol, "unsupported URL scheme"),
    (httpx.InvalidURL, "invalid URL"),
]


@pytest.mark.parametrize(("exception", "reason"), UNAVAILABLE)
async def test_network_httpx_errors_are_unavailable_without_secrets(
    exception: type[httpx.HTTPError], reason: str, tmp_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("client/config"):
            return httpx.Response(200, json={})
        # httpx messages may quote the URL; ours must not.
        raise exception(f"failed on {request.url} with {request.headers['X-API-Key']}")

    settings = config.resolve(
        env={
            "LOGITS_HOME": str(tmp_path),
            "LOGITS_BASE_URL": "https://svc.example.org/p",
            "LOGITS_API_KEY": KEY,
        }
    )
    policy = RetryPolicy(deadline_s=0.0)
    async with open_client(
        settings, retry_policy=policy, transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(errors.UnavailableError) as caught:
            await client.get_run(RUN)
    assert str(caught.value) == f"{reason} talking to svc.example.org {WHERE}"
    assert caught.value.exit_code == errors.EXIT_UNAVAILABLE


def _raising_client(tmp_path: Path, exception: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("client/config"):
            return httpx.Response(200, json={})
        raise exception

    settings = config.resolve(
        env={
            "LOGITS_HOME": str(tmp_path),
            "LOGITS_BASE_URL": "https://svc.example.org/p",
            "LOGITS_API_KEY": KEY,
        }
    )
    return open_client(
        settings, retry_policy=RetryPolicy(deadline_s=0.0), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(("exception", "reason"), UNSENDABLE)
async def test_unsendable_requests_are_config_errors(
    exception: type[Exception], reason: str, tmp_path: Path
) -> None:
    async with _raising_client(tmp_path, exception(f"bad {KEY} https://x/?sig=S3cr3t")) as client:
        with pytest.raises(errors.ConfigError) as caught:
            await client.get_run(RUN)
    assert str(caught.value) == f"cannot send the request to svc.example.org: {reason} {WHERE}"
    assert caught.value.exit_code == errors.EXIT_USAGE
    assert caught.value.hint == "check the base URL and API key with `logits config show`"


async def test_redirect_loop_names_the_host(tmp_path: Path) -> None:
    loop = httpx.TooManyRedirects(f"Exceeded with {KEY} at https://x/?sig=S3cr3t")
    async with _raising_client(tmp_path, loop) as client:
        with pytest.raises(errors.UnavailableError) as caught:
            await client.get_run(RUN)
    assert str(caught.value) == f"too many redirects from svc.example.org {WHERE}"
    assert caught.value.exit_code == errors.EXIT_UNAVAILABLE
    assert caught.value.hint is not None and "redirects in a loop" in caught.value.hint


@pytest.mark.parametrize(
    ("exception", "transient", "error_class", "exit_code"),
    [
        (httpx.ReadError("x"), True, errors.UnavailableError, errors.EXIT_UNAVAILABLE),
        (httpx.RemoteProtocolError("x"), True, errors.UnavailableError, errors.EXIT_UNAVAILABLE),
        (httpx.DecodingError("x"), False, errors.UnavailableError, errors.EXIT_UNAVAILABLE),
        (httpx.TooManyRedirects("x"), False, errors.UnavailableError, errors.EXIT_UNAVAILABLE),
        (httpx.InvalidURL("x"), False, errors.UnexpectedResponseError, errors.EXIT_ERROR),
        (httpx.UnsupportedProtocol("x"), False, errors.UnexpectedResponseError, errors.EXIT_ERROR),
        (httpx.LocalProtocolError("x"), False, errors.UnexpectedResponseError, errors.EXIT_ERROR),
    ],
)
def test_blob_urls_from_the_server_map_to_the_servers_fault(
    exception: Exception, transient: bool, error_class: type, exit_code: int
) -> None:
    """The mapping the transfer engine uses for signed blob URLs (handed out by the server)."""
    assert isinstance(exception, HTTPX_ERRORS)
    assert is_transient_httpx_error(exception) is transient
    error = error_for_httpx(exception, host="blobs.example", url_from_server=True)
    assert type(error) is error_class
    assert error.exit_code == exit_code
    assert "blobs.example" in error.message and "\n" not in error.message


async def test_os_error_reason_is_kept(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise httpx.ConnectError(str(request.url)) from exc

    settings = config.resolve(
        env={"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": "http://host.test:1"}
    )
    async with open_client(
        settings, retry_policy=RetryPolicy(deadline_s=0.0), transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(errors.UnavailableError) as caught:
            await client.health()
    assert (
        str(caught.value)
        == "cannot connect (connection refused) talking to host.test (GET /api/v1/healthz)"
    )
