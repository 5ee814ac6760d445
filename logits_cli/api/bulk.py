"""Bulk operations over many checkpoints: retention selection and bounded concurrency.

``select_checkpoints`` decides what a retention command (``rm --run``, ``ttl --run``) acts on;
``apply_concurrently`` runs one API call per item with a concurrency bound and collects the
per-item errors, so a bulk command can report what failed and exit 8 (docs/ARCHITECTURE.md §4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from logits_cli import models
from logits_cli.errors import LogitsError, UsageError
from logits_cli.uri import KINDS, TYPE_TO_KIND, CheckpointRef

T = TypeVar("T")


def normalize_kind(kind: str | None) -> str | None:
    """Accept a kind (``weights``, ``sampler_weights``) or a ``checkpoint_type``
    (``training``, ``sampler``), as ``--type`` does; return the kind."""
    if kind is None:
        return None
    if kind in KINDS:
        return kind
    if kind in TYPE_TO_KIND:
        return TYPE_TO_KIND[kind]
    raise UsageError(
        f"unknown checkpoint type {kind!r}; expected weights, sampler_weights, training or sampler"
    )


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is read as UTC, like every datetime on the wire (docs/protocol.md §4.3)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def run_id_of(checkpoint: models.Checkpoint) -> str:
    return CheckpointRef.parse(checkpoint.tinker_path, any_kind=True).run_id


def newest_per_group(
    checkpoints: Sequence[models.Checkpoint], count: int
) -> list[models.Checkpoint]:
    """The newest ``count`` checkpoints of each (run, kind), in input order."""
    return [checkpoints[i] for i in sorted(_newest_positions(checkpoints, count))]


def _newest_positions(checkpoints: Sequence[models.Checkpoint], count: int) -> set[int]:
    groups: dict[tuple[str, str], list[int]] = {}
    for position, checkpoint in enumerate(checkpoints):
        groups.setdefault((run_id_of(checkpoint), checkpoint.kind), []).append(position)
    chosen: set[int] = set()
    for positions in groups.values():
        # Newest first; equal times ordered by checkpoint id, as the server lists them.
        by_id = sorted(positions, key=lambda i: checkpoints[i].checkpoint_id)
        newest = sorted(by_id, key=lambda i: checkpoints[i].time, reverse=True)
        chosen.update(newest[:count])
    return chosen


def select_checkpoints(
    checkpoints: Sequence[models.Checkpoint],
    *,
    kind: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
    keep_last: int | None = None,
    keep_names: frozenset[str] = frozenset(),
) -> tuple[list[models.Checkpoint], list[models.Checkpoint]]:
    """Split ``checkpoints`` into (selected, kept); together they are the input, each in
    input order.

    Selected: of kind ``kind`` (a kind or a checkpoint type; None = both), created strictly
    before ``before`` and strictly after ``after``, and not protected. Protected: the newest
    ``keep_last`` checkpoints of each run and kind (counted among all checkpoints of that
    kind, whatever their time, so "--before 30d --keep-last 3" never empties a quiet run),
    and any checkpoint whose name or checkpoint id is in ``keep_names``.
    """
    if keep_last is not None and keep_last < 0:
        raise UsageError(f"keep_last must be 0 or more, not {keep_last}", option="keep_last")
    kind = normalize_kind(kind)
    before = as_utc(before) if before is not None else None
    after = as_utc(after) if after is not None else None

    of_kind = [i for i, c in enumerate(checkpoints) if kind is None or c.kind == kind]
    protected = {
        i
        for i in of_kind
        if checkpoints[i].name in keep_names or checkpoints[i].checkpoint_id in keep_names
    }
    if keep_last:
        newest = _newest_positions([checkpoints[i] for i in of_kind], keep_last)
        protected.update(of_kind[j] for j in newest)

    selected: list[models.Checkpoint] = []
    kept: list[models.Checkpoint] = []
    candidates = set(of_kind) - protected
    for position, checkpoint in enumerate(checkpoints):
        chosen = (
            position in candidates
            and (before is None or checkpoint.time < before)
            and (after is None or checkpoint.time > after)
        )
        (selected if chosen else kept).append(checkpoint)
    return selected, kept


async def apply_concurrently(
    items: Iterable[T],
    operation: Callable[[T], Awaitable[object]],
    *,
    jobs: int = 8,
) -> list[tuple[T, LogitsError | None]]:
    """Run ``await operation(item)`` for every item, at most ``jobs`` at a time, starting
    them in order. Returns (item, error or None) in the order of ``items``. A LogitsError
    belongs to its item; any other exception is a bug: it cancels the rest and propagates.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be 1 or more, not {jobs}", option="jobs")
    pending = list(items)
    results: list[LogitsError | None] = [None] * len(pending)
    next_index = iter(range(len(pending)))

    async def worker() -> None:
        # The shared index iterator hands each item to exactly one worker, in order; a
        # pool of ``jobs`` workers keeps memory flat however many items there are.
        for index in next_index:
            try:
                await operation(pending[index])
            except LogitsError as error:
                results[index] = error

    workers = [asyncio.ensure_future(worker()) for _ in range(min(jobs, len(pending)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return list(zip(pending, results, strict=True))
