"""Every lock of the store is waited for a bounded time, then the request fails as busy
(UnavailableError: 503 with Retry-After on the wire, exit 6 in the CLI): SQLite's write
lock, a run's thread, file and PostgreSQL locks, PostgreSQL's write lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from logits_cli.errors import UnavailableError
from logits_cli.store import db
from logits_cli.store.sql import PostgresDatabase
from logits_cli.store.store import Store

WAIT = 0.3


@pytest.fixture(autouse=True)
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_SECONDS", WAIT)


def assert_busy_soon(call: Any, what: str) -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=f"the store is busy: {what} stayed locked"):
        call()
    assert WAIT * 0.9 <= time.monotonic() - started < WAIT + 5


def test_a_held_sqlite_write_lock_fails_a_write_as_busy(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "home")
    holder = sqlite3.connect(store.root / "meta.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert_busy_soon(lambda: store.create_api_key("blocked"), "the database's write lock")
        holder.execute("ROLLBACK")
        assert store.create_api_key("after").startswith("tml-")
    finally:
        holder.close()
        store.close()


def test_a_run_locked_by_another_process_fails_as_busy(tmp_path: Path) -> None:
    """Two stores on one home stand for two processes: the run's file lock is between them."""
    first, second = Store.open(tmp_path / "home"), Store.open(tmp_path / "home")
    try:
        with first._run_lock("run-1"):
            assert_busy_soon(lambda: second._run_lock("run-1").__enter__(), "run run-1")
            with second._run_lock("run-2"):  # other runs are not held up
                pass
        with second._run_lock("run-1"):
            pass
    finally:
        first.close()
        second.close()


def test_a_run_locked_by_another_thread_fails_as_busy(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "home")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._run_lock("run-1"):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        assert_busy_soon(lambda: store._run_lock("run-1").__enter__(), "run run-1")
    finally:
        release.set()
        holder.join(30)
    with store._run_lock("run-1"):  # released by the busy attempt too: nothing leaked
        pass
    store.close()


def test_on_postgresql_held_locks_fail_as_busy_and_the_wait_is_reset(
    postgres_server: Any,
) -> None:
    url = postgres_server.new_database()
    db_module_migrate(url)
    here, there = PostgresDatabase(url), PostgresDatabase(url)
    try:
        with here.run_lock("run-1"):
            assert_busy_soon(lambda: there.run_lock("run-1").__enter__(), "run run-1")
        with there.run_lock("run-1"):
            pass
        # Outside a transaction the bounded wait is not left behind on the connection.
        assert there.connection().raw.execute("SHOW lock_timeout").fetchone()[0] == "0"
        with here.write():
            assert_busy_soon(lambda: there.write().__enter__(), "the write lock")
        assert not there.connection().in_transaction
        with there.write():
            pass
    finally:
        here.close()
        there.close()


def db_module_migrate(url: str) -> None:
    from logits_cli.store.sql import migrate

    migrate(url)
