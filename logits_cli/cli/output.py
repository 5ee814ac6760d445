"""The one output module: what goes to stdout, and how; everything else goes to stderr.

stdout carries only requested data: rich tables on a terminal, tab-separated full rows when
piped, JSON with ``--json``, bare paths or ids with ``-q``. Notices, spinners, progress bars
and timestamped log lines go to a stderr console. rich is imported only when something is
drawn, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from logits_cli.errors import UsageError

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


def isoformat(value: datetime) -> str:
    """ISO-8601 UTC with ``Z``, the form every piped or JSON time takes."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


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


def _plain(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == TIME and isinstance(value, datetime):
        return isoformat(value)
    if kind == BOOL:
        return "true" if value else "false"
    return str(value).replace("\t", " ").replace("\n", " ")


def _human(value: Any, kind: str, none: str = "-") -> str:
    if value is None:
        return none
    if kind == SIZE:
        return human_size(int(value))
    if kind == TIME and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    if kind == BOOL:
        return "yes" if value else "no"
    return str(value)


def _table_cell(value: Any, column: Column, now: datetime) -> str:
    if value is not None and column.kind == TIME and isinstance(value, datetime):
        return relative_time(value, now)
    return _human(value, column.kind, column.none).replace("\t", " ").replace("\n", " ")


def _width_of_kept(
    columns: Sequence[Column], rows: Sequence[Mapping[str, Any]], now: datetime
) -> int:
    kept = [c for c in columns if c.priority >= KEEP]
    natural = [
        max([len(c.header), *(len(_table_cell(row.get(c.key), c, now)) for row in rows)])
        for c in kept
    ]
    return sum(natural) + COLUMN_GAP * (len(kept) - 1)


def _grouped(
    columns: Sequence[Column],
    group: Column,
    rows: Sequence[Mapping[str, Any]],
    width: int,
    now: datetime,
) -> list[str]:
    """The table without ``group``'s column, rows gathered under one ``HEADER value`` line
    per group (groups in order of first appearance, rows in their order within each)."""
    order: dict[Any, int] = {}
    for row in rows:
        order.setdefault(row.get(group.key), len(order))
    rows = sorted(rows, key=lambda row: order[row.get(group.key)])
    indent = "  "
    body = layout_table([c for c in columns if c is not group], rows, width - len(indent), now=now)
    lines, previous = [indent + body[0]], object()
    for row, line in zip(rows, body[1:], strict=True):
        value = row.get(group.key)
        if value != previous:
            lines.append(f"{group.header} {_table_cell(value, group, now)}")
            previous = value
        lines.append(indent + line)
    return lines


def terminal_width() -> int:
    """The width of the terminal stdout is on (``COLUMNS`` wins, as in every CLI)."""
    import shutil

    return max(shutil.get_terminal_size((80, 24)).columns, 20)


def layout_table(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    *,
    now: datetime | None = None,
    group_by: str | None = None,
) -> list[str]:
    """The lines of a table that fits ``width``: one line per row, columns dropped lowest
    priority first and free text shortened with ``…``; ids and paths are never cut.

    ``group_by``: the key of a column that, when even the columns never dropped are too
    wide together, becomes a heading line before its rows (``RUN <id>``) instead. A row
    still wider than the terminal (a very long name) overflows rather than lose characters.
    """
    now = now or datetime.now(UTC)
    shown = [c for c in columns if c.show != PIPED_ONLY]
    group = next((c for c in shown if c.key == group_by), None)
    if group is not None and _width_of_kept(shown, rows, now) > width:
        return _grouped(shown, group, rows, width, now)
    cells = {c.key: [_table_cell(row.get(c.key), c, now) for row in rows] for c in shown}
    natural = {c.key: max([len(c.header), *(len(v) for v in cells[c.key])]) for c in shown}
    widths = dict(natural)

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
    return lines


@cache
def stderr_console() -> Any:
    """The rich console every progress bar, spinner and notice uses (NO_COLOR is honoured
    by rich itself)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _is_terminal(stream: Any) -> bool:
    # A stream is None when its descriptor was closed at start, as cron may do with stdin.
    return stream is not None and stream.isatty()


def stderr_is_terminal() -> bool:
    return _is_terminal(sys.stderr)


def interactive() -> bool:
    """Prompts are allowed only when a person can answer them."""
    return _is_terminal(sys.stdin) and _is_terminal(sys.stderr)


def _write_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def log_line(message: str) -> None:
    """One timestamped line on stderr: what a cron log should contain per item."""
    _write_stderr(f"{isoformat(datetime.now(UTC).replace(microsecond=0))} {message}")


class Output:
    """How one command renders: human (table or TSV), ``--json`` or ``-q``."""

    def __init__(self, *, json_output: bool = False, quiet: bool = False) -> None:
        if json_output and quiet:
            raise UsageError("--json and --quiet cannot be combined")
        self.json = json_output
        self.quiet = quiet

    @property
    def human(self) -> bool:
        return not (self.json or self.quiet)

    @property
    def stdout_is_terminal(self) -> bool:
        return _is_terminal(sys.stdout)

    @property
    def live_progress(self) -> bool:
        """Bars and spinners: a person is watching stderr and asked for human output."""
        return self.human and stderr_is_terminal()

    # -- stdout ------------------------------------------------------------------------
    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def emit_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            sys.stdout.write(f"{line}\n")
        sys.stdout.flush()

    def emit_table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        *,
        footer: str | None = None,
        group_by: str | None = None,
    ) -> None:
        """On a terminal, a table of one line per row at its width, then ``footer``;
        piped, tab-separated full rows without header or footer. ``group_by``: see
        ``layout_table``."""
        if not self.stdout_is_terminal:
            piped = [c for c in columns if c.show != TABLE_ONLY]
            self.emit_lines(
                "\t".join(_plain(row.get(c.key), c.kind) for c in piped) for row in rows
            )
            return
        lines = layout_table(columns, rows, terminal_width(), group_by=group_by)
        self.emit_lines([*lines, footer] if footer else lines)

    def emit_record(self, fields: Sequence[Column], record: Mapping[str, Any]) -> None:
        """One object as ``key  value`` lines (``key<TAB>value`` when piped)."""
        if not self.stdout_is_terminal:
            self.emit_lines(f"{c.header}\t{_plain(record.get(c.key), c.kind)}" for c in fields)
            return
        width = max(len(c.header) for c in fields)
        self.emit_lines(f"{c.header:<{width}}  {_human(record.get(c.key), c.kind)}" for c in fields)

    def emit_listing(
        self,
        data: Any,
        ids: Iterable[str],
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        *,
        empty: str | None = None,
        footer: str | None = None,
        group_by: str | None = None,
    ) -> None:
        """A list in the chosen mode: ``data`` as JSON, ``ids`` one per line (``-q``), or a
        table of ``rows`` (with ``footer`` on a terminal); with no rows and an ``empty``
        notice, that notice instead."""
        if self.json:
            self.emit_json(data)
        elif self.quiet:
            self.emit_lines(ids)
        elif rows or empty is None:
            self.emit_table(columns, rows, footer=footer, group_by=group_by)
        else:
            self.notice(empty)

    def emit_object(
        self, data: Any, ident: str, fields: Sequence[Column], record: Mapping[str, Any]
    ) -> None:
        """One object in the chosen mode: ``data`` as JSON, its ``ident`` (``-q``), or the
        ``fields`` of ``record``."""
        if self.json:
            self.emit_json(data)
        elif self.quiet:
            self.emit_lines([ident])
        else:
            self.emit_record(fields, record)

    # -- stderr ------------------------------------------------------------------------
    def notice(self, message: str) -> None:
        """A human remark on stderr; silent under ``-q``."""
        if not self.quiet:
            _write_stderr(message)

    def warn(self, message: str) -> None:
        _write_stderr(f"Warning: {message}")

    def log_summary(self, message: str) -> None:
        """A closing summary on stderr, silent under ``-q``: plain on a terminal, timestamped
        without one, so a cron log has no line without a time."""
        if self.quiet:
            return
        if stderr_is_terminal():
            _write_stderr(message)
        else:
            log_line(message)

    @contextmanager
    def status(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner on a terminal stderr; yields a function that updates its text."""
        if not self.live_progress:
            yield lambda _text: None
            return
        with stderr_console().status(text) as spinner:
            yield lambda new_text: spinner.update(new_text)

    @contextmanager
    def transfer_bars(self, items: int = 1) -> Iterator[TransferBars | None]:
        """Rich progress bars on a terminal stderr (one per checkpoint, and an overall one
        for several ``items``), else None."""
        if not self.live_progress:
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            binary_speed_column(),
            TimeRemainingColumn(),
            console=stderr_console(),
        )
        with progress:
            yield TransferBars(progress, items)


