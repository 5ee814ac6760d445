"""Issue 8, server side: crashes, full disks and revoked keys (F9, F10, F12, F16).

Dead processes are real: a child process opens the store, takes an idempotency record or
starts writing temp files exactly as a server does, and is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import Api, assert_error

from logits_cli.server.responses import error_response
from logits_cli.server.serve import STORE_DIR_NAME, start_in_thread
from logits_cli.server.settings import ServerSettings
from logits_cli.store.lora import temp_path_beside
from logits_cli.store.store import Store

MIB = 1 << 20


def _die_after(store_root: Path, script: str) -> None:
    """Run ``script`` in a child holding ``store`` (opened on ``store_root``); the child then
    kills itself with SIGKILL, so nothing of it is cleaned up."""
    code = (
        textwrap.dedent(
            """
        import os, signal, sys
        from pathlib import Path
        from logits_cli.store.store import Store
        from logits_cli.store.lora import temp_path_beside
        store = Store.open(Path(sys.argv[1]))
        """
        )
        + textwrap.dedent(script)
        + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(store_root)], timeout=120)
    assert child.returncode == -9, "the child must die by SIGKILL"


def _running_records(store_root: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(store_root / "meta.sqlite3")) as conn:
        return [k for (k,) in conn.execute("SELECT key FROM idempotency WHERE state = 'running'")]


SESSION_BODY = json.dumps({"tags": [], "sdk_version": "x"}).encode()


def _claim_script(key: str) -> str:
    sha = hashlib.sha256(SESSION_BODY).hexdigest()
    scope = ("alice", "POST", "/api/v1/create_session", key)
    return f"assert store.idempotency_claim({scope!r}, {sha!r}) is None\n"


def _create_session(api: Api, key: str):
    return api.http.post(
        "/api/v1/create_session",
        content=SESSION_BODY,
        headers={"Content-Type": "application/json", "X-Idempotency-Key": key},
    )


# -- F9 -----------------------------------------------------------------------------------


def test_record_of_a_dead_process_is_taken_over_by_a_running_server(alice: Api, live_server):
    _die_after(live_server.store.root, _claim_script("k-dead"))
    assert _running_records(live_server.store.root) == ["k-dead"]
    first = _create_session(alice, "k-dead")
    assert first.status_code == 200, first.text  # it was 503 "still running" for 24 h
    again = _create_session(alice, "k-dead")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


def test_start_up_releases_records_of_dead_processes_only(tmp_path: Path) -> None:
    root = tmp_path / STORE_DIR_NAME
    live = Store.open(root)  # another live process sharing the store
    key = live.create_api_key("alice")
    _die_after(root, _claim_script("k-dead"))
    sha = hashlib.sha256(SESSION_BODY).hexdigest()
    assert (
        live.idempotency_claim(("alice", "POST", "/api/v1/create_session", "k-live"), sha) is None
    )
    assert sorted(_running_records(root)) == ["k-dead", "k-live"]
    with start_in_thread(tmp_path) as server:
        assert _running_records(root) == ["k-live"]  # released before the first request
        api = Api(server, key)
        assert _create_session(api, "k-dead").status_code == 200
        # The live owner's request is still running: its retry must not run it twice.
        assert_error(_create_session(api, "k-live"), 503, "unavailable")
        api.http.close()
    live.close()


# -- F16 ----------------------------------------------------------------------------------


def test_start_up_sweeps_temp_files_no_live_process_owns(tmp_path: Path) -> None:
    root = tmp_path / STORE_DIR_NAME
    live = Store.open(root)
    (root / "runs" / "some-run").mkdir(parents=True)
    _die_after(
        root,
        """
        owner = store._claim_instance()
        with temp_path_beside(store.blobs_dir, "archive", owner) as partial:
            partial.write_bytes(b"x" * (4 << 20))  # a save killed half-way
            (store.runs_dir / f".new-{owner}-abc").mkdir()
            (store.runs_dir / f".new-{owner}-abc" / "adapter_model.safetensors").write_bytes(b"y")
            (store.runs_dir / "some-run" / f".restore-{owner}-def").mkdir()
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    dead = sorted(p.name for p in root.rglob(".*") if p.name != ".meta.lock")
    assert len(dead) == 3 and any(name.startswith(".archive.") for name in dead)
    # Temp files of a live instance (a save in flight in another process) must survive.
    with temp_path_beside(root / "blobs", "archive", live._claim_instance()) as in_flight:
        in_flight.write_bytes(b"z")
        with start_in_thread(tmp_path):
            left = sorted(p.name for p in root.rglob(".*") if p.name != ".meta.lock")
        assert left == [in_flight.name]
    live.close()


# -- F10 ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs the test fills up; skipped only where mounting is impossible."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until the disk is full, then give back ``leave`` bytes."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (256 << 10))
            out.flush()
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def _save_outcome(api: Api, model_id: str, name: str) -> tuple[int, dict]:
    """A save on a full disk fails either at once (the future's row could not be written)
    or inside the future (the archive could not): (HTTP status, error or failure body)."""
    response = api.post("/api/v1/save_weights", {"model_id": model_id, "path": name})
    if response.status_code != 200:
        return response.status_code, response.json()
    return 200, api.future_result(response.json())


