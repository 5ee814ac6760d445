"""Two processes saving and listing against one store directory at the same time."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest

from logits_cli import models
from logits_cli.store import Store

SAVES_PER_PROCESS = 8
PROCESSES = 2


def save_and_list(root: str, shared_run: str, worker: int, barrier, failures) -> None:
    """Child process: its own run plus a run shared with the other child, saving both."""
    try:
        store = Store.open(Path(root))
        session = store.create_session(
            "local", tags=[], user_metadata=None, sdk_version="test", project_id=None
        )
        own_run = store.create_run(
            "local",
            session_id=session,
            model_seq_id=0,
            base_model="logits/tiny",
            lora_config=models.LoraConfig(rank=2),
            user_metadata=None,
        )
        barrier.wait()
        for step in range(SAVES_PER_PROCESS):
            for run in (own_run, shared_run):
                store.save_checkpoint(
                    "local",
                    run,
                    kind="weights" if step % 2 else "sampler_weights",
                    name=f"p{worker}-{step}",
                    ttl_seconds=None,
                    overwrite=False,
                    uri_scheme="logits",
                )
            store.list_user_checkpoints("local", limit=1000, offset=0)
            store.list_runs("local", access_scope="accessible", limit=100, offset=0)
            store.idempotency_claim(("local", "POST", "/p", f"{worker}-{step}"), "h")
            store.create_future("local", operation="save_weights", model_id=own_run)
        store.close()
    except BaseException:
        failures.put(traceback.format_exc())
        raise


@pytest.mark.slow
def test_two_processes_save_and_list_without_lock_errors(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store.open(root)
    session = store.create_session(
        "local", tags=[], user_metadata=None, sdk_version="test", project_id=None
    )
    shared_run = store.create_run(
        "local",
        session_id=session,
        model_seq_id=0,
        base_model="logits/tiny",
        lora_config=models.LoraConfig(rank=2),
        user_metadata=None,
    )

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    failures = context.Queue()
    children = [
        context.Process(
            target=save_and_list, args=(str(root), shared_run, worker, barrier, failures)
        )
        for worker in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    reports = []
    while not failures.empty():
        reports.append(failures.get())
    assert reports == []
    assert [child.exitcode for child in children] == [0] * PROCESSES

    checkpoints, total = store.list_user_checkpoints("local", limit=1000, offset=0)
    assert total == PROCESSES * SAVES_PER_PROCESS * 2
    assert len({c.tinker_path for c in checkpoints}) == total
    assert len(store.list_run_checkpoints("local", shared_run)) == PROCESSES * SAVES_PER_PROCESS
    blobs = {path.name for path in store.blobs_dir.iterdir()}
    assert blobs == {c.sha256 for c in checkpoints}
    _, run_total = store.list_runs("local", access_scope="owned", limit=100, offset=0)
    assert run_total == PROCESSES + 1
    store.close()


@pytest.mark.slow
def test_two_processes_open_a_fresh_store_at_once(tmp_path: Path) -> None:
    """Both create the schema concurrently; the migration lock makes one of them do it."""
    root = tmp_path / "fresh"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    failures = context.Queue()
    children = [
        context.Process(target=open_and_create_key, args=(str(root), worker, barrier, failures))
        for worker in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    reports = []
    while not failures.empty():
        reports.append(failures.get())
    assert reports == []
    assert [child.exitcode for child in children] == [0] * PROCESSES
    store = Store.open(root)
    assert sorted(info.user_id for info in store.list_api_keys()) == ["user0", "user1"]
    store.close()


def open_and_create_key(root: str, worker: int, barrier, failures) -> None:
    try:
        barrier.wait()
        store = Store.open(Path(root))
        store.create_api_key(f"user{worker}")
        store.close()
    except BaseException:
        failures.put(traceback.format_exc())
        raise
