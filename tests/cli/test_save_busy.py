"""A save that waits too long for its run's lock ends as busy, exit 6, as every busy store
does (issue 21 G12: the wait happens inside the save's future, which failed with exit 1).

Two stores on one directory stand for two server processes: the run's file lock is between
them, held here by the test as a long save of the same run would hold it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logits_cli.store import db
from logits_cli.store.store import Store
from tests.cli.conftest import Cli

WAIT = 0.5


def test_a_save_behind_a_held_run_lock_is_busy_exit_6(
    cli: Cli, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_SECONDS", WAIT)
    root = cli.server.store.root if cli.server else Path(os.environ["LOGITS_HOME"]) / "store"
    holder = Store.open(root, database=cli.server.store.database if cli.server else None)
    try:
        with holder._run_lock(run):
            result = cli("ckpt", "save", "behind")
        assert result.exit_code == 6, (result.exit_code, result.stderr)
        [message, *_] = result.stderr.splitlines()
        assert message == (
            f"Error: save of weights/behind failed: the store is busy: run {run} stayed"
            f" locked for {WAIT:g} s; retry shortly"
        )
        # Nothing was saved, and once the lock is free the same save goes through.
        assert cli.ok("ckpt", "ls", run, "-q").stdout == ""
        assert cli.ok("ckpt", "save", "behind", "-q").stdout.endswith("/weights/behind\n")
    finally:
        holder.close()
