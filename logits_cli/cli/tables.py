"""Tables and the units in their cells: what a row looks like on a terminal (humanised,
fitted to the width, columns dropped by priority) and piped (exact, tab-separated). Pure
functions of their arguments; ``output.py`` writes what they lay out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from logits_cli.utc_text import utc_text

# Column kinds decide how a value is shown: humanised on a terminal, exact when piped.
TEXT, SIZE, TIME, BOOL, COUNT = "text", "size", "time", "bool", "count"
# Where a column appears: in both views, only in the terminal table, or only when piped.
BOTH, TABLE_ONLY, PIPED_ONLY = "both", "table", "piped"
KEEP = 100  # the priority of a column that is never dropped (ids, paths)
COLUMN_GAP = 2


@dataclass(frozen=True)
class Column:
    """One column. ``priority`` decides which columns go first on a narrow terminal (lowest
    first; ``KEEP`` never); ``shrink`` lets free text be cut with an ellipsis, which ids and
    paths never are; ``none`` is what an empty value shows on a terminal."""

    header: str
    key: str
    kind: str = TEXT
    priority: int = KEEP
    shrink: bool = False
    show: str = BOTH
    none: str = "-"
    # May become a heading line before its rows when that keeps more columns (``RUN <id>``;
    # see ``fit_table``): a table need not be told to group by it.
    heading: bool = False


# Characters a terminal acts on instead of showing (C0, DEL, C1: cursor moves, screen clears,
# OSC titles and hyperlinks, CSI) and bidirectional overrides that reorder what is shown.
_UNSHOWABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same without C0, which json.dumps escapes itself (its \n and spaces lay the text out).
_UNSHOWABLE_IN_JSON = re.compile(r"[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """``text`` safe to show on a terminal: every control character written as a visible
    escape (``\\x1b``, ``\\x0a``, ``\\u202e``), so a name or message from a server can
    neither act on the terminal nor split a line (issue 21 G8). Text without one is
    returned as is; escaping twice changes nothing more."""
    return _UNSHOWABLE.sub(_escape_one, text)


def json_text(document: str) -> str:
    """JSON text with DEL, C1 and bidi characters written as ``\\u`` escapes (json.dumps
    escapes only C0): the same document, byte for byte safe on a terminal. They can only
    occur inside strings, where the escape means the same character."""
    return _UNSHOWABLE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", document)


def human_size(size: float) -> str:
    """Binary units, as ``du -h`` and ``ls -lh`` count: ``1.0 GiB``; bytes stay exact."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def human_speed(size: int, seconds: float) -> str:
    """Bytes over time as ``45.2 MiB/s``; ``-`` when no time passed."""
    if seconds <= 0:
        return "-"
    return f"{human_size(size / seconds)}/s"


def human_transfer(size: int, seconds: float) -> str:
    """``1.0 GiB in 12 s (85.3 MiB/s)``: a summary's size, time and speed together."""
    return f"{human_size(size)} in {human_duration(seconds)} ({human_speed(size, seconds)})"


def relative_time(value: datetime, now: datetime | None = None) -> str:
    """``3h ago`` / ``in 6d`` for two months either side of now, the date beyond that."""
    now = now or datetime.now(UTC)
    delta = (value - now).total_seconds()
    seconds = abs(delta)
    if seconds >= 60 * 86400:
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    if seconds < 60:
        text = f"{int(seconds)}s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)}min"
    elif seconds < 48 * 3600:
        text = f"{int(seconds // 3600)}h"
    else:
        text = f"{int(seconds // 86400)}d"
    if seconds < 1:
        return "just now"
    return f"in {text}" if delta > 0 else f"{text} ago"


def plain_cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == TIME and isinstance(value, datetime):
        return utc_text(value)
    if kind == BOOL:
        return "true" if value else "false"
    # A field never splits a row or a line (awk, cut, while read): the rest stays exact.
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def human_cell(value: Any, kind: str, none: str = "-") -> str:
    if value is None:
        return none
    if kind == SIZE:
        return human_size(int(value))
    if kind == TIME and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    if kind == BOOL:
        return "yes" if value else "no"
    return terminal_text(str(value))


def _table_cell(value: Any, column: Column, now: datetime) -> str:
    if value is not None and column.kind == TIME and isinstance(value, datetime):
        return relative_time(value, now)
    return human_cell(value, column.kind, column.none)


