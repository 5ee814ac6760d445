"""``logits ckpt …``: save, load, list, inspect; URLs and publishing (``ckpt_sharing``),
expire and delete (``ckpt_retention``), download and verify (``ckpt_transfer``), sync
(``ckpt_sync``).

Each command parses its input, makes its calls inside one ``call_api`` session, and renders
the result. Rendering lives in ``ckpt_render``, path parsing and bulk selection in
``ckpt_select``. Bulk work (publish, rm, ttl over several checkpoints) goes through
``api.bulk.apply_concurrently``; any failed item makes the command exit 8.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli import ckpt_retention, ckpt_sharing, ckpt_sync, ckpt_transfer
from logits_cli.cli.ckpt_render import (
    CHECKPOINT_COLUMNS,
    INFO_FIELDS,
    SortKey,
    checkpoint_json,
    checkpoint_row,
    count_line,
    run_of,
    saved_notice,
)
from logits_cli.cli.ckpt_select import (
    BulkReport,
    extended_ttl,
    in_server_scheme,
    kind_of,
    names_a_bare_path,
    parse_path,
    parse_refs,
)
from logits_cli.cli.context import call_api, require_run, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import (
    BeforeOpt,
    JsonOpt,
    NameArgument,
    NamesRunOpt,
    PathArgument,
    QuietOpt,
    RunOpt,
    RunsArgument,
    SinceOpt,
    TimeoutOpt,
    TypeOpt,
)
from logits_cli.cli.output import Output
from logits_cli.cli.timeparse import optional_point_in_time, optional_seconds, parse_ttl
from logits_cli.cli.wording import with_relative_times
from logits_cli.config import Settings
from logits_cli.uri import CheckpointRef, validate_name, validate_run_id

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient


__all__ = ["BulkReport", "extended_ttl", "kind_of", "parse_refs"]

app = CommandGroup(
    help="Save, list, download, publish, expire and delete checkpoints.", no_args_is_help=True
)


def _remember(
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


# -- save / load ----------------------------------------------------------------------------


@app.command()
@handle_errors
def save(
    ctx: typer.Context,
    name: NameArgument,
    run: RunOpt = None,
    sampler: Annotated[
        bool, typer.Option("--sampler", help="Weights only (sampler_weights), no optimizer state.")
    ] = False,
    ttl: Annotated[
        str | None,
        typer.Option(
            "--ttl", help="Expire after this long (7d, 12h) or 'never'.", metavar="DURATION"
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a checkpoint of that name.")
    ] = False,
    timeout: TimeoutOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Snapshot the run's state as a new checkpoint; prints its path.

    NAME: 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter, digit or _.

    Examples:

    \b
      export LOGITS_RUN=$(logits runs create --base-model Qwen/Qwen3-8B)
      logits ckpt save step_1000
      logits ckpt save step_1000_s --sampler --ttl 7d
      P=$(logits ckpt save step_2000 --overwrite)
    """
    out = Output(json_output=json_output, quiet=quiet)
    validate_name(name)
    ttl_seconds = parse_ttl(ttl) if ttl is not None else None
    wait_limit = optional_seconds(timeout)
    settings = settings_for(ctx, run=run)
    run_id = require_run(settings)

    with out.status(f"Saving {name}…") as update:

        async def work(client: "LogitsClient") -> "models.Checkpoint":
            return await client.save(
                run_id,
                name,
                sampler=sampler,
                ttl_seconds=ttl_seconds,
                overwrite=overwrite,
                on_pending=lambda waited: update(f"Saving {name}… {waited:.0f} s"),
                timeout=wait_limit,
            )

        try:
            checkpoint = call_api(ctx, settings, work)
        except errors.ConflictError as error:
            error.hint = error.hint or "pass --overwrite to replace it"
            raise
    _remember(settings, [checkpoint])
    if out.json:
        out.emit_json(checkpoint_json(checkpoint))
        return
    out.emit_lines([checkpoint.tinker_path])
    out.notice(saved_notice(checkpoint))


