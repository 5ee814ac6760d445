"""Team-server liveness across a PostgreSQL restart (issue 21 G1; store/liveness.py).

Two real ``logits server start --database`` processes on one real PostgreSQL, restarted
with ``pg_ctl restart`` while a save runs. Before leases, each process lost its liveness
lock with its connection and saw the other dead: it took the running save over (a second
run of it) and answered a live create-via-load with "send it again". Now nothing is taken
over across the restart, and a process SIGKILLed after it still is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Api

from logits_cli.store.liveness import LEASE_ENV
from logits_cli.store.store import Store
from tests.services import free_port

# Short, so the test waits seconds rather than the default 20 s; not shorter: a server busy
# writing a Qwen3-4B state can keep its heartbeat thread from the GIL for seconds.
LEASE = 8.0
START_TIMEOUT_SECONDS = 60.0


class Served:
    def __init__(self, port: int, log: Path) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def server_process(home: Path, database: str, log: Path) -> Iterator[tuple[Served, Any]]:
    """``logits server start --database URL``, its log lines in ``log``."""
    port = free_port()
    env = {**os.environ, "LOGITS_HOME": str(home)}
    command = [sys.executable, "-c", "from logits_cli.cli import main; main()"]
    command += ["server", "start", "--port", str(port), "--database", database]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    served = Served(port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(served.base_url + "/api/v1/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {served.log_text()!r}")
            time.sleep(0.1)
        yield served, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def outcome(api: Api, handle: dict[str, Any], seconds: float = 120) -> dict[str, Any]:
    """Poll a future until it finishes, through the restart: a 503 or a refused connection
    while the database is down is retried, as clients do."""
    deadline = time.monotonic() + seconds
    while True:
        assert time.monotonic() < deadline, f"future {handle['request_id']} never finished"
        try:
            response = api.post("/api/v1/retrieve_future", {"request_id": handle["request_id"]})
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if response.status_code == 503:
            time.sleep(0.2)
            continue
        answer = api.ok(response)
        if answer.get("type") != "try_again":
            return dict(answer)


def wait_for_archive(blobs: Path, before: set[Path]) -> None:
    """Until a save starts writing its archive under ``blobs``."""
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".archive.") for p in set(blobs.iterdir()) - before):
        assert time.monotonic() < deadline, "the save never started writing its archive"
        time.sleep(0.002)


@pytest.fixture
def team(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str, str]:
    """(shared home, database URL, alice's API key); servers started after this inherit
    the short ``LEASE``."""
    monkeypatch.setenv(LEASE_ENV, str(LEASE))
    database = postgres_server.new_database()
    store = Store.open(tmp_path / "store", database=database)
    try:
        key = store.create_api_key("alice")
    finally:
        store.close()
    return tmp_path, database, key


@pytest.mark.slow
def test_a_postgresql_restart_takes_nothing_over_and_a_kill_after_it_still_is(
    team: tuple[Path, str, str], postgres_server: Any
) -> None:
    home, database, key = team
    blobs = home / "store" / "blobs"
    with (
        server_process(home, database, home / "one.log") as (one, first),
        server_process(home, database, home / "two.log") as (two, _),
    ):
        api_one, api_two = Api(one, key), Api(two, key)
        time.sleep(LEASE + 1)  # both can tell the dead from the living by now
        model_id = api_one.create_model(base_model="Qwen/Qwen3-4B", rank=8)

        # A save running on one while the database restarts, polled on two.
        before = set(blobs.iterdir())
        saving = api_one.ok(
            api_one.post("/api/v1/save_weights", {"model_id": model_id, "path": "k"})
        )
        wait_for_archive(blobs, before)
        postgres_server.restart()
        saved = outcome(api_two, saving)
        assert saved == {"path": f"logits://{model_id}/weights/k", "type": "save_weights"}

        # Right after the restart: a create-via-load running on one, polled on two, which
        # cannot know yet whether one lived through the restart and so leaves it alone.
        body = {"session_id": api_two.session(), "model_seq_id": 0, "optimizer": False}
        loading = api_one.ok(api_one.post("/api/v1/load_weights", {**body, "path": saved["path"]}))
        loaded = outcome(api_two, loading)
        assert loaded.get("model_id") == f"{body['session_id']}:train:0", loaded

        # Well after the restart: nothing was taken over, nothing ran twice.
        time.sleep(LEASE + 2)
        for served in (one, two):
            assert "taking over future" not in served.log_text(), served.log_text()
            assert "taking over futures failed" not in served.log_text(), served.log_text()
        runs = api_two.ok(api_two.http.get("/api/v1/training_runs", params={"limit": 100}))
        assert sorted(r["training_run_id"] for r in runs["training_runs"]) == sorted(
            [model_id, loaded["model_id"]]
        )
        listed = api_two.ok(api_two.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
        assert [c["checkpoint_id"] for c in listed["checkpoints"]] == ["weights/k"]

        # A process killed after the restart is still taken over: one dies halfway
        # through a save, two finishes it.
        before = set(blobs.iterdir())
        killed = api_one.ok(
            api_one.post("/api/v1/save_weights", {"model_id": model_id, "path": "after"})
        )
        wait_for_archive(blobs, before)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        finished = outcome(api_two, killed, seconds=60)
        assert finished == {"path": f"logits://{model_id}/weights/after", "type": "save_weights"}
        taken = re.findall(r"taking over future (\S+)", two.log_text())
        assert taken == [killed["request_id"]]
        api_one.http.close()
        api_two.http.close()


def test_what_a_killed_predecessor_left_is_swept_once_the_new_process_can_tell(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up recovery cannot hold anyone dead during the first lease of a process (its
    own lease has not been renewed that long yet); the takeover loop runs it again once it
    can, so a killed predecessor's partial archive does not stay for ever."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings
    from logits_cli.store.lora import TEMP_SUFFIX

    lease = 2.0
    monkeypatch.setenv(LEASE_ENV, str(lease))
    database = postgres_server.new_database()
    code = (
        "import time; from logits_cli.store.store import Store;"
        f"s = Store.open({str(tmp_path / 'predecessor')!r}, database={database!r});"
        "print(s._claim_instance(), flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        dead = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    blobs = tmp_path / "home" / "store" / "blobs"
    blobs.mkdir(parents=True)
    leftover = blobs / f".archive.{dead}.x1y2{TEMP_SUFFIX}"
    leftover.write_bytes(b"\0" * 4096)
    settings = ServerSettings(takeover_interval=0.2)
    with start_in_thread(tmp_path / "home", settings, database=database) as running:
        deadline = time.monotonic() + 4 * lease + 10
        while leftover.exists():
            assert time.monotonic() < deadline, "a dead process's temp file was never swept"
            time.sleep(0.05)
        assert running.store.liveness_settled()


def test_a_resumable_job_that_met_its_database_away_runs_again_as_taken_over(
    tmp_path: Path,
) -> None:
    """The commit of a save can meet PostgreSQL restarting (the restart test above, when the
    archive is written before the database is back): the live process runs the save again
    as a takeover would, rather than telling its client to send it again."""
    import asyncio

    from logits_cli.errors import DatabaseUnavailableError
    from logits_cli.server.futures import FutureRunner

    store = Store.open(tmp_path / "store")
    runner = FutureRunner(store, inline=False, workers=1)
    rebuilt: list[dict[str, Any]] = []

    def first_run() -> dict[str, Any]:
        raise DatabaseUnavailableError("the store's database is not reachable; retry shortly")

    def rebuild(spec: dict[str, Any]) -> Any:
        rebuilt.append(spec)
        return lambda: {"type": "save_weights", "path": spec["path"]}

    async def scenario() -> Any:
        request_id = await runner.submit(
            "local",
            operation="save_weights",
            model_id=None,
            job=first_run,
            resumable={"path": "logits://r/weights/k"},
        )
        return await runner.wait("local", request_id, hold=30.0)

    try:
        runner.start_takeover(rebuild, interval=3600.0)
        record = asyncio.run(scenario())
    finally:
        runner.close()
        store.close()
    assert record.status == "done", record
    assert record.result == {"type": "save_weights", "path": "logits://r/weights/k"}
    assert rebuilt == [{"path": "logits://r/weights/k"}]
