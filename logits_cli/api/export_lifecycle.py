"""The export a files-generation download of a ``weights/`` checkpoint goes through
(docs/protocol.md §11.6, docs/ARCHITECTURE.md §3 "Both generations").

An export is a create-via-load (a new run, in this client's session, holding the checkpoint's
weights) then ``save_weights_external`` from that run. The run is of no use once the export
exists, so the session is finished at once: the service frees the run's live state, and our
server removes the run itself when its export goes (docs/protocol.md Appendix A, A30).

The resume record ``DEST/.NAME.files/export.json`` knows the session before the run exists
and the run and the export's name before the export does, so a process killed at any point
leaves enough for the next attempt to resume on the export, or to finish the session it left
open (which releases its run), or, if nobody comes back, for the export's TTL to end both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logits_cli import models
from logits_cli.errors import LogitsError
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient

# Long enough for a large export over a slow link; renewed whenever URLs are re-signed.
EXPORT_TTL_S = 3600
# What an export record holds besides "export" and "source": the session the export's run is
# made in, the run, and the export's name (chosen before it is made).
Record = dict[str, str]
Recorder = Callable[[Record], None]

# Exports of one client are made one at a time: they share its session, which each finishes
# once its export exists, and a concurrent one (``sync --jobs N``) must not have its run's
# session finished between its create-via-load and its save. Downloads still overlap.
_SESSION_USERS: weakref.WeakKeyDictionary[LogitsClient, asyncio.Lock] = weakref.WeakKeyDictionary()


def _session_lock(client: LogitsClient) -> asyncio.Lock:
    lock = _SESSION_USERS.get(client)
    if lock is None:
        lock = _SESSION_USERS[client] = asyncio.Lock()
    return lock


def export_kept_until() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=EXPORT_TTL_S)


def _recorded_export(record: dict[str, Any]) -> CheckpointRef | None:
    """The export a record names: made (``export``), or planned (its run and name are
    chosen before it is made)."""
    try:
        if record.get("export"):
            return CheckpointRef.parse(str(record["export"]))
        run, name = record.get("run"), record.get("export_name")
        if isinstance(run, str) and isinstance(name, str):
            return CheckpointRef.parse(f"tinker://{run}/{EXTERNAL_KIND}/{name}")
    except LogitsError:
        return None  # not a path: nothing to resume on or delete
    return None


async def resumable_export(
    client: LogitsClient, record: dict[str, Any] | None, checkpoint: models.Checkpoint
) -> CheckpointRef | None:
    """The export an unfinished download of ``checkpoint`` recorded, if it is still there
    (or can still be made from the run recorded for it). The session the earlier process
    left is finished, and an export nobody will resume on (of another version of the
    checkpoint) is deleted, so nothing it made outlives this download."""
    if record is None:
        return None
    export = _recorded_export(record)
    usable = None
    if export is not None and record.get("source") == checkpoint.tinker_path:
        try:
            await client.external_weights_urls(export)
            usable = export
        except LogitsError:
            if not record.get("export"):
                # Killed after its run was made, before the export was: the run holds the
                # checkpoint's weights, so the export is made from it, and the run goes
                # with that export.
                with contextlib.suppress(LogitsError):
                    usable = await client.save_external(
                        export.run_id, export.name, ttl_seconds=EXPORT_TTL_S
                    )
    session = record.get("session")
    if isinstance(session, str) and session:
        # Already finished when the earlier process got past its export; if it did not,
        # this frees the state of the run it made.
        with contextlib.suppress(LogitsError):
            await client.finish_session(session)
    if usable is None and export is not None:
        # After the finish: with its session over, the run goes with this export.
        with contextlib.suppress(LogitsError):
            await client.delete(export)
    return usable


async def make_export(
    client: LogitsClient, target: CheckpointRef, record: Recorder | None = None
) -> tuple[CheckpointRef, Record]:
    """Export ``target`` (a weights/ checkpoint) as an external_weights/ checkpoint; returns
    it and what ``record`` was told (session, run, export name). ``record`` is called before
    each step that leaves something on the server, so a kill leaves the step known."""
    async with _session_lock(client):
        made_in: Record = {"session": await client.session_id()}
        try:
            if record is not None:
                record(made_in)
            run_id = await client.create_run_from(target)
            name = f"export-{target.name[:40]}-{uuid.uuid4().hex[:8]}"
            made_in |= {"run": run_id, "export_name": name}
            if record is not None:
                record(made_in)
            export = await client.save_external(run_id, name, ttl_seconds=EXPORT_TTL_S)
        finally:
            # The run is of no further use (the export holds its own files): finishing the
            # session frees its state on the service and on our server, which also removes
            # the run itself with its export.
            with contextlib.suppress(LogitsError):
                await client.finish_session(made_in["session"])
    return export, made_in


def recorder(dest_dir: Path, name: str, source: str) -> tuple[Recorder, Callable[[], None]]:
    """Write the export record of a download of ``source`` as NAME into ``dest_dir`` before
    the export exists (``make_export``), and a function that takes back what it created
    when the export could not be made (nothing to resume)."""
    from logits_cli.api.transfer.files_layout import files_part_dir, record_export
    from logits_cli.diskio import make_private_dir

    part_dir = files_part_dir(dest_dir, name)
    created: list[Path] | None = None  # None until the directories are checked

    def write(made_in: Record) -> None:
        nonlocal created
        if created is None:
            created = []
            if not os.path.lexists(dest_dir):
                dest_dir.mkdir(parents=True)
                created.append(dest_dir)
            existed = os.path.lexists(part_dir)
            make_private_dir(part_dir)  # ours, or refused (ForeignPathError)
            if not existed:
                created.append(part_dir)
        # "export" is empty until the export exists: download_files records it then.
        record_export(part_dir, "", {"export": "", "source": source, **made_in})

    def take_back() -> None:
        if created is None:
            return
        with contextlib.suppress(OSError):
            record_export(part_dir, None, {})
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: an earlier attempt's data stays

    return write, take_back


async def clean_up(client: LogitsClient, export: CheckpointRef) -> None:
    """Delete the export (its run goes with it) and finish the session; failures only leave
    a TTL-bounded export."""
    with contextlib.suppress(LogitsError):
        await client.delete(export)
    async with _session_lock(client):  # never the session of an export being made
        with contextlib.suppress(LogitsError):
            await client.finish_session()
