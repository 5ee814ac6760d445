"""The root ``logits`` command: global connection flags, ``--version``, the groups."""

import sys
from typing import Annotated

import typer

from logits_cli.cli import ckpt, config_cmd, models_cmd, runs, server, version_line
from logits_cli.cli.context import RootOptions
from logits_cli.cli.failures import report_error
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.timeparse import parse_duration
from logits_cli.errors import LogitsError, UsageError

app = CommandGroup(
    name="logits",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich-formatted help would import rich.markdown on every --help (~50 ms).
    rich_markup_mode=None,
    # Help is wrapped at the terminal's width, not at 80 columns (subcommands inherit it).
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 1000},
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
    """Save, list, download, publish and expire fine-tuning checkpoints.

    A checkpoint manager for services speaking the Tinker HTTP API; with no
    LOGITS_BASE_URL it runs the reference server in-process (the embedded backend).

    Root options go before the command: logits --base-url URL ckpt ls.

    Environment:

    \b
      LOGITS_BASE_URL     service URL (or TINKER_BASE_URL); unset: embedded
      LOGITS_API_KEY      API key (or TINKER_API_KEY)
      LOGITS_API_KEY_CMD  a command printing the API key (a secret manager)
      LOGITS_PROFILE      profile of config.toml to use
      LOGITS_RUN          default run for save, load and bare checkpoint names
      LOGITS_HOME         state directory: config, embedded store, caches
      LOGITS_DEBUG        1: show tracebacks of errors

    Examples:

    \b
      export LOGITS_RUN=$(logits runs create --base-model Qwen/Qwen3-8B)
      logits ckpt save step_1000
      logits ckpt ls
      logits ckpt download logits://$LOGITS_RUN/weights/@latest -o ./ckpts
    """
    del version  # handled eagerly by its callback
    ctx.obj = RootOptions(
        base_url=base_url,
        profile=profile,
        home=home,
        retry_for=_retry_seconds(retry_for),
    )


# Options of ``logits`` itself, and what their value looks like in a hint.
ROOT_OPTIONS = {
    "--base-url": "URL",
    "--profile": "NAME",
    "--home": "DIR",
    "--retry-for": "DURATION",
}
# Groups with an option of the same name of their own.
OWN_OPTIONS = {"server": {"--home"}}


def misplaced_root_option(argv: list[str]) -> str | None:
    """The error for a root option given after the command (``logits ckpt ls --base-url
    U``), which Typer would answer with "No such option" and no word on where it belongs;
    None when there is none. Reads argv only: nothing is rewritten."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] in ROOT_OPTIONS else 1
    if index >= len(argv):
        return None
    group, rest = argv[index], argv[index + 1 :]
    for position, token in enumerate(rest):
        if token == "--":
            return None
        name, has_value, value = token.partition("=")
        if name not in ROOT_OPTIONS or name in OWN_OPTIONS.get(group, set()):
            continue
        following = rest[position + 1 : position + 2]
        if not has_value:
            value = following[0] if following else ROOT_OPTIONS[name]
        skip = 1 if has_value or not following else 2
        command = " ".join([group, *rest[:position], *rest[position + skip :]])
        return f"{name} is an option of `logits` itself: logits {name} {value} {command}"
    return None


def _retry_seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(parse_duration(text))
    except LogitsError as error:
        report_error(error)
        raise typer.Exit(error.exit_code) from None


def main() -> None:
    misplaced = misplaced_root_option(sys.argv[1:])
    if misplaced is not None:
        report_error(UsageError(misplaced))
        raise SystemExit(UsageError.exit_code)
    app(prog_name="logits")
