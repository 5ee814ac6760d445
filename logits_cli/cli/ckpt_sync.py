"""``logits ckpt sync``: cron mode, every checkpoint not yet in a directory, under a lock
(``api/sync.py``). Registered on the ``ckpt`` app by ``ckpt.py`` beside ``download`` and
``verify`` (``ckpt_transfer.py``), whose options it shares."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_select import kind_of
from logits_cli.cli.ckpt_transfer import AdapterOnlyOpt, ConnectionsOpt, OutputDirOpt
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import (
    DryRunOpt,
    JsonOpt,
    QuietOpt,
    RunsArg,
    SinceOpt,
    TypeOpt,
)
from logits_cli.cli.output import Output, log_line
from logits_cli.cli.tables import human_size, human_speed
from logits_cli.cli.timeparse import optional_point_in_time, optional_seconds
from logits_cli.cli.wording import counted
from logits_cli.uri import validate_run_id

if TYPE_CHECKING:
    from logits_cli.api.sync import SyncItem, SyncSummary


@handle_errors
def sync(
    ctx: typer.Context,
    output: OutputDirOpt,
    runs: RunsArg = None,
    checkpoint_type: TypeOpt = None,
    latest: Annotated[
        int | None,
        typer.Option("--latest", min=1, metavar="N", help="Only the newest N per run and type."),
    ] = None,
    since: SinceOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, max=32, metavar="N", help="Checkpoints fetched at once."
        ),
    ] = 2,
    connections: ConnectionsOpt = 8,
    max_duration: Annotated[
        str | None,
        typer.Option(
            "--max-duration",
            help="Stop after this long (e.g. 50m): downloads in flight are cancelled, resumable.",
            metavar="DURATION",
        ),
    ] = None,
    lock_wait: Annotated[
        str | None,
        typer.Option(
            "--lock-wait",
            help="Wait this long for another sync's lock (else exit 9).",
            metavar="DURATION",
        ),
    ] = None,
    prune_local: Annotated[
        bool,
        typer.Option(
            "--prune-local", help="Delete local copies of checkpoints gone from the service."
        ),
    ] = False,
    export: Annotated[
        bool,
        typer.Option(
            "--export/--no-export",
            help="On deployments without archive downloads, weights/ checkpoints are fetched "
            "through an export (one training session on the service each); --no-export "
            "skips them and exits 10.",
            show_default=False,
        ),
    ] = True,
    adapter_only: AdapterOnlyOpt = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also log one line per checkpoint already present."),
    ] = False,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch every checkpoint not yet in DIR, under a lock: safe to run from cron.

    Each checkpoint lands in DIR/RUN/KIND/NAME; present ones are checked by name and size,
    damaged ones repaired. With --adapter-only, weights/ copies hold the adapter without the
    optimizer state (and such copies count as present); without it, they are completed.

    Examples:

    \b
      logits ckpt sync -o ./mirror                    # all, every night
      logits ckpt sync RUN -o ./mirror --latest 3 -v  # newest 3 per kind
      logits ckpt sync -o ./mirror --no-export        # never start an export
    """
    from logits_cli.api.download_options import DownloadOptions
    from logits_cli.api.sync import SyncOptions, run_sync

    out = Output(json_output=json_output, quiet=quiet)
    options = SyncOptions(
        runs=tuple(validate_run_id(r) for r in runs or []),
        kind=kind_of(checkpoint_type),
        latest=latest,
        since=optional_point_in_time(since),
        jobs=jobs,
        dry_run=dry_run,
        max_duration=optional_seconds(max_duration),
        lock_wait=optional_seconds(lock_wait) or 0.0,
        prune_local=prune_local,
        export=export,
        download=DownloadOptions(connections=connections, adapter_only=adapter_only),
    )
    settings = settings_for(ctx)

    def on_item(item: "SyncItem") -> None:
        # An hourly cron job would log every present checkpoint every hour: only on request.
        if item.status != "present" or verbose or dry_run:
            log_line(sync_log_message(item))

    with out.transfer_bars() as bars:
        bar_for: dict[str, Callable[[int, int | None], None]] = {}

        def progress(tinker_path: str, done: int, total: int | None) -> None:
            if bars is None:
                return
            if tinker_path not in bar_for:
                bar_for[tinker_path] = bars.bar(tinker_path.rsplit("/", 1)[-1])
            bar_for[tinker_path](done, total)

        summary = call_api(
            ctx,
            settings,
            lambda client: run_sync(
                client, output, options, on_item=on_item, progress=progress, notice=log_line
            ),
        )
    if out.json:
        out.emit_json(summary.to_json())
    elif out.quiet:
        out.emit_lines(
            i.local_path for i in summary.items if i.local_path and i.status == "downloaded"
        )
    else:
        done = ", ".join(
            f"{n} {status}" + _why_skipped(summary) * (status == "skipped")
            for status, n in sorted(summary.counts().items())
            if n
        )
        fetched = summary.bytes_fetched
        speed = (
            f", {human_size(fetched)} at {human_speed(fetched, summary.elapsed_s)}"
            if fetched
            else ""
        )
        out.log_summary(f"sync: {done or 'nothing to do'} in {summary.elapsed_s:.1f} s{speed}")
    if summary.incomplete:
        counts = summary.counts()
        raise errors.PartialFailureError(
            f"sync incomplete: {counts.get('failed', 0)} failed, {counts.get('not_started', 0)} not started"
        )
    if summary.not_exported:
        # Exit 10, not 0: a mirror without its weights/ must not look complete to cron; not
        # 8 either, which says "failed, the next run catches up" (it will not).
        raise errors.UnsupportedError(
            f"{counted(summary.not_exported, 'weights/ checkpoint')} not mirrored: this "
            "deployment downloads them only through an export, and --no-export was given",
            option="allow_export",
        )


def _why_skipped(summary: "SyncSummary") -> str:
    """The reason a summary gives for its skipped items that an export would fetch."""
    if not summary.not_exported:
        return ""
    return f" ({summary.not_exported} not exported: --no-export)"


def sync_log_message(item: "SyncItem") -> str:
    """One checkpoint's log line. A planned item names its action, so a dry run's plan
    tells the downloads from the local copies it would prune."""
    what = f"planned {item.action}" if item.status == "planned" else item.status
    if item.repaired and item.status == "downloaded":
        what = "repaired"
    detail = f" -> {item.local_path}" if item.local_path else ""
    damage = f" ({'; '.join(item.repaired)})" if item.repaired else ""
    error = f": {item.error}" if item.error else ""
    return f"{what} {item.tinker_path}{detail}{damage}{error}"
