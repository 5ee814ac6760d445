"""Exports: adapter-only checkpoints downloaded file by file (docs/protocol.md §11.3).

An ``external_weights`` checkpoint is a row of ``checkpoints`` like any other (so listing,
delete, TTL and publish work unchanged) whose files are rows of ``export_files``, each a
content-addressed blob under ``exports/<sha256>``. Its ``sha256`` column holds the digest of
the file list, not of an archive: there is none, and the blob endpoint never serves one for it.

Blobs are adopted (renamed into place, row inserted) and discarded under one lock per store,
so a delete never removes a blob that a concurrent export or copy is adopting.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time as wallclock
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from logits_cli import models
from logits_cli.diskio import write_all
from logits_cli.errors import NotFoundError, UsageError
from logits_cli.protocol_rules import check_ttl
from logits_cli.store.core import StoreCore
from logits_cli.store.rows import ORPHAN_GRACE_SECONDS
from logits_cli.store.store import (
    _UNEXPIRED,
    BlobInfo,
    Store,
    _checkpoint,
    _from_micros,
)
from logits_cli.uri import EXTERNAL_KIND, format_path, validate_name

AGE_SUFFIX = ".age"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COPY_CHUNK = 8 << 20
_ADOPT_LOCKS: dict[str, threading.Lock] = {}
_ADOPT_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class ExportFile:
    path: str  # relative to the checkpoint root; ends in ".age" when encrypted
    sha256: str
    size: int


def exports_dir(store: StoreCore) -> Path:
    path = store.root / "exports"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextmanager
def _adopting(store: StoreCore) -> Iterator[None]:
    from filelock import FileLock

    with _ADOPT_LOCKS_GUARD:
        lock = _ADOPT_LOCKS.setdefault(str(store.root), threading.Lock())
    with lock, FileLock(store.root / ".exports.lock"):
        yield


# -- blobs ----------------------------------------------------------------------------------


def _stage_copy(source: Path, directory: Path) -> tuple[Path, str, int]:
    """Copy ``source`` into a temp file in ``directory``; (temp path, sha256, size)."""
    digest = hashlib.sha256()
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".tmp")
    size = 0
    with os.fdopen(fd, "wb", buffering=0) as out, open(source, "rb") as src:
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            write_all(out.fileno(), chunk)
            size += len(chunk)
        os.fsync(out.fileno())
    return Path(temp), digest.hexdigest(), size


def _stage_encrypted(source: Path, directory: Path, recipients: list[Any]) -> tuple[Path, str, int]:
    import pyrage

    fd, temp = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".tmp")
    os.close(fd)
    pyrage.encrypt_file(str(source), temp, recipients)
    digest = hashlib.sha256()
    with open(temp, "rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return Path(temp), digest.hexdigest(), os.path.getsize(temp)


def age_recipients(texts: list[str]) -> list[Any]:
    """Parse native ``age1…`` keys and SSH public keys; 400 for anything else."""
    import pyrage

    if not texts:
        raise UsageError("age_encryption_recipients must not be empty when given")
    parsed = []
    for text in texts:
        if not isinstance(text, str):
            raise UsageError("age_encryption_recipients must be strings")
        try:
            if text.startswith("age1"):
                parsed.append(pyrage.x25519.Recipient.from_str(text))
            else:
                parsed.append(pyrage.ssh.Recipient.from_str(text))
        except Exception:
            raise UsageError(f"not an age or SSH public key: {text[:24]!r}") from None
    return parsed


def _manifest_digest(files: list[ExportFile]) -> str:
    listing = {f.path: {"sha256": f.sha256, "size": f.size} for f in files}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def gc_export_blobs(store: StoreCore) -> int:
    """Remove blobs no export row references (deleted, overwritten or swept exports)."""
    directory = exports_dir(store)
    removed = 0
    with _adopting(store):
        conn = store._db.connection()
        for entry in os.scandir(directory):
            if not _SHA256.fullmatch(entry.name):
                continue
            if not store._blob_in_use(conn, "exports", entry.name):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
            elif store.objects is not None:  # only a cache: trimmed once it has settled
                with suppress(FileNotFoundError):
                    if entry.stat().st_mtime < wallclock.time() - ORPHAN_GRACE_SECONDS:
                        os.unlink(entry.path)
        if store.objects is not None:
            cutoff = wallclock.time() - ORPHAN_GRACE_SECONDS
            removed += store._remove_orphan_objects("exports", cutoff)
    return removed


def _insert_export(
    store: Store,
    user_id: str,
    run_id: str,
    name: str,
    staged: list[tuple[str, Path | None, str, int]],
    *,
    tinker_path: str,
    ttl_seconds: int | None,
) -> models.Checkpoint:
    """Adopt staged blobs (temp path None: the blob exists already) and insert the rows."""
    directory = exports_dir(store)
    files = [ExportFile(path, sha256, size) for path, _, sha256, size in staged]
    digest = _manifest_digest(files)
    size = sum(f.size for f in files)
    with _adopting(store):
        for _, temp, sha256, _ in staged:
            if temp is not None:
                os.replace(temp, directory / sha256)
                store._publish_blob("exports", sha256)
            elif not store._has_blob("exports", sha256):
                raise NotFoundError("the source export's files are gone")
        now = store._now_micros()
        expires_at = None if ttl_seconds is None else now + ttl_seconds * 1_000_000
        with store._db.write() as conn:
            old = store._check_name_free(conn, run_id, EXTERNAL_KIND, name, False)
            if old is not None:  # an expired export of that name
                conn.execute("DELETE FROM checkpoints WHERE id = ?", (old[0],))
            cursor = conn.execute(
                "INSERT INTO checkpoints (run_id, user_id, kind, name, tinker_path, time,"
                " expires_at, public, size_bytes, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (run_id, user_id, EXTERNAL_KIND, name, tinker_path, now, expires_at, size, digest),
            )
            conn.executemany(
                "INSERT INTO export_files (checkpoint_row, path, sha256, size) VALUES (?, ?, ?, ?)",
                [(cursor.lastrowid, f.path, f.sha256, f.size) for f in files],
            )
            conn.execute("UPDATE runs SET last_request_time = ? WHERE id = ?", (now, run_id))
    return _checkpoint((EXTERNAL_KIND, name, tinker_path, now, expires_at, False, size, digest))


def save_external(
    store: Store,
    user_id: str,
    run_id: str,
    *,
    name: str,
    ttl_seconds: int | None,
    recipients: list[str] | None,
    uri_scheme: str,
) -> models.Checkpoint:
    """Export the run's current adapter (adapter_config.json, adapter_model.safetensors) as
    ``external_weights/NAME``; every file age-encrypted when ``recipients`` are given."""
    from logits_cli.store.lora import ADAPTER_CONFIG, ADAPTER_MODEL

    validate_name(name)
    check_ttl(ttl_seconds)
    parsed = None if recipients is None else age_recipients(recipients)
    store._owned_run(store._db.connection(), user_id, run_id)
    directory = exports_dir(store)
    staged: list[tuple[str, Path | None, str, int]] = []
    try:
        with store._run_lock(run_id):
            store._check_name_free(store._db.connection(), run_id, EXTERNAL_KIND, name, False)
            state = store._live_state(run_id)
            for member in (ADAPTER_CONFIG, ADAPTER_MODEL):
                if parsed is None:
                    temp, sha256, size = _stage_copy(state / member, directory)
                    staged.append((member, temp, sha256, size))
                else:
                    temp, sha256, size = _stage_encrypted(state / member, directory, parsed)
                    staged.append((member + AGE_SUFFIX, temp, sha256, size))
            tinker_path = format_path(run_id, EXTERNAL_KIND, name, uri_scheme)
            checkpoint = _insert_export(
                store,
                user_id,
                run_id,
                name,
                staged,
                tinker_path=tinker_path,
                ttl_seconds=ttl_seconds,
            )
    finally:
        for _, leftover, _, _ in staged:
            if leftover is not None:
                leftover.unlink(missing_ok=True)
    gc_export_blobs(store)
    return checkpoint


def _export_files(
    store: Store, run_id: str, name: str, *, viewer: str | None
) -> tuple[list[ExportFile], datetime]:
    """The files of an unexpired export; ``viewer`` None skips the visibility check."""
    conn = store._db.connection()
    visible = "" if viewer is None else " AND (c.user_id = :viewer OR c.public = 1)"
    row = conn.execute(
        f"SELECT c.id, c.time FROM checkpoints c WHERE c.run_id = :run_id AND c.kind = :kind"
        f" AND c.name = :name AND {_UNEXPIRED}{visible}",
        {
            "run_id": run_id,
            "kind": EXTERNAL_KIND,
            "name": name,
            "viewer": viewer,
            "now": store._now_micros(),
        },
    ).fetchone()
    if row is None:
        raise NotFoundError(f"checkpoint {EXTERNAL_KIND}/{name} not found in run {run_id}")
    files = conn.execute(
        "SELECT path, sha256, size FROM export_files WHERE checkpoint_row = ? ORDER BY path",
        (row[0],),
    ).fetchall()
    return [ExportFile(*f) for f in files], _from_micros(row[1])


def export_files(store: Store, viewer: str, run_id: str, name: str) -> list[ExportFile]:
    """The export's files, for its owner or anyone when it is public; else NotFoundError."""
    return _export_files(store, run_id, name, viewer=viewer)[0]


def export_blob_for(store: Store, run_id: str, name: str, path: str, sha256: str) -> BlobInfo:
    """For the blob endpoint: the export exists, is unexpired, and holds ``path`` with digest
    ``sha256``; no visibility check (§6.1)."""
    files, created = _export_files(store, run_id, name, viewer=None)
    for file in files:
        if file.path == path and file.sha256 == sha256:
            blob = store._local_blob("exports", sha256)
            if blob.is_file():
                return BlobInfo(path=blob, sha256=sha256, size=file.size, created=created)
    raise NotFoundError(f"file {path} not found in {EXTERNAL_KIND}/{name} of run {run_id}")
