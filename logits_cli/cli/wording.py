"""Wording that depends on a number or on now: ``1 checkpoint`` / ``2 checkpoints`` (never
``checkpoint(s)`` or ``1 runs``), and times shown both exactly and relative to now."""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from logits_cli.cli.tables import TEXT, TIME, Column, human_cell, relative_time


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is one (``plural`` when adding an
    ``s`` is wrong: ``1 directory``, ``2 directories``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def with_relative_times(
    fields: Sequence[Column], record: Mapping[str, Any], *, terminal: bool
) -> tuple[list[Column], dict[str, Any]]:
    """The fields and record of an ``info`` view, each time on a terminal written as its UTC
    time and its distance from now (``2026-12-08 00:52Z (3h ago)``; an empty one as the
    column's ``none``, ``never`` for an expiry). Piped output is left exact (ISO-8601)."""
    if not terminal:
        return list(fields), dict(record)
    now = datetime.now(UTC)
    shown = dict(record)
    columns = []
    for column in fields:
        value = record.get(column.key)
        if column.kind == TIME:
            if isinstance(value, datetime):
                absolute, relative = human_cell(value, TIME), relative_time(value, now)
                # Beyond two months the relative form is the date, already shown.
                same_day = absolute.startswith(relative)
                shown[column.key] = absolute if same_day else f"{absolute} ({relative})"
            elif value is None:
                shown[column.key] = column.none
            column = replace(column, kind=TEXT)
        columns.append(column)
    return columns, shown
