"""Store-level guards of issue 8: dot-segment run ids, key ids, what recovery leaves alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from logits_cli.errors import NotFoundError, UsageError
from logits_cli.store.liveness import LEASE_ENV
from logits_cli.store.lora import temp_path_beside
from logits_cli.store.recovery import recover
from logits_cli.store.store import Store


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(tmp_path / "store")
    yield opened
    opened.close()


@pytest.mark.parametrize("run_id", [".", "..", "...", "a/b", ""])
def test_dot_segment_run_ids_never_name_a_directory(store: Store, run_id: str) -> None:
    with pytest.raises(UsageError):
        store.state_dir(run_id)
    with pytest.raises(UsageError):
        store.get_run("alice", run_id)
    with pytest.raises(UsageError):
        store.get_info("alice", run_id)


def test_ordinary_unknown_run_ids_are_still_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_run("alice", "x:train:0")
    assert store.state_dir("a:train:0").parent == store.runs_dir


def test_key_ids_name_unrevoked_keys_only(store: Store) -> None:
    key = store.create_api_key("alice")
    key_id = store.key_id(key)
    assert key not in key_id and len(key_id) == 64
    assert store.user_for_key_id(key_id) == "alice"
    store.revoke_api_key(key)
    assert store.user_for_key_id(key_id) is None
    assert store.user_for_key_id(None) is None
    assert store.user_for_key_id("' OR 1=1 --") is None


def test_recovery_leaves_unowned_and_live_temp_files_to_the_grace_sweep(store: Store) -> None:
    # A temp file without an owner tag (older versions) and one of this live instance.
    with temp_path_beside(store.blobs_dir, "archive") as legacy:
        legacy.write_bytes(b"a")
        with temp_path_beside(store.blobs_dir, "archive", store._claim_instance()) as mine:
            mine.write_bytes(b"b")
            recovered = recover(store)
            assert (recovered.temp_paths, recovered.idempotency_claims) == (0, 0)
            assert legacy.exists() and mine.exists()


def test_a_dead_instances_resumable_future_is_claimed_by_exactly_one_survivor(
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared"
    dying = Store.open(root)
    spec = {"op": "save", "name": "k"}
    resumable, _ = dying.create_future("alice", operation="save_weights", model_id=None, job=spec)
    plain, _ = dying.create_future("alice", operation="forward", model_id=None)
    dying.close()  # its instance lock is released: the process is gone
    survivors = [Store.open(root), Store.open(root)]
    try:
        # A poll meanwhile keeps the resumable one pending (it will be taken over) and
        # fails the other ("send it again").
        assert survivors[0].get_future("alice", resumable).status == "pending"
        assert survivors[0].get_future("alice", plain).status == "failed"
        claims = [survivor.claim_orphaned_futures() for survivor in survivors]
        assert sorted(claims, key=len) == [[], [(resumable, spec)]]
        # Once claimed by a live instance, nobody takes it again.
        assert [survivor.claim_orphaned_futures() for survivor in survivors] == [[], []]
    finally:
        for survivor in survivors:
            survivor.close()


def test_on_postgresql_liveness_is_seen_from_another_machine(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two roots stand for two machines: only PostgreSQL is shared. An instance is alive
    while its process renews its lease; closing deletes it at once, SIGKILL lets it run
    out (store/liveness.py)."""
    monkeypatch.setenv(LEASE_ENV, "2")  # for the child too
    database = postgres_server.new_database()
    here = Store.open(tmp_path / "here", database=database)
    there = Store.open(tmp_path / "there", database=database)
    try:
        there._claim_instance()
        assert here.instance_alive(there.instance_id)
        there.close()
        assert not here.instance_alive(there.instance_id)

        code = (
            "import sys, time; from logits_cli.store.store import Store;"
            f"s = Store.open({str(tmp_path / 'killed')!r}, database={database!r});"
            "print(s._claim_instance(), flush=True); time.sleep(600)"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            instance = child.stdout.readline().strip()
            assert here.instance_alive(instance)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        deadline = time.monotonic() + 10
        while here.instance_alive(instance):
            assert time.monotonic() < deadline, "a killed process still looks alive"
            time.sleep(0.05)
    finally:
        here.close()


def test_on_postgresql_every_machine_signs_with_one_secret(
    postgres_server: Any, tmp_path: Path
) -> None:
    """URLs and JWTs one process signs, a process on another machine must accept."""
    database = postgres_server.new_database()
    stores = [Store.open(tmp_path / name, database=database) for name in ("a", "b")]
    try:
        first, second = (store.shared_signing_secret() for store in stores)
        assert first is not None and len(first) == 32 and first == second
        stores.append(Store.open(tmp_path / "c"))
        assert stores[-1].shared_signing_secret() is None  # SQLite: a file
    finally:
        for store in stores:
            store.close()