def test_full_disk_is_507_insufficient_storage_and_healthz_503(small_disk: Path) -> None:
    settings = ServerSettings(min_free_bytes=2 * MIB)
    with start_in_thread(small_disk, settings) as server:
        api = Api(server, server.store.create_api_key("alice"))
        assert api.http.get("/api/v1/healthz").status_code == 200
        # Rank 256 of the tiny model: a state of ~7 MiB, so one archive cannot fit in 1 MiB.
        model_id = api.create_model(rank=256)
        api.save(model_id, "before")

        filler = _fill(small_disk, leave=1 * MIB)  # room for metadata, none for an archive
        status, outcome = _save_outcome(api, model_id, "after")
        if status == 200:
            assert outcome["category"] == "server" and outcome["code"] == "insufficient_storage"
        else:
            assert status == 507 and outcome["code"] == "insufficient_storage"
        assert "no space left" in (outcome.get("error") or outcome.get("detail"))
        health = api.http.get("/api/v1/healthz")
        assert_error(health, 503, "unavailable")
        assert "space" in health.json()["detail"]
        assert not [p for p in (server.store.root / "blobs").iterdir() if p.name.startswith(".")]

        second = _fill(small_disk)  # now nothing at all is left
        status, outcome = _save_outcome(api, model_id, "full")
        assert outcome["code"] == "insufficient_storage", outcome
        assert status in (200, 507)

        filler.unlink()
        second.unlink()
        assert api.http.get("/api/v1/healthz").status_code == 200
        assert api.save(model_id, "after")["path"].endswith("/weights/after")
        api.http.close()


def test_storage_errors_render_as_507_with_the_usual_body(small_disk: Path) -> None:
    _fill(small_disk)
    with pytest.raises(OSError) as raised:
        (small_disk / "one-more").write_bytes(b"x" * MIB)
    assert raised.value.errno == errno.ENOSPC
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.execute("PRAGMA max_page_count = 2")
        with pytest.raises(sqlite3.Error) as full:
            conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    for exc in (raised.value, full.value):
        response = error_response(exc)
        assert response.status_code == 507
        assert json.loads(response.body) == {
            "detail": "the server's store has no space left",
            "code": "insufficient_storage",
        }


# -- F12 ----------------------------------------------------------------------------------


def test_revoking_a_key_ends_its_jwts_at_once(server_factory) -> None:
    server = server_factory(jwt_auth=True)
    key, other_key = server.api_key("alice"), server.api_key("alice")
    jwts = []
    for api_key in (key, other_key):
        api = Api(server, api_key)
        jwts.append(api.ok(api.post("/api/v1/auth/token", {}))["jwt"])
        api.http.close()
    doomed, kept = (Api(server, jwt) for jwt in jwts)
    assert doomed.http.get("/api/v1/training_runs").status_code == 200
    server.store.revoke_api_key(key)  # the whole key: only that one
    assert_error(doomed.http.get("/api/v1/training_runs"), 401, "unauthenticated")
    assert kept.http.get("/api/v1/training_runs").status_code == 200  # other key, same user
    # A JWT that names no key (or a forged one) is refused, even when correctly signed.
    from logits_cli.server.tokens import Signer, load_or_create_secret

    signer = Signer(load_or_create_secret(server.store.root))
    unnamed = Api(server, signer.issue_jwt("alice", ttl=600))
    assert_error(unnamed.http.get("/api/v1/training_runs"), 401, "unauthenticated")
    for api in (doomed, kept, unnamed):
        api.http.close()


@pytest.mark.parametrize("committed", [True, False])
def test_a_taken_over_save_the_dead_process_had_committed_is_not_refused(
    server_factory, committed: bool
) -> None:
    """The dead process may have committed the checkpoint and died before recording the
    future's outcome: the process taking the save over reports that checkpoint; a
    checkpoint of that name older than the request is a real conflict."""
    import time

    server = server_factory(takeover_interval=0.2)
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "k")  # what the dead process had committed (or an older one)
    spec = {
        "op": "save",
        "user": "alice",
        "model_id": model_id,
        "kind": "weights",
        "name": "k",
        "ttl": None,
        "overwrite": False,
        "metadata": None,
        "uri_scheme": "logits",
        "requested_at": time.time() - 60 if committed else time.time() + 60,
    }
    dying = Store.open(Path(server.store.root), database=server.store.database)
    request_id, _ = dying.create_future(
        "alice", operation="save_weights", model_id=model_id, job=spec
    )
    dying.close()  # its instance lock is free: the process is gone
    result = api.future_result({"request_id": request_id})
    if committed:
        assert result == {"path": f"logits://{model_id}/weights/k", "type": "save_weights"}
    else:
        assert "already exists" in result["error"], result
    api.http.close()
