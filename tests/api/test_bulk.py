"""Retention selection and bounded concurrency (logits_cli/api/bulk.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logits_cli import models
from logits_cli.api.bulk import apply_concurrently, newest_per_group, select_checkpoints
from logits_cli.errors import ConflictError, NotFoundError, UsageError
from logits_cli.uri import KIND_TO_TYPE

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = ("run-a:train:0", "run-b:train:1")


def checkpoint(run: str, kind: str, name: str, minutes: int) -> models.Checkpoint:
    return models.Checkpoint(
        checkpoint_id=f"{kind}/{name}",
        checkpoint_type=KIND_TO_TYPE[kind],
        time=T0 + timedelta(minutes=minutes),
        tinker_path=f"logits://{run}/{kind}/{name}",
    )


def paths(checkpoints: list[models.Checkpoint]) -> list[str]:
    return [c.tinker_path for c in checkpoints]


@st.composite
def checkpoint_lists(draw: st.DrawFn) -> list[models.Checkpoint]:
    # Few runs, names and minutes, so groups, ties and shared names are common.
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(RUNS),
                st.sampled_from(("weights", "sampler_weights")),
                st.sampled_from([f"step-{i}" for i in range(8)]),
            ),
            unique=True,
            max_size=24,
        )
    )
    return [checkpoint(run, kind, name, draw(st.integers(0, 5))) for run, kind, name in keys]


def rank_in_group(target: models.Checkpoint, pool: list[models.Checkpoint]) -> int:
    """How many checkpoints of the same run and kind come before ``target``, newest first."""
    run = target.tinker_path.split("/")[2]
    return sum(
        1
        for other in pool
        if other.tinker_path.split("/")[2] == run
        and other.kind == target.kind
        and (other.time, target.checkpoint_id) > (target.time, other.checkpoint_id)
    )


@settings(max_examples=150, deadline=None)
@given(
    checkpoints=checkpoint_lists(),
    kind=st.sampled_from([None, "weights", "sampler_weights", "training", "sampler"]),
    before=st.one_of(st.none(), st.integers(0, 6)),
    after=st.one_of(st.none(), st.integers(-1, 5)),
    keep_last=st.one_of(st.none(), st.integers(0, 4)),
    keep_names=st.frozensets(
        st.sampled_from(["step-0", "step-3", "weights/step-1", "sampler_weights/step-2"]),
        max_size=3,
    ),
)
def test_select_checkpoints_matches_its_definition(
    checkpoints, kind, before, after, keep_last, keep_names
):
    before_at = T0 + timedelta(minutes=before) if before is not None else None
    after_at = T0 + timedelta(minutes=after) if after is not None else None
    selected, kept = select_checkpoints(
        checkpoints,
        kind=kind,
        before=before_at,
        after=after_at,
        keep_last=keep_last,
        keep_names=keep_names,
    )
    wanted_kind = {"training": "weights", "sampler": "sampler_weights"}.get(kind, kind)
    of_kind = [c for c in checkpoints if wanted_kind is None or c.kind == wanted_kind]

    def expected(c: models.Checkpoint) -> bool:
        return (
            c in of_kind
            and (before_at is None or c.time < before_at)
            and (after_at is None or c.time > after_at)
            and c.name not in keep_names
            and c.checkpoint_id not in keep_names
            and (not keep_last or rank_in_group(c, of_kind) >= keep_last)
        )

    assert paths(selected) == paths([c for c in checkpoints if expected(c)])
    assert paths(kept) == paths([c for c in checkpoints if not expected(c)])
    for c in selected:
        assert c.name not in keep_names and c.checkpoint_id not in keep_names
        if keep_last:
            assert rank_in_group(c, of_kind) >= keep_last


def test_keep_last_counts_every_checkpoint_of_the_kind_not_only_old_ones():
    # A quiet run: everything is older than the cut-off, yet the newest two stay.
    old = [checkpoint(RUNS[0], "weights", f"step-{i}", i) for i in range(5)]
    selected, kept = select_checkpoints(old, before=T0 + timedelta(days=30), keep_last=2)
    assert paths(selected) == paths(old[:3])
    assert paths(kept) == paths(old[3:])


def test_keep_last_is_per_run_and_kind():
    listing = [
        checkpoint(RUNS[0], "weights", "a", 1),
        checkpoint(RUNS[0], "weights", "b", 2),
        checkpoint(RUNS[0], "sampler_weights", "c", 0),
        checkpoint(RUNS[1], "weights", "d", 0),
    ]
    selected, _ = select_checkpoints(listing, keep_last=1)
    assert paths(selected) == [listing[0].tinker_path]


def test_keep_names_matches_names_and_checkpoint_ids():
    listing = [
        checkpoint(RUNS[0], "weights", "final", 1),
        checkpoint(RUNS[0], "sampler_weights", "final", 1),
        checkpoint(RUNS[0], "weights", "best", 2),
        checkpoint(RUNS[0], "sampler_weights", "best", 2),
    ]
    selected, _ = select_checkpoints(listing, keep_names=frozenset({"final", "weights/best"}))
    assert paths(selected) == [listing[3].tinker_path]


def test_naive_bounds_are_utc_and_bounds_are_strict():
    listing = [checkpoint(RUNS[0], "weights", f"s{i}", i) for i in range(3)]
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None)
    assert paths(select_checkpoints(listing, before=naive)[0]) == paths(listing[:1])
    assert paths(select_checkpoints(listing, after=naive)[0]) == paths(listing[2:])


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="keep_last"):
        select_checkpoints([], keep_last=-1)
    with pytest.raises(UsageError, match="unknown checkpoint type"):
        select_checkpoints([], kind="optimizer")


def test_newest_per_group_keeps_input_order_and_breaks_ties_by_id():
    listing = [
        checkpoint(RUNS[0], "weights", "b", 1),
        checkpoint(RUNS[0], "weights", "a", 1),
        checkpoint(RUNS[0], "weights", "c", 0),
        checkpoint(RUNS[1], "weights", "z", 0),
    ]
    assert paths(newest_per_group(listing, 1)) == paths([listing[1], listing[3]])


# -- apply_concurrently --------------------------------------------------------------------


def test_apply_concurrently_never_exceeds_jobs_and_starts_in_order():
    active = 0
    peak = 0
    started: list[int] = []

    async def operation(item: int) -> None:
        nonlocal active, peak
        started.append(item)
        active += 1
        peak = max(peak, active)
        for _ in range(item % 4 + 1):
            await asyncio.sleep(0)
        active -= 1

    results = asyncio.run(apply_concurrently(range(40), operation, jobs=3))
    assert peak == 3
    assert started == list(range(40))
    assert results == [(i, None) for i in range(40)]


def test_apply_concurrently_collects_logits_errors_per_item_in_order():
    async def operation(item: str) -> None:
        await asyncio.sleep(0)
        if item.startswith("missing"):
            raise NotFoundError(f"{item} not found")
        if item == "taken":
            raise ConflictError("taken exists")

    items = ["ok-1", "missing-1", "taken", "ok-2", "missing-2"]
    results = asyncio.run(apply_concurrently(items, operation, jobs=2))
    assert [item for item, _ in results] == items
    assert [type(error).__name__ if error else None for _, error in results] == [
        None,
        "NotFoundError",
        "ConflictError",
        None,
        "NotFoundError",
    ]
    assert str(results[1][1]) == "missing-1 not found"


def test_apply_concurrently_propagates_bugs_and_cancels_the_rest():
    cancelled: list[int] = []
    never = asyncio.Event()

    async def operation(item: int) -> None:
        if item == 1:
            raise RuntimeError("bug")
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    with pytest.raises(RuntimeError, match="bug"):
        asyncio.run(apply_concurrently([0, 1, 2, 3], operation, jobs=3))
    assert sorted(cancelled) == [0, 2]


def test_apply_concurrently_edges():
    async def operation(item: int) -> None:
        return None

    assert asyncio.run(apply_concurrently([], operation, jobs=4)) == []
    with pytest.raises(UsageError, match="jobs"):
        asyncio.run(apply_concurrently([1], operation, jobs=0))
