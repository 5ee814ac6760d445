"""``logits ckpt …``: save, load, list, inspect, download, sync, publish, expire, delete.

Each command parses its input, makes its calls inside one ``call_api`` session, and renders
the result. Rendering lives in ``ckpt_render``, path parsing and bulk selection in
``ckpt_select``. Bulk work (publish, rm, ttl over several checkpoints) goes through
``api.bulk.apply_concurrently``; any failed item makes the command exit 8.
"""

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from logits_cli import errors
from logits_cli.cli import ckpt_retention
from logits_cli.cli.arguments import (
    DirsArgument,
    NameArgument,
    PathArgument,
    PathsArgument,
    RunsArgument,
)
from logits_cli.cli.ckpt_render import (
    CHECKPOINT_COLUMNS,
    INFO_FIELDS,
    VISIBILITY_COLUMNS,
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
    kind_of,
    parse_path,
    parse_refs,
)
from logits_cli.cli.context import call_api, require_run, settings_for
from logits_cli.cli.failures import handle_errors, report_error
from logits_cli.cli.options import (
    BeforeOpt,
    DryRunOpt,
    JsonOpt,
    PathsArg,
    QuietOpt,
    RunOpt,
    RunsArg,
    SinceOpt,
    TimeoutOpt,
    TypeOpt,
)
from logits_cli.cli.output import BOOL, Column, Output, human_size, human_speed, log_line
from logits_cli.cli.timeparse import (
    optional_point_in_time,
    optional_seconds,
    parse_ttl,
)
from logits_cli.config import Settings
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef, validate_name, validate_run_id

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient
    from logits_cli.api.download_options import FileUrls
    from logits_cli.api.sync import SyncItem

T = TypeVar("T")

__all__ = ["BulkReport", "extended_ttl", "kind_of", "parse_refs", "sync_log_message"]

app = typer.Typer(
    help="Save, list, download, publish, expire and delete checkpoints.", no_args_is_help=True
)


def _call_on_path(
    ctx: typer.Context,
    path: str,
    work: "Callable[[LogitsClient, CheckpointRef], Awaitable[T]]",
) -> T:
    """Parse one checkpoint path (a typo fails before any request), then run ``work`` on it
    in one API session."""
    settings = settings_for(ctx)
    ref = parse_path(path, settings.run)
    return call_api(ctx, settings, lambda client: work(client, ref))


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
            resolved = await client.resolve(ref)
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
    ctx: typer.Context, path: PathArgument, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show one checkpoint, with its base model and LoRA rank.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt info logits://RUN/weights/step_1000
      logits ckpt info sampler_weights/@latest     # in $LOGITS_RUN
      logits ckpt info step_1000 --json | jq .size_bytes
    """
    out = Output(json_output=json_output, quiet=quiet)

    async def work(
        client: "LogitsClient", ref: CheckpointRef
    ) -> "tuple[models.Checkpoint, models.WeightsInfoResponse]":
        checkpoint = await client.get_checkpoint(ref)
        weights = await client.weights_info(CheckpointRef.parse(checkpoint.tinker_path))
        return checkpoint, weights

    checkpoint, weights = _call_on_path(ctx, path, work)
    record = {
        **checkpoint_json(checkpoint),
        "base_model": weights.base_model,
        "is_lora": weights.is_lora,
        "lora_rank": weights.lora_rank,
    }
    # The human view shows the raw values (times as datetimes), the JSON's other fields.
    shown = {**record, **checkpoint_row(checkpoint)}
    out.emit_object(record, checkpoint.tinker_path, INFO_FIELDS, shown)


def _embedded_archive_url(settings: Settings, checkpoint: "models.Checkpoint") -> str:
    """On the embedded backend the archive is a file of the local store: its ``file://``
    URL works with curl on this machine, where the embedded server's own origin cannot."""
    blob = settings.store_dir / "blobs" / (checkpoint.sha256 or "")
    if checkpoint.sha256 is None or not blob.is_file():
        raise errors.UnsupportedError(
            f"{checkpoint.tinker_path} has no archive file in the local store",
            hint=f"download it with `logits ckpt download {checkpoint.tinker_path}`",
        )
    return blob.resolve().as_uri()


