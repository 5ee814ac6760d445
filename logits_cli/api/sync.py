"""Cron mode: keep a directory in step with the caller's checkpoints (docs/ARCHITECTURE.md §3, issue 5).

Layout of the sync directory DIR::

    DIR/.logits-sync.lock                      held for the whole run (not by --dry-run)
    DIR/<run>/<kind>/<name>/                   one checkpoint, manifest .logits-checkpoint.json
    DIR/<run>/<kind>/.<name>.part[.json]       an unfinished download; the next run resumes it

``<run>`` is the run id made filesystem-safe by percent-encoding every character outside
``[A-Za-z0-9_.~-]`` (so ``:`` becomes ``%3A``) and a leading ``.``. Run ids never contain
``%`` (docs/protocol.md §3.3), so the encoding is reversible and two runs never share a directory,
and no run directory can be ``..`` or collide with our hidden files. ``<kind>`` is
``weights`` or ``sampler_weights``; names follow the checkpoint-name grammar, which is
already safe.

A checkpoint is *present* when its directory holds our manifest for the same checkpoint and
the manifest's archive digest equals the listed ``sha256`` (size and creation time when the
server lists no digest) and every file the manifest lists is there with its listed size; a
copy with a file missing or resized is downloaded again (``repaired`` says what was wrong).
With ``download.adapter_only`` an adapter-only copy is present; without it, an
``--adapter-only`` copy of a training checkpoint lacks the optimizer state and is replaced
(``verify.missing_content``).
Files are not re-hashed here: that is ``verify``'s job, and it keeps a nightly run over
hundreds of checkpoints well under a second.

``max_duration`` bounds the downloads: none starts after it, and those in flight are
cancelled when it runs out (their fetched bytes stay resumable, the item fails); then the
summary is returned and the lock released.

The lock is an ``flock`` (the one ``filelock.FileLock`` takes): the OS drops it when its
holder dies, so a crashed or SIGKILLed sync never blocks the next one. The lock file is
never followed through a symlink, nor used when another user owns it (diskio.try_lock_file).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from logits_cli import models
from logits_cli.api.bulk import apply_concurrently, as_utc, newest_per_group, normalize_kind
from logits_cli.api.client import LogitsClient
from logits_cli.api.download_options import ProgressCallback
from logits_cli.api.files_generation import Notice
from logits_cli.api.sync_items import (
    INCOMPLETE_STATUSES,
    STATUSES,
    ItemCallback,
    SyncItem,
    SyncOptions,
    SyncProgressCallback,
    SyncSummary,
    checkpoint_dir,
    identity,
    is_current,
    own_copy,
    read_own_manifest,
    run_dirname,
)
from logits_cli.api.verify import MANIFEST_NAME, damaged_files, missing_content
from logits_cli.diskio import release_lock_file, try_lock_file
from logits_cli.errors import BusyError, LogitsError, UnsupportedError, UsageError
from logits_cli.uri import KINDS, SCHEMES, CheckpointRef, validate_run_id

LOCK_NAME = ".logits-sync.lock"
LOCK_POLL_S = 0.2

# Names other modules import from here, defined in sync_items.py.
__all__ = [
    "INCOMPLETE_STATUSES",
    "LOCK_NAME",
    "STATUSES",
    "ItemCallback",
    "SyncItem",
    "SyncOptions",
    "SyncProgressCallback",
    "SyncSummary",
    "checkpoint_dir",
    "hold_sync_lock",
    "is_current",
    "read_own_manifest",
    "run_dirname",
    "run_sync",
]


@dataclass
class _Planned:
    ref: CheckpointRef
    item: SyncItem
    replace: bool = False  # our older copy is there: the download must replace it


async def run_sync(
    client: LogitsClient,
    dest: Path,
    options: SyncOptions,
    *,
    on_item: ItemCallback | None = None,
    progress: SyncProgressCallback | None = None,
    notice: Notice | None = None,
) -> SyncSummary:
    """Download every selected checkpoint not yet present in ``dest``; see the module doc.
    ``notice`` receives one line per export made (files generation, ``options.export``).

    Raises BusyError when another sync holds the lock after ``lock_wait`` seconds, and the
    listing's errors (a run that does not exist is NotFoundError). Per-checkpoint failures
    do not raise: they are items with status ``failed`` (``summary.incomplete``).
    """
    started = time.monotonic()
    _check_options(options)
    dest = Path(dest)
    notify = on_item or (lambda item: None)

    if options.dry_run:
        # A plan writes nothing, so it neither creates DIR nor waits for a running sync.
        items = await _sync(client, dest, options, notify, progress, notice, started)
    else:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LogitsError(f"cannot create {dest}: {error.strerror}") from None
        async with hold_sync_lock(dest, options.lock_wait):
            # The clock (the summary's time and speed, --max-duration) starts once the lock
            # is held: waiting for the previous sync is not this sync's work.
            started = time.monotonic()
            items = await _sync(client, dest, options, notify, progress, notice, started)
    return SyncSummary(
        items=items, elapsed_s=time.monotonic() - started, dest=dest, dry_run=options.dry_run
    )


def _check_options(options: SyncOptions) -> None:
    normalize_kind(options.kind)
    for run_id in options.runs:
        validate_run_id(run_id)
    # Named as the library names them; the CLI checks its flags before they get here.
    if options.jobs < 1:
        raise UsageError(f"jobs must be 1 or more, not {options.jobs}", option="jobs")
    if options.latest is not None and options.latest < 1:
        raise UsageError(f"latest must be 1 or more, not {options.latest}", option="latest")
    if options.max_duration is not None and options.max_duration < 0:
        raise UsageError("max_duration must not be negative", option="max_duration")
    if options.lock_wait < 0:
        raise UsageError("lock_wait must not be negative", option="lock_wait")


@contextlib.asynccontextmanager
async def hold_sync_lock(dest: Path, wait: float) -> AsyncIterator[None]:
    """Hold ``dest/.logits-sync.lock``, polling for up to ``wait`` seconds.

    Polling with non-blocking attempts (rather than a blocking acquire in a thread) keeps
    Ctrl-C and cancellation immediate while waiting.
    """
    path = dest / LOCK_NAME
    give_up = time.monotonic() + wait
    while True:
        try:
            fd = try_lock_file(path)
        except OSError as error:
            raise LogitsError(f"cannot lock {path}: {error.strerror}") from None
        if fd is not None:
            break
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            raise BusyError(
                f"another sync is running in {dest} (it holds {LOCK_NAME})", option="lock_wait"
            )
        await asyncio.sleep(min(LOCK_POLL_S, remaining))
    try:
        yield
    finally:
        release_lock_file(path, fd, remove=False)


async def _sync(
    client: LogitsClient,
    dest: Path,
    options: SyncOptions,
    notify: ItemCallback,
    progress: SyncProgressCallback | None,
    notice: Notice | None,
    started: float,
) -> list[SyncItem]:
    runs = tuple(dict.fromkeys(options.runs))
    # The listing is bounded by the request layer's deadlines, not cut here: even a run
    # whose budget is spent reports every selected checkpoint (as not started).
    listed = await _list_remote(client, runs)
    deadline = started + options.max_duration if options.max_duration is not None else None
    items: list[SyncItem] = []

    if options.prune_local:
        items += _prune(dest, _identities(listed), set(runs), options.dry_run, notify)

    planned_items, downloads = _plan(
        dest, _select(listed, options), adapter_only=options.download.adapter_only
    )
    items += planned_items
    for item in planned_items:
        # Items settled while planning are reported now; downloads when they finish.
        if options.dry_run or item.status != "planned":
            notify(item)
    if options.dry_run:
        return items

    async def fetch(planned: _Planned) -> None:
        item = planned.item
        if deadline is not None and time.monotonic() >= deadline:
            item.status = "not_started"
            notify(item)
            return
        download_options = dataclasses.replace(options.download, allow_export=options.export)
        if planned.replace:
            download_options = dataclasses.replace(download_options, force=True)
        try:
            async with asyncio.timeout(_left(deadline)) as cut:
                result = await client.download(
                    planned.ref,
                    checkpoint_dir(dest, planned.ref).parent,
                    options=download_options,
                    progress=_progress_of(item, progress),
                    notice=notice,
                )
        except TimeoutError:
            if not cut.expired():
                raise
            item.status = "failed"
            item.error = (
                f"stopped at the {options.max_duration:g} s limit; "
                "what was fetched is kept and the next run resumes it"
            )
        except UnsupportedError as error:
            # What this deployment cannot offer (sampler checkpoints on the files generation)
            # is no failure of tonight's run; a weights/ checkpoint not exported because
            # exports are off is a skip the summary counts apart (``not_exported``).
            item.status, item.error = "skipped", _reason(error, planned.ref)
            item.needs_export = error.option == "allow_export"
        except LogitsError as error:
            item.status, item.error = "failed", _reason(error, planned.ref)
        else:
            item.status = "present" if result.skipped else "downloaded"
            item.bytes_fetched = result.bytes_fetched
            item.local_path = str(result.path)
        notify(item)

    await apply_concurrently(downloads, fetch, jobs=options.jobs)
    return items


def _reason(error: LogitsError, ref: CheckpointRef) -> str:
    """Why an item was skipped or failed, without its path: the item names it, and its log
    line names it once."""
    message = error.message
    for form in dict.fromkeys(str(ref.with_scheme(scheme)) for scheme in SCHEMES):
        message = message.removeprefix(f"{form}: ").replace(f" {form}", "")
    return message


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a ``time.monotonic`` value), for ``asyncio.timeout``."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _progress_of(item: SyncItem, progress: SyncProgressCallback | None) -> ProgressCallback | None:
    if progress is None:
        return None

    def report(done: int, total: int | None) -> None:
        progress(item.tinker_path, done, total)

    return report


def _identities(listed: list[models.Checkpoint]) -> set[tuple[str, str, str]]:
    identities = set()
    for checkpoint in listed:
        with contextlib.suppress(UsageError):
            identities.add(identity(CheckpointRef.parse(checkpoint.tinker_path, any_kind=True)))
    return identities


async def _list_remote(client: LogitsClient, runs: tuple[str, ...]) -> list[models.Checkpoint]:
    if not runs:
        return [checkpoint async for checkpoint in client.iter_all_checkpoints()]
    listings = await asyncio.gather(*(client.list_checkpoints(run_id) for run_id in runs))
    return [checkpoint for listing in listings for checkpoint in listing]


def _select(listed: list[models.Checkpoint], options: SyncOptions) -> list[models.Checkpoint]:
    """The requested checkpoints, newest first, so a --max-duration cut keeps the fresh ones."""
    kind = normalize_kind(options.kind)
    # Kinds from newer deployments (docs/protocol.md §10.2) have no name grammar to make them
    # safe as paths, so sync leaves them alone.
    chosen = [c for c in listed if c.kind in KINDS and (kind is None or c.kind == kind)]
    if options.since is not None:
        since = as_utc(options.since)
        chosen = [c for c in chosen if c.time >= since]
    if options.latest is not None:
        chosen = newest_per_group(chosen, options.latest)
    by_path = sorted(chosen, key=lambda c: c.tinker_path)
    return sorted(by_path, key=lambda c: c.time, reverse=True)


def _plan(
    dest: Path, checkpoints: list[models.Checkpoint], *, adapter_only: bool
) -> tuple[list[SyncItem], list[_Planned]]:
    """One item per checkpoint, in order, and the downloads among them."""
    items: list[SyncItem] = []
    downloads: list[_Planned] = []
    for checkpoint in checkpoints:
        item = SyncItem(tinker_path=checkpoint.tinker_path, status="planned")
        items.append(item)
        try:
            ref = CheckpointRef.parse(checkpoint.tinker_path)
        except UsageError as error:
            item.status, item.error = "failed", f"the server listed a bad path: {error}"
            continue
        target = checkpoint_dir(dest, ref)
        item.local_path = str(target)
        if not target.exists():
            downloads.append(_Planned(ref, item))
            continue
        own = own_copy(target)
        if own is None or identity(own[1]) != identity(ref):
            item.status = "failed"
            item.error = f"{target} exists and is not this checkpoint's download; move it away"
        elif is_current(own[0], checkpoint):
            problems = damaged_files(target, own[0])
            problems += missing_content(own[0], adapter_only=adapter_only)
            if problems:
                item.repaired = problems
                downloads.append(_Planned(ref, item, replace=True))
            else:
                item.status = "present"
        else:
            downloads.append(_Planned(ref, item, replace=True))
    return items, downloads


def _prune(
    dest: Path,
    remote: set[tuple[str, str, str]],
    runs: set[str],
    dry_run: bool,
    notify: ItemCallback,
) -> list[SyncItem]:
    """Remove local checkpoints that sync downloaded and the server no longer lists.

    Only directories at their sync location holding our manifest are candidates, and with
    ``runs`` given only those runs' (the listing says nothing about other runs).
    """
    items: list[SyncItem] = []
    if not dest.is_dir():
        return items
    for manifest_path in sorted(dest.glob(f"*/*/*/{MANIFEST_NAME}")):
        directory = manifest_path.parent
        if any(p.is_symlink() for p in (directory, directory.parent, directory.parent.parent)):
            continue
        own = own_copy(directory)
        if own is None:
            continue
        manifest, ref = own
        if ref.kind not in KINDS or checkpoint_dir(dest, ref) != directory:
            continue
        if runs and ref.run_id not in runs:
            continue
        if identity(ref) in remote:
            continue
        item = SyncItem(
            tinker_path=manifest.tinker_path,
            status="planned",
            local_path=str(directory),
            action="prune",
        )
        if not dry_run:
            try:
                shutil.rmtree(directory)
            except OSError as error:
                item.status, item.error = "failed", f"cannot remove {directory}: {error.strerror}"
            else:
                item.status = "pruned"
                for parent in (directory.parent, directory.parent.parent):
                    with contextlib.suppress(OSError):
                        parent.rmdir()  # only succeeds when empty
        notify(item)
        items.append(item)
    return items
