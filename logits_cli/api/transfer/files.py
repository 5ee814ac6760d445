"""Per-file downloads: the files generation of docs/protocol.md §11.3 and §11.6.

A checkpoint arrives as several files, each behind its own signed URL from a URL map. Each file
goes through the same fetcher as an archive (``checked.fetch_and_check``: parallel ranged
segments, a journal per file, URL refresh with Range + If-Range, the low-speed guard, the
response digest), several files at once. Layout while it runs, next to DEST/NAME::

    DEST/.NAME.files/data/<file>             the files as they arrive
    DEST/.NAME.files/journal/<digest>.json   which bytes of each are good
    DEST/.NAME.files/export.json             the export this download goes through, if any
    DEST/.NAME.part.lock                     held while a process works on NAME

(``files_layout.py``: every working path is ours or refused, never followed.)

Nothing is created in DEST before the first URL map has been obtained. Once every file is
fetched and matches its digest, the adapter is checked structurally (``adapter_config.json``
is a JSON object, ``adapter_model.safetensors`` has a readable header), our manifest is
written, the files and the directory are synced, and ``data/`` is renamed to DEST/NAME.

This module never imports the client: it is handed a ``FilesSource``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from logits_cli import models
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    FileUrls,
    ProgressCallback,
    report_phase,
    report_resumed,
)
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.transfer.checked import fetch_and_check
from logits_cli.api.transfer.fetcher import choose_segment_size
from logits_cli.api.transfer.files_checks import (
    check_adapter,
    check_file_url,
    check_listing,
    check_url_map,
)
from logits_cli.api.transfer.files_layout import (
    EXPORT_RECORD,
    files_part_dir,
    install_files,
    journal_name,
    make_working_dirs,
    pending_export,
    record_export,
)
from logits_cli.api.transfer.install import (
    check_free_space,
    discard,
    lock_part,
    prepare_destination,
    unlock_part,
)
from logits_cli.api.transfer.signed_url import SignedUrl
from logits_cli.api.transfer.tuning import EMBEDDED_SEGMENT
from logits_cli.api.verify import MANIFEST_NAME, damaged_files, read_manifest
from logits_cli.diskio import ForeignPathError
from logits_cli.errors import ConflictError, IntegrityError, LogitsError

FILES_AT_ONCE = 4
# What other modules import from here (pending_export lives in files_layout.py).
__all__ = [
    "FilesContext",
    "FilesSource",
    "download_files",
    "local_copy_is_current",
    "pending_export",
]


@dataclass(frozen=True)
class FilesSource:
    """What to fetch and how to get (fresh) signed URLs for it.

    ``checkpoint`` is what the local copy stands for (its URI, type and creation time go in
    the manifest): the ``external_weights/`` checkpoint itself, or the ``weights/`` checkpoint
    an export was made from. ``export`` names that export and is recorded for resuming."""

    checkpoint: models.Checkpoint
    file_urls: Callable[[], Awaitable[FileUrls]]
    content: str = "adapter-only"
    export: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilesContext:
    http: httpx.AsyncClient
    policy: RetryPolicy | None
    embedded: bool


def local_copy_is_current(final: Path, checkpoint: models.Checkpoint) -> tuple[bool, list[str]]:
    """Whether ``final`` holds our per-file download of exactly ``checkpoint`` (same URI
    identity and creation time), and which of its files are missing or resized."""
    try:
        manifest = read_manifest(final)
    except (IntegrityError, OSError):
        return False, []
    same = (
        manifest.checkpoint_id == checkpoint.checkpoint_id
        and manifest.tinker_path.split("://", 1)[-1] == checkpoint.tinker_path.split("://", 1)[-1]
        and manifest.created == checkpoint.time
    )
    return same, damaged_files(final, manifest) if same else []


class _UrlMap:
    """The current URL map, shared by every file: one refresh serves them all."""

    def __init__(self, source: FilesSource, first: FileUrls) -> None:
        self._source = source
        self._current = first
        self._lock = asyncio.Lock()

    def signed_url(self, name: str) -> SignedUrl:
        handed: dict[str, str] = {}

        async def fetch() -> models.CheckpointArchiveUrlResponse:
            async with self._lock:
                if self._current.urls.get(name) == handed.get(name):
                    # This file's URL is the one that expired or was refused: re-sign all.
                    self._current = await self._source.file_urls()
                current = self._current
            url = current.urls.get(name)
            if url is None:
                raise IntegrityError(f"the server no longer lists {name} in this checkpoint")
            check_file_url(name, url)  # a refreshed map is checked like the first
            handed[name] = url
            return models.CheckpointArchiveUrlResponse(url=url, expires=current.expires)

        handed[name] = ""  # the first call uses the map obtained before anything was created
        return SignedUrl(fetch)


async def download_files(
    ctx: FilesContext,
    source: FilesSource,
    dest_dir: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Fetch, verify and install every file of ``source`` into ``dest_dir/NAME``."""
    checkpoint = source.checkpoint
    name = checkpoint.name
    final = dest_dir / name
    repaired: list[str] = []
    if not options.force:
        present, repaired = await asyncio.to_thread(local_copy_is_current, final, checkpoint)
        if present and not repaired:
            return DownloadResult(checkpoint, final, bytes_fetched=0, skipped=True, resumed=False)
        if not present and (final.exists() or final.is_symlink()):
            raise ConflictError(
                f"{final} already exists and holds something else",
                option="force",
            )
    first = await source.file_urls()  # before anything exists in DEST (§11.6)
    names = check_url_map(first.urls)

    part_dir = files_part_dir(dest_dir, name)
    lock_path = dest_dir / f".{name}.part.lock"
    prepare_destination(dest_dir, lock_path, private=options.private_dest)
    lock = await lock_part(lock_path, options.lock_wait)
    created = not part_dir.exists() and not part_dir.is_symlink()
    try:
        data, journals = make_working_dirs(part_dir)
        discard(data / MANIFEST_NAME)
        if source.export is None:  # an export's size is not listed before it exists
            check_free_space(dest_dir, data, checkpoint.size_bytes, archive_only=True)
        record_export(part_dir, source.export, _export_document(source))
        fetched, resumed, files = await _fetch_all(
            ctx, source, first, names, data, journals, options, progress
        )
        report_phase(progress, "verifying")
        await asyncio.to_thread(check_listing, data, files)
        await asyncio.to_thread(check_adapter, data)
        report_phase(progress, "installing")
        manifest = models.LocalManifest(
            tinker_path=checkpoint.tinker_path,
            checkpoint_id=checkpoint.checkpoint_id,
            checkpoint_type=checkpoint.checkpoint_type,
            created=checkpoint.time,
            downloaded_at=datetime.now(UTC),
            files=files,
            content=source.content,
            export=source.export,
        )
        await asyncio.to_thread(
            install_files, data, final, manifest, force=options.force or bool(repaired)
        )
        shutil.rmtree(part_dir, ignore_errors=True)
    except ForeignPathError:
        if created:  # what we made before refusing a path inside it
            shutil.rmtree(part_dir, ignore_errors=True)
        raise
    except IntegrityError:
        shutil.rmtree(part_dir, ignore_errors=True)  # verified bytes, bad content: no resume
        raise
    except BaseException:
        _drop_if_nothing_resumable(part_dir)
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


