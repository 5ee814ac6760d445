"""``logits runs …``: list, inspect, create and delete (``runs_rm``) training runs."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from logits_cli.cli import runs_rm
from logits_cli.cli.ckpt_select import in_server_scheme, names_a_bare_path, parse_path
from logits_cli.cli.completion_cache import remember
from logits_cli.cli.context import call_api, require_run, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import (
    JsonOpt,
    LimitOpt,
    OptionalRunArgument,
    QuietOpt,
    RunOpt,
    TimeoutOpt,
)
from logits_cli.cli.output import Output
from logits_cli.cli.tables import COUNT, PIPED_ONLY, TABLE_ONLY, TIME, Column
from logits_cli.cli.timeparse import optional_seconds
from logits_cli.cli.wording import with_relative_times
from logits_cli.errors import UsageError
from logits_cli.uri import CheckpointRef

DEFAULT_RANK = 32  # the protocol's default for create_model (docs/protocol.md §5.3)

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient

app = CommandGroup(help="List, inspect, create and delete training runs.", no_args_is_help=True)

# On a terminal the run id is never cut and the latest checkpoint (of either kind) shows as
# KIND/NAME (its run is the row's); piped rows keep the full path of the latest training one.
RUN_COLUMNS = [
    Column("RUN", "training_run_id"),
    Column("BASE MODEL", "base_model", priority=4, shrink=True),
    Column("RANK", "lora_rank", COUNT, priority=2),
    Column("LAST REQUEST", "last_request_time", TIME, priority=3),
    Column("LATEST", "newest_checkpoint_id", priority=1, show=TABLE_ONLY),
    Column("LATEST CHECKPOINT", "last_checkpoint", show=PIPED_ONLY),
]


def _newest_checkpoint(run: "models.TrainingRun") -> "models.Checkpoint | None":
    """The newer of the run's latest training and sampler checkpoints: a run that only
    saved sampler weights has a latest checkpoint too."""
    both = [c for c in (run.last_checkpoint, run.last_sampler_checkpoint) if c is not None]
    return max(both, key=lambda c: c.time, default=None)


def _row(run: "models.TrainingRun") -> dict[str, Any]:
    newest = _newest_checkpoint(run)
    return {
        "training_run_id": run.training_run_id,
        "base_model": run.base_model,
        "lora_rank": run.lora_rank,
        "last_request_time": run.last_request_time,
        "last_checkpoint": run.last_checkpoint.tinker_path if run.last_checkpoint else None,
        "newest_checkpoint_id": newest.checkpoint_id if newest else None,
        "last_sampler_checkpoint": (
            run.last_sampler_checkpoint.tinker_path if run.last_sampler_checkpoint else None
        ),
        "model_owner": run.model_owner,
    }


RUN_FIELDS = [
    Column("run", "training_run_id"),
    Column("base model", "base_model"),
    Column("lora rank", "lora_rank"),
    Column("owner", "model_owner"),
    Column("last request", "last_request_time", TIME),
    Column("latest training", "last_checkpoint"),
    Column("latest sampler", "last_sampler_checkpoint"),
]


@app.command("ls")
@handle_errors
def list_runs(
    ctx: typer.Context,
    include_public: Annotated[
        bool,
        typer.Option("--accessible", help="Also runs of others that have public checkpoints."),
    ] = False,
    limit: LimitOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List training runs, newest first.

    On a terminal: one line per run, the id never cut; piped: tab-separated RUN, BASE
    MODEL, RANK, LAST REQUEST (ISO-8601 UTC), LATEST CHECKPOINT (full path).

    Examples:

    \b
      logits runs ls
      logits runs ls --accessible --limit 20
      export LOGITS_RUN=$(logits runs ls -q | head -1)
    """
    out = Output(json_output=json_output, quiet=quiet)
    settings = settings_for(ctx)
    scope = "accessible" if include_public else "owned"

    async def work(client: "LogitsClient") -> "list[models.TrainingRun]":
        found: list[models.TrainingRun] = []
        async for run in client.iter_runs(access_scope=scope):
            found.append(run)
            if limit is not None and len(found) >= limit:
                break
        return found

    found = call_api(ctx, settings, work)
    remember(settings.home, runs=[r.training_run_id for r in found])
    out.emit_listing(
        [r.model_dump(mode="json") for r in found],
        (r.training_run_id for r in found),
        RUN_COLUMNS,
        [_row(r) for r in found],
        empty="No runs. Create one with `logits runs create --base-model M`.",
        footer=f"{len(found)} run{'' if len(found) == 1 else 's'}",
    )


