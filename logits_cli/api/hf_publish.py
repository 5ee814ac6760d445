"""``ckpt push-hf``: a checkpoint as a Hugging Face Hub model repo, through ``huggingface_hub``
(imported here only; its token comes from ``HF_TOKEN`` or its login and is never shown).

What is uploaded is staged first into a directory (``--dry-run -o DIR`` keeps it): the PEFT
export (default) or the raw adapter files, and a model card ``README.md`` whose front matter
names the base model and the checkpoint URI. A repo whose card names another checkpoint is
refused; the staged bytes are deterministic, so pushing the same checkpoint again uploads
nothing and makes no commit (``huggingface_hub`` drops unchanged files and empty commits).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from logits_cli.api import peft_families as families
from logits_cli.api.peft_export import ADAPTER_CONFIG, ADAPTER_MODEL, RawCheckpoint, export_peft
from logits_cli.errors import (
    AuthError,
    ConflictError,
    LogitsError,
    NotFoundError,
    UnavailableError,
    UsageError,
)

CARD = "README.md"
CARD_KEY = "logits_checkpoint"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def model_card(repo: str, base_model: str, tinker_path: str, format: str) -> str:
    """The card: YAML front matter for the Hub, then how to serve and load the adapter (the
    body is a template beside this module: a document, with vLLM's and our commands)."""
    library = "library_name: peft\n" if format == "peft" else ""
    format_tag = "peft" if format == "peft" else "tinker-raw-adapter"
    template = (Path(__file__).parent / f"model_card_{format}.md").read_text(encoding="utf-8")
    body = Template(template).substitute(
        title=repo.split("/", 1)[1], base_model=base_model, tinker_path=tinker_path, repo=repo
    )
    return (
        f"---\nbase_model: {base_model}\n{library}tags:\n- lora\n- tinker\n- {format_tag}\n"
        f"{CARD_KEY}: {tinker_path}\n---\n\n{body}"
    )


def card_checkpoint(card: str) -> str | None:
    """The checkpoint URI a card's front matter names, if any."""
    match = re.match(r"^---\n(.*?)\n---", card, re.DOTALL)
    if match is None:
        return None
    for line in match.group(1).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == CARD_KEY:
            return value.strip().strip("'\"")
    return None


def stage(
    checkpoint: RawCheckpoint,
    facts: families.BaseModelFacts | None,
    directory: Path,
    repo: str,
    format: str,
) -> list[str]:
    """Write into ``directory`` (new) exactly what would be uploaded; returns the names."""
    if format == "peft":
        assert facts is not None
        export_peft(checkpoint, facts, directory)
        base = facts.name
    else:
        directory.mkdir()
        for name in (ADAPTER_MODEL, ADAPTER_CONFIG):
            shutil.copyfile(checkpoint.path / name, directory / name)
        base = checkpoint.base_model or ""
    card = model_card(repo, base, checkpoint.manifest.tinker_path, format)
    (directory / CARD).write_text(card, encoding="utf-8")
    return sorted(p.name for p in directory.iterdir())


@dataclass(frozen=True)
class PushResult:
    repo: str
    revision: str
    commit: str
    commit_url: str
    new_commit: bool
    pr_url: str | None
    files: list[str]


def push(
    staged: Path,
    repo: str,
    tinker_path: str,
    *,
    revision: str | None,
    private: bool,
    commit_message: str | None,
    create_pr: bool,
    progress: bool = False,
) -> PushResult:
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub import utils as hub_utils
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RevisionNotFoundError
    except ImportError:
        raise UsageError(
            "push-hf needs huggingface_hub", hint="pip install 'logits-cli[hf]'"
        ) from None
    if not progress:
        # Its bars are for a terminal; a log gets our one line.
        hub_utils.disable_progress_bars()  # type: ignore[attr-defined]
    api = HfApi()
    branch = revision or "main"
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision and not create_pr:
            api.create_branch(repo, branch=revision, exist_ok=True)
        try:
            card = Path(hf_hub_download(repo, CARD, revision=branch)).read_text(encoding="utf-8")
        except (EntryNotFoundError, RevisionNotFoundError):
            card = ""
        named = card_checkpoint(card)
        if named is not None and named != tinker_path:
            raise ConflictError(
                f"{repo} holds the checkpoint {named}, not {tinker_path}",
                hint="push to another repo, or remove its README.md first",
            )
        try:
            before: str | None = api.repo_info(repo, revision=branch).sha
        except (RevisionNotFoundError, EntryNotFoundError):
            before = None
        info = api.upload_folder(
            repo_id=repo,
            folder_path=staged,
            revision=branch,
            commit_message=commit_message or f"Upload {tinker_path}",
            create_pr=create_pr,
        )
    except LogitsError:
        raise
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo) from None
    except OSError as exc:
        raise UnavailableError(
            f"cannot reach the Hugging Face Hub ({type(exc).__name__})"
        ) from None
    return PushResult(
        repo=repo,
        revision=branch,
        commit=str(info.oid),
        commit_url=str(info.commit_url),
        new_commit=info.oid != before,
        pr_url=str(info.pr_url) if info.pr_url else None,
        files=sorted(p.name for p in staged.iterdir()),
    )


def hub_error(exc: Any, repo: str) -> LogitsError:
    """One line per failure: the status and the Hub's own short reason, never headers."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    reason = str(getattr(exc, "server_message", "") or "").splitlines()[:1]
    detail = f"HTTP {status}" + (f": {reason[0][:200]}" if reason else "")
    if status in (401, 403):
        return AuthError(
            f"the Hugging Face Hub refused the token for {repo} ({detail})",
            hint="set HF_TOKEN to a token with write access, or run `hf auth login`",
        )
    if status == 404:
        return NotFoundError(f"{repo}: not found on the Hugging Face Hub ({detail})")
    return UnavailableError(f"the Hugging Face Hub failed for {repo} ({detail})")
