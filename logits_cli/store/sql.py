"""PostgreSQL behind the interface of ``db.Database``, so one ``Store`` runs on either.

The store's SQL is written for SQLite (``?`` and ``:name`` parameters, ``INSERT OR
IGNORE``, ``IS ?``, ``cursor.lastrowid``); ``translate`` rewrites each statement once
(cached) into PostgreSQL's dialect, and the schema comes from the same ``db.MIGRATIONS``
with column types mapped (``postgres_ddl``), versioned in ``logits_schema``.

Semantics match SQLite's: a write transaction first takes one transaction-scoped advisory
lock, exactly as ``BEGIN IMMEDIATE`` takes SQLite's write lock, so every check-then-write of
the store stays atomic across any number of server processes; reads run in REPEATABLE READ
snapshots like SQLite's deferred transactions. Text columns use the "C" collation, so
ordering is by code point as in SQLite, whatever the database's locale. Integers are BIGINT
(times are microseconds since the epoch).

psycopg is imported only when a PostgreSQL database is opened (``pip install
'logits-cli[team]'``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import select
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from logits_cli.errors import ConfigError, DatabaseUnavailableError, UsageError
from logits_cli.store import liveness

logger = logging.getLogger("logits.store")

# pg_advisory_xact_lock key of the store's write lock ("logits" in ASCII).
WRITE_LOCK_KEY = 0x6C6F67697473
# Tables whose integer primary key SQLite assigns (rowid); PostgreSQL returns it.
_SERIAL_TABLES = {"checkpoints": "id"}
# Conflict targets of the tables written with INSERT OR REPLACE.
_PRIMARY_KEYS = {"checkpoint_metadata": ("checkpoint_row",), "users": ("id",)}
# Seconds a new connection may take (libpq waits for ever by default): a request that needs
# one ends within this, as 503, while the database is down or unreachable.
CONNECT_TIMEOUT = 10
_LOCAL_USER_INSERT = """INSERT INTO users (id, created)
    VALUES ('local', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)"""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, ``%`` -> ``%%``, outside string literals."""
    out: list[str] = []
    index, quoted = 0, False
    while index < len(sql):
        char = sql[index]
        if char == "'":
            quoted = not quoted
            out.append(char)
        elif quoted:
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        elif char == ":" and (match := re.match(r":([A-Za-z_]\w*)", sql[index:])):
            if index > 0 and sql[index - 1] == ":":  # a ``::type`` cast
                out.append(match.group(0))
            else:
                out.append(f"%({match.group(1)})s")
            index += len(match.group(0))
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, str | None]:
    """(PostgreSQL statement, name of the id column it returns for ``lastrowid``, if any)."""
    text = sql.strip()
    upsert = re.match(r"INSERT OR (IGNORE|REPLACE) INTO (\w+) \(([^)]*)\)", text, re.I)
    if upsert is not None:
        action, table, columns = upsert.groups()
        text = f"INSERT INTO {table} ({columns})" + text[upsert.end() :]
        if action.upper() == "IGNORE":
            text += " ON CONFLICT DO NOTHING"
        else:
            if table not in _PRIMARY_KEYS:
                raise ValueError(f"no conflict target known for INSERT OR REPLACE INTO {table}")
            keys = _PRIMARY_KEYS[table]
            updates = [c.strip() for c in columns.split(",") if c.strip() not in keys]
            assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in updates)
            text += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {assignments}"
    # SQLite's ``IS`` compares with NULL-safe equality.
    text = re.sub(r"\bIS \?", "IS NOT DISTINCT FROM ?", text)
    returning = None
    insert = re.match(r"INSERT INTO (\w+)\b", text, re.I)
    if insert and insert.group(1) in _SERIAL_TABLES and "RETURNING" not in text.upper():
        returning = _SERIAL_TABLES[insert.group(1)]
        text += f" RETURNING {returning}"
    return _placeholders(text), returning


def postgres_ddl(statement: str) -> str:
    """A statement of ``db.MIGRATIONS`` in PostgreSQL's types."""
    if "julianday" in statement:  # the implicit local user, stamped with the current time
        return _LOCAL_USER_INSERT
    text = re.sub(r"\bid INTEGER PRIMARY KEY\b", "id BIGSERIAL PRIMARY KEY", statement)
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)
    text = re.sub(r"\bBLOB\b", "BYTEA", text)
    return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', text)


