"""``logits ckpt …``: save, load, list, inspect, download, sync, publish, expire, delete.

Each command parses its input, makes its calls inside one ``call_api`` session, and renders
the result. Bulk work (publish, rm, ttl over several checkpoints) goes through
``api.bulk.apply_concurrently``; any failed item makes the command exit 8.
"""

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from logits_cli import errors
from logits_cli.cli.context import call_api, require_run, settings_for
from logits_cli.cli.failures import handle_errors, report_error
from logits_cli.cli.options import (
    AfterOpt,
    BeforeOpt,
    CheckpointType,
    DryRunOpt,
    JsonOpt,
    OptionalPathsArg,
    PathArg,
    PathsArg,
    QuietOpt,
    RunOpt,
    RunsArg,
    SinceOpt,
    TimeoutOpt,
    TypeOpt,
    YesOpt,
)
from logits_cli.cli.output import BOOL, SIZE, TIME, Column, Output, interactive, log_line
from logits_cli.cli.timeparse import (
    MAX_DURATION_S,
    optional_point_in_time,
    optional_seconds,
    parse_duration,
    parse_ttl,
)
from logits_cli.config import Settings
from logits_cli.uri import TYPE_TO_KIND, CheckpointRef, validate_name, validate_run_id

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient
    from logits_cli.api.sync import SyncItem

T = TypeVar("T")

app = typer.Typer(
    help="Save, list, download, publish, expire and delete checkpoints.", no_args_is_help=True
)

CHECKPOINT_COLUMNS = [
    Column("NAME", "name"),
    Column("TYPE", "checkpoint_type"),
    Column("SIZE", "size_bytes", SIZE),
    Column("PUBLIC", "public", BOOL),
    Column("CREATED", "time", TIME),
    Column("EXPIRES", "expires_at", TIME),
    Column("PATH", "tinker_path"),
]


INFO_FIELDS = [
    Column("path", "tinker_path"),
    Column("type", "checkpoint_type"),
    Column("size", "size_bytes", SIZE),
    Column("public", "public", BOOL),
    Column("created", "time", TIME),
    Column("expires", "expires_at", TIME),
    Column("sha256", "sha256"),
    Column("base model", "base_model"),
    Column("lora rank", "lora_rank"),
]


class SortKey(StrEnum):
    time = "time"
    name = "name"
    size = "size"


def checkpoint_row(checkpoint: "models.Checkpoint") -> dict[str, Any]:
    return {
        "name": checkpoint.name,
        "checkpoint_type": checkpoint.checkpoint_type,
        "size_bytes": checkpoint.size_bytes,
        "public": checkpoint.public,
        "time": checkpoint.time,
        "expires_at": checkpoint.expires_at,
        "tinker_path": checkpoint.tinker_path,
    }


def checkpoint_json(checkpoint: "models.Checkpoint") -> dict[str, Any]:
    return checkpoint.model_dump(mode="json")


def kind_of(checkpoint_type: CheckpointType | None) -> str | None:
    """The URI kind of a ``--type`` value (None: both kinds)."""
    return TYPE_TO_KIND[checkpoint_type.value] if checkpoint_type else None


def parse_refs(texts: Sequence[str]) -> list[CheckpointRef]:
    """Every path parsed up front, so a typo fails before any request is sent."""
    if not texts:
        raise errors.UsageError("no checkpoint path given")
    return unique_refs(CheckpointRef.parse(text, allow_latest=True) for text in texts)


def unique_refs(refs: Iterable[CheckpointRef]) -> list[CheckpointRef]:
    """Each checkpoint once, in first-named order, whatever the scheme: a checkpoint named
    twice must not be deleted twice (a spurious failure) or published twice at once (a race
    over which call reports the change)."""
    unique: dict[tuple[str, str, str], CheckpointRef] = {}
    for ref in refs:
        unique.setdefault((ref.run_id, ref.kind, ref.name), ref)
    return list(unique.values())


def _call_on_path(
    ctx: typer.Context,
    path: str,
    work: "Callable[[LogitsClient, CheckpointRef], Awaitable[T]]",
) -> T:
    """Parse one checkpoint path (a typo fails before any request), then run ``work`` on it
    in one API session."""
    ref = CheckpointRef.parse(path, allow_latest=True)
    return call_api(ctx, settings_for(ctx), lambda client: work(client, ref))


def _remember(settings: Settings, checkpoints: "Sequence[models.Checkpoint]") -> None:
    """Feed the completion cache; a path it cannot parse is simply not remembered."""
    from logits_cli.cli.completion_cache import remember

    runs: dict[str, None] = {}
    for checkpoint in checkpoints:
        try:
            runs[CheckpointRef.parse(checkpoint.tinker_path, any_kind=True).run_id] = None
        except errors.UsageError:
            continue
    remember(settings.home, runs=runs, paths=[c.tinker_path for c in checkpoints])


