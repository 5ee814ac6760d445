"""``logits server migrate``: move a single-machine store (``meta.sqlite3`` and the blob
directories under ``--home``) onto PostgreSQL and, optionally, an S3-compatible bucket
(docs/ARCHITECTURE.md §6, README "Running a team server").

Every table is copied row for row, ids included, in the order of the migrations (so every
foreign key finds its row); the sequence of ``checkpoints.id`` is moved past the copied ids;
every blob a row references is uploaded under its content address. A run made before
schema 6 records nothing its live state could be rebuilt from (store/live_state.py): its
state directory is archived like a save, uploaded, and named by the run's row, so a server
process on any machine can rebuild it. The target database must be
empty of runs and checkpoints (a second run would mix two stores); that is checked under
the store's write lock, in the transaction that copies the rows, so of two migrations into
one database at once exactly one lands and the other is refused with nothing written. A row
whose key the target already holds fails the migration rather than being skipped. The
server must be stopped meanwhile, as for any offline migration.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logits_cli.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from logits_cli.store.store import Store

# Parents before children (the order db.MIGRATIONS creates them in).
TABLES = (
    "users",
    "api_keys",
    "sessions",
    "runs",
    "checkpoints",
    "futures",
    "idempotency",
    "checkpoint_metadata",
    "export_files",
    "sampling_sessions",
)


@dataclass(frozen=True)
class Migrated:
    rows: dict[str, int]
    blobs: int
    blob_bytes: int
    archived_states: int  # runs whose live state only their directory held, archived


def migrate_store(root: Path, *, database: str, blobs: str | None) -> Migrated:
    """Copy the SQLite store at ``root`` into ``database`` (and its blobs into ``blobs``)."""
    from logits_cli.store import db
    from logits_cli.store.store import Store

    source_path = root / "meta.sqlite3"
    if not source_path.is_file():
        raise NotFoundError(f"no store to migrate: {source_path} does not exist")
    db.migrate(source_path, root / ".meta.lock")  # the source at the current schema first
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    target = Store.open(root, database=database, blobs=blobs)
    try:
        # Checked here to fail before any upload, and again under the write lock below,
        # where it decides: two migrations started at once both pass this first check.
        _refuse_a_used_target(target._db.connection())
        # Blobs first: a row must never lack its object, and an object without a row is
        # swept (or adopted by the next try).
        uploaded, size = _upload_blobs(target, source)
        pinned = _archive_unrecorded_states(target, source)
        rows: dict[str, int] = {}
        with target._db.write() as write:
            _refuse_a_used_target(write)
            for table in TABLES:
                rows[table] = _copy_table(source, write, table)
            for run_id, sha256 in pinned.items():
                write.execute(
                    "UPDATE runs SET state_source = ?, state_optimizer = 1 WHERE id = ?",
                    (sha256, run_id),
                )
            write.execute(
                "SELECT setval(pg_get_serial_sequence('checkpoints', 'id'),"
                " GREATEST((SELECT MAX(id) FROM checkpoints), 1))"
            )
    finally:
        source.close()
        target.close()
    return Migrated(rows=rows, blobs=uploaded, blob_bytes=size, archived_states=len(pinned))


def _refuse_a_used_target(conn: Any) -> None:
    held = conn.execute(
        "SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM checkpoints)"
    ).fetchone()
    if held is not None and held[0]:
        raise ConfigError(
            "the target database already holds runs or checkpoints; migrate into an empty database"
        )


def _copy_table(source: sqlite3.Connection, write: Any, table: str) -> int:
    """Copy every row of ``table``; the number copied. A row whose key the target holds
    already is refused (ConfigError, the transaction rolled back), never skipped: a
    skipped row would be a row lost. Only the implicit local user is in both anyway."""
    import psycopg

    columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    copied = source.execute(f"SELECT {names} FROM {table}").fetchall()
    verb = "INSERT OR IGNORE" if table == "users" else "INSERT"
    statement = f"{verb} INTO {table} ({names}) VALUES ({marks})"
    for row in copied:
        try:
            write.execute(statement, row)
        except psycopg.errors.UniqueViolation:
            raise ConfigError(
                f"the target database already holds a row of {table} with the same key as "
                "this store's; migrate into an empty database"
            ) from None
    return len(copied)


def _upload_blobs(target: Store, source: sqlite3.Connection) -> tuple[int, int]:
    """Every blob a row names, into the bucket (none without ``--to-blobs``)."""
    if target.objects is None:
        return 0, 0
    wanted = [
        ("blobs", sha256)
        for (sha256,) in source.execute(
            "SELECT DISTINCT sha256 FROM checkpoints WHERE sha256 IS NOT NULL"
            " AND kind <> 'external_weights'"
        )
    ]
    wanted += [
        ("exports", sha256)
        for (sha256,) in source.execute("SELECT DISTINCT sha256 FROM export_files")
    ]
    size = 0
    for area, sha256 in wanted:
        path = target._area_dir(area) / sha256
        if not path.is_file():
            raise NotFoundError(f"blob {area}/{sha256} named by the store is missing from {path}")
        target._publish_blob(area, sha256)
        size += path.stat().st_size
    return len(wanted), size


def _archive_unrecorded_states(target: Store, source: sqlite3.Connection) -> dict[str, str]:
    """{run id: archive sha256} for the runs whose live state another machine could not
    rebuild from the row: made before schema 6, or loaded from a checkpoint deleted since
    (local stores do not keep those archives). Their state directory is archived and
    uploaded; the archive a run was loaded from, when still here, is uploaded as it is."""
    from datetime import UTC, datetime

    from logits_cli.store.archive import build_archive
    from logits_cli.uri import format_path

    pinned: dict[str, str] = {}
    if target.objects is None:  # blobs stay under --home, which every process then shares
        return pinned
    rows = source.execute(
        "SELECT id, state_source FROM runs WHERE state_seed IS NULL OR state_source IS NOT NULL"
        " ORDER BY id"
    ).fetchall()
    for run_id, loaded_from in rows:
        if loaded_from is not None and (target.blobs_dir / loaded_from).is_file():
            target._publish_blob("blobs", loaded_from)
            continue
        state = target.state_dir(run_id)
        if not state.is_dir():
            continue  # nothing to keep: a load into the run gives it a state again
        _, sha256, _ = build_archive(
            state,
            target.blobs_dir,
            kind="weights",
            tinker_path=format_path(run_id, "weights", "live-state"),
            created=datetime.now(UTC),
        )
        target._publish_blob("blobs", sha256)
        pinned[run_id] = sha256
    return pinned
