"""The root ``logits`` command: global connection flags, ``--version``, the groups."""

from typing import Annotated

import typer

from logits_cli.cli import ckpt, config_cmd, models_cmd, runs, server, version_line
from logits_cli.cli.context import RootOptions
from logits_cli.cli.failures import report_error
from logits_cli.cli.timeparse import parse_duration
from logits_cli.errors import LogitsError

app = typer.Typer(
    name="logits",
    help="Save, list, download, publish and expire fine-tuning checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich-formatted help would import rich.markdown on every --help (~50 ms).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(ckpt.app, name="ckpt")
app.add_typer(runs.app, name="runs")
app.add_typer(server.app, name="server")
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Service URL (env: LOGITS_BASE_URL, TINKER_BASE_URL; unset: embedded backend).",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Profile from config.toml (env: LOGITS_PROFILE).",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            help="State directory: config, embedded store, caches (env: LOGITS_HOME).",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    retry_for: Annotated[
        str | None,
        typer.Option(
            "--retry-for",
            help="Keep retrying an unreachable or overloaded service this long (default 2m).",
            metavar="DURATION",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Checkpoint manager for services speaking the Tinker HTTP API.

    API key: LOGITS_API_KEY, LOGITS_API_KEY_CMD or TINKER_API_KEY. LOGITS_RUN sets the
    default run; LOGITS_DEBUG=1 shows tracebacks.
    """
    del version  # handled eagerly by its callback
    ctx.obj = RootOptions(
        base_url=base_url,
        profile=profile,
        home=home,
        retry_for=_retry_seconds(retry_for),
    )


def _retry_seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(parse_duration(text))
    except LogitsError as error:
        report_error(error)
        raise typer.Exit(error.exit_code) from None


def main() -> None:
    app(prog_name="logits")