@dataclass
class BulkReport:
    """Per-item failures of a bulk command; decides the exit code once output is printed."""

    total: int
    verb: str
    failures: list[tuple[str, errors.LogitsError]] = field(default_factory=list)

    def add(self, label: str, error: errors.LogitsError | None) -> None:
        if error is not None:
            self.failures.append((label, error))

    def add_all(self, outcome: Iterable[tuple[str, errors.LogitsError | None]]) -> None:
        for label, error in outcome:
            self.add(label, error)

    def finish(self) -> None:
        if not self.failures:
            return
        if self.total == 1:
            raise self.failures[0][1]
        for label, error in self.failures:
            report_error(type(error)(f"{label}: {error.message}"))
        raise errors.PartialFailureError(
            f"{len(self.failures)} of {self.total} checkpoints could not be {self.verb}"
        )


# -- save / load ----------------------------------------------------------------------------


@app.command()
@handle_errors
def save(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="Checkpoint name, e.g. step_1000.", metavar="NAME", show_default=False),
    ],
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
    """Snapshot the run's state as a new checkpoint; prints its path."""
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
    size = f" ({checkpoint.size_bytes} bytes)" if checkpoint.size_bytes is not None else ""
    out.notice(f"Saved {checkpoint.checkpoint_id}{size}")


@app.command()
@handle_errors
def load(
    ctx: typer.Context,
    path: PathArg,
    run: RunOpt = None,
    with_optimizer: Annotated[
        bool, typer.Option("--with-optimizer", help="Restore the optimizer state too.")
    ] = False,
    timeout: TimeoutOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load a checkpoint (yours or a public one) into the run."""
    out = Output(json_output=json_output, quiet=quiet)
    ref = CheckpointRef.parse(path, allow_latest=True)
    wait_limit = optional_seconds(timeout)
    settings = settings_for(ctx, run=run)
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
    runs: RunsArg = None,
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
        SortKey, typer.Option("--sort", help="Order: newest first, by name, or largest first.")
    ] = SortKey.time,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most this many.")
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List checkpoints of some runs, or of all your runs."""
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
    _remember(settings, selected)

    out.emit_listing(
        [checkpoint_json(c) for c in selected],
        (c.tinker_path for c in selected),
        CHECKPOINT_COLUMNS,
        [checkpoint_row(c) for c in selected],
        empty="No checkpoints.",
    )


@app.command()
@handle_errors
def info(
    ctx: typer.Context, path: PathArg, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show one checkpoint, with its base model and LoRA rank."""
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


@app.command()
@handle_errors
def url(
    ctx: typer.Context, path: PathArg, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Print a short-lived signed URL of the checkpoint's archive (for curl, aria2c)."""
    out = Output(json_output=json_output, quiet=quiet)

    async def work(
        client: "LogitsClient", ref: CheckpointRef
    ) -> "tuple[CheckpointRef, models.CheckpointArchiveUrlResponse]":
        resolved = await client.resolve(ref)
        return resolved, await client.archive_url(resolved)

    resolved, answer = _call_on_path(ctx, path, work)
    if out.json:
        out.emit_json({"path": str(resolved), **answer.model_dump(mode="json")})
        return
    out.emit_lines([answer.url])
    out.notice(f"Expires {answer.model_dump(mode='json')['expires']}")


# -- publish / unpublish ----------------------------------------------------------------


VISIBILITY_COLUMNS = [
    Column("PATH", "path"),
    Column("PUBLIC", "public", BOOL),
    Column("CHANGED", "changed", BOOL),
]


def _change_visibility(ctx: typer.Context, paths: list[str], *, public: bool, out: Output) -> None:
    from logits_cli.api.bulk import apply_concurrently

    refs = parse_refs(paths)
    settings = settings_for(ctx)
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
    ctx: typer.Context, paths: PathsArg, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Make checkpoints public (readable by every user of the service)."""
    _change_visibility(ctx, paths, public=True, out=Output(json_output=json_output, quiet=quiet))


@app.command()
@handle_errors
def unpublish(
    ctx: typer.Context, paths: PathsArg, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Make checkpoints private again."""
    _change_visibility(ctx, paths, public=False, out=Output(json_output=json_output, quiet=quiet))


# -- rm / ttl: explicit paths, or a run with retention filters ------------------------------

FilterRunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "-r",
        help="Select from this run with the filters below instead of naming paths.",
        show_default=False,
    ),
]
KeepLastOpt = Annotated[
    int | None, typer.Option("--keep-last", min=0, help="Never select the newest N (per type).")
]
KeepNameOpt = Annotated[
    list[str] | None,
    typer.Option("--keep-name", help="Never select this name (repeatable).", metavar="NAME"),
]


