"""``logits server …``: run the reference server and manage its API keys.

The only command group that touches ``server/`` and ``store/``; both are imported inside the
commands so the rest of the CLI never pays for them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli.context import settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import HomeOpt, JsonOpt, PrefixArgument, QuietOpt, UserArgument
from logits_cli.cli.output import Output
from logits_cli.cli.server_notices import is_loopback, no_keys_warning, store_line
from logits_cli.cli.tables import BOOL, TIME, Column
from logits_cli.cli.wording import counted
from logits_cli.utc_text import utc_text

if TYPE_CHECKING:
    from pathlib import Path

    from logits_cli.store.store import Store

app = CommandGroup(help="Run the reference server and manage its API keys.", no_args_is_help=True)
keys_app = CommandGroup(
    help="Create, list and revoke API keys of the server.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


class UriScheme(StrEnum):
    logits = "logits"
    tinker = "tinker"


class Downloads(StrEnum):
    archive = "archive"
    files = "files"
    both = "both"


@app.command()
@handle_errors
def start(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, metavar="PORT", help="TCP port (0: any free)."),
    ] = 8000,
    home: HomeOpt = None,
    uri_scheme: Annotated[
        UriScheme,
        typer.Option(
            "--uri-scheme",
            metavar="logits|tinker",
            help="Scheme of returned paths; 'tinker' for the official SDK.",
        ),
    ] = UriScheme.logits,
    jwt_auth: Annotated[
        bool, typer.Option("--jwt-auth", help="Offer the JWT exchange to clients.")
    ] = False,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="Origin clients reach this server at, for download URLs "
            "[default: the request's scheme and Host].",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
    root_path: Annotated[
        str,
        typer.Option(
            "--root-path",
            help="Path prefix the server is mounted under behind a proxy, e.g. /logits.",
            metavar="PREFIX",
        ),
    ] = "",
    model_configs: Annotated[
        list[str] | None,
        typer.Option(
            "--model-config",
            help="Offer one more base model from its Hugging Face config.json: PATH (named by "
            "the file's _name_or_path) or NAME=PATH. Repeatable.",
            metavar="[NAME=]PATH",
            show_default=False,
        ),
    ] = None,
    downloads: Annotated[
        Downloads,
        typer.Option(
            "--downloads",
            metavar="archive|files|both",
            help="Which generation of downloads to serve: 'archive' (one tar per checkpoint), "
            "'files' (per-file exports, no archive endpoint) or both.",
        ),
    ] = Downloads.both,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="Keep the metadata in this PostgreSQL database (postgresql://USER@HOST/DB; "
            "env LOGITS_SERVER_DATABASE) instead of SQLite, so several processes share it.",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
    blobs: Annotated[
        str | None,
        typer.Option(
            "--blobs",
            help="Keep blobs in this S3-compatible bucket (s3://BUCKET/PREFIX; env "
            "LOGITS_SERVER_BLOBS; AWS_* variables, AWS_ENDPOINT_URL for non-AWS stores); "
            "downloads then come from its presigned URLs.",
            metavar="s3://BUCKET/PREFIX",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=256,
            metavar="N",
            help="Server processes sharing the port and the store; one that dies is replaced.",
        ),
    ] = 1,
) -> None:
    """Serve the store over HTTP (uvicorn) until interrupted.

    Examples:

    \b
      logits server start --port 8000
      logits server start --host 0.0.0.0 --public-url https://ckpt.example.com
      logits server start --workers 4
      logits server start --database postgresql://db/logits --blobs s3://ckpts
      logits server start --uri-scheme tinker --downloads files  # like SDK 0.38
    """
    from logits_cli.server.serve import run_server

    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise errors.UsageError(f"--public-url {public_url!r} must be an absolute http(s) URL")
    if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
        raise errors.UsageError(
            f"--root-path {root_path!r} must start with '/' and not end with one"
        )
    if model_configs:
        from logits_cli.store.catalog import load_catalog

        load_catalog(model_configs)  # a bad config is a usage error before anything starts
    from logits_cli.config import server_blobs, server_database

    database_url = server_database(database)
    blobs_url = server_blobs(blobs)
    settings = settings_for(ctx, home=home)

    def announce() -> None:  # once the store has answered: a failed start is one line
        typer.echo(store_line(settings.store_dir, database_url, blobs_url), err=True)
        if not is_loopback(host) and _active_keys(settings.store_dir, database_url) == 0:
            typer.echo(no_keys_warning(host), err=True)

    try:
        run_server(
            settings.home,
            host=host,
            port=port,
            uri_scheme=uri_scheme.value,
            jwt_auth=jwt_auth,
            public_url=public_url,
            root_path=root_path,
            model_configs=tuple(model_configs or ()),
            downloads=downloads.value,
            database=database_url,
            blobs=blobs_url,
            workers=workers,
            on_ready=announce,
        )
    except SystemExit as stop:
        if not stop.code:
            raise
        # uvicorn exits with its own 3 when it cannot start (address in use, unknown host),
        # which would read as "authentication" here; its log above says why.
        raise errors.LogitsError(
            f"the server could not start on {host}:{port}; see the log above"
        ) from None


def _active_keys(store_dir: "Path", database_url: str | None) -> int | None:
    """How many API keys are not revoked; None when the store cannot be read (starting the
    server then reports why)."""
    from logits_cli.store.store import Store

    try:
        store = Store.open(store_dir, database=database_url)
    except errors.LogitsError:
        return None
    try:
        return sum(not key.revoked for key in store.list_api_keys())
    finally:
        store.close()


@app.command("migrate")
@handle_errors
def migrate(
    ctx: typer.Context,
    to_database: Annotated[
        str,
        typer.Option(
            "--to-database",
            metavar="URL",
            help="The PostgreSQL database to move the metadata into (empty of runs).",
            show_default=False,
        ),
    ],
    to_blobs: Annotated[
        str | None,
        typer.Option(
            "--to-blobs",
            metavar="s3://BUCKET/PREFIX",
            help="Also upload every blob into this bucket; else they stay under --home.",
            show_default=False,
        ),
    ] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Move this store's SQLite metadata (and its blobs) onto PostgreSQL (and S3).

    Stop the server first. Every row is copied with its ids and every blob uploaded under
    its digest; the live state of a run made before schema 6 is archived like a save, so
    any process can rebuild it. Then start it with
    `logits server start --database URL --blobs s3://…`.

    Examples:

    \b
      logits server migrate --to-database postgresql://db/logits
      logits server migrate --to-database postgresql://db/x --to-blobs s3://ckpts
    """
    from logits_cli.cli.tables import human_size
    from logits_cli.config import server_blobs, server_database
    from logits_cli.store.migrate import migrate_store

    if not to_database.startswith(("postgresql://", "postgres://")):
        raise errors.ConfigError("--to-database must be a postgresql:// URL")
    if to_blobs is not None and not to_blobs.startswith("s3://"):
        raise errors.ConfigError("--to-blobs must be an s3://BUCKET[/PREFIX] URL")
    database = server_database(to_database)
    assert database is not None
    blobs = server_blobs(to_blobs, env={})
    out = Output(json_output=json_output, quiet=False)
    done = migrate_store(settings_for(ctx, home=home).store_dir, database=database, blobs=blobs)
    if out.json:
        out.emit_json(
            {
                "rows": done.rows,
                "blobs": done.blobs,
                "blob_bytes": done.blob_bytes,
                "archived_states": done.archived_states,
            }
        )
        return
    rows = done.rows
    out.notice(
        f"Migrated {counted(rows['runs'], 'run')}, {counted(rows['checkpoints'], 'checkpoint')}"
        f" and {counted(rows['api_keys'], 'API key')}"
        + (
            f"; uploaded {counted(done.blobs, 'blob')} ({human_size(done.blob_bytes)})"
            if blobs
            else ""
        )
        + (
            f"; archived the live state of {counted(done.archived_states, 'run')}"
            if done.archived_states
            else ""
        )
    )
    # With the blobs in a bucket, processes on any machine (any --home) serve the store.
    out.notice(
        "Start the server with --database URL"
        + (f" --blobs {blobs} (any --home)." if blobs else " and the same --home.")
    )


