"""The one output module: what goes to stdout, and how; everything else goes to stderr.

stdout carries only requested data: rich tables on a terminal, tab-separated full rows when
piped, JSON with ``--json``, bare paths or ids with ``-q``. Notices, spinners, progress bars
and timestamped log lines go to a stderr console. rich is imported only when something is
drawn, so ``--help`` stays fast.

Names and messages come from a server, so nothing reaches a terminal raw (issue 21 G8):
stdout on a terminal and every stderr line show control characters as visible escapes
(``tables.terminal_text``), spinner and bar labels are also escaped for rich markup, and
JSON escapes them as ``\\u`` (the same document); piped TSV stays exact but for the tabs
and line breaks that would split its rows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

from logits_cli.cli.tables import (
    TABLE_ONLY,
    Column,
    human_cell,
    human_size,
    json_text,
    layout_table,
    plain_cell,
    terminal_text,
    terminal_width,
)
from logits_cli.errors import UsageError
from logits_cli.utc_text import utc_text


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
    sys.stderr.write(terminal_text(line) + "\n")
    sys.stderr.flush()


def log_line(message: str) -> None:
    """One timestamped line on stderr: what a cron log should contain per item."""
    _write_stderr(f"{utc_text(datetime.now(UTC).replace(microsecond=0))} {message}")


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
        sys.stdout.write(json_text(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
        sys.stdout.flush()

    def emit_lines(self, lines: Iterable[str]) -> None:
        shown = terminal_text if self.stdout_is_terminal else str
        for line in lines:
            sys.stdout.write(f"{shown(line)}\n")
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
                "\t".join(plain_cell(row.get(c.key), c.kind) for c in piped) for row in rows
            )
            return
        lines = layout_table(columns, rows, terminal_width(), group_by=group_by)
        self.emit_lines([*lines, footer] if footer else lines)

    def emit_record(self, fields: Sequence[Column], record: Mapping[str, Any]) -> None:
        """One object as ``key  value`` lines (``key<TAB>value`` when piped)."""
        if not self.stdout_is_terminal:
            self.emit_lines(f"{c.header}\t{plain_cell(record.get(c.key), c.kind)}" for c in fields)
            return
        width = max(len(c.header) for c in fields)
        self.emit_lines(
            f"{c.header:<{width}}  {human_cell(record.get(c.key), c.kind)}" for c in fields
        )

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
        with stderr_console().status(rich_label(text)) as spinner:
            yield lambda new_text: spinner.update(rich_label(new_text))

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


def rich_label(text: str) -> str:
    """Text for a rich label that reads markup (spinners, bar descriptions): control
    characters escaped, and ``[`` too, so a name like ``[/]`` is shown, not parsed."""
    from rich.markup import escape

    return escape(terminal_text(text))


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
        description = rich_label(description)
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
