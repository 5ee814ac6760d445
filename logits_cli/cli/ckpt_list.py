"""``logits ckpt ls``: the checkpoints of some runs, of all one's runs, or the public ones of
every user (``api.public_listing``), filtered and sorted here. Registered on the ``ckpt``
app by ``ckpt.py``."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli.cli.ckpt_render import (
    CHECKPOINT_COLUMNS,
    SortKey,
    checkpoint_json,
    checkpoint_row,
    count_line,
    run_of,
)
from logits_cli.cli.completion_cache import complete_run
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import (
    BeforeOpt,
    JsonOpt,
    LimitOpt,
    QuietOpt,
    SinceOpt,
    TypeOpt,
)
from logits_cli.cli.output import Output
from logits_cli.cli.tables import PIPED_ONLY, TABLE_ONLY, Column
from logits_cli.cli.timeparse import optional_point_in_time, optional_seconds
from logits_cli.config import Settings
from logits_cli.uri import validate_run_id

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient

# Described in the docstring, as every positional argument of ours (hidden from the list).
RunsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="RUN", autocompletion=complete_run, show_default=False, hidden=True),
]


@dataclass
class Found:
    """What ``ls`` fetched: ``complete`` when it is the whole listing of the runs asked for
    (or of all one's runs); ``owners`` (run → user) for everyone's public checkpoints;
    ``own_runs`` for ``--mine`` among RUN..."""

    checkpoints: "list[models.Checkpoint]"
    complete: bool = True
    owners: dict[str, str] | None = None
    own_runs: set[str] | None = None


def with_owner_column(columns: list[Column]) -> list[Column]:
    """OWNER after RUN on a terminal (piped rows keep their documented columns); PUBLIC,
    always "yes" here, only piped."""
    shown: list[Column] = []
    for column in columns:
        if column.key == "public":
            column = dataclasses.replace(column, show=PIPED_ONLY)
        shown.append(column)
        if column.key == "run_id":
            shown.append(OWNER_COLUMN)
    if OWNER_COLUMN not in shown:
        shown.insert(0, OWNER_COLUMN)
    return shown


OWNER_COLUMN = Column("OWNER", "owner", priority=3, show=TABLE_ONLY)


def remember_listing(
    settings: Settings,
    checkpoints: "Sequence[models.Checkpoint]",
    *,
    complete_runs: Sequence[str] | None = None,
    all_runs: bool = False,
) -> None:
    """Feed the completion cache. ``complete_runs``/``all_runs``: ``checkpoints`` is the
    whole listing of those runs (or of every run), so cached paths of them it no longer
    shows were deleted or expired and are dropped."""
    from logits_cli.cli.completion_cache import remember

    runs = dict.fromkeys(run_of(c.tinker_path) for c in checkpoints)
    remember(
        settings.home,
        runs=runs,
        paths=[c.tinker_path for c in checkpoints],
        replace_runs=complete_runs,
        replace_all=all_runs,
    )


@handle_errors
def list_checkpoints(
    ctx: typer.Context,
    runs: RunsArgument = None,
    checkpoint_type: TypeOpt = None,
    since: SinceOpt = None,
    before: BeforeOpt = None,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="Only public (of every user, without RUN), or only private, checkpoints.",
            show_default=False,
        ),
    ] = None,
    expiring_within: Annotated[
        str | None,
        typer.Option(
            "--expiring-within",
            help="Only those expiring within this long (48h).",
            metavar="DURATION",
        ),
    ] = None,
    sort: Annotated[
        SortKey,
        typer.Option(
            "--sort",
            help="Order: time (newest first), name, or size (largest first).",
            metavar="KEY",
        ),
    ] = SortKey.time,
    mine: Annotated[
        bool,
        typer.Option("--mine", help="Only checkpoints of your own runs (with --public or RUN)."),
    ] = False,
    limit: LimitOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List checkpoints of some runs (RUN...), or of all your runs.

    --public without RUN lists the public checkpoints of every user, as the server's list of
    accessible runs shows them, with their OWNER (--mine: only yours).

    On a terminal: one line per checkpoint (RUN and KIND/NAME, relative times), then the
    count and total size. Piped: tab-separated NAME, TYPE, SIZE (bytes), PUBLIC, CREATED,
    EXPIRES (ISO-8601 UTC) and the full PATH; -q prints full paths only.

    Examples:

    \b
      logits ckpt ls
      logits ckpt ls "$LOGITS_RUN" --type sampler --since 7d
      logits ckpt ls --expiring-within 48h --sort size
      logits ckpt ls -q | head -1            # the newest checkpoint's full path
      logits ckpt ls --public                # everyone's, with the OWNER
    """
    out = Output(json_output=json_output, quiet=quiet)
    run_ids = list(dict.fromkeys(validate_run_id(r) for r in runs or []))
    now = datetime.now(UTC)
    since_at = optional_point_in_time(since, now=now)
    before_at = optional_point_in_time(before, now=now)
    expiry_seconds = optional_seconds(expiring_within)
    expiry_horizon = now + timedelta(seconds=expiry_seconds) if expiry_seconds else None
    settings = settings_for(ctx)

    with out.status("Listing checkpoints…") as update:

        async def work(client: "LogitsClient") -> "Found":
            from logits_cli.api.public_listing import own_run_ids, public_checkpoints

            if run_ids:
                import asyncio

                per_run = await asyncio.gather(*(client.list_checkpoints(r) for r in run_ids))
                own = set(await own_run_ids(client)) if mine else None
                return Found([c for listing in per_run for c in listing], own_runs=own)
            if public:
                listing = await public_checkpoints(
                    client,
                    others=not mine,
                    on_progress=lambda n: update(f"Listing public checkpoints… {n}"),
                )
                return Found(listing.checkpoints, complete=False, owners=listing.owners)
            found: list[models.Checkpoint] = []
            async for checkpoint in client.iter_all_checkpoints():
                found.append(checkpoint)
                if len(found) % 1000 == 0:
                    update(f"Listing checkpoints… {len(found)}")
            return Found(found)

        found = call_api(ctx, settings, work)
    checkpoints, owners, own = found.checkpoints, found.owners, found.own_runs

    def wanted(c: "models.Checkpoint") -> bool:
        return (
            (checkpoint_type is None or c.checkpoint_type == checkpoint_type.value)
            and (since_at is None or c.time >= since_at)
            and (before_at is None or c.time < before_at)
            and (public is None or c.public == public)
            and (own is None or run_of(c.tinker_path) in own)
            and (
                expiry_horizon is None
                or (c.expires_at is not None and c.expires_at <= expiry_horizon)
            )
        )

    selected = [c for c in checkpoints if wanted(c)]
    if sort is SortKey.name:
        selected.sort(key=lambda c: (c.name, c.tinker_path))
    elif sort is SortKey.size:
        selected.sort(key=lambda c: (-(c.size_bytes or 0), c.tinker_path))
    else:
        selected.sort(key=lambda c: c.time, reverse=True)
    if limit is not None:
        selected = selected[:limit]
    # Filters apply here, after the fetch: ``checkpoints`` is the runs' whole listing
    # (not so for everyone's public ones, which leave the cached paths of one's own alone).
    complete = found.complete
    remember_listing(
        settings, checkpoints, complete_runs=run_ids, all_runs=complete and not run_ids
    )

    shown_runs = list(dict.fromkeys(run_of(c.tinker_path) for c in selected))
    # One run: its id goes in the footer, and the row keeps room for sizes and ages.
    columns = [c for c in CHECKPOINT_COLUMNS if len(shown_runs) != 1 or c.key != "run_id"]
    records = [checkpoint_json(c) for c in selected]
    rows = [checkpoint_row(c) for c in selected]
    if owners is not None:
        columns = with_owner_column(columns)
        for record, row in zip(records, rows, strict=True):
            record["owner"] = row["owner"] = owners.get(row["run_id"])
    out.emit_listing(
        records,
        (c.tinker_path for c in selected),
        columns,
        rows,
        empty="No checkpoints.",
        footer=count_line(selected, runs=shown_runs),
        group_by="run_id",
    )
