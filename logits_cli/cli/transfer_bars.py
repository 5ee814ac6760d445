"""Progress bars of downloads on a terminal's stderr: one line per bar at any width from
80 columns (issue 23 point 3).

Every column but the label has a fixed width, wide enough for its largest value
(``1023.9/1023.9 MiB``, ``1023.9 MiB/s``, ``10:00:00``), so numbers are never cut or
wrapped; the label gets what is left and a long checkpoint name is shortened in its middle
(``a_rather…name_01 · extracting``), since both ends of ``step_000200`` tell steps apart.
rich is imported only when bars are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from logits_cli import errors
from logits_cli.cli.tables import human_size, terminal_text

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient
    from logits_cli.uri import CheckpointRef

BAR_SIZE_WIDTH = 17  # 1023.9/1023.9 MiB
BAR_SPEED_WIDTH = 12  # 1023.9 MiB/s
BAR_ETA_WIDTH = 8  # 10:00:00
BAR_MIN_WIDTH = 10
LABEL_MAX_WIDTH = 50
PHASE_SEPARATOR = " · "


def bar_layout(width: int) -> tuple[int, int]:
    """(label width, bar width) for a terminal of ``width`` columns: the four fixed columns,
    the gaps between the five, and one column spare (a line that fills the last column
    makes some terminals wrap)."""
    room = width - 1 - (BAR_SIZE_WIDTH + BAR_SPEED_WIDTH + BAR_ETA_WIDTH) - 4
    label = max(12, min(LABEL_MAX_WIDTH, room - BAR_MIN_WIDTH))
    return label, max(BAR_MIN_WIDTH, room - label)


def shorten_middle(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis in its middle when cut."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    head = limit // 2
    tail = limit - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def fit_label(name: str, note: str, width: int) -> str:
    """``name · note`` in ``width`` characters: the note whole, the name shortened."""
    suffix = f"{PHASE_SEPARATOR}{note}" if note else ""
    return shorten_middle(name, max(1, width - len(suffix))) + suffix


def transfer_size_text(done: int, total: int | None) -> str:
    """``138.0/413.5 MiB``: both in the unit of the larger, as ``du -h`` would count."""
    base = max(done, total or 0)
    units = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40))
    unit, scale = next(((u, s) for u, s in units if base < s * 1024), units[-1])

    def number(value: int) -> str:
        return str(value) if scale == 1 else f"{value / scale:.1f}"

    return f"{number(done)}/{'?' if total is None else number(total)} {unit}"


def fixed_column(width: int, justify: Literal["left", "right"] = "right") -> Any:
    """A rich table column that is never wrapped, squeezed or widened."""
    from rich.table import Column

    return Column(width=width, min_width=width, max_width=width, no_wrap=True, justify=justify)


def label_column(width: int) -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class LabelColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            name, note = task.fields.get("name", ""), task.fields.get("note", "")
            return Text(fit_label(name, note, width), no_wrap=True, overflow="crop")

    return LabelColumn(table_column=fixed_column(width, "left"))


def numbers_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class NumbersColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            total = None if task.total is None else int(task.total)
            return Text(transfer_size_text(int(task.completed), total))

    return NumbersColumn(table_column=fixed_column(BAR_SIZE_WIDTH))


def binary_speed_column(table_column: Any = None) -> Any:
    """A progress column of speed in binary units: rich's TransferSpeedColumn counts MB/s,
    beside sizes in MiB."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(speed)}/s")

    return BinarySpeedColumn(table_column=table_column)


def make_progress(console: Any) -> Any:
    """A rich Progress whose every line fits ``console``'s width (read once, at start)."""
    from rich.progress import BarColumn, Progress, TimeRemainingColumn

    label_width, bar_width = bar_layout(console.width)
    return Progress(
        label_column(label_width),
        BarColumn(bar_width=bar_width, table_column=fixed_column(bar_width)),
        numbers_column(),
        binary_speed_column(fixed_column(BAR_SPEED_WIDTH)),
        TimeRemainingColumn(table_column=fixed_column(BAR_ETA_WIDTH)),
        console=console,
    )