@app.command()
@handle_errors
def load(
    ctx: typer.Context,
    path: PathArgument,
    run: RunOpt = None,
    with_optimizer: Annotated[
        bool, typer.Option("--with-optimizer", help="Restore the optimizer state too.")
    ] = False,
    timeout: TimeoutOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load a checkpoint (yours or a public one) into the run.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt load step_1000                 # a name in $LOGITS_RUN
      logits ckpt load logits://RUN/weights/@latest --with-optimizer
      logits ckpt load tinker://OTHER/weights/base --run MYRUN
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx, run=run)
    ref = parse_path(path, settings.run)
    wait_limit = optional_seconds(timeout)
    run_id = require_run(settings)

    with out.status(f"Loading {ref.name}…") as update:

        async def work(client: "LogitsClient") -> str:
            (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
            resolved = await client.resolve(named)
            return await client.load(
                run_id,
                resolved,
                with_optimizer=with_optimizer,
                on_pending=lambda waited: update(f"Loading {resolved.name}… {waited:.0f} s"),
                timeout=wait_limit,
            )

        loaded = call_api(ctx, settings, work)
    if out.json:
        out.emit_json({"run": run_id, "path": loaded, "with_optimizer": with_optimizer})
        return
    out.emit_lines([loaded])
    out.notice(f"Loaded into run {run_id}" + (" with optimizer state" if with_optimizer else ""))


# -- ls / info / url ------------------------------------------------------------------------


@app.command("ls")
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
            help="Only public, or only private, checkpoints.",
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
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, metavar="N", help="Show at most N.")
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List checkpoints of some runs (RUN...), or of all your runs.

    On a terminal: one line per checkpoint (RUN and KIND/NAME, relative times), then the
    count and total size. Piped: tab-separated NAME, TYPE, SIZE (bytes), PUBLIC, CREATED,
    EXPIRES (ISO-8601 UTC) and the full PATH; -q prints full paths only.

    Examples:

    \b
      logits ckpt ls
      logits ckpt ls "$LOGITS_RUN" --type sampler --since 7d
      logits ckpt ls --expiring-within 48h --sort size
      logits ckpt ls -q | head -1            # the newest checkpoint's full path
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

        async def work(client: "LogitsClient") -> "list[models.Checkpoint]":
            if run_ids:
                import asyncio

                per_run = await asyncio.gather(*(client.list_checkpoints(r) for r in run_ids))
                return [c for listing in per_run for c in listing]
            found: list[models.Checkpoint] = []
            async for checkpoint in client.iter_all_checkpoints():
                found.append(checkpoint)
                if len(found) % 1000 == 0:
                    update(f"Listing checkpoints… {len(found)}")
            return found

        checkpoints = call_api(ctx, settings, work)

    def wanted(c: "models.Checkpoint") -> bool:
        return (
            (checkpoint_type is None or c.checkpoint_type == checkpoint_type.value)
            and (since_at is None or c.time >= since_at)
            and (before_at is None or c.time < before_at)
            and (public is None or c.public == public)
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
    # Filters apply here, after the fetch: ``checkpoints`` is the runs' whole listing.
    _remember(settings, checkpoints, complete_runs=run_ids, all_runs=not run_ids)

    shown_runs = list(dict.fromkeys(run_of(c.tinker_path) for c in selected))
    # One run: its id goes in the footer, and the row keeps room for sizes and ages.
    columns = [c for c in CHECKPOINT_COLUMNS if len(shown_runs) != 1 or c.key != "run_id"]
    out.emit_listing(
        [checkpoint_json(c) for c in selected],
        (c.tinker_path for c in selected),
        columns,
        [checkpoint_row(c) for c in selected],
        empty="No checkpoints.",
        footer=count_line(selected, runs=shown_runs),
        group_by="run_id",
    )


@app.command()
@handle_errors
def info(
    ctx: typer.Context,
    path: PathArgument,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show one checkpoint, with its base model and LoRA rank.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt info logits://RUN/weights/step_1000
      logits ckpt info sampler_weights/@latest     # in $LOGITS_RUN
      logits ckpt info step_1000 --run RUN --json | jq .size_bytes
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx, run=run)
    ref = parse_path(path, settings.run)

    async def work(
        client: "LogitsClient",
    ) -> "tuple[models.Checkpoint, models.WeightsInfoResponse]":
        (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
        checkpoint = await client.get_checkpoint(named)
        weights = await client.weights_info(CheckpointRef.parse(checkpoint.tinker_path))
        return checkpoint, weights

    checkpoint, weights = call_api(ctx, settings, work)
    record = {
        **checkpoint_json(checkpoint),
        "base_model": weights.base_model,
        "is_lora": weights.is_lora,
        "lora_rank": weights.lora_rank,
    }
    # The human view shows the raw values (times as datetimes), the JSON's other fields.
    fields, shown = with_relative_times(
        INFO_FIELDS, {**record, **checkpoint_row(checkpoint)}, terminal=out.stdout_is_terminal
    )
    out.emit_object(record, checkpoint.tinker_path, fields, shown)


# -- url / publish / unpublish (ckpt_sharing) ---------------------------------------------

app.command()(ckpt_sharing.url)
app.command()(ckpt_sharing.publish)
app.command()(ckpt_sharing.unpublish)


# -- rm / ttl: explicit paths, or a run with retention filters (ckpt_retention) -------------

app.command()(ckpt_retention.rm)
app.command()(ckpt_retention.ttl)


# -- download / sync / verify (ckpt_transfer, ckpt_sync) ---------------------------------

app.command()(ckpt_transfer.download)
app.command()(ckpt_sync.sync)
app.command()(ckpt_transfer.verify)
