"""Liveness on PostgreSQL survives database restarts (issue 21 G1; store/liveness.py).

Two store roots stand for two server processes on two machines; only the database is
shared. The database is really stopped and started again (``pg_ctl``), for longer than
the lease, so every lease runs out while nobody can renew it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logits_cli.store.liveness import LEASE_ENV
from logits_cli.store.store import Store

LEASE = 3.0


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_a_database_outage_longer_than_the_lease_kills_nobody(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEASE_ENV, str(LEASE))  # read by every store opened below
    database = postgres_server.new_database()
    judge = Store.open(tmp_path / "judge", database=database)
    other = Store.open(tmp_path / "other", database=database)
    try:
        other._claim_instance()
        wait_until(judge.liveness_settled, LEASE + 5, "the judge's own lease never settled")
        assert judge.instance_alive(other.instance_id)

        postgres_server.restart(down_for=LEASE + 1)  # every lease expires meanwhile

        # Right after the restart the judge cannot tell yet: it holds nobody dead, until
        # it has renewed its own lease for a whole lease, by which time the other, alive,
        # has renewed its own.
        assert not judge.liveness_settled()
        watch_until = time.monotonic() + 2 * LEASE
        while time.monotonic() < watch_until:
            assert judge.instance_alive(other.instance_id), "a live process was seen dead"
            time.sleep(0.1)
        assert judge.liveness_settled()

        # A process killed after the restart is still seen dead, once its lease runs out.
        code = (
            "import time; from logits_cli.store.store import Store;"
            f"s = Store.open({str(tmp_path / 'killed')!r}, database={database!r});"
            "print(s._claim_instance(), flush=True); time.sleep(600)"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            killed = child.stdout.readline().strip()
            assert judge.instance_alive(killed)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        killed_at = time.monotonic()
        wait_until(lambda: not judge.instance_alive(killed), LEASE + 5, "still alive")
        assert time.monotonic() - killed_at >= LEASE * 0.5  # its lease ran out: not sooner
        assert judge.instance_alive(other.instance_id)
    finally:
        other.close()
        judge.close()