async def listed_sizes(client: LogitsClient, refs: Sequence[CheckpointRef]) -> list[int | None]:
    """Each checkpoint's size as its run's listing gives it (one request per run), so the
    bars have their totals from the first frame. A listing that fails leaves its sizes
    unknown: the download itself then reports what is wrong."""
    import asyncio

    runs = list(dict.fromkeys(ref.run_id for ref in refs))
    listings = await asyncio.gather(
        *(client.list_checkpoints(run) for run in runs), return_exceptions=True
    )
    sizes: dict[tuple[str, str], int | None] = {}
    for run, listing in zip(runs, listings, strict=True):
        if isinstance(listing, errors.LogitsError):
            continue
        if isinstance(listing, BaseException):
            raise listing
        sizes.update(((run, c.checkpoint_id), c.size_bytes) for c in listing)
    return [sizes.get((ref.run_id, ref.checkpoint_id)) for ref in refs]


class TransferBars:
    """One bar per checkpoint, labelled with its phase (downloading, verifying, extracting,
    installing), and, when several checkpoints were asked for, an overall bar above them.

    ``sizes``: each item's size as listed (None: unknown), so the overall total is shown
    from the first frame; a bar's own total replaces its item's once the download knows it.
    """

    def __init__(self, progress: Any, items: int, *, sizes: Sequence[int | None] = ()) -> None:
        self._progress = progress
        self._items = items
        self._listed = list(sizes) if len(sizes) == items else [None] * items
        self._bars: list[_Bar] = []
        self._overall = None
        if items > 1:
            self._overall = progress.add_task(
                f"all (0/{items})", total=self._overall_total(), name=f"all (0/{items})"
            )

    def bar(self, description: str, *, total: int | None = None) -> _Bar:
        """A new bar; it is called as the API's ProgressCallback and told phases.
        ``total``: the checkpoint's size as listed, shown until the download knows it."""
        name = terminal_text(description)
        bar = _Bar(self, self._progress.add_task(name, total=total, name=name), name, total)
        self._bars.append(bar)
        self._update_overall()
        return bar

    def notice(self, line: str) -> None:
        """A line above the bars (they are redrawn below it)."""
        self._progress.console.print(terminal_text(line), markup=False, highlight=False)

    @property
    def width(self) -> int:
        return int(self._progress.console.width)

    def _overall_total(self) -> int | None:
        started = [bar.total for bar in self._bars]
        totals = started + self._listed[len(started) :]
        return sum(t for t in totals if t) if all(t is not None for t in totals) else None

    def _update_overall(self) -> None:
        if self._overall is None:
            return
        label = f"all ({sum(bar.finished for bar in self._bars)}/{self._items})"
        self._progress.update(
            self._overall,
            completed=sum(bar.done for bar in self._bars),
            total=self._overall_total(),
            description=label,
            name=label,
        )


class _Bar:
    def __init__(self, owner: TransferBars, task_id: Any, name: str, total: int | None) -> None:
        self._owner = owner
        self._task_id = task_id
        self._name = name
        # Bytes kept from an earlier run, said once new bytes flow (or the phase moves on):
        # a files-generation checkpoint tells one part file at a time as each one starts.
        self._reused: int | None = None
        self._reused_told = False
        self.done = 0
        self.total = total
        self.finished = False

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        self._owner._progress.update(self._task_id, completed=done, total=self.total)
        if self._reused is not None and done > self._reused:
            self._tell_resumed()
        self._owner._update_overall()

    def _label(self, note: str) -> None:
        self._tell_resumed()
        description = f"{self._name}{PHASE_SEPARATOR}{note}" if note else self._name
        self._owner._progress.update(self._task_id, description=description, note=note)

    def phase(self, name: str) -> None:
        self._label("" if name == "downloading" else name)

    def resumed(self, reused: int, total: int | None) -> None:
        """``reused`` bytes of this checkpoint are kept from an earlier download."""
        self._reused = max(self._reused or 0, reused)
        self.total = self.total or total

    def _tell_resumed(self) -> None:
        """``resumed NAME at X of Y``, once, above the bars, fitted to the width."""
        if self._reused is None or self._reused_told:
            return
        self._reused_told = True
        of = f" of {human_size(self.total)}" if self.total else ""
        rest = f" at {human_size(self._reused)}{of}"
        room = self._owner.width - 1 - len("resumed ") - len(rest)
        self._owner.notice(f"resumed {shorten_middle(self._name, max(8, room))}{rest}")

    def finish(self, note: str = "done") -> None:
        """The checkpoint is installed (or was already present)."""
        self.finished = True
        if self.total is None:
            self._owner._progress.update(self._task_id, total=1, completed=1)
        elif note != "failed":  # present: nothing fetched, but nothing left to fetch either
            self.done = self.total
            self._owner._progress.update(self._task_id, completed=self.total)
        self._label(note)
        self._owner._update_overall()