def _grouped(
    columns: Sequence[Column],
    group: Column,
    rows: Sequence[Mapping[str, Any]],
    width: int,
    now: datetime,
) -> TableLayout:
    """The table without ``group``'s column, rows gathered under one ``HEADER value`` line
    per group (groups in order of first appearance, rows in their order within each)."""
    order: dict[Any, int] = {}
    for row in rows:
        order.setdefault(row.get(group.key), len(order))
    rows = sorted(rows, key=lambda row: order[row.get(group.key)])
    indent = "  "
    body = _one_line_per_row([c for c in columns if c is not group], rows, width - len(indent), now)
    lines, previous = [indent + body.lines[0]], object()
    for row, line in zip(rows, body.lines[1:], strict=True):
        value = row.get(group.key)
        if value != previous:
            lines.append(f"{group.header} {_table_cell(value, group, now)}")
            previous = value
        lines.append(indent + line)
    return TableLayout(lines, body.hidden)


def terminal_width() -> int:
    """The width of the terminal stdout is on (``COLUMNS`` wins, as in every CLI)."""
    import shutil

    return max(shutil.get_terminal_size((80, 24)).columns, 20)


@dataclass(frozen=True)
class TableLayout:
    """The lines of a table and the headers of the columns left out to fit its width."""

    lines: list[str]
    hidden: list[str]


def layout_table(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    *,
    now: datetime | None = None,
    group_by: str | None = None,
) -> list[str]:
    """The lines of ``fit_table``'s table."""
    return fit_table(columns, rows, width, now=now, group_by=group_by).lines


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    *,
    now: datetime | None = None,
    group_by: str | None = None,
) -> TableLayout:
    """A table that fits ``width``: one line per row, free text shortened with ``…`` and
    then columns dropped lowest priority first; ids and paths are never cut.

    ``group_by`` (or a column marked ``heading``): the key of a column (``RUN``) that becomes
    a heading line before its rows (``RUN <id>``) when that keeps more columns than one line
    per row does: data columns
    such as SIZE and CREATED are worth a heading line per run. A row still wider than the
    terminal (a very long name) overflows rather than lose characters.
    """
    now = now or datetime.now(UTC)
    shown = [c for c in columns if c.show != PIPED_ONLY]
    flat = _one_line_per_row(shown, rows, width, now)
    group = next((c for c in shown if c.key == group_by or c.heading), None)
    if group is None or not (flat.hidden or _overflows(flat, width)):
        return flat
    grouped = _grouped(shown, group, rows, width, now)
    if _overflows(flat, width) or len(grouped.hidden) < len(flat.hidden):
        return grouped
    return flat


def _overflows(layout: TableLayout, width: int) -> bool:
    return any(len(line) > width for line in layout.lines)


def hidden_note(hidden: Sequence[str], width: int) -> str:
    """The line under a table that names the columns it left out (piped rows have all)."""
    names = ", ".join(hidden)
    note = f"(hidden at {width} columns: {names}; widen the terminal or pipe for all)"
    return note if len(note) <= width else f"(hidden: {names}; pipe for all)"


def _one_line_per_row(
    shown: Sequence[Column], rows: Sequence[Mapping[str, Any]], width: int, now: datetime
) -> TableLayout:
    order, shown = shown, list(shown)
    cells = {c.key: [_table_cell(row.get(c.key), c, now) for row in rows] for c in shown}
    natural = {c.key: max([len(c.header), *(len(v) for v in cells[c.key])]) for c in shown}
    widths = dict(natural)
    hidden: list[Column] = []

    def total() -> int:
        return sum(widths[c.key] for c in shown) + COLUMN_GAP * (len(shown) - 1)

    while total() > width:
        shrinkable = [c for c in shown if c.shrink and widths[c.key] > max(len(c.header), 12)]
        if shrinkable:
            widest = max(shrinkable, key=lambda c: widths[c.key])
            floor = max(len(widest.header), 12)
            widths[widest.key] = max(floor, widths[widest.key] - (total() - width))
            continue
        droppable = [c for c in shown if c.priority < KEEP]
        if not droppable:
            break
        drop = min(droppable, key=lambda c: c.priority)
        shown.remove(drop)
        hidden.append(drop)
        # Space freed by a dropped column goes back to text shortened before it.
        widths = {c.key: natural[c.key] for c in shown}

    def fit(text: str, column: Column) -> str:
        limit = widths[column.key]
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        right = column.kind in (SIZE, COUNT)
        return text.rjust(limit) if right else text.ljust(limit)

    gap = " " * COLUMN_GAP
    lines = [gap.join(fit(c.header, c) for c in shown).rstrip()]
    for index in range(len(rows)):
        lines.append(gap.join(fit(cells[c.key][index], c) for c in shown).rstrip())
    # Named in the table's own order, however they were dropped.
    return TableLayout(lines, [c.header for c in order if c in hidden])
