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


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    kind: str = TEXT


def isoformat(value: datetime) -> str:
    """ISO-8601 UTC with ``Z``, the form every piped or JSON time takes."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _plain(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == TIME and isinstance(value, datetime):
        return isoformat(value)
    if kind == BOOL:
        return "true" if value else "false"
    return str(value).replace("\t", " ").replace("\n", " ")


def _human(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == SIZE:
        return human_size(int(value))
    if kind == TIME and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    if kind == BOOL:
        return "yes" if value else "no"
    return str(value)


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

    def emit_table(self, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> None:
        """A rich table on a terminal; tab-separated rows without header when piped."""
        if not self.stdout_is_terminal:
            self.emit_lines(
                "\t".join(_plain(row.get(c.key), c.kind) for c in columns) for row in rows
            )
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            # Short values stay on one line; ids and paths fold whole rather than being cut.
            table.add_column(
                column.header,
                justify="right" if column.kind in (SIZE, COUNT) else "left",
                no_wrap=column.kind != TEXT,
                overflow="fold",
            )
        for row in rows:
            table.add_row(*(Text(_human(row.get(c.key), c.kind)) for c in columns))
        Console(highlight=False, emoji=False).print(table)

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
    ) -> None:
        """A list in the chosen mode: ``data`` as JSON, ``ids`` one per line (``-q``), or a
        table of ``rows``; with no rows and an ``empty`` notice, that notice instead."""
        if self.json:
            self.emit_json(data)
        elif self.quiet:
            self.emit_lines(ids)
        elif rows or empty is None:
            self.emit_table(columns, rows)
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
    def transfer_bars(self) -> Iterator[TransferBars | None]:
        """One rich progress bar per file on a terminal stderr, else None."""
        if not self.live_progress:
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
        )
        with progress:
            yield TransferBars(progress)


class TransferBars:
    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def bar(self, description: str) -> Callable[[int, int | None], None]:
        """A new bar; the returned callback matches the API's ProgressCallback."""
        task_id = self._progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            self._progress.update(task_id, completed=done, total=total)

        return update