@app.command()
@handle_errors
def info(
    ctx: typer.Context,
    run: OptionalRunArgument = None,
    run_option: RunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show a run (RUN, else --run, else $LOGITS_RUN) with its latest checkpoints.

    Examples:

    \b
      logits runs info                  # $LOGITS_RUN
      logits runs info RUN --json | jq .base_model
      logits runs info --run RUN
    """
    out = Output(json_output=json_output, quiet=quiet)
    if run is not None and run_option is not None and run != run_option:
        raise UsageError(f"two runs given: {run} and --run {run_option}; give one")
    settings = settings_for(ctx, run=run if run is not None else run_option)
    run_id = require_run(settings)
    found = call_api(
        ctx, settings, lambda client: client.get_run(run_id, access_scope="accessible")
    )
    fields, shown = with_relative_times(RUN_FIELDS, _row(found), terminal=out.stdout_is_terminal)
    out.emit_object(found.model_dump(mode="json"), found.training_run_id, fields, shown)


@app.command()
@handle_errors
def create(
    ctx: typer.Context,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            "-m",
            metavar="MODEL",
            help="Base model, e.g. Qwen/Qwen3-8B. With --from: the checkpoint's.",
            show_default=False,
        ),
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank",
            min=1,
            metavar="N",
            help=f"LoRA rank [default: {DEFAULT_RANK}; with --from: the checkpoint's].",
            show_default=False,
        ),
    ] = None,
    from_path: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start from this checkpoint's weights (a full path, or NAME or KIND/NAME "
            "in the run of --run or $LOGITS_RUN).",
            metavar="PATH",
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "-r",
            help="With --from: the run of a bare NAME (default: $LOGITS_RUN).",
            metavar="RUN",
            show_default=False,
        ),
    ] = None,
    with_optimizer: Annotated[
        bool, typer.Option("--with-optimizer", help="With --from: restore the optimizer too.")
    ] = False,
    timeout: TimeoutOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a training run (optionally from a checkpoint); prints its id.

    Examples:

    \b
      export LOGITS_RUN=$(logits runs create -m Qwen/Qwen3-8B --rank 32)
      logits runs create --from logits://RUN/weights/step_1000 --with-optimizer
      logits runs create --from step_1000 --run RUN   # or a name in $LOGITS_RUN
    """
    out = Output(json_output=json_output, quiet=quiet)
    if from_path is None and (with_optimizer or run is not None):
        raise UsageError(f"{'--with-optimizer' if with_optimizer else '--run'} needs --from PATH")
    settings = settings_for(ctx, run=run)
    source = parse_path(from_path, settings.run) if from_path is not None else None
    wait_limit = optional_seconds(timeout)

    if base_model is None and source is None:
        raise UsageError("give --base-model MODEL, or --from PATH to start from a checkpoint")

    with out.status("Creating a run…") as update:

        async def work(client: "LogitsClient") -> "models.TrainingRun":
            if source is None:
                assert base_model is not None
                return await client.create_run(
                    base_model,
                    rank=rank or DEFAULT_RANK,
                    on_pending=lambda waited: update(f"Creating a run… {waited:.0f} s"),
                    timeout=wait_limit,
                )
            # Like the SDK's create_training_client_from_state: the new run takes the
            # checkpoint's base model, rank and adapted modules, so the load always fits.
            bare = names_a_bare_path([from_path or ""])
            (named,) = await in_server_scheme(client, [source], bare=bare)
            resolved = await client.resolve(named)
            info = await client.weights_info(resolved)
            _refuse_contradiction("base model", base_model, info.base_model, resolved)
            _refuse_contradiction("LoRA rank", rank, info.lora_rank, resolved)
            created = await client.create_run(
                info.base_model,
                rank=info.lora_rank or rank or DEFAULT_RANK,
                train_attn=info.train_attn is not False,
                train_mlp=info.train_mlp is not False,
                train_unembed=info.train_unembed is not False,
                on_pending=lambda waited: update(f"Creating a run… {waited:.0f} s"),
                timeout=wait_limit,
            )
            update(f"Loading {resolved.name}…")
            await client.load(
                created.training_run_id, resolved, with_optimizer=with_optimizer, timeout=wait_limit
            )
            return await client.get_run(created.training_run_id)

        created = call_api(ctx, settings, work)
    remember(settings.home, runs=[created.training_run_id])
    if out.json:
        out.emit_json(created.model_dump(mode="json"))
        return
    out.emit_lines([created.training_run_id])
    out.notice(
        f"Created run on {created.base_model}; use it with: export LOGITS_RUN={created.training_run_id}"
    )


def _refuse_contradiction(what: str, given: object, actual: object, source: CheckpointRef) -> None:
    if given is not None and actual is not None and given != actual:
        raise UsageError(
            f"{source} has {what} {actual}, not {given}; leave the option out to use the "
            "checkpoint's"
        )


app.command()(runs_rm.rm)
