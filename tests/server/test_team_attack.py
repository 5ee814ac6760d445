"""The team server under the second outside attack (issue 21, rows G3, G4, G5 and the run
metadata a public checkpoint exposed): concurrent migrations, an unreachable database, NUL
characters in request strings. Real processes, a real PostgreSQL (tests/services.py), the
S3 test server where a bucket matters.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.services import S3_ENV

MIGRATED_CHECKPOINTS = 9
LOGITS = (sys.executable, "-m", "logits_cli")
WAIT_SECONDS = 60.0


def _store_with_checkpoints(root: Path) -> str:
    """A single-machine store at ``root`` with one run and MIGRATED_CHECKPOINTS saves;
    its run id. Every such store numbers its checkpoints 1, 2, …: the same ids."""
    from logits_cli import models
    from logits_cli.store.store import LOCAL_USER, Store

    store = Store.open(root)
    try:
        session = store.create_session(
            LOCAL_USER, tags=[], user_metadata=None, sdk_version="test", project_id=None
        )
        run = store.create_run(
            LOCAL_USER,
            session_id=session,
            model_seq_id=0,
            base_model="logits/tiny",
            lora_config=models.LoraConfig(rank=2, seed=1),
            user_metadata=None,
        )
        for index in range(MIGRATED_CHECKPOINTS):
            store.save_checkpoint(
                LOCAL_USER,
                run,
                kind="weights",
                name=f"c{index}",
                ttl_seconds=None,
                overwrite=False,
                uri_scheme="logits",
            )
    finally:
        store.close()
    return run


def _waiting_for_write_lock(conn: Any) -> int:
    from logits_cli.store.sql import WRITE_LOCK_KEY

    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s",
        (WRITE_LOCK_KEY >> 32, WRITE_LOCK_KEY & 0xFFFFFFFF),
    ).fetchone()
    return int(row[0])


def test_two_migrations_into_one_database_at_once_land_exactly_one(
    postgres_server: Any, s3_server: Any, tmp_path: Path
) -> None:
    import psycopg

    from logits_cli.store.sql import WRITE_LOCK_KEY
    from logits_cli.store.store import Store

    database = postgres_server.new_database()
    Store.open(tmp_path / "schema", database=database).close()  # the schema, made once
    homes = [tmp_path / "one", tmp_path / "two"]
    runs = {str(home): _store_with_checkpoints(home / "store") for home in homes}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    env.update({**S3_ENV, "AWS_ENDPOINT_URL": s3_server.endpoint_url})
    # Uploads into a bucket widen the window between the first check and the copy.
    target = ("--to-database", database, "--to-blobs", s3_server.new_prefix())

    # Both processes start while this connection holds the store's write lock, and go on
    # together once both wait for it: truly at once, not one after the other.
    with psycopg.connect(database) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        processes = [
            subprocess.Popen(
                [*LOGITS, "server", "migrate", *target, "--home", str(home)],
                env={**env, "LOGITS_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for home in homes
        ]
        with psycopg.connect(database, autocommit=True) as watcher:
            deadline = time.monotonic() + WAIT_SECONDS
            while _waiting_for_write_lock(watcher) < 2:
                assert all(p.poll() is None for p in processes), "a migration ended early"
                assert time.monotonic() < deadline, "the migrations never both waited"
                time.sleep(0.05)
    outcomes = [(p.wait(timeout=WAIT_SECONDS), *p.communicate()) for p in processes]

    assert sorted(code for code, _, _ in outcomes) == [0, 2], outcomes
    [(_, _, refused)] = [outcome for outcome in outcomes if outcome[0] == 2]
    assert refused.splitlines()[0].startswith("Error: the target database already holds")
    winner = next(
        str(home) for home, outcome in zip(homes, outcomes, strict=True) if not outcome[0]
    )

    # Nothing lost: every checkpoint of the store that landed is there, with its digest.
    with sqlite3.connect(Path(winner) / "store" / "meta.sqlite3") as source:
        expected = sorted(source.execute("SELECT id, run_id, name, sha256 FROM checkpoints"))
    with psycopg.connect(database) as target:
        landed = sorted(
            tuple(row) for row in target.execute("SELECT id, run_id, name, sha256 FROM checkpoints")
        )
        migrated_runs = [row[0] for row in target.execute("SELECT id FROM runs")]
    assert len(expected) == MIGRATED_CHECKPOINTS
    assert landed == expected
    assert migrated_runs == [runs[winner]]


def test_a_migration_never_skips_a_row_whose_key_the_target_holds(
    postgres_server: Any, tmp_path: Path
) -> None:
    """A session of the same id in the target (no run, so the emptiness check passes): the
    migration is refused whole, rather than copying the rest without that row."""
    import psycopg

    from logits_cli.store.store import Store

    database = postgres_server.new_database()
    home = tmp_path / "home"
    _store_with_checkpoints(home / "store")
    Store.open(tmp_path / "schema", database=database).close()
    with sqlite3.connect(home / "store" / "meta.sqlite3") as source:
        session = source.execute("SELECT * FROM sessions").fetchone()
    with psycopg.connect(database) as target:
        marks = ", ".join(["%s"] * len(session))
        target.execute(f"INSERT INTO sessions VALUES ({marks})", session)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    done = subprocess.run(
        [*LOGITS, "server", "migrate", "--to-database", database, "--home", str(home)],
        env={**env, "LOGITS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "Error: the target database already holds a row of sessions with the same key as "
        "this store's; migrate into an empty database"
    ]
    with psycopg.connect(database) as target:
        assert target.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)
        assert target.execute("SELECT count(*) FROM runs").fetchone() == (0,)
