"""``logits ckpt rm`` and ``logits ckpt ttl``: act on explicit paths, or on a run's
checkpoints chosen by retention filters (``ckpt_select``). Registered on the ``ckpt`` app
by ``ckpt.py``, in the order the help lists them."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_render import (
    TTL_COLUMNS,
    checkpoint_json,
    checkpoint_row,
    prompt_line,
    total_size,
)
from logits_cli.cli.ckpt_select import (
    BulkReport,
    FilterRunOpt,
    KeepLastOpt,
    KeepNameOpt,
    extended_ttl,
    selection_from_options,
)
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import (
    AfterOpt,
    BeforeOpt,
    DryRunOpt,
    JsonOpt,
    OptionalPathsArgument,
    QuietOpt,
    TypeOpt,
    YesOpt,
)
from logits_cli.cli.output import Output, interactive
from logits_cli.cli.tables import human_size
from logits_cli.cli.timeparse import parse_duration, parse_ttl
from logits_cli.cli.wording import counted
from logits_cli.config import Settings
from logits_cli.uri import CheckpointRef

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient


@handle_errors
def rm(
    ctx: typer.Context,
    paths: OptionalPathsArgument = None,
    run: FilterRunOpt = None,
    checkpoint_type: TypeOpt = None,
    before: BeforeOpt = None,
    after: AfterOpt = None,
    keep_last: KeepLastOpt = None,
    keep_name: KeepNameOpt = None,
    max_delete: Annotated[
        int | None,
        typer.Option("--max-delete", min=0, metavar="N", help="Refuse to delete more than N."),
    ] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete checkpoints, by path or by filters over a run (--run).

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    On a terminal it lists what it will delete (sizes, ages) and asks; answering no prints
    "Nothing deleted." and exits 1, as gh does on a cancelled prompt. Without a terminal it
    needs --yes.

    Examples:

    \b
      logits ckpt rm logits://RUN/weights/step_1000
      logits ckpt rm step_1000 --run RUN
      logits ckpt rm --run RUN --before 30d --keep-last 3 --dry-run
      logits ckpt rm --run RUN --type sampler --yes --max-delete 50
    """
    from logits_cli.api.bulk import apply_concurrently

    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx, run=run)
    selection = selection_from_options(
        paths,
        run,
        checkpoint_type,
        before,
        after,
        keep_last,
        keep_name,
        default_run=settings.run,
    )
    if not (yes or dry_run or interactive()):
        raise errors.ConfirmationRequired(
            "refusing to delete without --yes when not on a terminal", hint="add --yes to confirm"
        )
    will_ask = not (yes or dry_run)

    async def plan(
        client: "LogitsClient",
    ) -> "tuple[list[CheckpointRef], list[str], dict[str, Any]]":
        found = await selection.targets(client, with_details=will_ask)
        if max_delete is not None and len(found.refs) > max_delete:
            raise errors.UsageError(
                f"{counted(len(found.refs), 'checkpoint')} matched, more than --max-delete "
                f"{max_delete}; nothing deleted"
            )
        return found.refs, [c.tinker_path for c in found.kept], found.details

    async def delete_all(client: "LogitsClient") -> list[tuple[str, errors.LogitsError | None]]:
        async def delete(target: CheckpointRef) -> None:
            await client.delete(target)

        return [(str(t), e) for t, e in await apply_concurrently(refs, delete)]

    refs, kept, details = call_api(ctx, settings, plan)
    targets = [str(t) for t in refs]
    outcome: list[tuple[str, errors.LogitsError | None]] = []
    if refs and not dry_run:
        if will_ask:
            # Asked between two API sessions, not inside one: a blocking prompt inside the
            # event loop would leave Ctrl-C to asyncio, which cannot interrupt it.
            _confirm_delete(targets, details)
        outcome = call_api(ctx, settings, delete_all)
    report = BulkReport(len(targets), "deleted")
    report.add_all(outcome)
    failed = {label for label, _ in report.failures}
    deleted = [t for t in targets if t not in failed] if not dry_run else []
    _forget(settings, deleted)
    listed = targets if dry_run else deleted
    if out.json:
        out.emit_json(
            {
                "dry_run": dry_run,
                "deleted": deleted,
                "selected": targets,
                "kept": kept,
                "failed": [
                    {"path": label, "error": error.message} for label, error in report.failures
                ],
            }
        )
    else:
        out.emit_lines(listed)
        verb = "Would delete" if dry_run else "Deleted"
        kept_text = f", kept {len(kept)}" if selection.run else ""
        out.notice(f"{verb} {counted(len(listed), 'checkpoint')}{kept_text}")
    report.finish()