def binary_speed_column() -> Any:
    """A progress column of speed in binary units: rich's TransferSpeedColumn counts MB/s,
    beside sizes in MiB."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(speed)}/s")

    return BinarySpeedColumn()


class TransferBars:
    """One bar per checkpoint, labelled with its phase (downloading, verifying, extracting,
    installing), and, when several checkpoints were asked for, an overall bar above them."""

    def __init__(self, progress: Any, items: int) -> None:
        self._progress = progress
        self._items = items
        self._bars: list[_Bar] = []
        self._overall = progress.add_task(f"all (0/{items})", total=None) if items > 1 else None

    def bar(self, description: str) -> _Bar:
        """A new bar; it is called as the API's ProgressCallback and told phases."""
        bar = _Bar(self, self._progress.add_task(description, total=None), description)
        self._bars.append(bar)
        return bar

    def _update_overall(self) -> None:
        if self._overall is None:
            return
        totals = [bar.total for bar in self._bars]
        known = len(totals) == self._items and all(totals)
        self._progress.update(
            self._overall,
            completed=sum(bar.done for bar in self._bars),
            total=sum(t for t in totals if t) if known else None,
            description=f"all ({sum(bar.finished for bar in self._bars)}/{self._items})",
        )


class _Bar:
    def __init__(self, owner: TransferBars, task_id: Any, description: str) -> None:
        self._owner = owner
        self._task_id = task_id
        self._description = description
        self.done = 0
        self.total: int | None = None
        self.finished = False

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self._owner._progress.update(self._task_id, completed=done, total=total)
        self._owner._update_overall()

    def phase(self, name: str) -> None:
        label = self._description if name == "downloading" else f"{self._description} · {name}"
        self._owner._progress.update(self._task_id, description=label)

    def finish(self, note: str = "done") -> None:
        """The checkpoint is installed (or was already present)."""
        self.finished = True
        if self.total is None:
            self._owner._progress.update(self._task_id, total=1, completed=1)
        self._owner._progress.update(self._task_id, description=f"{self._description} · {note}")
        self._owner._update_overall()
