"""The client against answers a real server cannot produce, through ``httpx.MockTransport``:
malformed bodies, odd statuses, bursts of 5xx, ``Retry-After``, the JWT refresh path, the 302
archive form, and newer deployments' checkpoint kinds."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from logits_cli import config, errors
from logits_cli.api import LogitsClient, open_client
from logits_cli.api.retry import RetryPolicy
from logits_cli.uri import CheckpointRef

pytestmark = pytest.mark.anyio

KEY = "tml-" + "k" * 43
BASE = "https://example.org/services/logits"
RUN = "5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0"
WHEN = "2025-06-01T12:00:05Z"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTime:
    """Monotonic and wall clocks that advance only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def policy(self, deadline_s: float = 120.0) -> RetryPolicy:
        return RetryPolicy(
            deadline_s=deadline_s,
            sleep=self.sleep,
            clock=self.clock,
            jitter=lambda low, high: high,
        )


Handler = Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Routes ``(method, path below /api/v1/)`` to handlers and records every request.

    A route may be a list of responses, served in order (the last one repeats).
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler | list[httpx.Response]] = {
            ("POST", "client/config"): lambda request: httpx.Response(200, json={}),
        }
        self.requests: list[httpx.Request] = []

    def route(self, method: str, endpoint: str, answer: Handler | list[httpx.Response]) -> None:
        self.routes[(method, endpoint)] = answer

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        prefix = "/services/logits/api/v1/"
        assert request.url.path.startswith(prefix), request.url.path
        answer = self.routes.get((request.method, request.url.path[len(prefix) :]))
        if answer is None:
            return httpx.Response(404, json={"detail": "no such route", "code": "not_found"})
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer(request)

    def sent(self, method: str, endpoint: str) -> list[httpx.Request]:
        path = "/services/logits/api/v1/" + endpoint
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def make_client(
    server: FakeServer, fake_time: FakeTime, tmp_path: Path
) -> Callable[..., LogitsClient]:
    def make(**env: str) -> LogitsClient:
        variables = {"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": BASE, "LOGITS_API_KEY": KEY}
        variables.update(env)
        settings = config.resolve(env={k: v for k, v in variables.items() if v})
        return open_client(
            settings,
            retry_policy=fake_time.policy(),
            transport=httpx.MockTransport(server.handle),
        )

    return make


def checkpoint_json(kind: str = "weights", name: str = "step-1", **extra: Any) -> dict[str, Any]:
    return {
        "checkpoint_id": f"{kind}/{name}",
        "checkpoint_type": {"weights": "training", "sampler_weights": "sampler"}.get(
            kind, "external"
        ),
        "time": WHEN,
        "tinker_path": f"logits://{RUN}/{kind}/{name}",
        "size_bytes": 10240,
        "public": False,
        "expires_at": None,
        **extra,
    }


def make_jwt(exp: float, marker: str) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'exp': exp, 'm': marker})}.c2ln"


# -- URLs, bootstrap, credentials ---------------------------------------------------------


async def test_path_prefix_survives_and_bootstrap_runs_once_before_the_first_call(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": []}),
    )
    async with make_client() as client:
        assert await client.list_checkpoints(RUN) == []
        assert await client.list_checkpoints(RUN) == []
    paths = [r.url.path for r in server.requests]
    assert paths == [
        "/services/logits/api/v1/client/config",
        f"/services/logits/api/v1/training_runs/{RUN}/checkpoints",
        f"/services/logits/api/v1/training_runs/{RUN}/checkpoints",
    ]
    # The run id's ':' is never percent-encoded (docs/protocol.md §3.3).
    assert b"%3A" not in server.requests[1].url.raw_path
    assert json.loads(server.requests[0].content) == {"sdk_version": "0.1.0"}
    assert all(r.headers["X-API-Key"] == KEY for r in server.requests)