@dataclass(frozen=True)
class Selection:
    """Which checkpoints a bulk command acts on: explicit paths, or a filtered run."""

    refs: list[CheckpointRef]
    run: str | None = None
    kind: str | None = None
    before: datetime | None = None
    after: datetime | None = None
    keep_last: int | None = None
    keep_names: frozenset[str] = frozenset()

    async def targets(
        self, client: "LogitsClient"
    ) -> "tuple[list[CheckpointRef], list[models.Checkpoint]]":
        """(selected refs, kept checkpoints); ``@latest`` resolved."""
        if self.run is None:
            # Resolving @latest may name a checkpoint also given by its name.
            return unique_refs([await client.resolve(ref) for ref in self.refs]), []
        from logits_cli.api.bulk import select_checkpoints

        selected, kept = select_checkpoints(
            await client.list_checkpoints(self.run),
            kind=self.kind,
            before=self.before,
            after=self.after,
            keep_last=self.keep_last,
            keep_names=self.keep_names,
        )
        return [CheckpointRef.parse(c.tinker_path, any_kind=True) for c in selected], kept


def _selection(
    paths: list[str] | None,
    run: str | None,
    checkpoint_type: CheckpointType | None,
    before: str | None,
    after: str | None,
    keep_last: int | None,
    keep_names: list[str] | None,
) -> Selection:
    filters_given = any(
        v is not None for v in (checkpoint_type, before, after, keep_last, keep_names)
    )
    if paths and run is not None:
        raise errors.UsageError("give checkpoint paths or --run with filters, not both")
    if paths:
        if filters_given:
            raise errors.UsageError(
                "--type, --before, --after, --keep-last and --keep-name need --run"
            )
        return Selection(parse_refs(paths))
    if run is None:
        raise errors.UsageError("give checkpoint paths, or --run RUN with filters")
    now = datetime.now(UTC)
    return Selection(
        [],
        run=validate_run_id(run),
        kind=kind_of(checkpoint_type),
        before=optional_point_in_time(before, now=now),
        after=optional_point_in_time(after, now=now),
        keep_last=keep_last,
        keep_names=frozenset(validate_name(n) for n in keep_names or []),
    )


