"""The one text form of a time: RFC 3339 / ISO-8601 in UTC with ``Z``, the fraction kept only
when there is one. The wire (``models.py``) and piped or JSON output (``cli/tables.py``) both
write it; importing nothing, it costs the start-up of ``--help`` nothing."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"
