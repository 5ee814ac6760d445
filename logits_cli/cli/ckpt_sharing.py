"""``logits ckpt url``, ``publish`` and ``unpublish``: sharing a checkpoint, by a signed URL
or by making it public. Registered on the ``ckpt`` group by ``ckpt.py``.
"""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_render import VISIBILITY_COLUMNS
from logits_cli.cli.ckpt_select import (
    BulkReport,
    in_server_scheme,
    names_a_bare_path,
    parse_path,
    parse_refs,
)
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import JsonOpt, NamesRunOpt, PathArgument, PathsArgument, QuietOpt
from logits_cli.cli.output import Output
from logits_cli.config import Settings
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient
    from logits_cli.api.download_options import FileUrls


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


@handle_errors
def url(
    ctx: typer.Context,
    path: PathArgument,
    run: NamesRunOpt = None,
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
    settings = settings_for(ctx, run=run)
    ref = parse_path(path, settings.run)

    if settings.embedded and ref.kind == EXTERNAL_KIND:
        raise errors.UnsupportedError(
            f"{ref} is an export; on the embedded backend its files have no URL that works "
            "outside this process",
            hint=f"download it with `logits ckpt download {path}`",
        )
    if settings.embedded:

        async def local(client: "LogitsClient") -> "models.Checkpoint":
            (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
            return await client.get_checkpoint(await client.resolve(named))

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

        (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
        return await signed_urls(client, named, export=export, notice=out.notice)

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


def _change_visibility(
    ctx: typer.Context, paths: list[str], run: str | None, *, public: bool, out: Output
) -> None:
    from logits_cli.api.bulk import apply_concurrently

    settings = settings_for(ctx, run=run)
    refs = parse_refs(paths, settings.run)
    results: dict[int, dict[str, Any]] = {}
    report = BulkReport(len(refs), "published" if public else "unpublished")

    async def work(client: "LogitsClient") -> list[tuple[int, errors.LogitsError | None]]:
        refs[:] = await in_server_scheme(client, refs, bare=names_a_bare_path(paths))

        async def change(index: int) -> None:
            resolved = await client.resolve(refs[index])
            changed = await (client.publish(resolved) if public else client.unpublish(resolved))
            results[index] = {"path": str(resolved), "public": public, "changed": changed}

        return await apply_concurrently(list(range(len(refs))), change)

    report.add_all((str(refs[index]), error) for index, error in call_api(ctx, settings, work))
    done = [results[i] for i in sorted(results)]
    table = [
        {**row, "run_id": ref.run_id, "checkpoint_id": ref.checkpoint_id}
        for row in done
        for ref in [CheckpointRef.parse(row["path"])]
    ]
    out.emit_listing(done, (r["path"] for r in done), VISIBILITY_COLUMNS, table)
    report.finish()


@handle_errors
def publish(
    ctx: typer.Context,
    paths: PathsArgument,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make checkpoints public (readable by every user).

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Already public is success (CHANGED no; "changed": false in JSON).

    Examples:

    \b
      logits ckpt publish logits://RUN/sampler_weights/final
      logits ckpt publish step_1000 step_2000      # names in $LOGITS_RUN
      logits ckpt publish sampler_weights/final --run RUN
    """
    out = Output(json_output=json_output, quiet=quiet)
    _change_visibility(ctx, paths, run, public=True, out=out)


@handle_errors
def unpublish(
    ctx: typer.Context,
    paths: PathsArgument,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make checkpoints private again.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt unpublish logits://RUN/sampler_weights/final
      logits ckpt ls --public --mine -q | xargs logits ckpt unpublish
    """
    out = Output(json_output=json_output, quiet=quiet)
    _change_visibility(ctx, paths, run, public=False, out=out)
