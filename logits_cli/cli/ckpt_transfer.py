"""``logits ckpt download`` and ``verify``: the commands that bring checkpoints to this
machine and check them there (``sync``, cron mode, is ``ckpt_sync.py``). Registered on the ``ckpt`` app by ``ckpt.py``, in the order
the help lists them; the engine behind them is ``api/transfer/`` (docs/ARCHITECTURE.md §3)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_select import (
    in_server_scheme,
    names_a_bare_path,
    parse_refs,
)
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.download_failures import DownloadFailures
from logits_cli.cli.download_target import (
    clashing_names,
    deliver,
    install_parent,
    resolve_target,
)
from logits_cli.cli.failures import handle_errors, on_interrupt, report_error
from logits_cli.cli.options import (
    DirsArgument,
    JsonOpt,
    NamesRunOpt,
    PathsArg,
    QuietOpt,
)
from logits_cli.cli.output import Output, log_line
from logits_cli.cli.tables import BOOL, Column, human_transfer
from logits_cli.cli.timeparse import (
    optional_seconds,
)
from logits_cli.cli.transfer_bars import listed_sizes
from logits_cli.uri import CheckpointRef

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient


# -- download / sync / verify -------------------------------------------------------------

OutputDirOpt = Annotated[
    Path,
    typer.Option("--output", "-o", help="Destination directory.", file_okay=False, metavar="DIR"),
]
DownloadOutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Destination directory; FILE.tar with --archive-only; - for stdout.",
        metavar="DIR",
    ),
]
AdapterOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--adapter-only",
        help="Install only the adapter (adapter_model.safetensors, adapter_config.json), "
        "not the optimizer state.",
    ),
]
ExportOpt = Annotated[
    bool,
    typer.Option(
        "--export/--no-export",
        help="On deployments without archive downloads, weights/ checkpoints are fetched "
        "through an export (one training session on the service each); --no-export "
        "refuses them instead (exit 10).",
        show_default=False,
    ),
]
ConnectionsOpt = Annotated[
    int,
    typer.Option(
        "--connections", min=1, max=64, metavar="N", help="Parallel ranged requests per file."
    ),
]


@handle_errors
def download(
    ctx: typer.Context,
    paths: PathsArg,
    run: NamesRunOpt = None,
    output: DownloadOutputOpt = Path("."),
    connections: ConnectionsOpt = 8,
    keep_archive: Annotated[
        bool, typer.Option("--keep-archive", help="Keep NAME.tar beside NAME/.")
    ] = False,
    archive_only: Annotated[
        bool, typer.Option("--archive-only", help="Verify and keep NAME.tar; do not extract.")
    ] = False,
    adapter_only: AdapterOnlyOpt = False,
    export: ExportOpt = True,
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

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest. When two PATHs
    share a NAME (weights/X and sampler_weights/X), every checkpoint of the command goes to
    DIR/RUN/KIND/NAME instead, the layout of sync. A killed or interrupted download resumes
    where it stopped when run again. With one PATH, -o - writes the verified archive to
    stdout, and --archive-only -o FILE.tar writes it to FILE.tar. --adapter-only installs
    the adapter files without the optimizer state (the whole archive is still fetched, to
    check its digest).

    Examples:

    \b
      logits ckpt download logits://RUN/weights/step_1000 -o ./ckpts
      logits ckpt download logits://RUN/weights/step_1000 --adapter-only -o serve
      logits ckpt download logits://RUN/weights/@latest --archive-only -o last.tar
      logits ckpt download logits://RUN/weights/final -o - | tar -t
      logits ckpt ls -q RUN | xargs logits ckpt download -o ./ckpts
    """
    import dataclasses
    import time

    from logits_cli.api.download_options import DownloadOptions, DownloadResult

    out = Output(json_output=json_output, quiet=quiet)
    if keep_archive and archive_only:
        raise errors.UsageError("--keep-archive and --archive-only cannot be combined")
    settings = settings_for(ctx, run=run)
    refs = parse_refs(paths, settings.run)
    target = resolve_target(output, refs, archive_only=archive_only, home=settings.home)
    if adapter_only and (archive_only or target.archive_only):
        raise errors.UsageError(
            "--adapter-only installs files; the archive of --archive-only, -o - or "
            "-o FILE.tar is always whole"
        )
    total_limit = optional_seconds(timeout)
    options = DownloadOptions(
        connections=connections,
        keep_archive=keep_archive,
        archive_only=target.archive_only or archive_only,
        adapter_only=adapter_only,
        allow_export=export,
        force=force,
        lock_wait=optional_seconds(lock_wait) or 0.0,
        private_dest=target.directory != output,  # a staging directory of ours
    )
    failures = DownloadFailures(len(refs), live=out.live_progress, bare=names_a_bare_path(paths))
    give_up = None if total_limit is None else time.monotonic() + total_limit

    def options_now() -> DownloadOptions:
        """--timeout is one deadline for every checkpoint of the command."""
        if give_up is None:
            return options
        return dataclasses.replace(options, timeout=max(0.0, give_up - time.monotonic()))

    started = time.monotonic()
    on_interrupt(
        f"what arrived is kept in {target.directory}; "
        "run the same command again to resume the download"
    )

    async def work(client: "LogitsClient") -> "list[DownloadResult]":
        async def failed(ref: CheckpointRef, raised: errors.LogitsError) -> None:
            failure = raised
            if give_up is not None and time.monotonic() >= give_up:
                failure = errors.UnavailableError(
                    f"did not finish within --timeout {timeout}",
                    hint="run the same command again to resume the download",
                )
            await failures.add(client, ref, failure)

        done: list[DownloadResult] = []
        # Names are known once @latest is resolved; the layout depends on all of them. Bare
        # names are written in the server's scheme, as its listings write them.
        named = await in_server_scheme(client, refs, bare=names_a_bare_path(paths))
        resolved: list[tuple[CheckpointRef, CheckpointRef]] = []
        for ref in named:
            try:
                resolved.append((ref, await client.resolve(ref)))
            except errors.LogitsError as raised:
                await failed(ref, raised)
        clash = clashing_names([r for _, r in resolved])
        if clash is not None:
            out.notice(
                f"{clash[0]} and {clash[1]} share a name: each checkpoint goes to "
                f"{target.directory}/RUN/KIND/NAME, as sync lays them out"
            )
        # Sizes as listed, so the bars show their totals from the first frame.
        checkpoints = [r for _, r in resolved]
        sizes = await listed_sizes(client, checkpoints) if out.live_progress else []
        with out.transfer_bars(len(resolved), sizes=sizes) as bars:
            for index, (ref, checkpoint_ref) in enumerate(resolved):
                progress = None
                dest = install_parent(target.directory, checkpoint_ref, by_run_and_kind=bool(clash))
                try:
                    size = sizes[index] if bars else None
                    progress = bars.bar(checkpoint_ref.name, total=size) if bars else None
                    result = await client.download(
                        checkpoint_ref,
                        dest,
                        options=options_now(),
                        progress=progress,
                        notice=out.notice,
                    )
                except errors.LogitsError as raised:
                    if progress is not None:
                        progress.finish("failed")
                    await failed(ref, raised)
                    continue
                done.append(result)
                if progress is not None:
                    progress.finish("present" if result.skipped else "done")
                if result.repaired:
                    log_line(f"repaired {result.path}: {'; '.join(result.repaired)}")
                if bars is None:
                    what = "present" if result.skipped else "downloaded"
                    log_line(
                        f"{what} {result.checkpoint.tinker_path} -> {target.shown(result.path)} ({result.bytes_fetched} bytes fetched)"
                    )
        return done

    results = call_api(ctx, settings, work)
    fetched = sum(r.bytes_fetched for r in results)
    present = sum(r.skipped for r in results)
    # Piped, one checkpoint already has its "downloaded X -> Y" line; the summary is for
    # several, and for a terminal, where the bars replaced those lines.
    if len(refs) > 1 or out.live_progress:
        out.log_summary(
            f"downloaded {len(results) - present} of {len(refs)}"
            + (f" ({present} already present)" if present else "")
            + f", {human_transfer(fetched, time.monotonic() - started)}"
        )
    if target.directory != output and results:
        delivered = deliver(target, results[0].path)
        if delivered is None:  # the archive went to stdout: nothing else may
            failures.finish()
            return
        results = [dataclasses.replace(results[0], path=delivered)]
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
    failures.finish()


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
    # As in download's JSON: "path" is the checkpoint's URI (None when the manifest is
    # unreadable), "local_path" the directory on this machine.
    records = [
        {
            "path": r.tinker_path,
            "local_path": str(r.path),
            "ok": r.ok,
            "problems": list(r.problems),
        }
        for r in results
    ]
    out.emit_listing(
        records,
        (str(r.path) for r in results if r.ok),
        [
            Column("DIR", "local_path"),
            Column("OK", "ok", BOOL),
            Column("CHECKPOINT", "path", priority=1),
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