@app.command()
@handle_errors
def rm(
    ctx: typer.Context,
    paths: OptionalPathsArg = None,
    run: FilterRunOpt = None,
    checkpoint_type: TypeOpt = None,
    before: BeforeOpt = None,
    after: AfterOpt = None,
    keep_last: KeepLastOpt = None,
    keep_name: KeepNameOpt = None,
    max_delete: Annotated[
        int | None, typer.Option("--max-delete", min=0, help="Refuse to delete more than N.")
    ] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete checkpoints, by path or by retention filters over a run (--run)."""
    from logits_cli.api.bulk import apply_concurrently

    out = Output(json_output=json_output, quiet=quiet)
    selection = _selection(paths, run, checkpoint_type, before, after, keep_last, keep_name)
    if not (yes or dry_run or interactive()):
        raise errors.ConfirmationRequired(
            "refusing to delete without --yes when not on a terminal", hint="add --yes to confirm"
        )
    settings = settings_for(ctx)

    async def plan(client: "LogitsClient") -> tuple[list[CheckpointRef], list[str]]:
        refs, kept = await selection.targets(client)
        if max_delete is not None and len(refs) > max_delete:
            raise errors.UsageError(
                f"{len(refs)} checkpoints match, more than --max-delete {max_delete}; nothing deleted"
            )
        return refs, [c.tinker_path for c in kept]

    async def delete_all(client: "LogitsClient") -> list[tuple[str, errors.LogitsError | None]]:
        async def delete(target: CheckpointRef) -> None:
            await client.delete(target)

        return [(str(t), e) for t, e in await apply_concurrently(refs, delete)]

    refs, kept = call_api(ctx, settings, plan)
    targets = [str(t) for t in refs]
    outcome: list[tuple[str, errors.LogitsError | None]] = []
    if refs and not dry_run:
        if not yes:
            # Asked between two API sessions, not inside one: a blocking prompt inside the
            # event loop would leave Ctrl-C to asyncio, which cannot interrupt it.
            listing = "\n".join(f"  {t}" for t in targets)
            typer.echo(f"About to delete {len(targets)} checkpoint(s):\n{listing}", err=True)
            if not typer.confirm("Delete them?", default=False, err=True):
                raise errors.LogitsError("aborted; nothing deleted")
        outcome = call_api(ctx, settings, delete_all)
    report = BulkReport(len(targets), "deleted")
    report.add_all(outcome)
    failed = {label for label, _ in report.failures}
    deleted = [t for t in targets if t not in failed] if not dry_run else []
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
        out.notice(f"{verb} {len(listed)} checkpoint(s)" + (f", kept {len(kept)}" if run else ""))
    report.finish()


@app.command()
@handle_errors
def ttl(
    ctx: typer.Context,
    paths: OptionalPathsArg = None,
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
    """Set, extend or remove checkpoint expiry."""
    from logits_cli.api.bulk import apply_concurrently

    out = Output(json_output=json_output, quiet=quiet)
    if sum((set_to is not None, extend is not None, remove)) != 1:
        raise errors.UsageError("give exactly one of --set, --extend or --remove")
    set_seconds = parse_ttl(set_to) if set_to is not None else None
    extend_seconds = parse_duration(extend) if extend is not None else None
    selection = _selection(paths, run, checkpoint_type, before, after, keep_last, keep_name)
    settings = settings_for(ctx)
    results: dict[str, models.Checkpoint] = {}

    async def work(
        client: "LogitsClient",
    ) -> tuple[list[str], list[tuple[str, errors.LogitsError | None]]]:
        targets, _kept = await selection.targets(client)

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
    report = BulkReport(len(targets), "updated")
    report.add_all(outcome)
    done = [results[t] for t in targets if t in results]
    out.emit_listing(
        [checkpoint_json(c) for c in done],
        (c.tinker_path for c in done),
        [Column("PATH", "tinker_path"), Column("EXPIRES", "expires_at", TIME)],
        [checkpoint_row(c) for c in done],
    )
    report.finish()


def extended_ttl(expires_at: datetime | None, extra_seconds: int, now: datetime) -> int:
    """The TTL that moves an expiry back by ``extra_seconds``.

    A checkpoint that never expired is extended from now: the result is the same as
    ``--set``, which is the only reading that gives it an expiry at all.
    """
    base = max(expires_at, now) if expires_at is not None else now
    seconds = math.ceil((base + timedelta(seconds=extra_seconds) - now).total_seconds())
    if seconds > MAX_DURATION_S:
        raise errors.UsageError(
            "extending it would make it expire more than 10 years from now, the longest allowed"
        )
    return seconds


# -- download / sync / verify -------------------------------------------------------------

OutputDirOpt = Annotated[
    Path,
    typer.Option("--output", "-o", help="Destination directory.", file_okay=False, metavar="DIR"),
]
ConnectionsOpt = Annotated[
    int, typer.Option("--connections", min=1, max=64, help="Parallel ranged requests per file.")
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
    """Download, verify and extract checkpoints into DIR/NAME; prints their local paths."""
    import dataclasses
    import time

    from logits_cli.api.client import DownloadOptions, DownloadResult

    out = Output(json_output=json_output, quiet=quiet)
    if keep_archive and archive_only:
        raise errors.UsageError("--keep-archive and --archive-only cannot be combined")
    refs = parse_refs(paths)
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
                        resolved, output, options=options_now(), progress=progress
                    )
                except errors.LogitsError as error:
                    report.add(str(ref), error)
                    if bars is None:
                        log_line(f"failed {ref}: {error.message}")
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
        int | None, typer.Option("--latest", min=1, help="Only the newest N per run and type.")
    ] = None,
    since: SinceOpt = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=32, help="Checkpoints fetched at once.")
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
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch every checkpoint not yet in DIR, under a lock: safe to run from cron."""
    from logits_cli.api.client import DownloadOptions
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
        download=DownloadOptions(connections=connections),
    )
    settings = settings_for(ctx)

    def on_item(item: "SyncItem") -> None:
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
        out.log_summary(f"sync: {done or 'nothing to do'} in {summary.elapsed_s:.1f} s")
    if summary.incomplete:
        counts = summary.counts()
        raise errors.PartialFailureError(
            f"sync incomplete: {counts.get('failed', 0)} failed, {counts.get('not_started', 0)} not started"
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
    dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="DIR",
            help="Downloaded checkpoint directories, or directories holding them.",
            show_default=False,
        ),
    ],
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-check downloaded checkpoints against their manifests (exit 7 on any mismatch)."""
    from logits_cli.api.verify import find_checkpoint_dirs, verify_checkpoint_dir

    out = Output(json_output=json_output, quiet=quiet)
    checked: list[Path] = []
    for root in dirs:
        if not root.is_dir():
            raise errors.NotFoundError(f"{root} is not a directory")
        found = find_checkpoint_dirs(root)
        if not found:
            raise errors.NotFoundError(f"no downloaded checkpoint in {root}")
        checked.extend(found)
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
        [Column("DIR", "path"), Column("OK", "ok", BOOL), Column("CHECKPOINT", "tinker_path")],
        records,
    )
    bad = [r for r in results if not r.ok]
    for result in bad:
        for problem in result.problems:
            out.warn(f"{result.path}: {problem}")
    if bad:
        raise errors.IntegrityError(f"{len(bad)} of {len(results)} checkpoints failed verification")
