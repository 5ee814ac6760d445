"""SQLite access for the store: connections, transactions, schema and migrations.

One ``Database`` is shared by every thread of a process; each thread gets its own
connection (sqlite3 connections must not be used by two threads at once). Several
processes may open the same file: WAL lets readers run beside one writer, every write
transaction starts with ``BEGIN IMMEDIATE`` so it takes the write lock up front (a deferred
transaction that upgrades from read to write can fail with "database is locked" without the
busy handler ever being called), and the busy timeout makes writers queue instead of failing.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from logits_cli.errors import ConfigError, UnavailableError

# How long any lock of the store (SQLite's write lock, PostgreSQL's advisory locks, a run's
# lock) is waited for before the request fails as busy (503 with Retry-After, exit 6): every
# wait is bounded, and a client retries a 503 on its own.
BUSY_TIMEOUT_SECONDS = 60.0


def store_busy(what: str) -> UnavailableError:
    """The error of a lock wait that ran out (``BUSY_TIMEOUT_SECONDS``)."""
    return UnavailableError(
        f"the store is busy: {what} stayed locked for {BUSY_TIMEOUT_SECONDS:g} s; retry shortly"
    )


# Forward migrations: MIGRATIONS[n] takes the schema from user_version n to n + 1. Times are
# integer microseconds since the Unix epoch (UTC), so comparisons and ordering are exact.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE users (
            id TEXT PRIMARY KEY,
            created INTEGER NOT NULL
        )""",
        """CREATE TABLE api_keys (
            key_sha256 TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            user_id TEXT NOT NULL REFERENCES users(id),
            created INTEGER NOT NULL,
            revoked INTEGER
        )""",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            tags TEXT NOT NULL,
            user_metadata TEXT,
            sdk_version TEXT NOT NULL,
            project_id TEXT,
            created INTEGER NOT NULL,
            last_heartbeat INTEGER
        )""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            model_seq_id INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            base_model TEXT NOT NULL,
            lora_rank INTEGER NOT NULL,
            train_unembed INTEGER NOT NULL,
            train_mlp INTEGER NOT NULL,
            train_attn INTEGER NOT NULL,
            seed INTEGER,
            user_metadata TEXT,
            body_sha256 TEXT NOT NULL,
            created INTEGER NOT NULL,
            last_request_time INTEGER NOT NULL
        )""",
        "CREATE INDEX runs_by_user ON runs (user_id, created DESC, id)",
        "CREATE INDEX runs_by_created ON runs (created DESC, id)",
        """CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            tinker_path TEXT NOT NULL,
            time INTEGER NOT NULL,
            expires_at INTEGER,
            public INTEGER NOT NULL DEFAULT 0,
            size_bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            UNIQUE (run_id, kind, name)
        )""",
        "CREATE INDEX checkpoints_by_user ON checkpoints (user_id, time DESC, tinker_path, expires_at)",
        "CREATE INDEX checkpoints_by_run ON checkpoints (run_id, kind, time DESC, name)",
        # Runs other users may see: those with a public checkpoint (docs/protocol.md §2.4).
        "CREATE INDEX checkpoints_public ON checkpoints (run_id, expires_at) WHERE public = 1",
        "CREATE INDEX checkpoints_by_expiry ON checkpoints (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE INDEX checkpoints_by_sha256 ON checkpoints (sha256)",
        """CREATE TABLE futures (
            request_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            model_id TEXT,
            operation TEXT NOT NULL,
            seq_id INTEGER,
            body_sha256 TEXT,
            status TEXT NOT NULL,
            result TEXT,
            created INTEGER NOT NULL,
            finished INTEGER
        )""",
        """CREATE INDEX futures_by_seq ON futures (model_id, seq_id, body_sha256)
            WHERE seq_id IS NOT NULL""",
        "CREATE INDEX futures_by_created ON futures (created)",
        """CREATE TABLE idempotency (
            user_id TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            key TEXT NOT NULL,
            body_sha256 TEXT NOT NULL,
            state TEXT NOT NULL,
            status INTEGER,
            body BLOB,
            content_type TEXT,
            location TEXT,
            created INTEGER NOT NULL,
            PRIMARY KEY (user_id, method, path, key)
        )""",
        "CREATE INDEX idempotency_by_created ON idempotency (created)",
        # The implicit user of the embedded backend (docs/protocol.md §1.4).
        """INSERT INTO users (id, created)
            VALUES ('local', CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))""",
    ),
    (
        # The store instance (process) running a pending future: a poll can tell a future
        # whose process died from one still running (Store.get_future).
        "ALTER TABLE futures ADD COLUMN instance TEXT",
    ),
    (
        # The store instance running a request under an idempotency key: a record left
        # "running" by a process that died is released instead of blocking retries for a day.
        "ALTER TABLE idempotency ADD COLUMN instance TEXT",
    ),
    (
        # The SDK 0.38 dialect (docs/protocol.md §11). A finished session refuses new models
        # and answers heartbeats with 410.
        "ALTER TABLE sessions ADD COLUMN finished INTEGER",
        "ALTER TABLE sessions ADD COLUMN finish_reason TEXT",
        "ALTER TABLE sessions ADD COLUMN finish_detail TEXT",
        # JSON such as {"type": "adamw"}; NULL for runs created before, which are Adam.
        "ALTER TABLE runs ADD COLUMN optimizer_config TEXT",
        # Rows hang off a checkpoint row and go with it (delete, overwrite, TTL sweep).
        """CREATE TABLE checkpoint_metadata (
            checkpoint_row INTEGER PRIMARY KEY REFERENCES checkpoints(id) ON DELETE CASCADE,
            user_metadata TEXT NOT NULL
        )""",
        # The files of an external_weights checkpoint, each a blob under exports/<sha256>.
        """CREATE TABLE export_files (
            checkpoint_row INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (checkpoint_row, path)
        )""",
        "CREATE INDEX export_files_by_sha256 ON export_files (sha256)",
        """CREATE TABLE sampling_sessions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            seq_id INTEGER NOT NULL,
            base_model TEXT NOT NULL,
            model_path TEXT,
            run_id TEXT,
            body_sha256 TEXT NOT NULL,
            created INTEGER NOT NULL
        )""",
        "CREATE INDEX sampling_sessions_by_session ON sampling_sessions (session_id, seq_id)",
    ),
    (
        # JSON naming a job another process can run again when the one that took the
        # future dies (saves: server/futures.py); NULL for jobs that cannot be resumed.
        "ALTER TABLE futures ADD COLUMN job TEXT",
    ),
    (
        # What the run's live state is, so a process on another machine can rebuild it
        # (store/live_state.py): fresh from state_seed, or the archive state_source loaded
        # with or without its optimizer state. All NULL for runs created before: their
        # state directory is the only copy.
        "ALTER TABLE runs ADD COLUMN state_seed INTEGER",
        "ALTER TABLE runs ADD COLUMN state_source TEXT",
        "ALTER TABLE runs ADD COLUMN state_optimizer INTEGER",
        "CREATE INDEX runs_by_state_source ON runs (state_source) WHERE state_source IS NOT NULL",
        # The URL and JWT signing secret of a team server: every process on the database,
        # on any machine, signs and checks with the same key (SQLite stores keep a file).
        """CREATE TABLE server_secrets (
            name TEXT PRIMARY KEY,
            value BLOB NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot)."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are opened explicitly."""
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # In WAL mode NORMAL stays consistent after a crash; it only skips an fsync per commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _user_version(path: Path) -> int:
    conn = connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def migrate(path: Path, lock_path: Path) -> None:
    """Create or upgrade the schema. The file lock keeps two processes that open a fresh
    store at once from both switching the journal mode and creating tables; a store that is
    already current is only read, so opening it costs no write lock."""
    if path.exists() and _user_version(path) == SCHEMA_VERSION:
        return
    from filelock import FileLock, Timeout  # only needed here, and slow to import for a listing

    try:
        lock = FileLock(lock_path, timeout=BUSY_TIMEOUT_SECONDS).acquire()
    except Timeout as exc:
        raise store_busy("the schema's migration lock") from exc
    with lock:
        conn = connect(path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"store {path.parent} has schema version {version}; "
                        f"this logits understands up to {SCHEMA_VERSION}"
                    )
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        finally:
            conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, SQLITE_IOERR, interrupts) already end the transaction.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class Database:
    """Per-thread connections to one SQLite file, with read and write transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # Weak: when a thread ends (thread pools retire idle workers), its thread-local
        # connection is dropped and closed instead of piling up here.
        self._all: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
        self._all_guard = threading.Lock()
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the store is closed")
            conn = connect(self.path)
            self._local.conn = conn
            with self._all_guard:
                self._all.add(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A snapshot: every query inside sees the same committed state."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the write lock from its first statement."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            # The busy handler waited BUSY_TIMEOUT_SECONDS for another writer.
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise store_busy("the database's write lock") from exc
            raise
        try:
            yield conn
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._all_guard:
            connections = list(self._all)
            self._all.clear()
        for conn in connections:
            conn.close()
        self._local = threading.local()
