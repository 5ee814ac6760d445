"""``logits server start --workers N``: the parent supervises its workers.

Real ``logits server start`` processes on 127.0.0.1; workers and parents are killed from the
test with real signals (no hook in the server). Dead workers are replaced and their saves
finished, workers die with their parent, a crash loop stops the server with one line, and a
broken object-store setting is one line and exit 2 before any worker starts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from server_helpers import Api

from tests.services import free_port

pytestmark = pytest.mark.slow

START_TIMEOUT_SECONDS = 60.0
WAIT_SECONDS = 30.0


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def logits_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from logits_cli.cli import main; main()", *args]


def wait_until(condition: Any, what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/api/v1/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def workers_server(home: Path, workers: int, *extra: str) -> Iterator[Served]:
    """``logits server start --workers N`` (SQLite store under ``home`` unless ``extra``
    says otherwise), its log in a file (a pipe nobody reads could block it)."""
    port = free_port()
    log = home / f"server-{port}.log"
    env = {**os.environ, "LOGITS_HOME": str(home)}
    command = logits_command("server", "start", "--port", str(port), "--workers", str(workers))
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or (healthy(served.base_url) and len(served.workers()) == workers)
            ),
            "the server to start",
            START_TIMEOUT_SECONDS,
        )
        assert process.poll() is None, log.read_text()
        yield served
    finally:
        workers_left = served.workers() if process.poll() is None else []
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for worker in workers_left:  # never leave a worker holding a port
            if worker.is_running():
                worker.kill()


def alice_key(home: Path, database: str | None = None) -> str:
    from logits_cli.store.store import Store

    store = Store.open(home / "store", database=database)
    try:
        return store.create_api_key("alice")
    finally:
        store.close()


def saving_worker(served: Served) -> psutil.Process:
    """The worker with a save's partial archive open (``blobs/.archive.*``)."""

    def find() -> psutil.Process | None:
        for worker in served.workers():
            try:
                if any("/.archive." in f.path for f in worker.open_files()):
                    return worker
            except psutil.NoSuchProcess:
                pass
        return None

    found: psutil.Process = wait_until(find, "a worker writing the save's archive", 60)
    return found


def future_result(api: Api, handle: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """The future's outcome, polled (each poll held up to 10 s by the server) until done."""
    request = {"request_id": handle["request_id"]}

    def outcome() -> dict[str, Any] | None:
        answer: dict[str, Any] = api.ok(api.post("/api/v1/retrieve_future", request))
        return None if answer.get("type") == "try_again" else answer

    found: dict[str, Any] = wait_until(outcome, "the future to finish", timeout)
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_killed_worker_is_replaced_and_its_save_finished_by_another(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    database = (
        request.getfixturevalue("postgres_server").new_database() if backend == "postgres" else None
    )
    key = alice_key(tmp_path, database)
    extra = ("--database", database) if database else ()
    with workers_server(tmp_path, 2, *extra) as served:
        api = Api(served, key)
        model_id = api.create_model(base_model="Qwen/Qwen3-4B", rank=8)
        handle = api.ok(api.post("/api/v1/save_weights", {"model_id": model_id, "path": "k"}))
        victim = saving_worker(served)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=WAIT_SECONDS)

        # Replaced: two workers again, the new one serving, and the death logged.
        replaced = wait_until(
            lambda: len(w := served.workers()) == 2 and victim.pid not in {p.pid for p in w},
            "a replacement worker",
        )
        assert replaced
        # The parent logs the death once the replacement has started: wait for the line.
        assert wait_until(
            lambda: any(
                f"(pid {victim.pid}) was killed by SIGKILL; started pid" in line
                for line in served.log_lines()
            ),
            "the log line of the death",
        ), served.log.read_text()

        # The killed save is finished by a sibling or the replacement, exactly once.
        result = future_result(api, handle)
        assert result.get("path", "").endswith("/weights/k"), result
        listed = api.checkpoint(model_id, "weights/k")
        archive = httpx.get(api.archive_url(model_id, "weights/k"), timeout=120)
        assert archive.status_code == 200
        assert hashlib.sha256(archive.content).hexdigest() == listed["sha256"]
        # Every worker serves: each of a few fresh connections is answered.
        for _ in range(8):
            assert httpx.get(served.base_url + "/api/v1/healthz", timeout=10).status_code == 200
        api.http.close()
        assert served.process.poll() is None


def test_killing_the_parent_stops_every_worker_and_frees_the_port(tmp_path: Path) -> None:
    with workers_server(tmp_path, 3) as served:
        workers = served.workers()
        assert len(workers) == 3
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=WAIT_SECONDS)
        _, alive = psutil.wait_procs(workers, timeout=WAIT_SECONDS)
        assert alive == []
        port = int(served.base_url.rsplit(":", 1)[1])
        with socket.create_server(("127.0.0.1", port)):
            pass  # nobody listens on it any more
        lines = served.log_lines()
        assert sum("the parent process is gone; stopping" in line for line in lines) == 3