@app.command()
@handle_errors
def url(
    ctx: typer.Context,
    path: PathArgument,
    export: Annotated[
        bool,
        typer.Option(
            "--export",
            help="On deployments without archive downloads, export a weights/ checkpoint "
            "and print its per-file URLs (the export is kept until its TTL ends).",
        ),
    ] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Print a signed URL of the archive, for curl or aria2c.

    The URL is short-lived; its expiry goes to stderr. On deployments that download file
    by file (and for external_weights/ checkpoints) it prints one `FILE<TAB>URL` line per
    file instead; --json gives {"path", "urls", "expires"}.
    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    On the embedded backend (no LOGITS_BASE_URL) it prints a file:// URL of the archive in
    the local store instead, which does not expire; curl reads it.

    Examples:

    \b
      curl -o ckpt.tar "$(logits ckpt url logits://RUN/weights/step_1000)"
      logits ckpt url step_1000 --json | jq -r .expires
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx)
    ref = parse_path(path, settings.run)

    if settings.embedded and ref.kind == EXTERNAL_KIND:
        raise errors.UnsupportedError(
            f"{ref} is an export; on the embedded backend its files have no URL that works "
            "outside this process",
            hint=f"download it with `logits ckpt download {path}`",
        )
    if settings.embedded:

        async def local(client: "LogitsClient") -> "models.Checkpoint":
            return await client.get_checkpoint(await client.resolve(ref))

        checkpoint = call_api(ctx, settings, local)
        link = _embedded_archive_url(settings, checkpoint)
        if out.json:
            out.emit_json({"path": checkpoint.tinker_path, "url": link, "expires": None})
            return
        out.emit_lines([link])
        out.notice("A file in the embedded store on this machine; it does not expire")
        return

    async def work(
        client: "LogitsClient",
    ) -> "tuple[CheckpointRef, models.CheckpointArchiveUrlResponse | FileUrls]":
        from logits_cli.api.files_generation import signed_urls

        return await signed_urls(client, ref, export=export, notice=out.notice)

    from logits_cli.api.download_options import FileUrls

    resolved, answer = call_api(ctx, settings, work)
    if isinstance(answer, FileUrls):
        expires = answer.expires.isoformat().replace("+00:00", "Z")
        if out.json:
            out.emit_json({"path": str(resolved), "urls": dict(answer.urls), "expires": expires})
            return
        out.emit_lines(f"{name}\t{answer.urls[name]}" for name in sorted(answer.urls))
        out.notice(f"Expires {expires}")
        return
    if out.json:
        out.emit_json({"path": str(resolved), **answer.model_dump(mode="json")})
        return
    out.emit_lines([answer.url])
    out.notice(f"Expires {answer.model_dump(mode='json')['expires']}")


# -- publish / unpublish ----------------------------------------------------------------


def _change_visibility(ctx: typer.Context, paths: list[str], *, public: bool, out: Output) -> None:
    from logits_cli.api.bulk import apply_concurrently

    settings = settings_for(ctx)
    refs = parse_refs(paths, settings.run)
    results: dict[int, dict[str, Any]] = {}
    report = BulkReport(len(refs), "published" if public else "unpublished")

    async def work(client: "LogitsClient") -> list[tuple[int, errors.LogitsError | None]]:
        async def change(index: int) -> None:
            resolved = await client.resolve(refs[index])
            changed = await (client.publish(resolved) if public else client.unpublish(resolved))
            results[index] = {"path": str(resolved), "public": public, "changed": changed}

        return await apply_concurrently(list(range(len(refs))), change)

    report.add_all((str(refs[index]), error) for index, error in call_api(ctx, settings, work))
    done = [results[i] for i in sorted(results)]
    out.emit_listing(done, (r["path"] for r in done), VISIBILITY_COLUMNS, done)
    report.finish()