async def test_health_needs_no_bootstrap_and_no_key(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route("GET", "healthz", lambda r: httpx.Response(200, json={"status": "ok"}))
    async with make_client(LOGITS_API_KEY="") as client:
        assert (await client.health()).status == "ok"
    assert [r.url.path for r in server.requests] == ["/services/logits/api/v1/healthz"]
    assert "X-API-Key" not in server.requests[0].headers


async def test_client_config_404_means_defaults(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route(
        "POST",
        "client/config",
        lambda r: httpx.Response(404, json={"detail": "no", "code": "not_found"}),
    )
    server.route(
        "GET",
        "get_server_capabilities",
        lambda r: httpx.Response(200, json={"supported_models": []}),
    )
    async with make_client() as client:
        assert (await client.capabilities()).supported_models == []
    assert server.sent("POST", "auth/token") == []


async def test_missing_key_fails_before_sending(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    async with make_client(LOGITS_API_KEY="") as client:
        with pytest.raises(errors.AuthError, match=r"no API key is configured for example.org"):
            await client.list_checkpoints(RUN)
    assert server.requests == []


async def test_key_command_runs_lazily_and_once(
    server: FakeServer, make_client: Callable[..., LogitsClient], tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    command = f"echo x >> {counter}; echo ' tml-from-command '"
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": []}),
    )
    async with make_client(LOGITS_API_KEY="", LOGITS_API_KEY_CMD=command) as client:
        assert not counter.exists()
        await client.list_checkpoints(RUN)
        await client.list_checkpoints(RUN)
    assert counter.read_text() == "x\n"
    assert {r.headers["X-API-Key"] for r in server.requests} == {"tml-from-command"}


async def test_jwt_exchange_refresh_before_expiry_and_after_401(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    import time

    now = time.time()
    jwt_a, jwt_b, jwt_c = (
        make_jwt(now + 30, "a"),
        make_jwt(now + 3600, "b"),
        make_jwt(now + 3600, "c"),
    )
    tokens = [jwt_a, jwt_b, jwt_c]
    server.route(
        "POST", "client/config", lambda r: httpx.Response(200, json={"pjwt_auth_enabled": True})
    )
    server.route("POST", "auth/token", lambda r: httpx.Response(200, json={"jwt": tokens.pop(0)}))

    def listing(request: httpx.Request) -> httpx.Response:
        if request.headers["X-API-Key"] == jwt_b:
            return httpx.Response(401, json={"detail": "expired token", "code": "unauthenticated"})
        return httpx.Response(200, json={"checkpoints": []})

    server.route("GET", f"training_runs/{RUN}/checkpoints", listing)
    async with make_client() as client:
        await client.list_checkpoints(RUN)  # with a, which has 30 s left
        await client.list_checkpoints(RUN)  # a is within 60 s of expiry: b; b gets a 401: c
    keys = [(r.url.path.rsplit("/", 1)[-1], r.headers["X-API-Key"]) for r in server.requests]
    assert keys == [
        ("config", KEY),
        ("token", KEY),
        ("checkpoints", jwt_a),
        ("token", KEY),
        ("checkpoints", jwt_b),
        ("token", KEY),
        ("checkpoints", jwt_c),
    ]
    assert json.loads(server.sent("POST", "auth/token")[0].content) == {}
    assert fake_time.sleeps == []


async def test_401_on_a_jwt_is_refreshed_once_only(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    import time

    server.route(
        "POST", "client/config", lambda r: httpx.Response(200, json={"pjwt_auth_enabled": True})
    )
    server.route(
        "POST",
        "auth/token",
        lambda r: httpx.Response(200, json={"jwt": make_jwt(time.time() + 3600, "x")}),
    )
    server.route(
        "GET",
        f"training_runs/{RUN}",
        lambda r: httpx.Response(401, json={"detail": "bad", "code": "unauthenticated"}),
    )
    async with make_client() as client:
        with pytest.raises(errors.AuthError, match=r"^bad$"):
            await client.get_run(RUN)
    assert len(server.sent("GET", f"training_runs/{RUN}")) == 2
    assert len(server.sent("POST", "auth/token")) == 2


# -- retries (§9) ------------------------------------------------------------------------


async def test_502_burst_then_success_reuses_the_idempotency_key(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    ref = CheckpointRef(RUN, "weights", "step-1")
    server.route(
        "DELETE",
        f"training_runs/{RUN}/checkpoints/weights/step-1",
        [httpx.Response(502, text="<html>bad gateway</html>")] * 3 + [httpx.Response(204)],
    )
    async with make_client() as client:
        await client.delete(ref)
    sent = server.sent("DELETE", f"training_runs/{RUN}/checkpoints/weights/step-1")
    assert len(sent) == 4
    keys = {r.headers["X-Idempotency-Key"] for r in sent}
    assert len(keys) == 1 and keys.pop().startswith("logits-")
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


async def test_each_call_gets_its_own_idempotency_key(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    ref = CheckpointRef(RUN, "weights", "step-1")
    server.route(
        "POST",
        f"training_runs/{RUN}/checkpoints/weights/step-1/publish",
        lambda r: httpx.Response(204),
    )
    # publish reads the state first: "changed" when it was private (docs/protocol.md A31).
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": [checkpoint_json(public=False)]}),
    )
    async with make_client() as client:
        assert await client.publish(ref) is True
        assert await client.publish(ref) is True
    sent = server.sent("POST", f"training_runs/{RUN}/checkpoints/weights/step-1/publish")
    assert len({r.headers["X-Idempotency-Key"] for r in sent}) == 2


async def test_429_retry_after_is_slept_exactly(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        [
            httpx.Response(
                429,
                headers={"Retry-After": "7"},
                json={"detail": "slow down", "code": "rate_limited"},
            ),
            httpx.Response(
                503, headers={"Retry-After": "120"}, json={"detail": "busy", "code": "unavailable"}
            ),
            httpx.Response(200, json={"checkpoints": []}),
        ],
    )
    async with make_client() as client:
        await client.list_checkpoints(RUN)
    # 7 s as told; 120 s is beyond 60 s and ignored in favour of the backoff (attempt 1: 1 s).
    assert fake_time.sleeps == [7.0, 1.0]


async def test_deadline_ends_retries_with_the_last_error(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    server.route(
        "GET",
        f"training_runs/{RUN}",
        lambda r: httpx.Response(503, json={"detail": "down", "code": "unavailable"}),
    )
    async with make_client() as client:
        with pytest.raises(errors.UnavailableError) as caught:
            await client.get_run(RUN)
    assert sum(fake_time.sleeps) < 120.0
    assert fake_time.sleeps[-1] == 10.0
    attempts = len(server.sent("GET", f"training_runs/{RUN}"))
    assert str(caught.value) == f"down (HTTP 503); gave up after {attempts} attempts"
    assert caught.value.exit_code == errors.EXIT_UNAVAILABLE


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 416, 418])
async def test_final_statuses_are_not_retried(
    status: int, server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    server.route(
        "GET", f"training_runs/{RUN}", lambda r: httpx.Response(status, json={"detail": "no"})
    )
    async with make_client() as client:
        with pytest.raises(errors.LogitsError):
            await client.get_run(RUN)
    assert len(server.sent("GET", f"training_runs/{RUN}")) == 1
    assert fake_time.sleeps == []


async def test_connection_errors_are_retried_then_reported_without_the_url(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connect failed for " + str(request.url))

    server.route("GET", f"training_runs/{RUN}", refuse)
    async with make_client() as client:
        with pytest.raises(errors.UnavailableError) as caught:
            await client.get_run(RUN)
    message = str(caught.value)
    assert message.startswith("cannot connect talking to example.org (GET /api/v1/training_runs/")
    assert "connect failed" not in message and "https://" not in message and KEY not in message
    assert len(fake_time.sleeps) > 3


async def test_418_is_an_unexpected_answer(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route("GET", f"training_runs/{RUN}", lambda r: httpx.Response(418, text="I'm a teapot"))
    async with make_client() as client:
        with pytest.raises(errors.UnexpectedResponseError) as caught:
            await client.get_run(RUN)
    assert str(caught.value) == "example.org answered HTTP 418 I'm a teapot (HTTP 418)"
    assert caught.value.exit_code == errors.EXIT_ERROR


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{not json",
            "the answer to GET /services/logits/api/v1/training_runs/R is not JSON (HTTP 200)",
        ),
        (
            b'{"training_run_id": "R"}',
            "the answer to GET /services/logits/api/v1/training_runs/R is not a valid TrainingRun: base_model: field required",
        ),
        (
            b"[]",
            "the answer to GET /services/logits/api/v1/training_runs/R is not a valid TrainingRun: body: input should be a valid dictionary or instance of trainingrun",
        ),
    ],
)
async def test_unparseable_success_bodies(
    body: bytes, message: str, server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route("GET", "training_runs/R", lambda r: httpx.Response(200, content=body))
    async with make_client() as client:
        with pytest.raises(errors.UnexpectedResponseError) as caught:
            await client.get_run("R")
    assert str(caught.value) == message


# -- futures (§5.2, §9) ------------------------------------------------------------------


def future_routes(
    server: FakeServer, polls: list[httpx.Response], endpoint: str = "save_weights"
) -> None:
    server.route(
        "POST",
        endpoint,
        lambda r: httpx.Response(200, json={"request_id": "req_1", "model_id": RUN}),
    )
    server.route("POST", "retrieve_future", polls)
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": [checkpoint_json()]}),
    )


TRY_AGAIN = {"type": "try_again", "request_id": "req_1", "queue_state": "active"}


async def test_future_polls_at_once_on_try_again_and_408_and_backs_off_on_5xx(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    future_routes(
        server,
        [
            httpx.Response(200, json=TRY_AGAIN),
            httpx.Response(408, json={"detail": "hold over", "code": "timeout"}),
            httpx.Response(500, json={"detail": "oops", "code": "internal"}),
            httpx.Response(502, text="bad gateway"),
            httpx.Response(200, json=TRY_AGAIN),
            httpx.Response(503, text="later"),
            httpx.Response(
                200, json={"path": f"logits://{RUN}/weights/step-1", "type": "save_weights"}
            ),
        ],
    )
    pending: list[float] = []
    async with make_client() as client:
        checkpoint = await client.save(RUN, "step-1", on_pending=pending.append)
    assert checkpoint.checkpoint_id == "weights/step-1"
    # try_again resets the failure streak: attempt numbering restarts at 0 after it.
    assert fake_time.sleeps == [0.5, 1.0, 0.5]
    assert pending == [0.0, 0.0, 1.5]
    polls = server.sent("POST", "retrieve_future")
    assert len(polls) == 7
    assert all(json.loads(p.content) == {"request_id": "req_1"} for p in polls)
    # One key per poll: a replayed try_again must not end up being served forever.
    assert len({p.headers["X-Idempotency-Key"] for p in polls}) == 7
    body = json.loads(server.sent("POST", "save_weights")[0].content)
    assert body == {"model_id": RUN, "path": "step-1", "overwrite": False}


@pytest.mark.parametrize(
    ("status", "error"), [(404, errors.NotFoundError), (410, errors.GoneError)]
)
async def test_future_404_and_410_end_the_wait_without_resubmitting(
    status: int,
    error: type[errors.LogitsError],
    server: FakeServer,
    make_client: Callable[..., LogitsClient],
) -> None:
    future_routes(
        server, [httpx.Response(status, json={"detail": "future req_1 is gone", "code": "x"})]
    )
    async with make_client() as client:
        with pytest.raises(
            error, match=r"^waiting for save of weights/step-1: future req_1 is gone$"
        ):
            await client.save(RUN, "step-1")
    assert len(server.sent("POST", "save_weights")) == 1


async def test_future_failure_streak_has_its_own_deadline(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    future_routes(server, [httpx.Response(500, json={"detail": "oops", "code": "internal"})])
    async with make_client() as client:
        with pytest.raises(
            errors.InternalServerError,
            match=r"^waiting for save of weights/step-1: oops \(HTTP 500\); gave up after \d+ attempts$",
        ):
            await client.save(RUN, "step-1")
    assert sum(fake_time.sleeps) < 120.0


async def test_future_caller_timeout(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    def pending(request: httpx.Request) -> httpx.Response:
        fake_time.now += 4.0  # the server's long-poll hold
        return httpx.Response(200, json=TRY_AGAIN)

    future_routes(server, [])
    server.route("POST", "retrieve_future", pending)
    async with make_client() as client:
        with pytest.raises(
            errors.UnavailableError,
            match=r"^timed out waiting for save of weights/step-1 after 12 s$",
        ) as caught:
            await client.save(RUN, "step-1", timeout=10)
    assert caught.value.hint == "the server may still finish request req_1"
    assert len(server.sent("POST", "retrieve_future")) == 3


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (
            {"error": "weights/step-1 exists", "category": "user", "code": "already_exists"},
            errors.ConflictError,
            "save of weights/step-1 failed: weights/step-1 exists",
        ),
        (
            {"error": "no such checkpoint", "category": "user", "code": "not_found"},
            errors.NotFoundError,
            "save of weights/step-1 failed: no such checkpoint",
        ),
        (
            {"error": "rank mismatch", "category": "user", "code": "invalid_argument"},
            errors.JobFailedError,
            "save of weights/step-1 failed: rank mismatch",
        ),
        (
            {"error": "disk\nfull", "category": "weird"},
            errors.JobFailedError,
            "save of weights/step-1 failed: disk full",
        ),
        (
            {"error": "no space left", "category": "server", "code": "insufficient_storage"},
            errors.InsufficientStorageError,
            "the server has no space left to store this: "
            "save of weights/step-1 failed: no space left",
        ),
    ],
)
async def test_failed_futures_map_to_errors(
    failure: dict[str, Any],
    error: type[errors.LogitsError],
    message: str,
    server: FakeServer,
    make_client: Callable[..., LogitsClient],
) -> None:
    future_routes(server, [httpx.Response(200, json=failure)])
    async with make_client() as client:
        with pytest.raises(error) as caught:
            await client.save(RUN, "step-1")
    assert type(caught.value) is error
    assert str(caught.value) == message
    if isinstance(caught.value, errors.InsufficientStorageError):
        assert caught.value.exit_code == errors.EXIT_UNAVAILABLE
        assert caught.value.hint and "server's disk is full" in caught.value.hint
    if isinstance(caught.value, errors.JobFailedError):
        assert caught.value.category in ("user", "unknown")


async def test_save_checks_the_name_locally(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    async with make_client() as client:
        with pytest.raises(errors.UsageError, match=r"must start with a letter"):
            await client.save(RUN, ".hidden")
        for ttl in (0, 315_360_001):  # the protocol's range, checked before sending
            with pytest.raises(errors.UsageError, match=r"integer from 1 to 315360000 seconds"):
                await client.save(RUN, "ok", ttl_seconds=ttl)
    assert server.requests == []


# -- archive URL (§5.6.4) ----------------------------------------------------------------

ARCHIVE = f"training_runs/{RUN}/checkpoints/weights/step-1/archive"


async def test_archive_302_without_expires_assumes_15_minutes_and_resolves_relative_location(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route(
        "GET",
        ARCHIVE,
        lambda r: httpx.Response(
            302, headers={"Location": "/services/logits/api/v1/blobs/tok.sig"}
        ),
    )
    before = datetime.now(UTC)
    async with make_client() as client:
        answer = await client.archive_url(CheckpointRef(RUN, "weights", "step-1"))
    after = datetime.now(UTC)
    assert answer.url == "https://example.org/services/logits/api/v1/blobs/tok.sig"
    assert before + timedelta(minutes=15) <= answer.expires <= after + timedelta(minutes=15)
    (request,) = server.sent("GET", ARCHIVE)
    assert request.url.params["format"] == "json"


async def test_archive_302_with_expires_is_not_followed(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route(
        "GET",
        ARCHIVE,
        lambda r: httpx.Response(
            302,
            headers={
                "Location": "https://store.example.net/b?sig=1",
                "Expires": "Sun, 01 Jun 2025 12:15:05 GMT",
            },
        ),
    )
    async with make_client() as client:
        answer = await client.archive_url(CheckpointRef(RUN, "weights", "step-1"))
    assert answer.url == "https://store.example.net/b?sig=1"
    assert answer.expires == datetime(2025, 6, 1, 12, 15, 5, tzinfo=UTC)
    assert len(server.requests) == 2  # config + archive: the Location was not fetched


async def test_archive_json_form(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    url = "https://example.org/services/logits/api/v1/blobs/x.y"
    server.route("GET", ARCHIVE, lambda r: httpx.Response(200, json={"url": url, "expires": WHEN}))
    async with make_client() as client:
        answer = await client.archive_url(CheckpointRef(RUN, "weights", "step-1"))
    assert answer.url == url
    assert answer.expires == datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)


async def test_blob_http_sends_no_credentials(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    seen: list[httpx.Request] = []

    def blob(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"tar")

    server.route("GET", "blobs/tok", blob)
    async with make_client() as client:
        response = await client.blob_http.get(BASE + "/api/v1/blobs/tok")
    assert response.content == b"tar"
    (request,) = seen
    assert "X-API-Key" not in request.headers
    assert request.headers["Accept-Encoding"] == "identity"


# -- pagination and newer deployments -----------------------------------------------------


async def test_run_paging_stops_at_total_count_and_on_short_pages(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    def run(i: int) -> dict[str, Any]:
        return {
            "training_run_id": f"r{i}",
            "base_model": "m",
            "model_owner": "alice",
            "is_lora": True,
            "last_request_time": WHEN,
        }

    def runs(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        limit = min(limit, 3)  # the server clamps
        items = [run(i) for i in range(offset, min(offset + limit, 8))]
        return httpx.Response(
            200,
            json={
                "training_runs": items,
                "cursor": {"offset": offset, "limit": limit, "total_count": 8},
            },
        )

    server.route("GET", "training_runs", runs)
    async with make_client() as client:
        ids = [r.training_run_id async for r in client.iter_runs(page_size=50)]
    assert ids == [f"r{i}" for i in range(8)]
    offsets = [r.url.params["offset"] for r in server.sent("GET", "training_runs")]
    assert offsets == ["0", "3", "6"]


async def test_external_kind_lists_and_is_refused_locally(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    external = checkpoint_json("external_weights", "exported", checkpoint_type="external")
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(
            200, json={"checkpoints": [external, checkpoint_json()], "cursor": None}
        ),
    )
    ref = CheckpointRef.parse(external["tinker_path"], any_kind=True)
    async with make_client() as client:
        listed = await client.list_checkpoints(RUN)
        assert [c.checkpoint_type for c in listed] == ["external", "training"]
        assert (await client.get_checkpoint(ref)).kind == "external_weights"
        count = len(server.requests)
        # external_weights is a known kind (delete, publish, TTL, per-file download act on
        # it, tests/cli/test_files_generation.py), but it has no archive and cannot be
        # loaded: those are refused before any request.
        with pytest.raises(errors.UsageError, match=r"of kind 'external_weights' are not supp"):
            await client.archive_url(ref)
        with pytest.raises(errors.UsageError, match=r"^cannot load logits://"):
            await client.load(RUN, ref)
    assert len(server.requests) == count


async def test_latest_with_no_checkpoints_of_that_kind(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": [checkpoint_json()]}),
    )
    async with make_client() as client:
        ref = CheckpointRef(RUN, "sampler_weights", "@latest")
        with pytest.raises(
            errors.NotFoundError, match=f"^no sampler_weights checkpoints in run {RUN}$"
        ):
            await client.resolve(ref)


async def test_hand_built_refs_cannot_inject_path_segments(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    async with make_client() as client:
        for bad in (CheckpointRef(RUN, "weights", "../x"), CheckpointRef("a/b", "weights", "x")):
            with pytest.raises(errors.UsageError):
                await client.delete(bad)
    assert server.requests == []


async def test_timeouts_are_5s_connect_60s_read_and_45s_for_future_polls(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    future_routes(server, [httpx.Response(200, json={"path": f"logits://{RUN}/weights/step-1"})])
    async with make_client() as client:
        await client.save(RUN, "step-1")
    (submit,) = server.sent("POST", "save_weights")
    (poll,) = server.sent("POST", "retrieve_future")
    assert submit.extensions["timeout"] == {
        "connect": 5.0,
        "read": 60.0,
        "write": 60.0,
        "pool": 60.0,
    }
    assert poll.extensions["timeout"]["connect"] == 5.0
    assert poll.extensions["timeout"]["read"] == 45.0


async def test_507_is_final_and_says_it_is_the_servers_disk(
    server: FakeServer, make_client: Callable[..., LogitsClient], fake_time: FakeTime
) -> None:
    server.route(
        "POST",
        "save_weights",
        lambda r: httpx.Response(
            507, json={"detail": "store full", "code": "insufficient_storage"}
        ),
    )
    async with make_client() as client:
        with pytest.raises(errors.InsufficientStorageError) as caught:
            await client.save(RUN, "step-1")
    assert str(caught.value) == "the server has no space left to store this: store full (HTTP 507)"
    assert len(server.sent("POST", "save_weights")) == 1
    assert fake_time.sleeps == []


async def test_a_507_without_a_body_is_still_the_servers_disk(
    server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    server.route("GET", f"training_runs/{RUN}", lambda r: httpx.Response(507))
    async with make_client() as client:
        with pytest.raises(errors.InsufficientStorageError) as caught:
            await client.get_run(RUN)
    assert str(caught.value) == (
        "the server has no space left to store this: "
        "example.org answered HTTP 507 Insufficient Storage"
    )


@pytest.mark.parametrize("key", ["tml-line\nbreak", "tml-caf\u00e9", "tml-tab\there"])
async def test_an_api_key_http_cannot_carry_is_refused_before_sending(
    key: str, server: FakeServer, make_client: Callable[..., LogitsClient]
) -> None:
    async with make_client(LOGITS_API_KEY=key) as client:
        with pytest.raises(errors.AuthError, match="characters an HTTP header cannot carry"):
            await client.get_run(RUN)
    assert all("X-API-Key" not in request.headers for request in server.requests)


# -- idempotent publish, run deletion (docs/protocol.md §5.5, §5.6.5, A31, A32) ------------


@pytest.mark.parametrize(
    ("code", "changed"), [("already_public", False), ("already_private", None)]
)
async def test_publish_on_an_older_server_that_answers_409(
    server: FakeServer, make_client: Callable[..., LogitsClient], code: str, changed: bool | None
) -> None:
    """Our server answers 204 when it already is; an older one 409 already_public (not a
    change), and already_private on a publish is a contradiction, raised."""
    ref = CheckpointRef(RUN, "weights", "step-1")
    server.route(
        "GET",
        f"training_runs/{RUN}/checkpoints",
        lambda r: httpx.Response(200, json={"checkpoints": [checkpoint_json(public=True)]}),
    )
    server.route(
        "POST",
        f"training_runs/{RUN}/checkpoints/weights/step-1/publish",
        lambda r: httpx.Response(409, json={"detail": "already so", "code": code}),
    )
    async with make_client() as client:
        if changed is None:
            with pytest.raises(errors.AlreadyPrivateError):
                await client.publish(ref)
        else:
            assert await client.publish(ref) is changed


@pytest.mark.parametrize(
    ("delete_status", "run_status", "expected"),
    [
        (405, 200, errors.UnsupportedError),
        (404, 200, errors.UnsupportedError),  # the route is missing, the run is there
        (404, 404, errors.NotFoundError),  # the run is missing
        (409, 200, errors.NotEmptyError),
    ],
)
async def test_delete_run_tells_a_missing_route_from_a_missing_run(
    server: FakeServer,
    make_client: Callable[..., LogitsClient],
    delete_status: int,
    run_status: int,
    expected: type[errors.LogitsError],
) -> None:
    run = {
        "training_run_id": RUN,
        "base_model": "m",
        "model_owner": "alice",
        "is_lora": True,
        "last_request_time": WHEN,
    }
    code = {404: "not_found", 405: "method_not_allowed", 409: "not_empty"}[delete_status]
    server.route(
        "DELETE",
        f"training_runs/{RUN}",
        lambda r: httpx.Response(delete_status, json={"detail": "no", "code": code}),
    )
    server.route(
        "GET",
        f"training_runs/{RUN}",
        lambda r: httpx.Response(run_status, json=run if run_status == 200 else {"detail": "x"}),
    )
    async with make_client() as client:
        with pytest.raises(expected) as raised:
            await client.delete_run(RUN, with_checkpoints=True)
    assert raised.type is expected
    (sent,) = server.sent("DELETE", f"training_runs/{RUN}")
    assert sent.url.params["with_checkpoints"] == "true"
