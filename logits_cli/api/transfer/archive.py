"""The archive generation's download: fetch the archive, verify it, extract it atomically
(``extract.py``) into ``DEST/NAME``; ``DEST/.NAME.part.lock`` keeps two processes off one part."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from logits_cli import models
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    ProgressCallback,
    report_phase,
)
from logits_cli.api.extract import extract_checkpoint
from logits_cli.api.transfer.checked import fetch_and_check
from logits_cli.api.transfer.fetcher import choose_segment_size
from logits_cli.api.transfer.install import (
    check_free_space,
    check_working_files,
    discard,
    discard_unresumable,
    install_file,
    local_copy,
    lock_part,
    part_paths,
    prepare_destination,
    sweep_leftovers,
    unlock_part,
)
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transfer.tuning import EMBEDDED_SEGMENT
from logits_cli.diskio import ForeignPathError
from logits_cli.errors import (
    ConflictError,
    IntegrityError,
    LogitsError,
    UnavailableError,
)
from logits_cli.uri import CheckpointRef, validate_name


async def download_checkpoint(
    client: Any,
    ref: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions | None = None,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Fetch, verify and extract one checkpoint into ``dest_dir/NAME`` (docs/ARCHITECTURE.md §3).

    ``options.timeout`` bounds all of it: metadata, waiting for the part lock, the transfer
    (extraction, once started, is finished so DEST stays consistent). When it runs out the
    transfer is cancelled and what was fetched stays resumable."""
    options = options or DownloadOptions()
    try:
        async with asyncio.timeout(options.timeout) as deadline:
            return await _download(client, ref, Path(dest_dir), options, progress)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise UnavailableError(f"download did not finish within {options.timeout:g} s") from None
    except OSError as exc:
        # Network failures are httpx errors, handled inside; an OSError here is local:
        # a full disk, a read-only or unwritable destination.
        raise LogitsError(
            f"cannot write the download in {dest_dir}: {exc.strerror or exc}"
        ) from exc


async def _download(
    client: Any,
    ref: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
) -> DownloadResult:
    ref = await client.resolve(ref)
    checkpoint: models.Checkpoint = await client.get_checkpoint(ref)
    name = validate_name(checkpoint.name)
    final = dest_dir / (f"{name}.tar" if options.archive_only else name)
    part, journal_path, lock_path = part_paths(dest_dir, name)

    repaired: list[str] = []
    if not options.force:
        present, repaired = await asyncio.to_thread(
            local_copy,
            final,
            checkpoint,
            archive_only=options.archive_only,
            adapter_only=options.adapter_only,
        )
        if present and not repaired:
            return DownloadResult(checkpoint, final, bytes_fetched=0, skipped=True, resumed=False)
        if repaired:
            options = dataclasses.replace(options, force=True)  # our own copy, damaged
        elif final.exists() or final.is_symlink():
            raise ConflictError(
                f"{final} already exists and holds something else",
                option="force",
            )

    prepare_destination(dest_dir, lock_path, private=options.private_dest)
    lock = await lock_part(lock_path, options.lock_wait)
    try:
        # Under the lock, before anything opens them: a symlink or another user's file at
        # our part or journal names is refused, never followed (G6).
        check_working_files(part, journal_path, journal_path.with_name(journal_path.name + ".tmp"))
        sweep_leftovers(dest_dir, name)
        check_free_space(dest_dir, part, checkpoint.size_bytes, archive_only=options.archive_only)
        fetched, resumed, archive_sha256, size = await _fetch_verified(
            client, ref, checkpoint, part, journal_path, options, progress
        )
        if options.archive_only:
            report_phase(progress, "installing")
            install_file(part, final)
            discard(journal_path)
        else:
            report_phase(progress, "extracting")
            finish = asyncio.to_thread(
                _extract_and_finish,
                part,
                journal_path,
                dest_dir,
                name,
                checkpoint,
                archive_sha256,
                size,
                options,
            )
            await complete_even_if_cancelled(finish)
    except ForeignPathError:
        raise  # what was refused is not ours to remove, and nothing of ours was made
    except BaseException as exc:
        discard_unresumable(part, journal_path, invalid=isinstance(exc, IntegrityError))
        raise
    finally:
        unlock_part(lock)
    return DownloadResult(
        checkpoint,
        final,
        bytes_fetched=fetched,
        skipped=False,
        resumed=resumed,
        repaired=tuple(repaired),
    )


def _extract_and_finish(
    part: Path,
    journal_path: Path,
    dest_dir: Path,
    name: str,
    checkpoint: models.Checkpoint,
    archive_sha256: str,
    size: int,
    options: DownloadOptions,
) -> None:
    try:
        extract_checkpoint(
            part,
            dest_dir,
            name,
            checkpoint=checkpoint,
            archive_sha256=archive_sha256,
            archive_size=size,
            force=options.force,
            adapter_only=options.adapter_only,
        )
    except IntegrityError:
        discard(part, journal_path)  # verified bytes, bad content: nothing to resume
        raise
    if options.keep_archive:
        install_file(part, dest_dir / f"{name}.tar")
    else:
        discard(part)
    discard(journal_path)


async def complete_even_if_cancelled(work: Awaitable[None]) -> None:
    """Await ``work`` (a thread, which cannot be interrupted) to its end even when this task
    is cancelled, so the part lock is held until DEST is consistent; then re-raise."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # marks it retrieved: the caller asked about the cancellation
        raise


async def _fetch_verified(
    client: Any,
    ref: CheckpointRef,
    checkpoint: models.Checkpoint,
    part: Path,
    journal_path: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
) -> tuple[int, bool, str, int]:
    """Fetch into ``part`` and verify it; one fresh download after a digest mismatch.
    Returns (bytes fetched, resumed, archive sha256 hex, size)."""
    embedded = bool(getattr(client, "embedded", False))
    segment_size = options.segment_size or choose_segment_size(
        checkpoint.size_bytes, connections=options.connections, embedded=embedded
    )
    if embedded:
        segment_size = min(segment_size, EMBEDDED_SEGMENT)
    identity = {
        "tinker_path": checkpoint.tinker_path,
        "size": checkpoint.size_bytes,
        "sha256": checkpoint.sha256,
    }
    urls = SignedUrl(lambda: client.archive_url(ref))
    return await fetch_and_check(
        client.blob_http,
        urls,
        part,
        journal_path,
        identity,
        checkpoint.size_bytes,
        checkpoint.sha256,
        segment_size,
        options,
        progress,
        getattr(client, "retry_policy", None),
        # Only a kept archive is installed; one that is extracted is deleted after.
        write_back=options.archive_only or options.keep_archive,
    )