@contextmanager
def _open_store(ctx: typer.Context, home: str | None) -> "Iterator[Store]":
    from logits_cli.config import server_database
    from logits_cli.store.store import Store

    # The keys of a team server live in its database (LOGITS_SERVER_DATABASE).
    store = Store.open(settings_for(ctx, home=home).store_dir, database=server_database(None))
    try:
        yield store
    finally:
        store.close()


@keys_app.command("create")
@handle_errors
def create_key(
    ctx: typer.Context,
    user: UserArgument,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create an API key for USER; it is printed once, only its hash is kept.

    USER: a user id of a-z 0-9 _ -, up to 64 characters.

    Examples:

    \b
      logits server keys create alice
      export LOGITS_API_KEY=$(logits server keys create alice)
    """
    out = Output(json_output=json_output, quiet=quiet)
    with _open_store(ctx, home) as store:
        key = store.create_api_key(user)
    if out.json:
        from logits_cli.store.store import KEY_PREFIX_SHOWN

        out.emit_json({"user": user, "key": key, "prefix": key[:KEY_PREFIX_SHOWN]})
        return
    out.emit_lines([key])
    out.notice(f"Created an API key for {user}; it is shown only now. Clients use LOGITS_API_KEY.")


@keys_app.command("ls")
@handle_errors
def list_keys(
    ctx: typer.Context, home: HomeOpt = None, json_output: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """List keys by prefix, user and creation time (never the keys themselves).

    Examples:

    \b
      logits server keys ls
      logits server keys ls --json | jq -r '.[] | select(.revoked|not) | .prefix'
    """
    out = Output(json_output=json_output, quiet=quiet)
    with _open_store(ctx, home) as store:
        keys = store.list_api_keys()
    out.emit_listing(
        [
            {
                "prefix": k.prefix,
                "user": k.user_id,
                "created": utc_text(k.created),
                "revoked": k.revoked,
            }
            for k in keys
        ],
        (k.prefix for k in keys),
        [
            Column("PREFIX", "prefix"),
            Column("USER", "user_id"),
            Column("CREATED", "created", TIME),
            Column("REVOKED", "revoked", BOOL),
        ],
        [asdict(k) for k in keys],
        empty="No API keys. Create one with `logits server keys create USER`.",
    )


@keys_app.command("revoke")
@handle_errors
def revoke_key(
    ctx: typer.Context,
    prefix: PrefixArgument,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Revoke every key starting with PREFIX (at least 8 characters).

    PREFIX: a key prefix as `logits server keys ls` shows it.

    A prefix that matches no key is an error (exit 4), so a typo is never taken for done.

    Examples:

    \b
      logits server keys ls
      logits server keys revoke lg_1a2b3c4d
    """
    out = Output(json_output=json_output)
    with _open_store(ctx, home) as store:
        try:
            count = store.revoke_api_key(prefix)
        except errors.NotFoundError as error:
            error.hint = error.hint or "`logits server keys ls` lists the prefixes"
            raise
    if out.json:
        out.emit_json({"prefix": prefix, "revoked": count})
        return
    out.notice(f"Revoked {counted(count, 'key')} starting with {prefix}")
