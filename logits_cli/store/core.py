"""The core every area of the store builds on: the directory, the database, the clock,
per-run locks and the liveness of store instances (processes sharing the store).

The areas (``accounts``, ``runs``, ``checkpoints``, ``blobs``, ``futures``, ``idempotency``)
are mixins over ``StoreCore``; ``store.Store`` composes them.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from logits_cli.errors import ConfigError
from logits_cli.store import db
from logits_cli.store.catalog import Catalog
from logits_cli.store.object_store import ObjectStore
from logits_cli.store.rows import _BLOB_NAME_RE, STORAGE_FULL_ERRNOS, _to_micros
from logits_cli.uri import validate_run_id


class StoreCore:
    """Opened on a directory: ``meta.sqlite3``, ``blobs/<sha256>``, ``runs/<run>/…``."""

    # -- lifecycle -----------------------------------------------------------------------
    def __init__(
        self,
        root: Path,
        *,
        max_rank: int = 256,
        future_retention: int = 3600,
        idempotency_retention: int = 86400,
        clock: Callable[[], datetime] | None = None,
        catalog: Catalog | None = None,
        database: str | None = None,
        blobs: str | None = None,
    ) -> None:
        self.root = Path(root)
        # None: blobs live in the directories below; s3://BUCKET/PREFIX: in that object
        # store, the directories being a cache (object_store.py).
        self.objects: ObjectStore | None = None
        if blobs is not None:
            self.objects = ObjectStore(blobs)
            self.objects.check()
        # None: ``meta.sqlite3`` in the root; a postgresql:// URL: that database (sql.py).
        self.database = database
        self._catalog = catalog  # None: the shipped base-model catalog, read on first use
        self.max_rank = max_rank
        self.future_retention = future_retention
        self.idempotency_retention = idempotency_retention
        self._clock = clock or (lambda: datetime.now(UTC))
        self.blobs_dir = self.root / "blobs"
        self.runs_dir = self.root / "runs"

        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.blobs_dir.mkdir(mode=0o700, exist_ok=True)
        self.runs_dir.mkdir(mode=0o700, exist_ok=True)
        self._db: Any
        if database is None:
            db.migrate(self.root / "meta.sqlite3", self.root / ".meta.lock")
            self._db = db.Database(self.root / "meta.sqlite3")
        else:
            from logits_cli.store import sql

            if not sql.is_postgres_url(database):
                raise ConfigError(f"database must be a postgresql:// URL, got {database!r}")
            sql.migrate(database)
            self._db = sql.PostgresDatabase(database)
        self._run_locks: dict[str, threading.Lock] = {}
        self._run_locks_guard = threading.Lock()
        self.instances_dir = self.root / "instances"
        self.instance_id = secrets.token_hex(8)
        # Held while this instance may run futures: a FileLock, or a liveness.Lease.
        self._instance_lock: Any = None
        self._instance_guard = threading.Lock()

    @property
    def catalog(self) -> Catalog:
        """The base models this store creates runs on (store/catalog.py)."""
        if self._catalog is None:
            from logits_cli.store.catalog import default_catalog

            self._catalog = default_catalog()
        return self._catalog

    # -- blobs in an object store (object_store.py); no-ops without one ------------------
    def _area_dir(self, area: str) -> Path:
        path = self.blobs_dir if area == "blobs" else self.root / area
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def _publish_blob(self, area: str, sha256: str) -> None:
        """Upload a blob just written locally, before the row naming it commits."""
        if self.objects is not None:
            self.objects.put(area, sha256, self._area_dir(area) / sha256)

    def _local_blob(self, area: str, sha256: str) -> Path:
        """The blob's local path, fetched from the object store when this machine lacks it
        (a save or export made by another server process)."""
        path = self._area_dir(area) / sha256
        if self.objects is not None and not path.is_file():
            self.objects.fetch(area, sha256, path)
        return path

    def _has_blob(self, area: str, sha256: str) -> bool:
        if self.objects is not None:
            return self.objects.exists(area, sha256)
        return (self._area_dir(area) / sha256).is_file()

    def _drop_blob(self, area: str, sha256: str) -> None:
        """Remove a blob no row references any more, here and in the object store."""
        (self._area_dir(area) / sha256).unlink(missing_ok=True)
        if self.objects is not None:
            self.objects.delete(area, sha256)

    def _blob_in_use(self, conn: Any, area: str, sha256: str) -> bool:
        """Whether a row names the blob: a checkpoint's archive or export file, or, with an
        object store, the archive a run's live state was loaded from: a machine without the
        state rebuilds it from there (live_state.py). With local blobs the state directory
        is the one copy needed, and deleting the checkpoint frees its disk at once."""
        if area == "exports":
            query = "SELECT 1 FROM export_files WHERE sha256 = ? LIMIT 1"
            return conn.execute(query, (sha256,)).fetchone() is not None
        if self.objects is None:
            query = "SELECT 1 FROM checkpoints WHERE sha256 = ? LIMIT 1"
            return conn.execute(query, (sha256,)).fetchone() is not None
        query = (
            "SELECT 1 FROM checkpoints WHERE sha256 = ?"
            " UNION ALL SELECT 1 FROM runs WHERE state_source = ? LIMIT 1"
        )
        return conn.execute(query, (sha256, sha256)).fetchone() is not None

    def _remove_orphan_objects(self, area: str, cutoff: float) -> int:
        """Delete the objects of ``area`` that no row names and that are older than
        ``cutoff`` (another process uploads before its row commits); returns how many.
        Only names that are digests: nothing else under the prefix is ours to delete."""
        assert self.objects is not None
        conn = self._db.connection()
        removed = 0
        for sha256, modified in list(self.objects.listing(area)):
            if not _BLOB_NAME_RE.fullmatch(sha256) or modified.timestamp() >= cutoff:
                continue
            if not self._blob_in_use(conn, area, sha256):
                self.objects.delete(area, sha256)
                removed += 1
        return removed

    def presigned_url(self, area: str, sha256: str, expires_in: int) -> str | None:
        """The object store's GET URL for a blob, or None when blobs are local."""
        if self.objects is None:
            return None
        return self.objects.presigned_url(area, sha256, expires_in)

    @classmethod
    def open(cls, root: Path, **kwargs: Any) -> Self:
        """Create the directory (0700), the schema (migrations via PRAGMA user_version)."""
        return cls(root, **kwargs)

    def close(self) -> None:
        with self._instance_guard:
            if self._instance_lock is not None:
                self._instance_lock.release()
                (self.instances_dir / f"{self.instance_id}.lock").unlink(missing_ok=True)
                self._instance_lock = None
        self._db.close()

    def healthy(self, *, min_free_bytes: int = 0) -> bool:
        """Database answers, the blob directory is writable and has ``min_free_bytes``."""
        return self.health_problem(min_free_bytes=min_free_bytes) is None

    def health_problem(self, *, min_free_bytes: int = 0) -> str | None:
        """Why the store cannot take writes (unreadable database, unwritable or (nearly)
        full blob directory), or None when it can."""
        try:
            self._db.connection().execute("SELECT 1").fetchone()
            with tempfile.TemporaryFile(dir=self.blobs_dir) as probe:
                probe.write(b"\0")  # creating an empty file succeeds even on a full disk
                probe.flush()
                os.fsync(probe.fileno())
            stats = os.statvfs(self.blobs_dir)
        except OSError as exc:
            if exc.errno in STORAGE_FULL_ERRNOS:
                return "the server's store has no space left"
            return "the store is not writable"
        except (sqlite3.Error, *getattr(self._db, "errors", ())):
            return "the store's database is not available"
        if stats.f_bavail * stats.f_frsize < min_free_bytes:
            return "the server's store has (nearly) no space left"
        return None

    # -- time, paths, locks ---------------------------------------------------------------
    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _now_micros(self) -> int:
        return _to_micros(self._now())

    def state_dir(self, run_id: str) -> Path:
        """The run's live state directory; ``quote`` keeps the name reversible and free of
        ``:`` (not allowed in Windows file names). A dot-segment id (``.``, ``..``) would
        name ``runs/`` or the store root itself, so it is refused (UsageError)."""
        validate_run_id(run_id)
        return self.runs_dir / quote(run_id, safe="")

    @contextmanager
    def _run_lock(self, run_id: str) -> Iterator[None]:
        """Serialise saves, loads and deletes of one run, across threads and processes; each
        of the three locks is waited for at most ``db.BUSY_TIMEOUT_SECONDS`` (then 503)."""
        from filelock import FileLock, Timeout

        with self._run_locks_guard:
            lock = self._run_locks.setdefault(run_id, threading.Lock())
        lock_file = self.runs_dir / f"{quote(run_id, safe='')}.lock"
        # The file lock covers the processes of one machine (one --home); PostgreSQL's lock
        # those of every machine, which only PostgreSQL with a bucket can have: with local
        # blobs every process must share the --home, and so the file lock.
        several_machines = self.database is not None and self.objects is not None
        across = self._db.run_lock(run_id) if several_machines else nullcontext()
        if not lock.acquire(timeout=db.BUSY_TIMEOUT_SECONDS):
            raise db.store_busy(f"run {run_id}")
        try:
            try:
                file_lock = FileLock(lock_file, timeout=db.BUSY_TIMEOUT_SECONDS).acquire()
            except Timeout as exc:
                raise db.store_busy(f"run {run_id}") from exc
            with file_lock, across:
                yield
        finally:
            lock.release()

    # -- instances: which processes are alive ---------------------------------------------
    def _claim_instance(self) -> str:
        """This instance's id, holding its lock file from the first future on, so other
        processes sharing the store can tell it is alive (``_instance_alive``)."""
        from filelock import FileLock

        with self._instance_guard:
            if self._instance_lock is None and self.database is not None:
                # Processes on other machines see this one: PostgreSQL holds the lock.
                self._instance_lock = self._db.hold_instance(self.instance_id)
            elif self._instance_lock is None:
                self.instances_dir.mkdir(mode=0o700, exist_ok=True)
                # Not thread-local: taken by a worker thread, released by close() on another.
                path = self.instances_dir / f"{self.instance_id}.lock"
                lock = FileLock(path, thread_local=False)
                lock.acquire()
                self._instance_lock = lock
        return self.instance_id

    def _instance_alive(self, instance: str | None) -> bool:
        """Whether the store instance that took a future still runs: its lock (a file, or
        on PostgreSQL an advisory lock) is held."""
        from filelock import FileLock, Timeout

        if instance == self.instance_id:
            return True
        if instance is None or not re.fullmatch(r"[0-9a-f]{16}", instance):
            return False
        if self.database is not None:
            # Judged against this process's own lease (liveness.py): it must be renewing.
            self._claim_instance()
            return bool(self._db.instance_alive(instance, judge=self._instance_lock))
        path = self.instances_dir / f"{instance}.lock"
        if not path.exists():
            return False
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        path.unlink(missing_ok=True)
        return False

    def instance_alive(self, instance: str | None) -> bool:
        """Whether the store instance (process) named ``instance`` still runs."""
        return self._instance_alive(instance)

    def liveness_settled(self) -> bool:
        """Whether this process can tell a dead instance yet: on PostgreSQL only once its
        own lease has been renewed without a break for a whole lease (liveness.py); until
        then every instance whose lease ran out looks alive, and its work is left alone."""
        if self.database is None:
            return True
        self._claim_instance()
        return bool(self._instance_lock.unbroken_for() >= self._instance_lock.seconds)
