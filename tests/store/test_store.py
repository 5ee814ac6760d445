"""The storage engine against a real store directory: SQLite, blobs and live run state."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logits_cli import models
from logits_cli.errors import (
    ConfigError,
    ConflictError,
    GoneError,
    NotFoundError,
    UsageError,
)
from logits_cli.store import Store
from logits_cli.store.archive import read_manifest
from logits_cli.store.db import SCHEMA_VERSION
from logits_cli.store.lora import ADAPTER_MODEL, OPTIMIZER_STATE

TINY = "logits/tiny"
START = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    opened = Store.open(tmp_path / "store", clock=clock, max_rank=64)
    yield opened
    opened.close()


def make_run(store: Store, user: str = "local", *, rank: int = 2, seed: int | None = None) -> str:
    session = store.create_session(
        user, tags=[], user_metadata={}, sdk_version="test", project_id=None
    )
    return store.create_run(
        user,
        session_id=session,
        model_seq_id=0,
        base_model=TINY,
        lora_config=models.LoraConfig(rank=rank, seed=seed),
        user_metadata=None,
    )


def save(
    store: Store, clock: Clock, user: str, run: str, name: str, **options
) -> models.Checkpoint:
    """Save one second after the previous save, so ``time`` orders checkpoints."""
    clock.advance(1)
    options.setdefault("kind", "weights")
    options.setdefault("ttl_seconds", None)
    options.setdefault("overwrite", False)
    options.setdefault("uri_scheme", "logits")
    return store.save_checkpoint(user, run, name=name, **options)


def ids(checkpoints: list[models.Checkpoint]) -> list[str]:
    return [c.checkpoint_id for c in checkpoints]


# -- layout and schema ----------------------------------------------------------------------


def test_open_creates_private_layout_and_current_schema(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    Store.open(root).close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert (root / "blobs").is_dir() and (root / "runs").is_dir()
    conn = sqlite3.connect(root / "meta.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    reopened = Store.open(root)  # a current schema is left as it is
    assert reopened.healthy()
    reopened.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    conn = sqlite3.connect(root / "meta.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="schema version"):
        Store.open(root)


def test_unhealthy_without_a_blob_directory(store: Store) -> None:
    assert store.healthy()
    shutil.rmtree(store.blobs_dir)
    assert not store.healthy()


def test_capabilities_list_the_tiny_model(store: Store) -> None:
    assert (TINY, 2048) in store.known_base_models()


# -- keys -----------------------------------------------------------------------------------


def test_api_keys_create_authenticate_list_revoke(store: Store) -> None:
    key = store.create_api_key("alice")
    other = store.create_api_key("bob")
    assert re.fullmatch(r"tml-[A-Za-z0-9_-]{43}", key)
    assert store.authenticate(key) == "alice"
    assert store.authenticate(other) == "bob"
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("eyJnot-a-key") is None

    listed = {info.prefix: info for info in store.list_api_keys()}
    assert listed[key[:12]].user_id == "alice"
    assert not listed[key[:12]].revoked

    assert store.revoke_api_key(key[:12]) == 1
    assert store.authenticate(key) is None
    assert store.authenticate(other) == "bob"
    assert {i.prefix: i.revoked for i in store.list_api_keys()}[key[:12]]
    assert store.revoke_api_key(key[:10]) == 0  # already revoked: nothing changes
    with pytest.raises(NotFoundError):
        store.revoke_api_key("tml-zzzzzzzz")
    with pytest.raises(UsageError):
        store.revoke_api_key("tml-")
    assert store.revoke_api_key(other) == 1  # the whole key works as a prefix too


def test_api_key_needs_a_valid_user_id(store: Store) -> None:
    for bad in ("", "Alice", "a b", "x" * 65, "ü"):
        with pytest.raises(UsageError):
            store.create_api_key(bad)


def test_only_the_key_hash_is_stored(store: Store, tmp_path: Path) -> None:
    key = store.create_api_key("alice")
    store.close()
    secret = key[12:].encode()  # everything past the prefix that may be shown
    for path in (tmp_path / "store").iterdir():
        if path.is_file():
            assert secret not in path.read_bytes(), path.name


# -- sessions and runs ----------------------------------------------------------------------


def test_sessions_belong_to_their_user(store: Store) -> None:
    session = store.create_session(
        "alice", tags=["a"], user_metadata=None, sdk_version="0.24.0", project_id="p"
    )
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", session
    )
    store.heartbeat("alice", session)
    with pytest.raises(NotFoundError):
        store.heartbeat("bob", session)
    with pytest.raises(NotFoundError):
        store.heartbeat("alice", "00000000-0000-4000-8000-000000000000")


def test_create_run_is_idempotent_and_refuses_a_different_body(store: Store, clock: Clock) -> None:
    session = store.create_session(
        "alice", tags=[], user_metadata={}, sdk_version="t", project_id=None
    )
    create = dict(
        session_id=session,
        model_seq_id=3,
        base_model=TINY,
        lora_config=models.LoraConfig(rank=4, train_unembed=False),
        user_metadata={"step": 7, "note": "x", "cfg": {"b": 1, "a": [2]}},
    )
    run_id = store.create_run("alice", **create)
    assert run_id == f"{session}:train:3"
    clock.advance(5)
    assert store.create_run("alice", **create) == run_id
    with pytest.raises(ConflictError):
        store.create_run("alice", **{**create, "lora_config": models.LoraConfig(rank=8)})

    run = store.get_run("alice", run_id)
    assert run.model_owner == "alice"
    assert run.lora_rank == 4
    assert run.is_lora and not run.corrupted
    assert run.user_metadata == {"step": "7", "note": "x", "cfg": '{"a": [2], "b": 1}'}
    assert run.last_request_time == START
    assert run.last_checkpoint is None and run.last_sampler_checkpoint is None
    state = store.state_dir(run_id)
    assert sorted(p.name for p in state.iterdir()) == [
        ".state-key",  # what the state is, for a process elsewhere to rebuild it
        "adapter_config.json",
        ADAPTER_MODEL,
        OPTIMIZER_STATE,
    ]

    info = store.get_info("alice", run_id)
    assert (info.model_id, info.lora_rank, info.model_name) == (run_id, 4, TINY)
    assert info.model_data.arch == "llama"
    with pytest.raises(NotFoundError):
        store.get_info("bob", run_id)


@pytest.mark.parametrize(
    ("user", "base_model", "rank", "error"),
    [
        ("bob", TINY, 2, NotFoundError),  # another user's session
        ("alice", "nobody/unknown-model", 2, NotFoundError),
        ("alice", TINY, 65, UsageError),  # above max_rank
        ("alice", TINY, 0, UsageError),
    ],
)
def test_create_run_refusals(
    store: Store, user: str, base_model: str, rank: int, error: type[Exception]
) -> None:
    session = store.create_session(
        "alice", tags=[], user_metadata={}, sdk_version="t", project_id=None
    )
    with pytest.raises(error):
        store.create_run(
            user,
            session_id=session,
            model_seq_id=0,
            base_model=base_model,
            lora_config=models.LoraConfig(rank=rank),
            user_metadata=None,
        )
    assert store.list_runs("alice", access_scope="owned", limit=10, offset=0) == ([], 0)
    assert [p.name for p in store.runs_dir.iterdir()] == []


def test_runs_list_newest_first_with_totals(store: Store, clock: Clock) -> None:
    created = []
    for _ in range(5):
        clock.advance(1)
        created.append(make_run(store, "alice"))
    make_run(store, "bob")
    page1, total = store.list_runs("alice", access_scope="owned", limit=2, offset=0)
    page2, _ = store.list_runs("alice", access_scope="owned", limit=2, offset=2)
    page3, _ = store.list_runs("alice", access_scope="owned", limit=2, offset=4)
    assert total == 5
    listed = [r.training_run_id for r in page1 + page2 + page3]
    assert listed == created[::-1]
    with pytest.raises(UsageError):
        store.list_runs("alice", access_scope="everything", limit=2, offset=0)


# -- checkpoints ----------------------------------------------------------------------------


def test_save_writes_a_blob_named_by_its_digest(store: Store, clock: Clock) -> None:
    run = make_run(store)
    ckpt = save(store, clock, "local", run, "step-1", ttl_seconds=3600, uri_scheme="tinker")
    assert ckpt.checkpoint_id == "weights/step-1"
    assert ckpt.checkpoint_type == "training"
    assert ckpt.tinker_path == f"tinker://{run}/weights/step-1"
    assert ckpt.time == START + timedelta(seconds=1)
    assert ckpt.expires_at == ckpt.time + timedelta(hours=1)
    assert not ckpt.public
    blob = store.blob_for(run, "weights", "step-1", ckpt.sha256)
    assert blob.size == ckpt.size_bytes == blob.path.stat().st_size
    assert blob.created == ckpt.time
    manifest = read_manifest(blob.path)
    assert manifest.tinker_path == ckpt.tinker_path  # the scheme given at save time
    assert manifest.created == ckpt.time
    assert store.get_checkpoint("local", run, "weights", "step-1") == ckpt
    assert store.get_run("local", run).last_request_time == ckpt.time

    sampler = save(store, clock, "local", run, "step-1", kind="sampler_weights")
    assert sampler.checkpoint_type == "sampler"
    assert sampler.size_bytes < ckpt.size_bytes  # no optimizer state
    assert ids(store.list_run_checkpoints("local", run)) == [
        "sampler_weights/step-1",
        "weights/step-1",
    ]
    with pytest.raises(NotFoundError):
        store.blob_for(run, "weights", "step-1", sampler.sha256)


def test_save_refusals(store: Store, clock: Clock) -> None:
    run = make_run(store, "alice")
    with pytest.raises(NotFoundError):
        save(store, clock, "bob", run, "a")
    with pytest.raises(UsageError):
        save(store, clock, "alice", run, "../a")
    with pytest.raises(UsageError):
        save(store, clock, "alice", run, "a", kind="external")
    for ttl in (0, -5, True):
        with pytest.raises(UsageError):
            save(store, clock, "alice", run, "a", ttl_seconds=ttl)
    assert store.list_run_checkpoints("alice", run) == []
    assert list(store.blobs_dir.iterdir()) == []


def test_overwrite_replaces_the_checkpoint(store: Store, clock: Clock) -> None:
    run = make_run(store)
    first = save(store, clock, "local", run, "a", ttl_seconds=60)
    store.set_public("local", run, "weights", "a", True)
    with pytest.raises(ConflictError):
        save(store, clock, "local", run, "a")
    second = save(store, clock, "local", run, "a", overwrite=True)
    assert second.time > first.time
    assert second.sha256 != first.sha256
    assert not second.public
    assert second.expires_at is None
    assert store.list_run_checkpoints("local", run) == [second]
    assert not (store.blobs_dir / first.sha256).exists()
    with pytest.raises(NotFoundError):
        store.blob_for(run, "weights", "a", first.sha256)


def test_delete_recomputes_the_latest_and_removes_the_blob(store: Store, clock: Clock) -> None:
    run = make_run(store)
    older = save(store, clock, "local", run, "a")
    newer = save(store, clock, "local", run, "b")
    assert store.get_run("local", run).last_checkpoint == newer
    store.delete_checkpoint("local", run, "weights", "b")
    assert store.get_run("local", run).last_checkpoint == older
    assert not (store.blobs_dir / newer.sha256).exists()
    with pytest.raises(NotFoundError):
        store.delete_checkpoint("local", run, "weights", "b")
    store.delete_checkpoint("local", run, "weights", "a")
    assert store.get_run("local", run).last_checkpoint is None
    assert list(store.blobs_dir.iterdir()) == []


def test_listing_order_ties_and_pagination(store: Store, clock: Clock) -> None:
    run_a, run_b = make_run(store), make_run(store)
    save(store, clock, "local", run_a, "x1")
    save(store, clock, "local", run_b, "x2")
    clock.advance(1)
    # Three saves at the same instant: ties go by checkpoint_id / tinker_path.
    for run, kind, name in (
        (run_b, "weights", "t"),
        (run_a, "weights", "t"),
        (run_a, "sampler_weights", "t"),
    ):
        store.save_checkpoint(
            "local",
            run,
            kind=kind,
            name=name,
            ttl_seconds=None,
            overwrite=False,
            uri_scheme="logits",
        )

    everything, total = store.list_user_checkpoints("local", limit=100, offset=0)
    assert total == 5
    tied = sorted(
        [
            f"logits://{run_b}/weights/t",
            f"logits://{run_a}/weights/t",
            f"logits://{run_a}/sampler_weights/t",
        ]
    )
    assert [c.tinker_path for c in everything] == [
        *tied,
        f"logits://{run_b}/weights/x2",
        f"logits://{run_a}/weights/x1",
    ]
    pages = []
    for offset in (0, 2, 4):
        page, page_total = store.list_user_checkpoints("local", limit=2, offset=offset)
        assert page_total == 5
        pages += page
    assert pages == everything
    assert ids(store.list_run_checkpoints("local", run_a)) == [
        "sampler_weights/t",
        "weights/t",
        "weights/x1",
    ]
    assert store.list_user_checkpoints("bob", limit=100, offset=0) == ([], 0)


def test_publish_unpublish_states(store: Store, clock: Clock) -> None:
    """Making a checkpoint what it already is succeeds and says nothing changed (A31)."""
    run = make_run(store)
    save(store, clock, "local", run, "a")
    assert store.set_public("local", run, "weights", "a", False) is False
    assert store.set_public("local", run, "weights", "a", True) is True
    assert store.get_checkpoint("local", run, "weights", "a").public
    assert store.set_public("local", run, "weights", "a", True) is False
    assert store.get_checkpoint("local", run, "weights", "a").public
    assert store.set_public("local", run, "weights", "a", False) is True
    assert not store.get_checkpoint("local", run, "weights", "a").public
    with pytest.raises(NotFoundError):  # still the owner's alone
        store.set_public("bob", run, "weights", "a", True)


def test_visibility_matrix(store: Store, clock: Clock) -> None:
    alice_run = make_run(store, "alice")
    bob_run = make_run(store, "bob")
    weights = save(store, clock, "alice", alice_run, "w")
    sampler = save(store, clock, "alice", alice_run, "s", kind="sampler_weights")
    w_uri, s_uri = weights.tinker_path, sampler.tinker_path

    def bob_sees_nothing_of(kind: str, name: str, uri: str) -> None:
        with pytest.raises(NotFoundError):
            store.get_checkpoint("bob", alice_run, kind, name)
        with pytest.raises(NotFoundError):
            store.weights_info("bob", uri)
        with pytest.raises(NotFoundError):
            store.load_checkpoint("bob", bob_run, source=uri, optimizer=False, uri_scheme="logits")

    # Everything private: bob sees nothing, and cannot tell the run exists.
    for scope in ("owned", "accessible"):
        with pytest.raises(NotFoundError):
            store.get_run("bob", alice_run, access_scope=scope)
    assert [
        r.training_run_id
        for r in store.list_runs("bob", access_scope="accessible", limit=10, offset=0)[0]
    ] == [bob_run]
    with pytest.raises(NotFoundError):
        store.list_run_checkpoints("bob", alice_run)
    bob_sees_nothing_of("weights", "w", w_uri)
    bob_sees_nothing_of("sampler_weights", "s", s_uri)

    # Mutations by a non-owner are 404 whatever the visibility.
    def bob_cannot_mutate(kind: str, name: str) -> None:
        with pytest.raises(NotFoundError):
            store.set_public("bob", alice_run, kind, name, True)
        with pytest.raises(NotFoundError):
            store.set_public("bob", alice_run, kind, name, False)
        with pytest.raises(NotFoundError):
            store.set_ttl("bob", alice_run, kind, name, 60)
        with pytest.raises(NotFoundError):
            store.delete_checkpoint("bob", alice_run, kind, name)
        with pytest.raises(NotFoundError):
            save(store, clock, "bob", alice_run, name, kind=kind, overwrite=True)

    bob_cannot_mutate("weights", "w")
    store.set_public("alice", alice_run, "sampler_weights", "s", True)
    bob_cannot_mutate("sampler_weights", "s")

    # One public checkpoint: the run becomes accessible, showing only what is public.
    with pytest.raises(NotFoundError):
        store.get_run("bob", alice_run, access_scope="owned")
    seen = store.get_run("bob", alice_run, access_scope="accessible")
    assert seen.model_owner == "alice"
    assert seen.last_checkpoint is None
    assert seen.last_sampler_checkpoint.checkpoint_id == "sampler_weights/s"
    assert store.get_run("alice", alice_run).last_checkpoint == weights
    runs, total = store.list_runs("bob", access_scope="accessible", limit=10, offset=0)
    assert total == 2 and {r.training_run_id for r in runs} == {alice_run, bob_run}
    assert store.list_runs("bob", access_scope="owned", limit=10, offset=0)[1] == 1
    assert ids(store.list_run_checkpoints("bob", alice_run)) == ["sampler_weights/s"]
    assert ids(store.list_run_checkpoints("alice", alice_run)) == ["sampler_weights/s", "weights/w"]
    assert store.get_checkpoint("bob", alice_run, "sampler_weights", "s").public
    assert store.weights_info("bob", s_uri).lora_rank == 2
    bob_sees_nothing_of("weights", "w", w_uri)
    assert store.list_user_checkpoints("bob", limit=10, offset=0) == ([], 0)

    # A public checkpoint can be loaded by anyone, returning the URI in the asked scheme.
    loaded = store.load_checkpoint(
        "bob", bob_run, source=s_uri, optimizer=False, uri_scheme="tinker"
    )
    assert loaded == f"tinker://{alice_run}/sampler_weights/s"
    with pytest.raises(UsageError):  # a sampler checkpoint has no optimizer state
        store.load_checkpoint("bob", bob_run, source=s_uri, optimizer=True, uri_scheme="logits")

    # The blob endpoint checks the signed digest, not the viewer.
    assert store.blob_for(alice_run, "weights", "w", weights.sha256).sha256 == weights.sha256

    store.set_public("alice", alice_run, "sampler_weights", "s", False)
    with pytest.raises(NotFoundError):
        store.get_run("bob", alice_run, access_scope="accessible")
    bob_sees_nothing_of("sampler_weights", "s", s_uri)


def test_load_restores_the_state(store: Store, clock: Clock) -> None:
    source = make_run(store, seed=1)
    target = make_run(store, seed=2)
    source_state, target_state = store.state_dir(source), store.state_dir(target)
    assert (source_state / ADAPTER_MODEL).read_bytes() != (
        target_state / ADAPTER_MODEL
    ).read_bytes()
    ckpt = save(store, clock, "local", source, "a")
    clock.advance(10)
    path = store.load_checkpoint(
        "local", target, source=ckpt.tinker_path, optimizer=True, uri_scheme="logits"
    )
    assert path == ckpt.tinker_path
    for member in (ADAPTER_MODEL, OPTIMIZER_STATE):
        assert (source_state / member).read_bytes() == (target_state / member).read_bytes()
    assert store.get_run("local", target).last_request_time == clock.now
    # The legacy two-segment form means kind weights.
    legacy = f"tinker://{source}/a"
    assert (
        store.load_checkpoint("local", target, source=legacy, optimizer=False, uri_scheme="logits")
        == ckpt.tinker_path
    )


def test_load_refuses_incompatible_checkpoints(store: Store, clock: Clock) -> None:
    source = make_run(store, rank=2)
    target = make_run(store, rank=4)
    ckpt = save(store, clock, "local", source, "a")
    with pytest.raises(UsageError):
        store.load_checkpoint(
            "local", target, source=ckpt.tinker_path, optimizer=False, uri_scheme="logits"
        )
    with pytest.raises(NotFoundError):
        store.load_checkpoint(
            "local",
            target,
            source=f"logits://{source}/weights/zz",
            optimizer=False,
            uri_scheme="logits",
        )
    with pytest.raises(UsageError):
        store.load_checkpoint(
            "local", target, source="not a uri", optimizer=False, uri_scheme="logits"
        )


def test_ttl_expiry_is_immediate_and_sweep_reclaims(store: Store, clock: Clock) -> None:
    run = make_run(store, "alice")
    kept = save(store, clock, "alice", run, "kept")
    doomed = save(store, clock, "alice", run, "doomed", ttl_seconds=60, kind="sampler_weights")
    store.set_public("alice", run, "sampler_weights", "doomed", True)
    assert store.get_run(
        "bob", run, access_scope="accessible"
    ).last_sampler_checkpoint == doomed.model_copy(update={"public": True})

    clock.advance(59)
    assert (
        store.get_checkpoint("alice", run, "sampler_weights", "doomed").expires_at
        == doomed.expires_at
    )
    clock.advance(1)  # expires_at reached: gone everywhere at once
    with pytest.raises(NotFoundError):
        store.get_checkpoint("alice", run, "sampler_weights", "doomed")
    with pytest.raises(NotFoundError):
        store.blob_for(run, "sampler_weights", "doomed", doomed.sha256)
    with pytest.raises(NotFoundError):
        store.set_ttl("alice", run, "sampler_weights", "doomed", None)
    with pytest.raises(NotFoundError):
        store.weights_info("alice", doomed.tinker_path)
    assert store.list_run_checkpoints("alice", run) == [kept]
    assert store.list_user_checkpoints("alice", limit=10, offset=0) == ([kept], 1)
    assert store.get_run("alice", run).last_sampler_checkpoint is None
    with pytest.raises(NotFoundError):
        store.get_run("bob", run, access_scope="accessible")
    assert (store.blobs_dir / doomed.sha256).exists()  # not reclaimed yet

    assert store.sweep() == 1
    assert not (store.blobs_dir / doomed.sha256).exists()
    assert (store.blobs_dir / kept.sha256).exists()
    assert store.sweep() == 0
    # The name is free again.
    assert (
        save(store, clock, "alice", run, "doomed", kind="sampler_weights").checkpoint_id
        == "sampler_weights/doomed"
    )


def test_an_expired_name_can_be_saved_again_before_the_sweep(store: Store, clock: Clock) -> None:
    run = make_run(store)
    old = save(store, clock, "local", run, "a", ttl_seconds=1)
    clock.advance(5)
    new = save(store, clock, "local", run, "a")
    assert store.list_run_checkpoints("local", run) == [new]
    assert not (store.blobs_dir / old.sha256).exists()


def test_set_ttl_counts_from_now(store: Store, clock: Clock) -> None:
    run = make_run(store)
    save(store, clock, "local", run, "a", ttl_seconds=10)
    clock.advance(100)  # past its 10 s TTL: "a" is gone, so its TTL cannot be set either
    with pytest.raises(NotFoundError):
        store.set_ttl("local", run, "weights", "a", 10)
    save(store, clock, "local", run, "b", ttl_seconds=10)
    clock.advance(5)
    store.set_ttl("local", run, "weights", "b", 3600)
    assert store.get_checkpoint("local", run, "weights", "b").expires_at == clock.now + timedelta(
        hours=1
    )
    store.set_ttl("local", run, "weights", "b", None)
    assert store.get_checkpoint("local", run, "weights", "b").expires_at is None
    clock.advance(10 * 365 * 86400)
    assert store.sweep() == 1  # only "a"
    for bad in (0, -1, 315_360_001, True):
        with pytest.raises(UsageError):
            store.set_ttl("local", run, "weights", "b", bad)


def test_sweep_removes_old_orphans_only(store: Store, clock: Clock) -> None:
    run = make_run(store)
    ckpt = save(store, clock, "local", run, "a")
    orphan = store.blobs_dir / ("0" * 64)
    fresh_orphan = store.blobs_dir / ("1" * 64)
    leftover = store.blobs_dir / ".archive.x.tmp"
    for path in (orphan, fresh_orphan, leftover):
        path.write_bytes(b"x")
    for path in (orphan, leftover, store.blobs_dir / ckpt.sha256):
        os.utime(path, (1, 1))
    store.sweep()
    assert not orphan.exists() and not leftover.exists()
    assert fresh_orphan.exists()
    assert (store.blobs_dir / ckpt.sha256).exists()


# -- futures --------------------------------------------------------------------------------


def test_future_lifecycle(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(
        tmp_path / "s", clock=clock, future_retention=100, idempotency_retention=1000
    )
    request_id, created = store.create_future("alice", operation="save_weights", model_id="m")
    assert created and re.fullmatch(r"req_[0-9a-f]{32}", request_id)
    pending = store.get_future("alice", request_id)
    assert (pending.status, pending.result, pending.finished) == ("pending", None, None)
    assert pending.created == START
    with pytest.raises(NotFoundError):
        store.get_future("bob", request_id)
    with pytest.raises(NotFoundError):
        store.get_future("alice", "req_" + "0" * 32)

    clock.advance(1)
    store.finish_future(
        request_id, result={"path": "logits://m/weights/a", "type": "save_weights"}, failed=False
    )
    done = store.get_future("alice", request_id)
    assert done.status == "done" and done.result["path"] == "logits://m/weights/a"
    assert done.finished == START + timedelta(seconds=1)

    failed_id, _ = store.create_future("alice", operation="load_weights", model_id="m")
    failure = {"error": "checkpoint not found", "category": "user", "code": "not_found"}
    store.finish_future(failed_id, result=failure, failed=True)
    assert store.get_future("alice", failed_id).result == failure
    assert store.get_future("alice", failed_id).status == "failed"

    clock.advance(100)
    assert store.get_future("alice", request_id).status == "done"  # still within retention
    clock.advance(1)
    with pytest.raises(GoneError):
        store.get_future("alice", request_id)
    store.sweep()
    with pytest.raises(GoneError):
        store.get_future("alice", request_id)
    clock.advance(2000)
    store.sweep()
    with pytest.raises(NotFoundError):
        store.get_future("alice", request_id)
    store.close()


def test_future_duplicate_seq_id_returns_the_first(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(tmp_path / "s", clock=clock, idempotency_retention=1000)
    first, created = store.create_future(
        "alice", operation="save_weights", model_id="m", seq_id=1, body_sha256="h"
    )
    assert created
    assert store.create_future(
        "alice", operation="save_weights", model_id="m", seq_id=1, body_sha256="h"
    ) == (first, False)
    assert store.create_future(
        "alice", operation="save_weights", model_id="m", seq_id=1, body_sha256="other"
    )[1]
    assert store.create_future(
        "alice", operation="save_weights", model_id="m", seq_id=2, body_sha256="h"
    )[1]
    assert store.create_future(
        "bob", operation="save_weights", model_id="m", seq_id=1, body_sha256="h"
    )[1]
    assert store.create_future("alice", operation="save_weights", model_id="m")[1]
    clock.advance(1001)
    again, created = store.create_future(
        "alice", operation="save_weights", model_id="m", seq_id=1, body_sha256="h"
    )
    assert created and again != first
    store.close()


# -- idempotency ----------------------------------------------------------------------------

SCOPE = ("alice", "POST", "/api/v1/save_weights", "logits-1")


def test_idempotency_claim_finish_release(store: Store, clock: Clock) -> None:
    assert store.idempotency_claim(SCOPE, "h1") is None
    running = store.idempotency_claim(SCOPE, "h1")
    assert (running.state, running.body_sha256, running.status) == ("running", "h1", None)
    store.idempotency_finish(
        SCOPE,
        status=200,
        body=b'{"request_id":"req_1"}',
        content_type="application/json",
        location=None,
    )
    done = store.idempotency_claim(SCOPE, "h2")
    assert (
        done.state,
        done.body_sha256,
        done.status,
        done.body,
        done.content_type,
        done.location,
    ) == (
        "done",
        "h1",
        200,
        b'{"request_id":"req_1"}',
        "application/json",
        None,
    )
    store.idempotency_release(SCOPE)  # only running records are dropped
    assert store.idempotency_claim(SCOPE, "h1").state == "done"

    other = ("alice", "POST", "/api/v1/save_weights", "logits-2")
    assert store.idempotency_claim(other, "h") is None
    store.idempotency_release(other)
    assert store.idempotency_claim(other, "h") is None

    clock.advance(86400 + 1)  # past the retention the key is fresh again
    assert store.idempotency_claim(SCOPE, "h3") is None


def test_idempotency_claim_race_has_one_winner(store: Store) -> None:
    threads_count = 12
    barrier = threading.Barrier(threads_count)
    results: list[object] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        record = store.idempotency_claim(SCOPE, "h")
        with lock:
            results.append(record)

    threads = [threading.Thread(target=claim) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(record is None for record in results) == 1
    assert all(record.state == "running" for record in results if record is not None)


def test_concurrent_saves_on_one_run_all_land(store: Store) -> None:
    run = make_run(store)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def saver(worker: int) -> None:
        barrier.wait()
        try:
            for step in range(3):
                store.save_checkpoint(
                    "local",
                    run,
                    kind="weights",
                    name=f"w{worker}-{step}",
                    ttl_seconds=None,
                    overwrite=False,
                    uri_scheme="logits",
                )
                store.list_user_checkpoints("local", limit=100, offset=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listed = store.list_run_checkpoints("local", run)
    assert len(listed) == 12
    assert len({c.sha256 for c in listed}) == 12


_CRASH_AFTER_SUBMITTING = """
import os, sys
from logits_cli.store import Store
store = Store.open(sys.argv[1])
request_id, _ = store.create_future("alice", operation="save_weights", model_id="m")
print(request_id, flush=True)
os._exit(0)  # dies like kill -9: no close, the job never finishes
"""


def test_a_future_whose_process_died_fails_instead_of_pending_forever(tmp_path: Path) -> None:
    root = tmp_path / "store"
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_SUBMITTING, str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = crashed.stdout.strip()
    running = Store.open(root)
    alive = Store.open(root)  # another live process sharing the store, as far as locks go
    try:
        mine, _ = alive.create_future("alice", operation="save_weights", model_id="m")
        assert running.get_future("alice", mine).status == "pending"
        record = running.get_future("alice", orphan)
        assert record.status == "failed"
        assert record.result is not None
        assert (record.result["category"], record.result["code"]) == ("server", "internal")
        running.sweep()  # and the dead process's lock file is cleaned up
        assert sorted(p.name for p in running.instances_dir.iterdir()) == [
            f"{alive.instance_id}.lock"
        ]
    finally:
        alive.close()
        running.close()
    assert list(running.instances_dir.iterdir()) == []
