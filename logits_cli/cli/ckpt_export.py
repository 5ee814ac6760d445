"""``logits ckpt export SRC -o OUT --format peft``: a checkpoint as a PEFT adapter that vLLM,
SGLang and ``peft`` load (the conversion is ``api/peft_export.py``). SRC is a directory a
download made, or a checkpoint path, downloaded first (adapter files only, every download
check) into a private temporary directory. Registered on the ``ckpt`` app by ``ckpt.py``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_select import parse_path
from logits_cli.cli.context import call_api, settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import JsonOpt, NamesRunOpt, QuietOpt
from logits_cli.cli.output import Output

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient
    from logits_cli.api.peft_export import RawCheckpoint

SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A downloaded checkpoint directory, or a checkpoint path (downloaded first).",
        metavar="SRC",
        show_default=False,
    ),
]
BaseConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--base-config",
        help="The base model's config.json, or its directory (needed offline for models "
        "outside the catalog; only config and weight-index headers are read).",
        metavar="FILE|DIR",
    ),
]
BaseModelOpt = Annotated[
    str | None,
    typer.Option(
        "--base-model",
        help="The base model's Hub name, when the checkpoint does not say it.",
        metavar="NAME",
    ),
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype", help="Write tensors as bf16, f16 or f32 (default: as trained).", metavar="DT"
    ),
]
DTYPES = ("bf16", "f16", "f32")


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise errors.UsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def is_local_source(src: str) -> bool:
    """A directory on disk, or something written like a file path (not a checkpoint path)."""
    return Path(src).exists() or src.startswith(("/", "./", "../", "~")) or src in (".", "..")


@contextmanager
def checkpoint_source(
    ctx: typer.Context, src: str, run: str | None, out: Output
) -> Iterator[tuple[RawCheckpoint, str | None]]:
    """SRC opened as a downloaded checkpoint, and the base model its run names (None for a
    local directory). A checkpoint path is downloaded (adapter files only) into a private
    temporary directory, removed on the way out."""
    from logits_cli.api.peft_export import open_checkpoint

    if is_local_source(src):
        yield open_checkpoint(Path(src).expanduser()), None
        return
    from logits_cli.api.download_options import DownloadOptions

    settings = settings_for(ctx, run=run)
    ref = parse_path(src, settings.run)
    with tempfile.TemporaryDirectory(prefix="logits-export-") as scratch:

        async def work(client: LogitsClient) -> tuple[Path, str]:
            options = DownloadOptions(adapter_only=True, private_dest=True)
            result = await client.download(ref, Path(scratch), options=options, notice=out.notice)
            base = (await client.get_run(ref.run_id, access_scope="accessible")).base_model
            return result.path, base

        out.notice(f"Downloading {ref} (adapter files) ...")
        path, base_model = call_api(ctx, settings, work)
        yield open_checkpoint(path), base_model


@handle_errors
def export(
    ctx: typer.Context,
    src: SourceArgument,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The adapter directory to write.", metavar="OUT"),
    ],
    format: Annotated[
        str, typer.Option("--format", help="Output format: peft.", metavar="FORMAT")
    ] = "peft",
    base_config: BaseConfigOpt = None,
    base_model: BaseModelOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT.")] = False,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a checkpoint into a PEFT LoRA adapter for vLLM, SGLang or peft.

    Names follow the Hugging Face model (experts one per index, tied embeddings, prefixes
    of vision-language checkpoints); tensors stay unscaled, in their dtype unless --dtype.
    No torch and no base weights: the base model's config comes from the catalog,
    --base-config, or the Hub (config.json and the weight index only).

    Examples:

    \b
      logits ckpt export logits://RUN/sampler_weights/final -o ./adapter
      logits ckpt export ./ckpts/step_1000 -o ./adapter --dtype bf16
      logits ckpt export step_1000 --run RUN -o out --base-config config.json
      vllm serve BASE --enable-lora --lora-modules mine=./adapter
    """
    from logits_cli.api.base_model_facts import resolve_facts
    from logits_cli.api.peft_export import export_peft

    out = Output(json_output=json_output, quiet=quiet)
    if format != "peft":
        raise errors.UsageError(f"--format must be peft, not {format!r}")
    check_dtype(dtype)
    if (output.exists() or output.is_symlink()) and not force:
        raise errors.ConflictError(f"{output} exists", option="force")
    with checkpoint_source(ctx, src, run, out) as (checkpoint, run_base_model):
        name = base_model or checkpoint.base_model or run_base_model
        facts = resolve_facts(name, base_config)
        with out.status(f"Converting {checkpoint.manifest.tinker_path} for {facts.name}"):
            result = export_peft(checkpoint, facts, output, dtype=dtype, force=force)
    if out.json:
        out.emit_json(
            {
                "path": str(result.path),
                "source": result.source,
                "format": "peft",
                "family": result.family,
                "base_model": result.base_model,
                "tensors": result.tensors,
                "bytes": result.bytes_written,
            }
        )
    elif out.quiet:
        out.emit_lines([str(result.path)])
    else:
        out.emit_lines(
            [
                f"Exported {result.source} -> {result.path} "
                f"(peft, {result.family}, {result.tensors} tensors, base {result.base_model})"
            ]
        )
