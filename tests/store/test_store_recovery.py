"""Store-level guards of issue 8: dot-segment run ids, key ids, what recovery leaves alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from logits_cli.errors import NotFoundError, UsageError
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
