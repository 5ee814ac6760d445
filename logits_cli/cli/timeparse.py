"""Human durations (``7d``, ``12h``, ``30min``, ``90s``, ``2w``, ``3mo``, ``never``) and
points in time (ISO dates, or a duration meaning "that long ago").

``m`` reads as minutes to some and months to others. Where a checkpoint's age or lifetime
is given (``--before``, ``--since``, ``--after``, ``--ttl``, ``ttl --set/--extend``) a
misreading deletes or expires the wrong checkpoints, so there ``m`` is refused with a hint
to write ``min`` or ``mo``; in waits and limits (``--timeout``, ``--max-duration``,
``--lock-wait``, ``--retry-for``, ``--expiring-within``) it means minutes, as in ``sleep``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from logits_cli.errors import UsageError
from logits_cli.protocol_rules import MAX_TTL_SECONDS

_UNIT_SECONDS = {
    "s": 1,
    "min": 60,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
_UNIT = r"(?:mo|min|[smhdwy])"
_DURATION_RE = re.compile(rf"(?:\d{{1,9}}{_UNIT})+|\d{{1,9}}")
_M_UNIT = re.compile(r"(\d)m(?=\d|$)")  # a bare 'm' unit, not the m of 'min' or 'mo'
_PART_RE = re.compile(rf"(\d{{1,9}})({_UNIT})")
# The server refuses a TTL over ten years; no duration may be longer, so refuse it here first.
MAX_DURATION_S = MAX_TTL_SECONDS


def parse_duration(text: str, *, minutes_as_m: bool = True) -> int:
    """Seconds in ``text``: ``<int><unit>`` parts (``7d``, ``1h30min``) or bare seconds.
    ``minutes_as_m=False``: a bare ``m`` is refused as ambiguous (see the module doc)."""
    cleaned = text.strip().lower()
    if not _DURATION_RE.fullmatch(cleaned):
        raise UsageError(
            f"invalid duration {text!r}; expected a number and a unit s, min, h, d, w, mo "
            "or y (e.g. 7d, 12h, 30min)"
        )
    if cleaned.isdigit():  # a bare number is seconds, as in --timeout 90
        seconds = int(cleaned)
    else:
        parts = _PART_RE.findall(cleaned)
        if not minutes_as_m and any(unit == "m" for _, unit in parts):
            as_minutes, as_months = (_M_UNIT.sub(rf"\g<1>{u}", cleaned) for u in ("min", "mo"))
            raise UsageError(
                f"ambiguous duration {text!r}: 'm' could mean minutes or months",
                hint=f"write {as_minutes!r} for minutes or {as_months!r} for months",
            )
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}; it must be longer than zero")
    if seconds > MAX_DURATION_S:
        raise UsageError(f"invalid duration {text!r}; the longest allowed is 10 years (3650d)")
    return seconds


def optional_seconds(text: str | None) -> float | None:
    """The seconds of an optional duration option (``--timeout``, ``--max-duration``)."""
    return None if text is None else float(parse_duration(text))


def parse_ttl(text: str) -> int | None:
    """A TTL in seconds, or None for ``never`` (no expiry)."""
    if text.strip().lower() in ("never", "none"):
        return None
    return parse_duration(text, minutes_as_m=False)


def parse_point_in_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from an ISO date/datetime, or from a duration meaning "ago"."""
    cleaned = text.strip()
    if cleaned and not cleaned.isdigit() and _DURATION_RE.fullmatch(cleaned.lower()):
        ago = parse_duration(cleaned, minutes_as_m=False)
        return (now or datetime.now(UTC)) - timedelta(seconds=ago)
    iso = cleaned[:-1] + "+00:00" if cleaned.endswith(("Z", "z")) else cleaned
    try:
        value = datetime.fromisoformat(iso)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"invalid date {text!r}; expected an ISO date (2025-06-01, 2025-06-01T12:00Z) "
            "or a duration ago (7d)"
        ) from None


def optional_point_in_time(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """The moment of an optional date option; an empty value is an error, not "no filter"
    (``--before "$CUTOFF"`` with CUTOFF unset must not select everything)."""
    return None if text is None else parse_point_in_time(text, now=now)
