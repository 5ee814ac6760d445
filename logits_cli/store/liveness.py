"""Liveness of the server processes sharing one PostgreSQL database: a lease row per store
instance, renewed by a heartbeat (docs/ARCHITECTURE.md §6).

Why a lease, not a session advisory lock (the design before, issue 21 G1): that lock lives
as long as its connection, so a database restart released every process's lock at once and
nothing took them again; each process then held the others dead, took their saves over and
failed their loads with "send it again". A lease is a committed row, so it survives
restarts; a heartbeat thread renews it on a connection of its own and reconnects after
failures. Re-taking a lock after reconnecting would leave the same gap (others look between
the restart and the re-take) and need the same waiting rule as below, so a row is simpler.

A process (the judge) holds another instance dead when

* its row is gone: it closed cleanly (``Lease.release`` deletes the row), or
* its lease has expired by the database's clock, and the judge has itself renewed its own
  lease without a break for at least that instance's lease, on a database up at least as
  long. During a restart or an outage nobody can renew; an instance that lived through it
  renews within a heartbeat of the database coming back, and a judge connected for a whole
  lease has given it that chance. Until then the judge answers "alive": what it cannot know
  it leaves alone (the work of a process that may have been seen dead is never taken).

A process cut off from the database for longer than its lease, but not dead, counts as dead:
its saves are taken over (it logs a warning when it renews again).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from logits_cli.errors import ConfigError

logger = logging.getLogger("logits.store")

# How long a process stays alive in the others' eyes without renewing its lease.
DEFAULT_LEASE_SECONDS = 20.0
LEASE_ENV = "LOGITS_LIVENESS_LEASE_SECONDS"
# Renewals per lease: a lease survives a few failed ones (a slow database, a busy machine).
HEARTBEATS_PER_LEASE = 5

# The database's clock in microseconds, so machines' clocks never enter a lease.
_DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
TABLE_DDL = """CREATE TABLE IF NOT EXISTS logits_instances (
    id TEXT COLLATE "C" PRIMARY KEY,
    expires BIGINT NOT NULL,
    lease BIGINT NOT NULL
)"""
_RENEW = (
    "INSERT INTO logits_instances (id, expires, lease)"
    f" VALUES (%(id)s, {_DB_NOW} + %(lease)s, %(lease)s)"
    f" ON CONFLICT (id) DO UPDATE SET expires = {_DB_NOW} + %(lease)s, lease = %(lease)s"
)
_FORGET_AFTER_MICROS = 86_400_000_000
_FORGET_LONG_DEAD = f"DELETE FROM logits_instances WHERE expires < {_DB_NOW} - %s"
_JUDGE = (
    f"SELECT expires >= {_DB_NOW}, lease,"
    f" {_DB_NOW} - (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint"
    " FROM logits_instances WHERE id = %s"
)


def lease_seconds() -> float:
    """The lease of this process: ``LOGITS_LIVENESS_LEASE_SECONDS``, else 20 s."""
    text = os.environ.get(LEASE_ENV)
    if text is None:
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 1 <= value <= 3600:
        raise ConfigError(f"{LEASE_ENV} must be a number of seconds from 1 to 3600, got {text!r}")
    return value


def connect_options(seconds: float) -> dict[str, int]:
    """libpq options of a lease's connection: a renewal stuck on a silent network fails
    (TCP keepalives, unacknowledged data) well before a lease of ``seconds`` runs out."""
    heartbeat = seconds / HEARTBEATS_PER_LEASE
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, int(heartbeat)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(heartbeat * 1000),
    }


class Lease:
    """This instance's lease, renewed every ``seconds / HEARTBEATS_PER_LEASE`` by a daemon
    thread over a connection of its own (``connect`` opens one, bounded in time)."""

    def __init__(self, connect: Callable[[], Any], instance_id: str, seconds: float) -> None:
        self._connect = connect
        self._instance_id = instance_id
        self.seconds = seconds
        self._conn: Any = None
        # monotonic() of the first renewal of the current unbroken run; None while broken.
        self._unbroken_since: float | None = None
        self._last_renewal = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="logits-lease", daemon=True)

    def start(self) -> None:
        """Renew once (errors propagate: no work may be recorded under an instance with no
        lease), then keep renewing in the background. Rows of processes whose lease ran
        out a day ago go: their work was taken over long since, and they read as dead."""
        self._renew()
        self._conn.raw.execute(_FORGET_LONG_DEAD, (_FORGET_AFTER_MICROS,))
        self._thread.start()

    def unbroken_for(self) -> float:
        """Seconds this lease has been renewed without a failed renewal; 0 while broken."""
        since = self._unbroken_since
        return 0.0 if since is None else time.monotonic() - since

    def release(self) -> None:
        """Stop renewing and delete the row: the instance is gone, at once for everyone."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.seconds)
        try:
            conn = self._conn or self._connect()
            conn.raw.execute("DELETE FROM logits_instances WHERE id = %s", (self._instance_id,))
        except Exception as exc:  # the lease then expires on its own
            logger.warning("could not delete this process's liveness lease: %s", exc)
        self._close()

    def _renew(self) -> None:
        if self._conn is None or self._conn.raw.closed:
            self._conn = self._connect()
            # A renewal that hangs must not outlive its lease.
            timeout = int(self.seconds * 1000 / HEARTBEATS_PER_LEASE)
            self._conn.raw.execute(f"SET statement_timeout = {timeout}")
        lease = int(self.seconds * 1_000_000)
        self._conn.raw.execute(_RENEW, {"id": self._instance_id, "lease": lease})
        now = time.monotonic()
        if self._unbroken_since is None:
            self._unbroken_since = now
            gap = now - self._last_renewal
            if self._last_renewal and gap > self.seconds:
                logger.warning(
                    "this process could not renew its liveness lease for %.0f s (longer than"
                    " its %g s lease): other server processes may have taken over its saves",
                    gap,
                    self.seconds,
                )
        self._last_renewal = now

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds / HEARTBEATS_PER_LEASE):
            try:
                self._renew()
            except Exception as exc:
                if self._unbroken_since is not None:
                    logger.warning("could not renew this process's liveness lease: %s", exc)
                self._unbroken_since = None
                self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # closing a broken connection: nothing left to do
                logger.debug("closing the lease's connection: %s", exc)
            self._conn = None


def instance_alive(conn: Any, instance_id: str, judge: Lease) -> bool:
    """Whether instance ``instance_id`` may still be running, as judged by the process
    holding ``judge`` (its own lease), over ``conn``. See the module's docstring."""
    row = conn.raw.execute(_JUDGE, (instance_id,)).fetchone()
    if row is None:
        return False
    valid, lease_micros, database_up_micros = row
    if valid:
        return True
    lease = lease_micros / 1_000_000
    known = judge.unbroken_for() >= lease and database_up_micros / 1_000_000 >= lease
    return not known
