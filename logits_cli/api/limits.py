"""Guards that bound a download against hostile or hopeless servers (issue 8).

* ``LowSpeedGuard``: curl's ``-Y``/``-y``. An attempt that carries fewer than ``limit`` bytes
  per second, averaged over the last ``window`` seconds, is aborted (and retried). A stall
  detector alone never fires on a server that trickles one byte every few seconds.
* ``RetryBudget``: the retries of one segment are bounded in count *and* in time, even when
  every attempt makes a little progress (a server that sends 1,000 bytes, then stalls).
  docs/protocol.md §6.3 step 4 only counts attempts without progress; this closes the other gap.
"""

from __future__ import annotations

from collections import deque

KiB = 1024
LOW_SPEED_LIMIT = 64 * KiB  # bytes per second, for the whole download; 0 disables the guard
LOW_SPEED_TIME_S = 30.0
MAX_SEGMENT_ATTEMPTS = 10  # failed attempts of one segment, with or without progress
RETRY_WINDOW_S = 600.0  # a segment that keeps failing for this long is given up
SAMPLES_PER_WINDOW = 16  # rate samples kept per window: the average is that precise


class TooSlow(Exception):
    """The attempt's rate stayed under the limit for a whole window."""

    def __init__(self, rate: float, window: float) -> None:
        super().__init__(f"slower than the minimum rate ({rate:.0f} bytes/s over {window:g} s)")


class LowSpeedGuard:
    """Rate check of one attempt. ``update(now, total)`` is called as bytes arrive (``total``
    counts the attempt's bytes so far) and raises ``TooSlow``. Sampling at most
    ``SAMPLES_PER_WINDOW`` times per window keeps the per-chunk cost at one comparison."""

    def __init__(self, limit: float, window: float, now: float) -> None:
        self._limit = limit
        self._window = window
        self._every = window / SAMPLES_PER_WINDOW
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    @property
    def enabled(self) -> bool:
        return self._limit > 0 and self._window > 0

    def update(self, now: float, total: int) -> None:
        if not self.enabled or now - self._samples[-1][0] < self._every:
            return
        self._samples.append((now, total))
        # Keep the newest sample that is at least a window old: the average runs from it.
        while len(self._samples) > 1 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        then, before = self._samples[0]
        elapsed = now - then
        if elapsed >= self._window and (total - before) / elapsed < self._limit:
            raise TooSlow((total - before) / elapsed, self._window)


class RetryBudget:
    """How long one segment may keep failing: at most ``max_attempts`` failed attempts and
    ``window`` seconds from its first failure, whatever progress each attempt made."""

    def __init__(self, *, max_attempts: int = MAX_SEGMENT_ATTEMPTS, window: float = RETRY_WINDOW_S):
        self._max_attempts = max_attempts
        self._window = window
        self._failures = 0
        self._first_failure: float | None = None

    def failed(self, now: float) -> str | None:
        """Record a failure; the reason to give up, or None to retry."""
        self._failures += 1
        if self._first_failure is None:
            self._first_failure = now
        if self._failures >= self._max_attempts:
            return f"{self._failures} failed attempts"
        if now - self._first_failure >= self._window:
            return f"still failing after {now - self._first_failure:.0f} s of retries"
        return None


def per_connection_limit(limit: float, connections: int) -> float:
    """The rate each of ``connections`` parallel requests must reach so that together they
    carry ``limit``: a slow link spread over 8 connections is not 8 times too slow."""
    return limit / max(1, connections)