def _drop_if_nothing_resumable(part_dir: Path) -> None:
    """After a failure that kept no file to resume (``checked.fetch_and_check`` drops those:
    a refused URL, a body of unknown size, nothing arrived yet), the working directory goes
    too, unless it records an export to resume on (issue 21 G9)."""
    try:
        kept = any((part_dir / "data").iterdir()) or (part_dir / EXPORT_RECORD).exists()
        status = part_dir.lstat()
    except OSError:
        return
    if not kept and stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid():
        shutil.rmtree(part_dir, ignore_errors=True)


def _export_document(source: FilesSource) -> dict[str, Any]:
    return {"export": source.export, "source": source.checkpoint.tinker_path, **source.extra}


async def _fetch_all(
    ctx: FilesContext,
    source: FilesSource,
    first: FileUrls,
    names: list[str],
    data: Path,
    journals: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
) -> tuple[int, bool, dict[str, models.FileDigest]]:
    url_map = _UrlMap(source, first)
    at_once = max(1, min(FILES_AT_ONCE, len(names)))
    connections = max(1, options.connections // at_once)
    gate = asyncio.Semaphore(at_once)
    done: dict[str, int] = {}
    totals: dict[str, int | None] = {}
    files: dict[str, models.FileDigest] = {}
    fetched_total = 0
    resumed_any = False

    def overall() -> int | None:
        known = [totals.get(n) for n in names]
        return sum(t for t in known if t) if all(known) else None

    class FileProgress:
        """One file's progress told as the checkpoint's (bytes summed over its files); a
        reused part file as the checkpoint's bytes on disk so far."""

        def __init__(self, file_name: str) -> None:
            self.file_name = file_name

        def __call__(self, bytes_done: int, bytes_total: int | None) -> None:
            done[self.file_name], totals[self.file_name] = bytes_done, bytes_total
            if progress is not None:
                progress(sum(done.values()), overall())

        def resumed(self, reused: int, total: int | None) -> None:
            done[self.file_name], totals[self.file_name] = reused, total
            report_resumed(progress, sum(done.values()), overall())

    def file_progress(file_name: str) -> ProgressCallback:
        return FileProgress(file_name)

    async def fetch(file_name: str) -> None:
        nonlocal fetched_total, resumed_any
        async with gate:
            identity = {
                "tinker_path": source.checkpoint.tinker_path,
                "created": source.checkpoint.time.isoformat(),
                "export": source.export,
                "file": file_name,
            }
            segment_size = options.segment_size or choose_segment_size(
                None, connections=connections, embedded=ctx.embedded
            )
            if ctx.embedded:
                segment_size = min(segment_size, EMBEDDED_SEGMENT)
            fetched, resumed, sha256, size = await fetch_and_check(
                ctx.http,
                url_map.signed_url(file_name),
                data / file_name,
                journals / journal_name(file_name),
                identity,
                None,
                None,
                segment_size,
                _per_file(options, connections),
                file_progress(file_name),
                ctx.policy,
                write_back=True,  # each file is installed as it is
            )
            fetched_total += fetched
            resumed_any = resumed_any or resumed
            files[file_name] = models.FileDigest(sha256=sha256, size=size)

    try:
        async with asyncio.TaskGroup() as group:
            for file_name in names:
                group.create_task(fetch(file_name))
    except BaseExceptionGroup as failures:
        # One file failing cancels the others; the user hears about the first real cause.
        raise _first_cause(failures) from None
    return fetched_total, resumed_any, files


def _first_cause(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    known = [e for e in leaves if isinstance(e, LogitsError)]
    return (known or leaves)[0]


def _per_file(options: DownloadOptions, connections: int) -> DownloadOptions:
    # The low-speed floor is for the whole download; each file gets its share.
    return replace(
        options,
        connections=connections,
        low_speed_limit=options.low_speed_limit // FILES_AT_ONCE,
    )
