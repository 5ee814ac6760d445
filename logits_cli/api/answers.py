"""Reading one API answer within bounds: a deadline, a minimum rate and a size cap.

httpx's read timeout restarts on every byte, so an answer dripping one byte every ten seconds
never times out, and a non-streamed request holds the whole body, however large, in memory.
Every attempt of a JSON API request is therefore bounded three ways (defaults in
``AnswerLimits``):

* **Deadline** (120 s): the whole answer, headers and body, arrives within it or the attempt is
  abandoned. Attempts are retried as timeouts are (docs/protocol.md §9); a retry gets the time left
  in the call's retry budget, but at least ``MIN_RETRY_ATTEMPT_S``.
* **Minimum rate** (as curl's ``--speed-limit 1024 --speed-time 30``): a body that delivers less
  than 1 KiB/s averaged over a 30 s window is abandoned and retried like a timeout.
* **Size** (64 MiB, counted after decompression): a ``Content-Length`` above it is refused
  before the body is read; a body without one is cut off as soon as it passes the cap. This is
  not retried: the same request gets the same answer.

A request that keeps failing these limits ends as ``UnavailableError`` (exit 6) once the retry
budget is spent; an answer over the size cap is ``UnexpectedResponseError`` (exit 1).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

ATTEMPT_DEADLINE_S = 120.0
LOW_SPEED_BYTES_PER_S = 1024
LOW_SPEED_WINDOW_S = 30.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MIN_RETRY_ATTEMPT_S = 5.0

# Headers that describe the body as it came over the wire, not as it is held after decoding.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


@dataclass(frozen=True)
class AnswerLimits:
    """Bounds for one attempt of a JSON API request; None switches one off."""

    attempt_deadline_s: float | None = ATTEMPT_DEADLINE_S
    low_speed_bytes_per_s: int = LOW_SPEED_BYTES_PER_S
    low_speed_window_s: float | None = LOW_SPEED_WINDOW_S
    max_answer_bytes: int | None = MAX_ANSWER_BYTES

    def attempt_deadline(self, attempt: int, budget_left_s: float) -> float | None:
        """The deadline of attempt ``attempt`` (0-based): the first always gets the full
        deadline (a zero retry budget still means one whole attempt); retries get what is left
        of the budget, at least ``MIN_RETRY_ATTEMPT_S``."""
        if self.attempt_deadline_s is None or attempt == 0:
            return self.attempt_deadline_s
        return min(self.attempt_deadline_s, max(budget_left_s, MIN_RETRY_ATTEMPT_S))


class AnswerTimeout(Exception):
    """The attempt ran past its deadline or below the minimum rate; a retry may cure it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AnswerTooLarge(Exception):
    """The answer is (or declares itself) larger than ``max_answer_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {format_size(limit)}")
        self.limit = limit


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


async def fetch_answer(
    http: httpx.AsyncClient,
    request: httpx.Request,
    limits: AnswerLimits,
    *,
    deadline_s: float | None,
) -> httpx.Response:
    """Send ``request`` and read its whole answer within ``limits``; the answer comes back
    with its (decoded) body in memory, as a non-streamed httpx request would return it.

    httpx exceptions pass through unchanged; the limits raise ``AnswerTimeout`` and
    ``AnswerTooLarge``.
    """
    try:
        async with asyncio.timeout(deadline_s) as whole:
            response = await http.send(request, stream=True)
            try:
                body = await _read_body(response, limits)
            finally:
                await response.aclose()
    except TimeoutError:
        if whole.expired():
            raise AnswerTimeout(f"no complete answer within {deadline_s:g} s") from None
        raise
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=request,
        extensions=response.extensions,
    )


async def _read_body(response: httpx.Response, limits: AnswerLimits) -> bytes:
    cap = limits.max_answer_bytes
    if cap is not None:
        declared = _declared_length(response)
        if declared is not None and declared > cap:
            raise AnswerTooLarge(cap)
    window = limits.low_speed_window_s if limits.low_speed_bytes_per_s > 0 else None
    # The body must bring `quota` bytes within each window; meeting it opens the next window.
    quota = limits.low_speed_bytes_per_s * (window or 0.0)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    total = in_window = 0
    try:
        async with asyncio.timeout(None if window is None else window) as slow:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if cap is not None and total > cap:
                    raise AnswerTooLarge(cap)
                chunks.append(chunk)
                in_window += len(chunk)
                if window is not None and in_window >= quota:
                    in_window = 0
                    slow.reschedule(loop.time() + window)
    except TimeoutError:
        if slow.expired():
            raise AnswerTimeout(
                f"the answer arrived slower than {format_size(limits.low_speed_bytes_per_s)}/s "
                f"for {window:g} s"
            ) from None
        raise
    return b"".join(chunks)


def _declared_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-length", "").strip()
    if not raw.isdigit():
        return None
    # Past 18 digits it exceeds any cap; int() would refuse past 4,300 digits anyway.
    return int(raw) if len(raw) <= 18 else 1 << 62
