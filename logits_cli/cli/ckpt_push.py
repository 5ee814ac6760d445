"""``logits ckpt push-hf SRC --repo OWNER/NAME``: a checkpoint as a Hugging Face Hub model
repo (``api/hf_publish.py``), PEFT format by default, private unless ``--public``.
Registered on the ``ckpt`` app by ``ckpt.py``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from logits_cli import errors
from logits_cli.cli.ckpt_export import (
    BaseConfigOpt,
    BaseModelOpt,
    SourceArgument,
    checkpoint_source,
)
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.options import DryRunOpt, JsonOpt, NamesRunOpt, QuietOpt
from logits_cli.cli.output import Output


@handle_errors
def push_hf(
    ctx: typer.Context,
    src: SourceArgument,
    repo: Annotated[
        str, typer.Option("--repo", help="The Hub model repo to push to.", metavar="OWNER/NAME")
    ],
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch (default: main).", metavar="R")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="Create the repo public (default: private).")
    ] = False,
    format: Annotated[
        str, typer.Option("--format", help="peft (default) or raw.", metavar="FORMAT")
    ] = "peft",
    commit_message: Annotated[
        str | None, typer.Option("--commit-message", help="The commit's message.", metavar="M")
    ] = None,
    create_pr: Annotated[
        bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")
    ] = False,
    dry_run: DryRunOpt = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="With --dry-run: stage the upload here.", metavar="DIR"
        ),
    ] = None,
    base_config: BaseConfigOpt = None,
    base_model: BaseModelOpt = None,
    run: NamesRunOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish a checkpoint to the Hugging Face Hub, with a model card.

    The token is HF_TOKEN's or that of `hf auth login`. Pushing the same checkpoint again
    commits nothing; a repo whose card names another checkpoint is refused. --dry-run -o
    DIR writes exactly what would be uploaded into DIR.

    Examples:

    \b
      logits ckpt push-hf logits://RUN/sampler_weights/final --repo me/my-adapter
      logits ckpt push-hf final --run RUN --repo me/my-adapter --public
      logits ckpt push-hf final --run RUN --repo me/x --dry-run -o ./staged
    """
    from logits_cli.api import hf_publish
    from logits_cli.api.base_model_facts import resolve_facts
    from logits_cli.api.peft_families import check_convertible

    out = Output(json_output=json_output, quiet=quiet)
    if not hf_publish.REPO_ID.match(repo) or ".." in repo:
        raise errors.UsageError(f"--repo must be OWNER/NAME, not {repo!r}")
    if format not in ("peft", "raw"):
        raise errors.UsageError(f"--format must be peft or raw, not {format!r}")
    if dry_run and output is None:
        raise errors.UsageError("--dry-run needs -o DIR, where the upload is staged")
    if output is not None and not dry_run:
        raise errors.UsageError("-o DIR goes with --dry-run")
    if output is not None and (output.exists() or output.is_symlink()):
        raise errors.ConflictError(f"{output} exists")
    with checkpoint_source(ctx, src, run, out) as (checkpoint, run_base_model):
        facts = None
        if format == "peft":
            facts = resolve_facts(
                base_model or checkpoint.base_model or run_base_model, base_config
            )
            check_convertible(facts)
        if output is not None:
            files = hf_publish.stage(checkpoint, facts, output, repo, format)
            report = {"repo": repo, "dry_run": True, "path": str(output), "files": files}
            if out.json:
                out.emit_json(report)
            elif out.human:
                out.emit_lines(
                    [f"Staged {len(files)} files for {repo} in {output} (nothing pushed)"]
                )
            return
        with tempfile.TemporaryDirectory(prefix="logits-push-") as scratch:
            staged = Path(scratch) / "stage"
            hf_publish.stage(checkpoint, facts, staged, repo, format)
            result = hf_publish.push(
                staged,
                repo,
                checkpoint.manifest.tinker_path,
                revision=revision,
                private=not public,
                commit_message=commit_message,
                create_pr=create_pr,
                progress=out.live_progress,
            )
    if out.json:
        out.emit_json(
            {
                "repo": result.repo,
                "revision": result.revision,
                "commit": result.commit,
                "commit_url": result.commit_url,
                "new_commit": result.new_commit,
                "pr_url": result.pr_url,
                "files": result.files,
            }
        )
    elif out.quiet:
        out.emit_lines([result.pr_url or result.commit_url])
    else:
        what = "Pushed" if result.new_commit else "Unchanged, no new commit:"
        out.emit_lines(
            [f"{what} {result.repo}@{result.revision} {result.pr_url or result.commit_url}"]
        )
