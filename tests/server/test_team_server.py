"""The team server: several ``logits server start`` processes on one PostgreSQL database.

Real processes (the CLI entry point), a real PostgreSQL (tests/services.py), real sockets.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from server_helpers import Api

from tests.services import free_port

START_TIMEOUT_SECONDS = 60.0
CLIENTS = 16


class Served:
    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"


def _logits(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-c", "from logits_cli.cli import main; main()", *args]


@contextmanager
def server_process(home: Path, database: str, *extra: str) -> Iterator[tuple[Served, Any]]:
    """``logits server start --database URL`` in a subprocess, until the block ends."""
    port = free_port()
    env = {**os.environ, "LOGITS_HOME": str(home)}
    process = subprocess.Popen(
        _logits("server", "start", "--port", str(port), "--database", database, *extra, env=env),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    served = Served(port)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(served.base_url + "/api/v1/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
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


@pytest.fixture
def team(postgres_server: Any, tmp_path: Path) -> tuple[Path, str, str]:
    """(shared home, database URL, alice's API key)."""
    from logits_cli.store.store import Store

    database = postgres_server.new_database()
    store = Store.open(tmp_path / "store", database=database)
    try:
        key = store.create_api_key("alice")
    finally:
        store.close()
    return tmp_path, database, key


@pytest.mark.parametrize("blobs", ["directory", "s3"])
def test_two_processes_on_one_database_serve_sixteen_clients(
    team: tuple[Path, str, str],
    blobs: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, database, key = team
    extra: tuple[str, ...] = ()
    if blobs == "s3":  # archives in the bucket, downloads from its presigned URLs
        from tests.services import S3_ENV

        s3 = request.getfixturevalue("s3_server")
        for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3.endpoint_url}.items():
            monkeypatch.setenv(name, value)
        extra = ("--blobs", s3.new_prefix())
    with (
        server_process(home, database, *extra) as (one, _),
        server_process(home, database, *extra) as (two, _),
    ):
        apis = [Api(one, key), Api(two, key)]

        def client(index: int) -> tuple[str, str, str]:
            # Each step goes to the other process than the one before.
            first, second = apis[index % 2], apis[(index + 1) % 2]
            model_id = first.create_model(session=second.session())
            saved = second.save(model_id, f"step-{index}")
            assert saved["path"].endswith(f"/weights/step-{index}")
            listed = first.checkpoint(model_id, f"weights/step-{index}")
            archive = httpx.get(second.archive_url(model_id, f"weights/step-{index}"), timeout=60)
            assert archive.status_code == 200
            return model_id, listed["sha256"], hashlib.sha256(archive.content).hexdigest()

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))

        assert all(expected == actual for _, expected, actual in results)
        for api in apis:
            runs = api.ok(api.http.get("/api/v1/training_runs", params={"limit": 100}))
            listed = {run["training_run_id"] for run in runs["training_runs"]}
            assert listed == {model_id for model_id, _, _ in results}  # nothing lost
            checkpoints = api.ok(api.http.get("/api/v1/checkpoints", params={"limit": 100}))
            paths = [c["checkpoint_id"] for c in checkpoints["checkpoints"]]
            assert sorted(paths) == sorted(f"weights/step-{i}" for i in range(CLIENTS))
        for api in apis:
            api.http.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_workers_option_starts_that_many_processes_and_stops_them(
    team: tuple[Path, str, str], stop_signal: signal.Signals
) -> None:
    home, database, key = team
    with server_process(home, database, "--workers", "3") as (served, process):
        children = psutil.Process(process.pid).children()
        assert len(children) == 3
        api = Api(served, key)
        model_id = api.create_model()
        assert api.save(model_id, "w")["path"].endswith("/weights/w")
        # Every worker answers from the same database.
        for _ in range(12):
            assert api.checkpoint(model_id, "weights/w")["checkpoint_id"] == "weights/w"
        api.http.close()
        process.send_signal(stop_signal)  # to the parent alone, as `kill` sends it
        assert process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []


def test_start_refuses_a_database_that_is_not_postgresql(tmp_path: Path) -> None:
    env = {**os.environ, "LOGITS_HOME": str(tmp_path)}
    done = subprocess.run(
        _logits("server", "start", "--database", "mysql://x@y/z", env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: database (from --database) must be a postgresql:// URL"
    ]


def test_unreachable_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "LOGITS_HOME": str(tmp_path)}
    url = f"postgresql://nobody:secret-word@127.0.0.1:{free_port()}/none"
    done = subprocess.run(
        _logits("server", "start", "--database", url, env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot connect to the store's PostgreSQL database")
    assert "secret-word" not in done.stderr


def save_killed_halfway(api: Api, process: Any, blobs: Path) -> tuple[str, dict[str, Any]]:
    """A run with a few hundred MiB of state (a save long enough to be caught halfway) and
    a save of it as ``k``, whose server ``process`` is SIGKILLed once the save writes its
    archive under ``blobs``; (model id, the save's future handle)."""
    model_id = api.create_model(base_model="Qwen/Qwen3-4B", rank=8)
    before = set(blobs.iterdir())
    handle = api.ok(api.post("/api/v1/save_weights", {"model_id": model_id, "path": "k"}))
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".archive.") for p in set(blobs.iterdir()) - before):
        assert time.monotonic() < deadline, "the save never started writing its archive"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return model_id, handle


def assert_finished_by(survivor: Api, handle: dict[str, Any], model_id: str) -> None:
    """The killed save's future, polled on ``survivor``, completes within 60 s, and the
    checkpoint ``k`` downloads with its listed digest."""
    started = time.monotonic()
    result = survivor.future_result(handle)
    assert result.get("path", "").endswith("/weights/k"), result
    assert time.monotonic() - started < 60
    listed = survivor.checkpoint(model_id, "weights/k")
    archive = httpx.get(survivor.archive_url(model_id, "weights/k"), timeout=120)
    assert archive.status_code == 200
    assert hashlib.sha256(archive.content).hexdigest() == listed["sha256"]


def test_a_save_whose_process_is_killed_is_finished_by_the_other(
    team: tuple[Path, str, str],
) -> None:
    home, database, key = team
    blobs = home / "store" / "blobs"
    with (
        server_process(home, database) as (one, first),
        server_process(home, database) as (
            two,
            _,
        ),
    ):
        api_one, api_two = Api(one, key), Api(two, key)
        model_id, handle = save_killed_halfway(api_one, first, blobs)
        assert_finished_by(api_two, handle, model_id)
        api_one.http.close()
        api_two.http.close()