@app.command()
@handle_errors
def publish(
    ctx: typer.Context, paths: PathsArgument, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Make checkpoints public (readable by every user).

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Already public is success (CHANGED no; "changed": false in JSON).

    Examples:

    \b
      logits ckpt publish logits://RUN/sampler_weights/final
      logits ckpt publish step_1000 step_2000      # names in $LOGITS_RUN
    """
    _change_visibility(ctx, paths, public=True, out=Output(json_output=json_output, quiet=quiet))


@app.command()
@handle_errors
def unpublish(
    ctx: typer.Context, paths: PathsArgument, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Make checkpoints private again.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt unpublish logits://RUN/sampler_weights/final
      logits ckpt ls --public -q | xargs logits ckpt unpublish
    """
    _change_visibility(ctx, paths, public=False, out=Output(json_output=json_output, quiet=quiet))


# -- rm / ttl: explicit paths, or a run with retention filters (ckpt_retention) -------------

app.command()(ckpt_retention.rm)
app.command()(ckpt_retention.ttl)


# -- download / sync / verify -------------------------------------------------------------

OutputDirOpt = Annotated[
    Path,
    typer.Option("--output", "-o", help="Destination directory.", file_okay=False, metavar="DIR"),
]
ConnectionsOpt = Annotated[
    int,
    typer.Option(
        "--connections", min=1, max=64, metavar="N", help="Parallel ranged requests per file."
    ),
]


@app.command()
@handle_errors
def download(
    ctx: typer.Context,
    paths: PathsArg,
    output: OutputDirOpt = Path("."),
    connections: ConnectionsOpt = 8,
    keep_archive: Annotated[
        bool, typer.Option("--keep-archive", help="Keep NAME.tar beside NAME/.")
    ] = False,
    archive_only: Annotated[
        bool, typer.Option("--archive-only", help="Verify and keep NAME.tar; do not extract.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing download.")] = False,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            help="Give up on the whole command after this long (e.g. 2h); default: no limit.",
            metavar="DURATION",
        ),
    ] = None,
    lock_wait: Annotated[
        str | None,
        typer.Option(
            "--lock-wait",
            help="Wait this long for another download of the same checkpoint (else exit 9).",
            metavar="DURATION",
        ),
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download, verify and extract checkpoints into DIR/NAME; prints their local paths.

    PATH is logits://RUN/KIND/NAME (or tinker://…); NAME may be @latest. A killed or
    interrupted download resumes where it stopped when run again.

    Examples:

    \b
      logits ckpt download logits://RUN/weights/step_1000 -o ./ckpts
      logits ckpt download logits://RUN/sampler_weights/@latest --archive-only
      logits ckpt ls -q RUN | xargs logits ckpt download -o ./ckpts
    """
    import dataclasses
    import time

    from logits_cli.api.download_options import DownloadOptions, DownloadResult

    out = Output(json_output=json_output, quiet=quiet)
    if keep_archive and archive_only:
        raise errors.UsageError("--keep-archive and --archive-only cannot be combined")
    refs = parse_refs(paths)
    _refuse_colliding_names(refs, output)
    total_limit = optional_seconds(timeout)
    options = DownloadOptions(
        connections=connections,
        keep_archive=keep_archive,
        archive_only=archive_only,
        force=force,
        lock_wait=optional_seconds(lock_wait) or 0.0,
    )
    settings = settings_for(ctx)
    report = BulkReport(len(refs), "downloaded")
    give_up = None if total_limit is None else time.monotonic() + total_limit

    def options_now() -> DownloadOptions:
        """--timeout is one deadline for every checkpoint of the command."""
        if give_up is None:
            return options
        return dataclasses.replace(options, timeout=max(0.0, give_up - time.monotonic()))

    async def work(client: "LogitsClient") -> "list[DownloadResult]":
        done: list[DownloadResult] = []
        with out.transfer_bars() as bars:
            for ref in refs:
                try:
                    resolved = await client.resolve(ref)
                    progress = bars.bar(resolved.name) if bars else None
                    result = await client.download(
                        resolved,
                        output,
                        options=options_now(),
                        progress=progress,
                        notice=out.notice,
                    )
                except errors.LogitsError as raised:
                    failure = raised
                    if give_up is not None and time.monotonic() >= give_up:
                        failure = errors.UnavailableError(
                            f"did not finish within --timeout {timeout}",
                            hint="run the same command again to resume the download",
                        )
                    report.add(str(ref), failure)
                    if bars is None:
                        log_line(f"failed {ref}: {failure.message}")
                    continue
                done.append(result)
                if result.repaired:
                    log_line(f"repaired {result.path}: {'; '.join(result.repaired)}")
                if bars is None:
                    what = "present" if result.skipped else "downloaded"
                    log_line(
                        f"{what} {result.checkpoint.tinker_path} -> {result.path} ({result.bytes_fetched} bytes fetched)"
                    )
        return done

    results = call_api(ctx, settings, work)
    if out.json:
        out.emit_json(
            [
                {
                    "path": r.checkpoint.tinker_path,
                    "local_path": str(r.path),
                    "size_bytes": r.checkpoint.size_bytes,
                    "bytes_fetched": r.bytes_fetched,
                    "skipped": r.skipped,
                    "resumed": r.resumed,
                }
                for r in results
            ]
        )
    else:
        out.emit_lines(str(r.path) for r in results)
    report.finish()


@app.command()
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
            "--export",
            help="On deployments without archive downloads, export weights/ checkpoints to "
            "fetch them (starts a training session on the service); else they are skipped.",
        ),
    ] = False,
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
    damaged ones repaired.

    Examples:

    \b
      logits ckpt sync -o ./mirror                    # all, every night
      logits ckpt sync RUN -o ./mirror --latest 3 -v  # newest 3 per kind
      logits ckpt sync -o ./mirror --export           # export weights too
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
        download=DownloadOptions(connections=connections),
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
            lambda client: run_sync(client, output, options, on_item=on_item, progress=progress),
        )
    if out.json:
        out.emit_json(summary.to_json())
    elif out.quiet:
        out.emit_lines(
            i.local_path for i in summary.items if i.local_path and i.status == "downloaded"
        )
    else:
        done = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts().items()) if n)
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


def _refuse_colliding_names(refs: "Sequence[CheckpointRef]", output: Path) -> None:
    """Every checkpoint lands in DIR/NAME: two different checkpoints of one name (weights/x
    and sampler_weights/x, or x of two runs) would collide there, so that is refused before
    anything is fetched. (``sync`` lays out DIR/RUN/KIND/NAME and has no such limit.)"""
    seen: dict[str, CheckpointRef] = {}
    for ref in refs:
        if ref.is_latest:
            continue
        first = seen.setdefault(ref.name, ref)
        if first.with_scheme(ref.scheme) != ref:
            raise errors.UsageError(
                f"{first} and {ref} would both be downloaded to {output / ref.name}",
                hint="download them with separate -o directories, or use "
                "`logits ckpt sync RUN -o DIR` (DIR/RUN/KIND/NAME)",
            )


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


@app.command()
@handle_errors
def verify(
    dirs: DirsArgument,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-check downloaded checkpoints against their manifests.

    DIR: a downloaded checkpoint directory, or a directory holding them.

    A DIR that is missing or holds no checkpoint is reported and the others are still
    checked. Exit 7 if any checkpoint fails verification, else 8 if some DIR had nothing to
    check, 4 if none had.

    Examples:

    \b
      logits ckpt verify ./ckpts/step_1000
      logits ckpt verify ./ckpts                # every checkpoint below it
    """
    from logits_cli.api.verify import find_checkpoint_dirs, verify_checkpoint_dir

    out = Output(json_output=json_output, quiet=quiet)
    checked: list[Path] = []
    unusable: list[errors.LogitsError] = []
    for root in dict.fromkeys(dirs):
        if not root.is_dir():
            unusable.append(errors.NotFoundError(f"{root} is not a directory"))
            continue
        found = find_checkpoint_dirs(root)
        if not found:
            unusable.append(errors.NotFoundError(f"no downloaded checkpoint in {root}"))
        checked.extend(found)
    if not checked:
        if len(unusable) == 1:
            raise unusable[0]
        for error in unusable:
            report_error(error)
        raise errors.NotFoundError(f"none of the {len(unusable)} directories holds a checkpoint")
    results = [verify_checkpoint_dir(path) for path in checked]
    records = [
        {
            "path": str(r.path),
            "ok": r.ok,
            "problems": list(r.problems),
            "tinker_path": r.tinker_path,
        }
        for r in results
    ]
    out.emit_listing(
        records,
        (str(r.path) for r in results if r.ok),
        [
            Column("DIR", "path"),
            Column("OK", "ok", BOOL),
            Column("CHECKPOINT", "tinker_path", priority=1),
        ],
        records,
    )
    bad = [r for r in results if not r.ok]
    for result in bad:
        for problem in result.problems:
            out.warn(f"{result.path}: {problem}")
    for error in unusable:
        report_error(error)
    if bad:
        raise errors.IntegrityError(f"{len(bad)} of {len(results)} checkpoints failed verification")
    if unusable:
        raise errors.PartialFailureError(
            f"{len(unusable)} of {len(dict.fromkeys(dirs))} directories had no checkpoint to verify"
        )
