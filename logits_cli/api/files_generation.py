"""One download for both generations of the service (docs/protocol.md §11.6).

``download`` decides how a checkpoint arrives:

* archive generation (and the embedded backend): ``transfer/archive.py``;
* ``external_weights/`` anywhere: per-file URLs, ``transfer/files.py``;
* files generation, ``weights/``: an export first (create-via-load in this client's session,
  ``save_weights_external`` with a short TTL), then per-file; the export is recorded in the
  download's part directory, so a killed download resumes on it, and is deleted (and the
  session finished) once the files are installed;
* files generation, ``sampler_weights/``: refused, exit 10.

The generation is learnt from the first ``…/archive`` answer for a checkpoint that exists and
remembered per base URL (``generations.py``). A remembered answer is checked again when the
files path is refused (404, or a deployment that cannot do what it needs): a deployment that
answers ``…/archive`` now is archive generation again. The export's life, and its run's, is
``export_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from logits_cli import models
from logits_cli.api import generations
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    FileUrls,
    ProgressCallback,
)
from logits_cli.api.export_lifecycle import (
    EXPORT_TTL_S,
    clean_up,
    export_kept_until,
    make_export,
    recorder,
    resumable_export,
)
from logits_cli.errors import (
    IntegrityError,
    LogitsError,
    MethodNotAllowedError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient
    from logits_cli.api.transfer.files import FilesContext

Notice = Callable[[str], None]
T = TypeVar("T")
# What the files path raises when this deployment cannot serve it: an archive deployment
# answers save_weights_external 404, and our own refusals (sampler_weights/, exports off).
FILES_PATH_REFUSED = (NotFoundError, MethodNotAllowedError, UnsupportedError)


async def generation_of(client: LogitsClient, ref: CheckpointRef) -> tuple[str, bool]:
    """The generation of ``client``'s deployment, probing with ``ref`` (which exists) when
    nothing recent is remembered; and whether the answer is a remembered one."""
    base_url = client.settings.base_url
    if base_url is None:
        return generations.ARCHIVE, False  # the embedded backend serves both
    known = generations.remembered(client.settings.home, base_url)
    if known is not None:
        return known, not generations.learnt_here(base_url)
    try:
        await client.archive_url(ref)
        found = generations.ARCHIVE
    except (NotFoundError, MethodNotAllowedError):  # 404, 410 (GoneError) or 405
        await client.get_checkpoint(ref)  # NotFoundError here: the checkpoint is missing
        found = generations.FILES
    generations.remember(client.settings.home, base_url, found)
    return found, False


async def _archive_endpoint_back(client: LogitsClient, ref: CheckpointRef) -> bool:
    """On a remembered files generation, before an export or after the files path was
    refused: does the deployment answer ``…/archive`` now (remembered from here on)?"""
    base_url = client.settings.base_url
    assert base_url is not None  # remembered answers exist for remote deployments only
    try:
        await client.archive_url(ref)
    except (NotFoundError, MethodNotAllowedError):
        with contextlib.suppress(NotFoundError):  # no such checkpoint: nothing learnt
            await client.get_checkpoint(ref)
            # Confirmed: not asked again in this process (a sync refuses many items).
            generations.remember(client.settings.home, base_url, generations.FILES)
        return False
    generations.remember(client.settings.home, base_url, generations.ARCHIVE)
    return True


async def _files_unless_refused(
    client: LogitsClient,
    target: CheckpointRef,
    remembered: bool,
    files_path: Callable[[], Awaitable[T]],
    archive_path: Callable[[], Awaitable[T]],
) -> T:
    """``files_path``; if it is refused and the files generation was only remembered, the
    archive endpoint is tried again and, when it answers, ``archive_path`` is taken."""
    try:
        return await files_path()
    except FILES_PATH_REFUSED:
        if not remembered or not await _archive_endpoint_back(client, target):
            raise
    return await archive_path()


async def _archive_endpoint_gone(client: LogitsClient, ref: CheckpointRef) -> bool:
    """After a 404 during an archive download: is it the endpoint that is gone (a deployment
    upgraded since its generation was remembered), not the checkpoint or one blob URL?"""
    base_url = client.settings.base_url
    if base_url is None:
        return False
    try:
        await client.archive_url(ref)
        return False
    except (NotFoundError, MethodNotAllowedError):
        await client.get_checkpoint(ref)  # NotFoundError here: the checkpoint went
    generations.remember(client.settings.home, base_url, generations.FILES)
    return True


# Why a checkpoint is not offered on the files generation, without its path: ``sync``
# reports it beside the path, ``no_archive`` after it.
SAMPLER_REFUSED = (
    "this deployment cannot download sampler checkpoints: it has no archive downloads "
    "(files generation)"
)
EXPORT_NOT_ALLOWED = (
    "this deployment (files generation, no archive downloads) downloads it only through an "
    "export, which starts a training session on the service, and exporting is off"
)


def no_archive(ref: CheckpointRef) -> UnsupportedError:
    """The refusal of ``ref`` on the files generation. A weights/ checkpoint refused for
    want of an export carries ``option="allow_export"``: the CLI names its flag."""
    if ref.kind == "sampler_weights":
        return UnsupportedError(
            f"{ref}: {SAMPLER_REFUSED}",
            hint="download the weights/ checkpoint of the same step instead",
        )
    return UnsupportedError(f"{ref}: {EXPORT_NOT_ALLOWED}", option="allow_export")


def _remove_if_only_locks(directory: Path) -> None:
    """Remove ``directory`` when all it holds is our lock files (nothing was fetched)."""
    try:
        entries = list(directory.iterdir())
        if all(entry.name.endswith(".lock") and entry.is_file() for entry in entries):
            for entry in entries:
                entry.unlink(missing_ok=True)
            directory.rmdir()
    except OSError:
        return


async def download(
    client: LogitsClient,
    ref: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
    notice: Notice | None,
) -> DownloadResult:
    from logits_cli.api.transfer import download_checkpoint
    from logits_cli.api.transfer.files import FilesSource, download_files

    target = await client.resolve(ref)
    if target.kind == EXTERNAL_KIND:
        checkpoint = await client.get_checkpoint(target)
        source = FilesSource(checkpoint, lambda: client.external_weights_urls(target))
        fetch = download_files(_context(client), source, dest_dir, options, progress)
        return await _bounded(fetch, options, dest_dir)

    def archive_path() -> Awaitable[DownloadResult]:
        return download_checkpoint(client, target, dest_dir, options, progress)

    generation, remembered = await generation_of(client, target)
    if generation == generations.ARCHIVE:
        existed = dest_dir.exists()
        try:
            return await archive_path()
        except (NotFoundError, MethodNotAllowedError):
            if not await _archive_endpoint_gone(client, target):
                raise
            if not existed:  # the archive path made DEST before it learned there is no URL
                _remove_if_only_locks(dest_dir)
            remembered = False  # learnt just now

    if remembered and target.kind == "weights" and options.allow_export:
        # An export costs a session and a run on the service, a question one GET: a
        # remembered answer is checked first.
        if await _archive_endpoint_back(client, target):
            return await archive_path()
        remembered = False

    async def files_path() -> DownloadResult:
        if target.kind != "weights" or not options.allow_export:
            raise no_archive(target)
        if options.archive_only:
            raise UnsupportedError(
                f"{target} has no archive on this deployment: it is downloaded file by file",
                option="archive_only",
            )
        return await _bounded(
            _export_and_download(client, target, dest_dir, options, progress, notice),
            options,
            dest_dir,
        )

    return await _files_unless_refused(client, target, remembered, files_path, archive_path)


async def _bounded(
    work: Awaitable[DownloadResult], options: DownloadOptions, dest_dir: Path
) -> DownloadResult:
    """``options.timeout`` over the whole per-file download, as the archive path does."""
    try:
        async with asyncio.timeout(options.timeout) as deadline:
            return await work
    except TimeoutError:
        if not deadline.expired():
            raise
        raise UnavailableError(f"download did not finish within {options.timeout:g} s") from None
    except OSError as exc:
        raise LogitsError(
            f"cannot write the download in {dest_dir}: {exc.strerror or exc}"
        ) from exc


def _context(client: LogitsClient) -> FilesContext:
    from logits_cli.api.transfer.files import FilesContext

    return FilesContext(client.blob_http, client.retry_policy, client.embedded)


async def _export_and_download(
    client: LogitsClient,
    target: CheckpointRef,
    dest_dir: Path,
    options: DownloadOptions,
    progress: ProgressCallback | None,
    notice: Notice | None,
) -> DownloadResult:
    from logits_cli.api.transfer.files import (
        FilesSource,
        download_files,
        local_copy_is_current,
        pending_export,
    )

    checkpoint = await client.get_checkpoint(target)
    if not options.force:
        present, damaged = local_copy_is_current(dest_dir / checkpoint.name, checkpoint)
        if present and not damaged:
            return DownloadResult(
                checkpoint, dest_dir / checkpoint.name, bytes_fetched=0, skipped=True, resumed=False
            )
    record = pending_export(dest_dir, checkpoint.name)
    export = await resumable_export(client, record, checkpoint)
    made_in = {k: v for k, v in (record or {}).items() if k in ("session", "run", "export_name")}
    if export is None:
        if notice is not None:
            notice(
                f"exporting {target}: this deployment downloads file by file, "
                "which starts a training session on the service"
            )
        write, take_back = recorder(dest_dir, checkpoint.name, checkpoint.tinker_path)
        try:
            export, made_in = await make_export(client, target, write)
        except LogitsError:
            take_back()  # no export: nothing to resume, and the session released its run
            raise
    signed = 0

    async def file_urls() -> FileUrls:
        nonlocal signed
        signed += 1
        if signed > 1:  # re-signed mid-download: keep the export alive as long as the URLs
            with contextlib.suppress(LogitsError):
                await client.set_ttl(export, EXPORT_TTL_S)
        return await client.external_weights_urls(export)

    source = FilesSource(
        checkpoint, file_urls, content="adapter-only", export=str(export), extra=made_in
    )
    try:
        result = await download_files(_context(client), source, dest_dir, options, progress)
    except IntegrityError:
        await clean_up(client, export)
        raise
    # Anything else keeps the export for the next run to resume on (the record names it);
    # its TTL removes it, and its run, if nobody does.
    await clean_up(client, export)
    return result


async def signed_urls(
    client: LogitsClient, ref: CheckpointRef, *, export: bool, notice: Notice | None
) -> tuple[CheckpointRef, models.CheckpointArchiveUrlResponse | FileUrls]:
    """What ``logits ckpt url`` prints: the archive URL, or on the files generation the
    per-file URL map (of ``ref`` itself, or of an export of it made only with ``export``).
    The export lives for its TTL; its run lives exactly as long (``export_lifecycle``)."""
    target = await client.resolve(ref)
    if target.kind == EXTERNAL_KIND:
        return target, await client.external_weights_urls(target)

    async def archive_path() -> tuple[CheckpointRef, models.CheckpointArchiveUrlResponse]:
        return target, await client.archive_url(target)

    generation, remembered = await generation_of(client, target)
    if generation == generations.ARCHIVE:
        return await archive_path()
    if remembered and target.kind == "weights" and export:
        if await _archive_endpoint_back(client, target):  # checked before an export
            return await archive_path()
        remembered = False

    async def files_path() -> tuple[CheckpointRef, FileUrls]:
        if target.kind != "weights" or not export:
            raise no_archive(target)
        made, _ = await make_export(client, target)
        urls = await client.external_weights_urls(made)
        if notice is not None:
            until = export_kept_until().isoformat(timespec="seconds").replace("+00:00", "Z")
            notice(
                f"Exported {target.checkpoint_id} as {made}; the export is kept until {until} "
                f"(delete it earlier with `logits ckpt rm {made}`)"
            )
        return made, urls

    return await _files_unless_refused(client, target, remembered, files_path, archive_path)
