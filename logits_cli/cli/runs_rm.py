"""``logits runs rm``: delete training runs, refusing one that still has checkpoints unless
``--with-checkpoints``. Registered on the ``runs`` app by ``runs.py``.

The prompt, ``--yes``, ``--dry-run`` and the exit codes are those of ``ckpt rm``. Deleting a
run is our server's own extension (docs/protocol.md §5.5); a deployment without it is exit 10.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_select import BulkReport
from logits_cli.cli.completion_cache import complete_run
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import DryRunOpt, JsonOpt, QuietOpt, YesOpt
from logits_cli.cli.output import Output, interactive
from logits_cli.cli.tables import human_size, relative_time, terminal_text
from logits_cli.cli.wording import counted
from logits_cli.uri import validate_run_id

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient

RunIdsArgument = Annotated[
    list[str],
    typer.Argument(metavar="RUN", autocompletion=complete_run, show_default=False, hidden=True),
]


@dataclass
class RunPlan:
    """One run to delete, what goes with it, or why it cannot be."""

    run_id: str
    run: "models.TrainingRun | None" = None
    checkpoints: "list[models.Checkpoint]" = field(default_factory=list)
    refused: errors.LogitsError | None = None

    @property
    def size(self) -> int:
        return sum(c.size_bytes or 0 for c in self.checkpoints)

    def what_goes(self) -> str:
        """``3 checkpoints, 1.2 MiB`` (nothing for a run without checkpoints)."""
        if not self.checkpoints:
            return ""
        return f"{counted(len(self.checkpoints), 'checkpoint')}, {human_size(self.size)}"


@handle_errors
def rm(
    ctx: typer.Context,
    runs: RunIdsArgument,
    with_checkpoints: Annotated[
        bool,
        typer.Option("--with-checkpoints", help="Also delete the runs' checkpoints."),
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete training runs and their live state on the server.

    With --with-checkpoints their checkpoints go too; without it a run that still has
    checkpoints is refused (exit 5). On a terminal it lists what it will delete and asks;
    answering no prints "Nothing deleted." and exits 1. Without a terminal it needs --yes.
    Only a logits server can delete runs: elsewhere this exits 10.

    Examples:

    \b
      logits runs rm RUN --dry-run
      logits runs rm RUN --yes
      logits runs rm RUN1 RUN2 --with-checkpoints
    """
    from logits_cli.api.bulk import apply_concurrently

    out = Output(json_output=json_output, quiet=quiet)
    run_ids = list(dict.fromkeys(validate_run_id(r) for r in runs))
    if not (yes or dry_run or interactive()):
        raise errors.ConfirmationRequired(
            "refusing to delete without --yes when not on a terminal", hint="add --yes to confirm"
        )
    settings = settings_for(ctx)

    async def plan(client: "LogitsClient") -> list[RunPlan]:
        async def one(item: RunPlan) -> None:
            item.run = await client.get_run(item.run_id)
            item.checkpoints = await client.list_checkpoints(item.run_id)
            if item.checkpoints and not with_checkpoints:
                item.refused = errors.NotEmptyError(
                    f"run {item.run_id} still has {item.what_goes()}",
                    hint="pass --with-checkpoints to delete the run with its checkpoints",
                )

        items = [RunPlan(r) for r in run_ids]
        for item, error in await apply_concurrently(items, one):
            item.refused = item.refused or error
        return items

    items = call_api(ctx, settings, plan)
    chosen = [item for item in items if item.refused is None]
    outcome: dict[str, errors.LogitsError | None] = {}
    if chosen and not dry_run:
        if not yes:
            # Asked between two API sessions, as ckpt rm does: Ctrl-C must reach the prompt.
            _confirm(chosen)

        async def delete_all(client: "LogitsClient") -> None:
            async def delete(item: RunPlan) -> None:
                await client.delete_run(item.run_id, with_checkpoints=with_checkpoints)

            for item, error in await apply_concurrently(chosen, delete):
                outcome[item.run_id] = error

        call_api(ctx, settings, delete_all)
    report = BulkReport(len(items), "deleted", noun="runs")
    report.add_all((item.run_id, item.refused) for item in items)
    report.add_all(outcome.items())
    done = [item for item in chosen if outcome.get(item.run_id) is None]
    deleted = [] if dry_run else done
    _forget(settings.home, [item.run_id for item in deleted])
    if out.json:
        failures = [{"run": label, "error": error.message} for label, error in report.failures]
        out.emit_json(
            {
                "dry_run": dry_run,
                "deleted": [item.run_id for item in deleted],
                "selected": [item.run_id for item in chosen],
                "checkpoints_deleted": sum(len(item.checkpoints) for item in deleted),
                "failed": failures,
            }
        )
    else:
        out.emit_lines([item.run_id for item in done])
        if done or not report.failures:  # else the error lines say it all
            verb = "Would delete" if dry_run else "Deleted"
            out.notice(f"{verb} {_summary(done)}")
    report.finish()


def _summary(items: list[RunPlan]) -> str:
    """``2 runs`` or ``2 runs with 3 checkpoints, 1.2 MiB``."""
    text = counted(len(items), "run")
    checkpoints = [c for item in items for c in item.checkpoints]
    if checkpoints:
        size = sum(item.size for item in items)
        text += f" with {counted(len(checkpoints), 'checkpoint')}, {human_size(size)}"
    return text


def _confirm(items: list[RunPlan]) -> None:
    lines = []
    for item in items:
        parts = [item.what_goes()] if item.checkpoints else []
        if item.run is not None:
            parts.append(f"last request {relative_time(item.run.last_request_time)}")
        details = f"  ({', '.join(parts)})" if parts else ""
        lines.append(f"  {terminal_text(item.run_id)}{details}")
    typer.echo(f"About to delete {_summary(items)}:\n" + "\n".join(lines), err=True)
    if not typer.confirm("Delete them?", default=False, err=True):
        typer.echo("Nothing deleted.", err=True)
        raise typer.Exit(errors.EXIT_ERROR)


def _forget(home: Any, run_ids: list[str]) -> None:
    from logits_cli.cli.completion_cache import forget

    forget(home, [], runs=run_ids)