def test_workers_dying_too_often_stop_the_server_with_one_error_line(tmp_path: Path) -> None:
    from logits_cli.server.supervisor import restart_limit

    workers = 2
    limit = restart_limit(workers)
    with workers_server(tmp_path, workers) as served:
        killed: set[int] = set()
        survivors: list[psutil.Process] = []
        for _ in range(limit + 1):
            # Kill one of a full set of workers none of which was killed yet.
            fresh: list[psutil.Process] = wait_until(
                lambda: (
                    len(f := [w for w in served.workers() if w.pid not in killed]) == workers and f
                ),
                "a full set of workers",
            )
            victim, survivors = fresh[0], fresh[1:]
            killed.add(victim.pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=WAIT_SECONDS)
        code = served.process.wait(timeout=WAIT_SECONDS + 30)
        assert code == 1
        lines = served.log_lines()
        restarts = [line for line in lines if "was killed by SIGKILL; started pid" in line]
        assert len(restarts) == limit
        errors = [line for line in lines if line.startswith("Error:")]
        assert (
            errors == [errors[0]]
            and f"the {limit + 1}th death within 60 s; stopped the server" in errors[0]
        )
        assert lines[-1] == errors[0]  # the last word, nothing after it
        _, alive = psutil.wait_procs(survivors, timeout=WAIT_SECONDS)
        assert survivors and alive == []  # the parent stopped the rest before it exited


def test_a_worker_stops_when_the_pipe_to_its_parent_closes() -> None:
    """The way workers notice a dead parent where PR_SET_PDEATHSIG does not exist."""
    import multiprocessing
    import threading

    from logits_cli.server.supervisor import watch_parent

    read_fd, write_fd = os.pipe()

    def worker() -> None:
        os.close(write_fd)
        stopped = threading.Event()
        watch_parent(read_fd, stopped.set)
        os._exit(0 if stopped.wait(WAIT_SECONDS) else 3)

    child = multiprocessing.get_context("fork").Process(target=worker)
    child.start()
    os.close(read_fd)
    try:
        child.join(0.5)
        assert child.is_alive()  # the pipe is open: the watcher waits
        os.close(write_fd)  # what the kernel does when the parent dies
        child.join(WAIT_SECONDS)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()


@pytest.mark.parametrize("workers", [1, 4])
def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path: Path, workers: int) -> None:
    url = f"postgresql://nobody:secret-word@127.0.0.1:{free_port()}/none"
    done = subprocess.run(
        logits_command("server", "start", "--database", url, "--workers", str(workers)),
        env={**os.environ, "LOGITS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: cannot connect to the store's PostgreSQL database")
    assert "secret-word" not in done.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            logits_command("server", "start", "--port", str(port), "--workers", "2"),
            env={**os.environ, "LOGITS_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize("workers", [1, 4])
def test_a_missing_aws_profile_is_one_line_and_exit_2(tmp_path: Path, workers: int) -> None:
    env = {
        **os.environ,
        "LOGITS_HOME": str(tmp_path),
        "AWS_PROFILE": "nope",
        "AWS_SECRET_ACCESS_KEY": "secret-value-never-shown",
    }
    done = subprocess.run(
        logits_command(
            "server",
            "start",
            "--port",
            str(free_port()),
            "--blobs",
            "s3://bucket/prefix",
            "--workers",
            str(workers),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        'Error: cannot use --blobs s3://bucket/prefix: AWS profile "nope" not found (AWS_PROFILE)'
    ]
    assert done.stdout == ""