def _confirm_delete(targets: list[str], details: "dict[str, models.Checkpoint]") -> None:
    known = [details[t] for t in targets if t in details]
    size = f", {human_size(total_size(known))}" if known else ""
    lines = "\n".join(prompt_line(t, details.get(t)) for t in targets)
    about = f"About to delete {counted(len(targets), 'checkpoint')}{size}:\n{lines}"
    typer.echo(about, err=True)
    if not typer.confirm("Delete them?", default=False, err=True):
        typer.echo("Nothing deleted.", err=True)
        raise typer.Exit(errors.EXIT_ERROR)


def _forget(settings: Settings, paths: list[str]) -> None:
    from logits_cli.cli.completion_cache import forget

    forget(settings.home, paths)


@handle_errors
def ttl(
    ctx: typer.Context,
    paths: OptionalPathsArgument = None,
    set_to: Annotated[
        str | None,
        typer.Option(
            "--set", help="Expire this long from now (30d) or 'never'.", metavar="DURATION"
        ),
    ] = None,
    extend: Annotated[
        str | None,
        typer.Option(
            "--extend",
            help="Push the current expiry back by this long (from now if it never expired).",
            metavar="DURATION",
        ),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Never expire.")] = False,
    run: FilterRunOpt = None,
    checkpoint_type: TypeOpt = None,
    before: BeforeOpt = None,
    after: AfterOpt = None,
    keep_last: KeepLastOpt = None,
    keep_name: KeepNameOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Set, extend or remove checkpoint expiry.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    In --set, --extend, --before and --after, write minutes as min and months as mo:
    a bare m is refused as ambiguous.

    Examples:

    \b
      logits ckpt ttl logits://RUN/weights/step_1000 --set 30d
      logits ckpt ttl step_1000 --extend 7d          # a name in $LOGITS_RUN
      logits ckpt ttl --run RUN --type sampler --keep-last 2 --set 3d
      logits ckpt ttl logits://RUN/weights/final --remove
    """
    from logits_cli.api.bulk import apply_concurrently

    out = Output(json_output=json_output, quiet=quiet)
    if sum((set_to is not None, extend is not None, remove)) != 1:
        raise errors.UsageError("give exactly one of --set, --extend or --remove")
    set_seconds = parse_ttl(set_to) if set_to is not None else None
    extend_seconds = parse_duration(extend, minutes_as_m=False) if extend is not None else None
    settings = settings_for(ctx, run=run)
    selection = selection_from_options(
        paths,
        run,
        checkpoint_type,
        before,
        after,
        keep_last,
        keep_name,
        default_run=settings.run,
    )
    results: dict[str, models.Checkpoint] = {}

    async def work(
        client: "LogitsClient",
    ) -> tuple[list[str], list[tuple[str, errors.LogitsError | None]]]:
        targets = (await selection.targets(client)).refs

        async def apply(target: CheckpointRef) -> None:
            ttl_seconds = set_seconds
            if extend_seconds is not None:
                current = await client.get_checkpoint(target)
                ttl_seconds = extended_ttl(current.expires_at, extend_seconds, datetime.now(UTC))
            await client.set_ttl(target, ttl_seconds)
            results[str(target)] = await client.get_checkpoint(target)

        outcome = await apply_concurrently(targets, apply)
        return [str(t) for t in targets], [(str(t), e) for t, e in outcome]

    targets, outcome = call_api(ctx, settings, work)
    if not targets:
        # As rm's "Would delete 0 checkpoints": a cron line that matches nothing says so.
        out.notice("No checkpoints matched.")
    report = BulkReport(len(targets), "updated")
    report.add_all(outcome)
    done = [results[t] for t in targets if t in results]
    out.emit_listing(
        [checkpoint_json(c) for c in done],
        (c.tinker_path for c in done),
        TTL_COLUMNS,
        [checkpoint_row(c) for c in done],
    )
    report.finish()
