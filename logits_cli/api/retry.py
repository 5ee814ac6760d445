"""The client retry policy of docs/protocol.md §9, shared by the request layer and the transfer engine.

What is retried: connection errors, timeouts, 408, 429 and 5xx except 507 (the server's disk is
full: waiting minutes for an operator to free space helps nobody, so it is reported at once). Attempt ``n`` (from 0) sleeps a
random time in ``[0, min(10 s, 0.5 s × 2^n)]``, or exactly ``Retry-After`` on 429/503 when it is
above 0 and at most 60 s. All attempts of one call share a deadline; no sleep runs past it.

Sleeping, the clocks and the jitter are injectable so tests never really wait.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

DEFAULT_DEADLINE_S = 120.0
BASE_DELAY_S = 0.5
MAX_DELAY_S = 10.0
MAX_RETRY_AFTER_S = 60.0


INSUFFICIENT_STORAGE = 507


def is_retryable_status(status: int) -> bool:
    """408, 429 and every 5xx but 507 are retried; every other status is final."""
    return status in (408, 429) or (500 <= status <= 599 and status != INSUFFICIENT_STORAGE)


def retry_after_seconds(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """The ``Retry-After`` delay in seconds when it is usable (0 < s ≤ 60), else None.

    Accepts delta-seconds and an HTTP-date (IMF-fixdate or the obsolete forms).
    """
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now()
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_RETRY_AFTER_S:
        return None
    return seconds


@dataclass
class Deadline:
    """The total time budget shared by every attempt of one call."""

    expires_at: float
    clock: Callable[[], float]

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.clock())

    @property
    def expired(self) -> bool:
        return self.clock() >= self.expires_at

    def fits(self, delay: float) -> bool:
        """Whether sleeping ``delay`` seconds still ends before the deadline."""
        return self.clock() + delay < self.expires_at


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass
class RetryPolicy:
    """Backoff and deadline for one kind of call. Immutable in use; share it freely.

    ``sleep`` is awaited between attempts, ``clock`` (monotonic seconds) drives deadlines,
    ``wall_clock`` (Unix seconds) reads HTTP-date ``Retry-After`` values, and ``jitter(lo, hi)``
    draws the full-jitter delay.
    """

    deadline_s: float = DEFAULT_DEADLINE_S
    base_delay_s: float = BASE_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    sleep: Callable[[float], Awaitable[None]] = field(default=_asyncio_sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    jitter: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def start(self) -> Deadline:
        """A fresh deadline for one call (or, for futures, one streak of failures)."""
        return Deadline(self.clock() + self.deadline_s, self.clock)

    def backoff(self, attempt: int) -> float:
        """Full jitter: a random time in ``[0, min(max, base × 2^attempt)]``."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt, 64))
        return self.jitter(0.0, ceiling)

    def delay(self, attempt: int, response: Any = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based) after ``response`` (an
        ``httpx.Response``, or None after a connection error or timeout)."""
        if response is not None and response.status_code in (429, 503):
            hinted = retry_after_seconds(response.headers, now=self.wall_clock)
            if hinted is not None:
                return hinted
        return self.backoff(attempt)

    async def pause(self, attempt: int, deadline: Deadline, response: Any = None) -> bool:
        """Sleep before retry ``attempt`` if that fits in ``deadline``; False means give up
        now and raise the last error."""
        wait = self.delay(attempt, response)
        if not deadline.fits(wait):
            return False
        await self.sleep(wait)
        return True
