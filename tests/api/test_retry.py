"""The §9 retry policy: what is retried, backoff bounds, Retry-After, the shared deadline."""

from __future__ import annotations

import random

import httpx
import pytest

from logits_cli.api.answers import AnswerLimits
from logits_cli.api.retry import RetryPolicy, is_retryable_status, retry_after_seconds

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTime:
    def __init__(self) -> None:
        self.now = 50.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retryable_statuses_are_exactly_408_429_and_5xx_but_507() -> None:
    retried = {status for status in range(100, 600) if is_retryable_status(status)}
    assert retried == {408, 429, *range(500, 600)} - {507}
    # 507: the server's disk is full; retrying for minutes would only hide it.
    for final in (400, 401, 403, 404, 405, 409, 410, 416, 507):
        assert not is_retryable_status(final)


def test_backoff_ceiling_doubles_from_half_a_second_up_to_ten() -> None:
    draws: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    policy = RetryPolicy(jitter=jitter)
    assert [policy.backoff(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.backoff(10_000) == 10.0
    assert {low for low, _ in draws} == {0.0}


def test_backoff_is_full_jitter() -> None:
    policy = RetryPolicy(jitter=random.Random(7).uniform)
    for attempt in range(8):
        samples = [policy.backoff(attempt) for _ in range(200)]
        ceiling = min(10.0, 0.5 * 2**attempt)
        assert all(0.0 <= s <= ceiling for s in samples)
        assert min(samples) < ceiling / 4 and max(samples) > ceiling * 3 / 4


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("60", 60.0),
        (" 1 ", 1.0),
        ("0.5", 0.5),
        ("0", None),
        ("-3", None),
        ("61", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        # HTTP-dates, read against a wall clock at 2025-06-01T12:00:00Z.
        ("Sun, 01 Jun 2025 12:00:30 GMT", 30.0),
        ("Sunday, 01-Jun-25 12:01:00 GMT", 60.0),
        ("Sun, 01 Jun 2025 12:01:01 GMT", None),
        ("Sun, 01 Jun 2025 11:59:00 GMT", None),
    ],
)
def test_retry_after_values(value: str, seconds: float | None) -> None:
    noon = 1748779200.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": value}), now=lambda: noon) == seconds


def test_retry_after_is_honoured_only_on_429_and_503() -> None:
    policy = RetryPolicy(jitter=lambda low, high: high)
    headers = {"Retry-After": "9"}
    assert policy.delay(0, httpx.Response(429, headers=headers)) == 9.0
    assert policy.delay(0, httpx.Response(503, headers=headers)) == 9.0
    assert policy.delay(0, httpx.Response(500, headers=headers)) == 0.5
    assert policy.delay(3, httpx.Response(503)) == 4.0
    assert policy.delay(1, None) == 1.0


async def test_pause_sleeps_until_the_deadline_and_never_past_it() -> None:
    fake = FakeTime()
    policy = RetryPolicy(
        deadline_s=20.0, sleep=fake.sleep, clock=fake.clock, jitter=lambda low, high: high
    )
    deadline = policy.start()
    attempt = 0
    while await policy.pause(attempt, deadline):
        attempt += 1
    # 0.5 + 1 + 2 + 4 + 8 = 15.5; the next 10 s would end at 25.5 > 20.
    assert fake.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert fake.now == 50.0 + 15.5
    assert not deadline.expired
    assert deadline.remaining() == pytest.approx(4.5)


async def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    fake = FakeTime()
    policy = RetryPolicy(deadline_s=5.0, sleep=fake.sleep, clock=fake.clock)
    response = httpx.Response(429, headers={"Retry-After": "30"})
    assert not await policy.pause(0, policy.start(), response)
    assert fake.sleeps == []


def test_answer_deadline_of_a_retry_is_the_rest_of_the_budget_but_at_least_5_s() -> None:
    limits = AnswerLimits()
    assert limits.attempt_deadline(0, budget_left_s=0.0) == 120.0  # one whole attempt always
    assert limits.attempt_deadline(1, budget_left_s=50.0) == 50.0
    assert limits.attempt_deadline(2, budget_left_s=0.5) == 5.0
    assert limits.attempt_deadline(1, budget_left_s=500.0) == 120.0
    assert AnswerLimits(attempt_deadline_s=None).attempt_deadline(3, 1.0) is None
