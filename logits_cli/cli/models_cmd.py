"""``logits models …``: the base models the service offers (``get_server_capabilities``)."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import JsonOpt, QuietOpt
from logits_cli.cli.output import Output
from logits_cli.cli.tables import BOOL, COUNT, Column
from logits_cli.errors import NotFoundError

if TYPE_CHECKING:
    from logits_cli import models

app = CommandGroup(help="List the base models the service offers.", no_args_is_help=True)

MODEL_COLUMNS = [
    Column("MODEL", "model_name"),
    Column("MAX CONTEXT", "max_context_length", COUNT),
    Column("TRAINABLE", "trainable", BOOL),
    Column("SAMPLEABLE", "sampleable", BOOL),
]


def _row(model: "models.SupportedModel") -> dict[str, Any]:
    return model.model_dump(mode="json")


@app.command("ls")
@handle_errors
def list_models(
    ctx: typer.Context,
    substring: Annotated[
        str | None,
        typer.Argument(
            metavar="SUBSTRING",
            help="Only models whose name contains this, ignoring case.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the base models runs can be created on.

    Pass a model's name to `logits runs create --base-model`.

    SUBSTRING: only models whose name contains it, ignoring case.

    Examples:

    \b
      logits models ls
      logits models ls qwen3 -q | head -1
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx)
    capabilities = call_api(ctx, settings, lambda client: client.capabilities())
    found = [m for m in capabilities.supported_models if m.model_name]
    if substring is not None:
        needle = substring.casefold()
        found = [m for m in found if needle in (m.model_name or "").casefold()]
        if not found:
            raise NotFoundError(f"no base model name contains {substring!r}")
    out.emit_listing(
        [_row(m) for m in found],
        (m.model_name or "" for m in found),
        MODEL_COLUMNS,
        [_row(m) for m in found],
        empty="The service offers no base models.",
    )