def _params(params: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
    # SQLite stores booleans as integers; PostgreSQL refuses a boolean for an integer column.
    if isinstance(params, Mapping):
        return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return [int(v) if isinstance(v, bool) else v for v in params]


class Cursor:
    """The part of ``sqlite3.Cursor`` the store uses."""

    def __init__(self, cursor: Any, returning: str | None) -> None:
        self._cursor = cursor
        self.lastrowid: int | None = None
        if returning is not None:
            row = cursor.fetchone()
            self.lastrowid = None if row is None else int(row[0])

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            return None
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return [tuple(row) for row in self._cursor.fetchall()]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class Connection:
    """The part of ``sqlite3.Connection`` the store uses, over one psycopg connection."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        statement, returning = translate(sql)
        with statement_errors():
            cursor = self.raw.cursor()
            cursor.execute(statement, _params(params))
            return Cursor(cursor, returning)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        statement, _ = translate(sql)
        with statement_errors(), self.raw.cursor() as cursor:
            cursor.executemany(statement, [_params(row) for row in rows])

    @property
    def in_transaction(self) -> bool:
        import psycopg.pq

        return bool(self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self.raw.close()


def _connect(url: str, **options: Any) -> Connection:
    """A new connection; at start-up, when the operator reads the reason, ConfigError."""
    import psycopg

    try:
        return Connection(
            psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **options)
        )
    except psycopg.OperationalError as exc:
        # libpq's message names host and port but never the password; it spans lines.
        reason = " ".join(str(exc).split())
        raise ConfigError(f"cannot connect to the store's PostgreSQL database: {reason}") from exc


def database_unavailable() -> DatabaseUnavailableError:
    """What a request learns of a database it cannot reach: 503 with Retry-After, which
    clients retry (then exit 6), and not a word of where the database is (the reason,
    with host and port, goes to the server's log)."""
    return DatabaseUnavailableError("the store's database is not reachable; retry shortly")


@contextmanager
def statement_errors() -> Iterator[None]:
    """psycopg's errors of a request's statement, as the error classes they stand for: a
    lost or refused connection (PostgreSQL restarting, a network cut) is 503; a NUL in a
    text parameter, which PostgreSQL cannot keep (SQLite can), is the client's mistake.
    Requests are checked for NUL at the HTTP boundary; this keeps one that slipped past a
    400 rather than a 500."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as exc:
        logger.warning("the store's PostgreSQL database failed a statement: %s", exc)
        raise database_unavailable() from exc
    except psycopg.DataError as exc:
        if "NUL (0x00)" not in str(exc):
            raise
        raise UsageError("request text holds a NUL character, which is not allowed") from None


def migrate(url: str) -> None:
    """Create or upgrade the schema (the same numbered migrations as SQLite's), under an
    advisory lock so processes starting at once migrate one after the other."""
    from logits_cli.store.db import MIGRATIONS, SCHEMA_VERSION

    conn = _connect(url)
    try:
        with conn.raw.transaction():
            _wait_for_lock(conn, "pg_advisory_xact_lock", WRITE_LOCK_KEY, "the write lock")
            conn.raw.execute("CREATE TABLE IF NOT EXISTS logits_schema (version BIGINT NOT NULL)")
            # Liveness leases: PostgreSQL's alone (SQLite stores use lock files), never migrated.
            conn.raw.execute(liveness.TABLE_DDL)
            row = conn.raw.execute("SELECT version FROM logits_schema").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the store's database has schema version {version}; "
                    f"this logits understands up to {SCHEMA_VERSION}"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.raw.execute(postgres_ddl(statement))
            conn.raw.execute("DELETE FROM logits_schema")
            conn.raw.execute("INSERT INTO logits_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    finally:
        conn.close()


class PostgresDatabase:
    """Per-thread connections to one PostgreSQL database, like ``db.Database``."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._local = threading.local()
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()
        self._all_guard = threading.Lock()
        self._closed = False
        self.lease_seconds = liveness.lease_seconds()  # ConfigError at open when malformed

    def connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.raw.closed and _closed_by_server(conn):
            conn.raw.close()
        if conn is None or conn.raw.closed:
            if self._closed:
                raise ConfigError("the store is closed")
            try:
                conn = _connect(self.url)
            except ConfigError as exc:  # it was reachable at start-up: down, or restarting
                logger.warning("%s", exc)
                raise database_unavailable() from None
            self._local.conn = conn
            with self._all_guard:
                self._all.add(conn.raw)
        return conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A snapshot: every query inside sees the same committed state."""
        conn = self.connection()
        with statement_errors():
            conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield conn
        except BaseException:
            _rollback(conn)
            raise
        with statement_errors():
            conn.raw.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction holding the store's write lock from its first statement."""
        conn = self.connection()
        with statement_errors():
            conn.raw.execute("BEGIN")
        try:
            with statement_errors():
                _wait_for_lock(conn, "pg_advisory_xact_lock", WRITE_LOCK_KEY, "the write lock")
            yield conn
        except BaseException:
            _rollback(conn)
            raise
        with statement_errors():
            conn.raw.execute("COMMIT")

    # -- liveness of this process (liveness.py), runs across machines -------------------------
    def hold_instance(self, instance_id: str) -> liveness.Lease:
        """Take and keep renewing the liveness lease of store instance ``instance_id``, on a
        connection of its own, so that processes on any machine see this one alive."""
        seconds = self.lease_seconds
        options = liveness.connect_options(seconds)
        lease = liveness.Lease(lambda: _connect(self.url, **options), instance_id, seconds)
        try:
            with statement_errors():
                lease.start()
        except ConfigError as exc:  # it was reachable at start-up: down, or restarting
            logger.warning("%s", exc)
            raise database_unavailable() from None
        return lease

    def instance_alive(self, instance_id: str, judge: liveness.Lease) -> bool:
        """Whether instance ``instance_id`` may still run, as far as this process, renewing
        ``judge``, can tell (``liveness.instance_alive``)."""
        with statement_errors():
            return liveness.instance_alive(self.connection(), instance_id, judge)

    @contextmanager
    def run_lock(self, run_id: str) -> Iterator[None]:
        """Serialise the saves, loads and deletes of one run across every process on this
        database, whatever machine it runs on (a session advisory lock on this thread's
        connection, taken outside any transaction)."""
        import psycopg

        key = _signed(int.from_bytes(hashlib.sha256(f"run:{run_id}".encode()).digest()[:8]))
        conn = self.connection()
        _wait_for_lock(conn, "pg_advisory_lock", key, f"run {run_id}")
        try:
            yield
        finally:
            # A connection lost meanwhile (a database restart) took its session locks along.
            if not conn.raw.closed:
                with contextlib.suppress(psycopg.OperationalError):
                    conn.raw.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def close(self) -> None:
        self._closed = True
        with self._all_guard:
            connections = list(self._all)
            self._all.clear()
        for raw in connections:
            raw.close()
        self._local = threading.local()


def _wait_for_lock(conn: Connection, function: str, key: int, what: str) -> None:
    """``SELECT function(key)`` waiting at most ``db.BUSY_TIMEOUT_SECONDS`` (lock_timeout
    bounds advisory locks too), then the lock wait is over: UnavailableError. The setting
    is the transaction's when there is one, else reset right after."""
    import psycopg

    from logits_cli.store.db import BUSY_TIMEOUT_SECONDS, store_busy

    in_transaction = conn.in_transaction
    timeout = f"{int(BUSY_TIMEOUT_SECONDS * 1000)}ms"
    conn.raw.execute("SELECT set_config('lock_timeout', %s, %s)", (timeout, in_transaction))
    try:
        conn.raw.execute(f"SELECT {function}(%s)", (key,))
    except psycopg.errors.LockNotAvailable as exc:
        raise store_busy(what) from exc
    finally:
        if not in_transaction and not conn.raw.closed:
            conn.raw.execute("RESET lock_timeout")


def _signed(key: int) -> int:
    """An unsigned 64-bit key as the signed bigint pg_advisory_lock takes."""
    return key - (1 << 64) if key >= 1 << 63 else key


def _closed_by_server(conn: Connection) -> bool:
    """Whether the server has closed this idle connection (a restart, an administrator):
    its socket is readable with no query in flight. Checked before a connection is handed
    out, so the first transaction after a restart does not fail on a dead connection."""
    if conn.in_transaction:
        return False
    try:
        readable, _, _ = select.select([conn.raw.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _rollback(conn: Connection) -> None:
    import psycopg

    if not conn.raw.closed and conn.in_transaction:
        # A connection lost meanwhile must not hide the error being unwound.
        with contextlib.suppress(psycopg.OperationalError):
            conn.raw.execute("ROLLBACK")
