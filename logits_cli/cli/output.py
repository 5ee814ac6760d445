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
    fit_table,
    hidden_note,
    human_cell,
    json_text,
    plain_cell,
    terminal_text,
    terminal_width,
)
from logits_cli.cli.transfer_bars import (  # noqa: F401  (binary_speed_column: re-exported)
    TransferBars,
    binary_speed_column,
    make_progress,
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
        """On a terminal, a table at its width, then ``footer`` and the names of columns
        left out to fit; piped, tab-separated full rows without header or footer.
        ``group_by``: see ``tables.fit_table``."""
        if not self.stdout_is_terminal:
            piped = [c for c in columns if c.show != TABLE_ONLY]
            self.emit_lines(
                "\t".join(plain_cell(row.get(c.key), c.kind) for c in piped) for row in rows
            )
            return
        width = terminal_width()
        table = fit_table(columns, rows, width, group_by=group_by)
        notes = [footer] if footer else []
        if table.hidden:  # a column nobody can see is never silently gone (--sort size)
            notes.append(hidden_note(table.hidden, width))
        self.emit_lines([*table.lines, *notes])

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
    def transfer_bars(
        self, items: int = 1, *, sizes: Sequence[int | None] = ()
    ) -> Iterator[TransferBars | None]:
        """Progress bars on a terminal stderr (one per checkpoint, and an overall one for
        several ``items``; ``sizes`` as listed, see ``TransferBars``), else None."""
        if not self.live_progress:
            yield None
            return
        with make_progress(stderr_console()) as progress:
            yield TransferBars(progress, items, sizes=sizes)


def rich_label(text: str) -> str:
    """Text for a rich label that reads markup (spinners, bar descriptions): control
    characters escaped, and ``[`` too, so a name like ``[/]`` is shown, not parsed."""
    from rich.markup import escape

    return escape(terminal_text(text))
