"""``logits ckpt …``: save, load, list, inspect; URLs and publishing (``ckpt_sharing``),
expire and delete (``ckpt_retention``), download and verify (``ckpt_transfer``), sync
(``ckpt_sync``), export and push-hf for serving (``ckpt_export``, ``ckpt_push``).

Each command parses its input, makes its calls inside one ``call_api`` session, and renders
the result. Rendering lives in ``ckpt_render``, path parsing and bulk selection in
``ckpt_select``. Bulk work (publish, rm, ttl over several checkpoints) goes through
``api.bulk.apply_concurrently``; any failed item makes the command exit 8.
"""

from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli import (
    ckpt_export,
    ckpt_list,
    ckpt_push,
    ckpt_retention,
    ckpt_sharing,
    ckpt_sync,
    ckpt_transfer,
)
from logits_cli.cli.ckpt_render import (
    INFO_FIELDS,
    checkpoint_json,
    checkpoint_row,
    saved_notice,
)
from logits_cli.cli.ckpt_select import (
    BulkReport,
    extended_ttl,
    in_server_scheme,
    kind_of,
    names_a_bare_path,
    parse_path,
    parse_refs,
)
from logits_cli.cli.context import call_api, require_run, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import (
    JsonOpt,
    NameArgument,
    NamesRunOpt,
    PathArgument,
    QuietOpt,
    RunOpt,
    TimeoutOpt,
)
from logits_cli.cli.output import Output
from logits_cli.cli.timeparse import optional_seconds, parse_ttl
from logits_cli.cli.wording import with_relative_times
from logits_cli.uri import CheckpointRef, validate_name

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient


__all__ = ["BulkReport", "extended_ttl", "kind_of", "parse_refs"]

app = CommandGroup(
    help="Save, list, download, publish, expire and delete checkpoints.", no_args_is_help=True
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
    ckpt_list.remember_listing(settings, [checkpoint])
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
            (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
            resolved = await client.resolve(named)
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


app.command("ls")(ckpt_list.list_checkpoints)


@app.command()
@handle_errors
def info(
    ctx: typer.Context,
    path: PathArgument,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show one checkpoint, with its base model and LoRA rank.

    PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of
    --run or $LOGITS_RUN; NAME may be @latest.

    Examples:

    \b
      logits ckpt info logits://RUN/weights/step_1000
      logits ckpt info sampler_weights/@latest     # in $LOGITS_RUN
      logits ckpt info step_1000 --run RUN --json | jq .size_bytes
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx, run=run)
    ref = parse_path(path, settings.run)

    async def work(
        client: "LogitsClient",
    ) -> "tuple[models.Checkpoint, models.WeightsInfoResponse]":
        (named,) = await in_server_scheme(client, [ref], bare=names_a_bare_path([path]))
        checkpoint = await client.get_checkpoint(named)
        weights = await client.weights_info(CheckpointRef.parse(checkpoint.tinker_path))
        return checkpoint, weights

    checkpoint, weights = call_api(ctx, settings, work)
    record = {
        **checkpoint_json(checkpoint),
        "base_model": weights.base_model,
        "is_lora": weights.is_lora,
        "lora_rank": weights.lora_rank,
    }
    # The human view shows the raw values (times as datetimes), the JSON's other fields.
    fields, shown = with_relative_times(
        INFO_FIELDS, {**record, **checkpoint_row(checkpoint)}, terminal=out.stdout_is_terminal
    )
    out.emit_object(record, checkpoint.tinker_path, fields, shown)


# -- url / publish / unpublish (ckpt_sharing) ---------------------------------------------

app.command()(ckpt_sharing.url)
app.command()(ckpt_sharing.publish)
app.command()(ckpt_sharing.unpublish)


# -- rm / ttl: explicit paths, or a run with retention filters (ckpt_retention) -------------

app.command()(ckpt_retention.rm)
app.command()(ckpt_retention.ttl)


# -- download / sync / verify (ckpt_transfer, ckpt_sync) ---------------------------------

app.command()(ckpt_transfer.download)
app.command()(ckpt_sync.sync)
app.command()(ckpt_transfer.verify)


# -- export / push-hf (ckpt_export, ckpt_push) --------------------------------------------

app.command()(ckpt_export.export)
app.command("push-hf")(ckpt_push.push_hf)
