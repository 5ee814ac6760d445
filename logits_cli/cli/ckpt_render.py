"""How ``ckpt`` commands show checkpoints: table columns, rows, JSON, footers, notices.

The terminal table names a checkpoint by RUN and ``KIND/NAME`` (what ``save`` prints and
every command accepts with ``--run``/``$LOGITS_RUN``), so rows fit one line; piped output
keeps its tab-separated columns with the full URI last (``cut -f7``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from logits_cli.cli.tables import (
    BOOL,
    PIPED_ONLY,
    SIZE,
    TABLE_ONLY,
    TIME,
    Column,
    human_size,
    relative_time,
    terminal_text,
)

if TYPE_CHECKING:
    from logits_cli import models

CHECKPOINT_COLUMNS = [
    Column("RUN", "run_id", show=TABLE_ONLY, heading=True),
    Column("CHECKPOINT", "checkpoint_id", show=TABLE_ONLY),
    Column("NAME", "name", show=PIPED_ONLY),
    Column("TYPE", "checkpoint_type", show=PIPED_ONLY),
    Column("SIZE", "size_bytes", SIZE, priority=5),
    Column("PUBLIC", "public", BOOL, priority=1),
    Column("CREATED", "time", TIME, priority=4),
    Column("EXPIRES", "expires_at", TIME, priority=2, none="never"),
    Column("PATH", "tinker_path", show=PIPED_ONLY),
]

INFO_FIELDS = [
    Column("path", "tinker_path"),
    Column("type", "checkpoint_type"),
    Column("size", "size_bytes", SIZE),
    Column("public", "public", BOOL),
    Column("created", "time", TIME),
    Column("expires", "expires_at", TIME, none="never"),
    Column("sha256", "sha256"),
    Column("base model", "base_model"),
    Column("lora rank", "lora_rank"),
]

# As ``ckpt ls`` on a terminal (a full URI would not fit 80 columns beside its flags);
# piped, the same PATH, PUBLIC and CHANGED columns as ever.
VISIBILITY_COLUMNS = [
    Column("RUN", "run_id", show=TABLE_ONLY, heading=True),
    Column("CHECKPOINT", "checkpoint_id", show=TABLE_ONLY),
    Column("PATH", "path", show=PIPED_ONLY),
    Column("PUBLIC", "public", BOOL, priority=2),
    Column("CHANGED", "changed", BOOL, priority=1),
]

# As ``ckpt ls`` on a terminal (RUN and KIND/NAME, gathered under ``RUN <id>`` when narrow);
# piped, the same PATH and EXPIRES columns as ever.
TTL_COLUMNS = [
    Column("RUN", "run_id", show=TABLE_ONLY, heading=True),
    Column("CHECKPOINT", "checkpoint_id", show=TABLE_ONLY),
    Column("PATH", "tinker_path", show=PIPED_ONLY),
    Column("EXPIRES", "expires_at", TIME, priority=1, none="never"),
]


class SortKey(StrEnum):
    time = "time"
    name = "name"
    size = "size"


def run_of(tinker_path: str) -> str:
    """The run segment of a listed path (listings are well-formed; no validation here)."""
    return tinker_path.partition("://")[2].split("/", 1)[0]


def checkpoint_row(checkpoint: models.Checkpoint) -> dict[str, Any]:
    return {
        "run_id": run_of(checkpoint.tinker_path),
        "checkpoint_id": checkpoint.checkpoint_id,
        "name": checkpoint.name,
        "checkpoint_type": checkpoint.checkpoint_type,
        "size_bytes": checkpoint.size_bytes,
        "public": checkpoint.public,
        "time": checkpoint.time,
        "expires_at": checkpoint.expires_at,
        "tinker_path": checkpoint.tinker_path,
    }


def checkpoint_json(checkpoint: models.Checkpoint) -> dict[str, Any]:
    return checkpoint.model_dump(mode="json")


def total_size(checkpoints: Sequence[models.Checkpoint]) -> int:
    return sum(c.size_bytes or 0 for c in checkpoints)


def count_line(checkpoints: Sequence[models.Checkpoint], *, runs: Sequence[str] = ()) -> str:
    """A table's footer: ``3 checkpoints in 2 runs, 1.2 GiB`` (one run is named)."""
    count = len(checkpoints)
    text = f"{count} checkpoint{'' if count == 1 else 's'}"
    if len(runs) == 1:
        text += f" in run {runs[0]}"
    elif runs:
        text += f" in {len(runs)} runs"
    return f"{text}, {human_size(total_size(checkpoints))}"


def saved_notice(checkpoint: models.Checkpoint) -> str:
    """``Saved weights/step_1000 (1.0 GiB)``."""
    size = f" ({human_size(checkpoint.size_bytes)})" if checkpoint.size_bytes is not None else ""
    return f"Saved {checkpoint.checkpoint_id}{size}"


def prompt_line(target: str, checkpoint: models.Checkpoint | None) -> str:
    """One line of the ``rm`` prompt: the path, its size and its age (the prompt is written
    to the terminal as is, so the path's control characters are escaped here)."""
    target = terminal_text(target)
    if checkpoint is None:
        return f"  {target}"
    size = human_size(checkpoint.size_bytes) if checkpoint.size_bytes is not None else "?"
    return f"  {target}  ({size}, created {relative_time(checkpoint.time)})"
