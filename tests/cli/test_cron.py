"""Cron mode with real processes: ``logits ckpt sync`` run as cron would run it.

A real server runs in the test process. Its signed blob URLs point at a gate proxy
(``public_url``), so the test decides when archive bytes flow: that is how a sync is held
mid-download, deterministically, while a second one starts or while it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logits_cli import config, models
from logits_cli.api import open_client
from logits_cli.api.sync import checkpoint_dir
from logits_cli.api.verify import verify_checkpoint_dir
from logits_cli.uri import CheckpointRef

pytestmark = pytest.mark.slow

TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S")
WAIT_LIMIT_S = 60.0  # only a guard against a hung test; no outcome depends on it


class GateProxy:
    """A TCP proxy that forwards server-to-client bytes only while its budget lasts.

    ``budget`` None lets everything through; a number lets that many response bytes through
    (all connections together) and then holds the rest until ``open()``.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.upstream_port: int | None = None
        self._gate = threading.Condition()
        self._budget: int | None = None
        self._forwarded = 0
        self._sockets: list[socket.socket] = []
        self.holding = threading.Event()  # a response is being held at the gate

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        threading.Thread(target=self._accept, daemon=True).start()

    def limit(self, budget: int) -> None:
        with self._gate:
            self._budget, self._forwarded = budget, 0
            self.holding.clear()

    def open(self) -> None:
        with self._gate:
            self._budget = None
            self._gate.notify_all()

    def close(self) -> None:
        self.open()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, gated: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while data:
                    allowed = self._allowance(len(data)) if gated else len(data)
                    target.sendall(data[:allowed])
                    data = data[allowed:]
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _allowance(self, wanted: int) -> int:
        with self._gate:
            while self._budget is not None and self._forwarded >= self._budget:
                self.holding.set()
                self._gate.wait()
            allowed = (
                wanted if self._budget is None else min(wanted, self._budget - self._forwarded)
            )
            self._forwarded += allowed
            return allowed


@dataclass
class Remote:
    base_url: str
    api_key: str
    proxy: GateProxy
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Only what a crontab line would set."""
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(self.home),
            "LOGITS_HOME": str(self.home / "logits"),
            "LOGITS_BASE_URL": self.base_url,
            "LOGITS_API_KEY": self.api_key,
            **extra,
        }

    def command(self, *args: str) -> list[str]:
        """``logits ARGS`` under ``env -i`` with stdin closed, as cron starts jobs."""
        assignments = [f"{k}={v}" for k, v in self.env().items()]
        return [
            "/usr/bin/env",
            "-i",
            *assignments,
            "/bin/sh",
            "-c",
            'exec "$@" <&-',
            "sh",
            sys.executable,
            "-m",
            "logits_cli",
            *args,
        ]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=WAIT_LIMIT_S
        )

    def save(self, run_id: str | None, *names: str) -> tuple[str, list[models.Checkpoint]]:
        """Create the run when ``run_id`` is None; save ``names`` into it (in-process client)."""
        settings = config.resolve(
            base_url=self.base_url,
            env={"LOGITS_HOME": str(self.home / "setup"), "LOGITS_API_KEY": self.api_key},
        )

        async def work() -> tuple[str, list[models.Checkpoint]]:
            async with open_client(settings) as client:
                run = run_id or (await client.create_run("logits/tiny", rank=4)).training_run_id
                return run, [await client.save(run, name) for name in names]

        return asyncio.run(work())


@pytest.fixture
def remote(server_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Remote]:
    proxy = GateProxy()
    live = server_factory(public_url=proxy.url)
    proxy.start(live.port)
    try:
        yield Remote(live.base_url, live.api_key("alice"), proxy, tmp_path / "cron-home")
    finally:
        proxy.close()


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=WAIT_LIMIT_S)
    return process.returncode, stdout, stderr


def wait_for(condition: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {item["tinker_path"]: item["status"] for item in summary["items"]}


def test_two_syncs_started_together_download_each_checkpoint_once(remote, tmp_path):
    _, saved = remote.save(None, *(f"step-{i}" for i in range(6)))
    dest = str(tmp_path / "mirror")
    first, second = (
        remote.start("ckpt", "sync", "-o", dest, "--lock-wait", "2m", "--json") for _ in range(2)
    )
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    summaries = [json.loads(out) for _, out, _ in results]
    assert sum(s["counts"]["downloaded"] for s in summaries) == len(saved)
    assert sum(s["bytes_fetched"] for s in summaries) == sum(c.size_bytes for c in saved)
    assert sorted(s["counts"]["present"] for s in summaries) == [0, len(saved)]
    for checkpoint in saved:
        local = checkpoint_dir(Path(dest), CheckpointRef.parse(checkpoint.tinker_path))
        assert verify_checkpoint_dir(local).ok


def test_a_busy_directory_exits_9_or_waits_with_lock_wait(remote, tmp_path):
    _, saved = remote.save(None, "step-1", "step-2")
    dest = tmp_path / "mirror"
    remote.proxy.limit(0)
    holder = remote.start("ckpt", "sync", "-o", str(dest), "--json")
    # The holder takes the lock before fetching any archive, so once its archive response
    # is held at the gate, it provably holds the lock.
    wait_for(remote.proxy.holding.is_set, "the first sync to reach the download")

    busy = remote.run("ckpt", "sync", "-o", str(dest))
    assert busy.returncode == 9
    assert busy.stdout == ""
    assert busy.stderr.splitlines()[0] == (
        f"Error: another sync is running in {dest} (it holds .logits-sync.lock)"
    )

    waiter = remote.start("ckpt", "sync", "-o", str(dest), "--lock-wait", "2m", "--json")
    held_for = 3.0
    time.sleep(held_for)  # the waiter waits this long at least for the lock
    remote.proxy.open()
    holder_code, holder_out, holder_err = finish(holder)
    waiter_code, waiter_out, waiter_err = finish(waiter)
    assert (holder_code, waiter_code) == (0, 0), holder_err + waiter_err
    assert set(statuses(json.loads(holder_out)).values()) == {"downloaded"}
    waited = json.loads(waiter_out)
    assert statuses(waited) == {c.tinker_path: "present" for c in saved}
    # Its summary counts its own work from the moment it held the lock, not the wait.
    assert waited["elapsed_s"] < held_for - 0.5, waited["elapsed_s"]


def test_a_sync_killed_mid_download_leaves_no_lock_and_the_next_run_resumes(remote, tmp_path):
    _, (checkpoint,) = remote.save(None, "big")
    dest = tmp_path / "mirror"
    target = checkpoint_dir(dest, CheckpointRef.parse(checkpoint.tinker_path))
    journal = target.parent / f".{target.name}.part.json"
    remote.proxy.limit(checkpoint.size_bytes // 2)
    victim = remote.start("ckpt", "sync", "-o", str(dest), "--connections", "1")

    def journaled_bytes() -> int:
        try:
            return sum(json.loads(journal.read_text())["filled"])
        except (OSError, ValueError, KeyError):
            return 0

    wait_for(lambda: remote.proxy.holding.is_set() and journaled_bytes() > 0, "a partial download")
    victim.send_signal(signal.SIGKILL)
    assert finish(victim)[0] == -signal.SIGKILL
    assert not target.exists()

    remote.proxy.open()
    rerun = remote.run("ckpt", "sync", "-o", str(dest), "--json")
    assert rerun.returncode == 0, rerun.stderr
    (item,) = json.loads(rerun.stdout)["items"]
    assert item["status"] == "downloaded"
    assert 0 < item["bytes_fetched"] < checkpoint.size_bytes  # resumed, not restarted
    assert not journal.exists()
    assert not (target.parent / f".{target.name}.part").exists()
    assert verify_checkpoint_dir(target).ok


def test_max_duration_stops_starting_downloads_and_exits_8(remote, tmp_path):
    _, saved = remote.save(None, "step-1", "step-2")
    remote.proxy.limit(0)
    process = remote.start(
        "ckpt",
        "sync",
        "-o",
        str(tmp_path / "mirror"),
        "--jobs",
        "1",
        "--max-duration",
        "1s",
        "--json",
    )
    wait_for(remote.proxy.holding.is_set, "the first download to start")
    # The gate stays shut: the download in flight never ends by itself. The sync must stop
    # it at --max-duration, not wait for it (before issue 8 it ran until the gate opened).
    code, out, err = finish(process)
    assert code == 8
    newest, older = sorted(saved, key=lambda c: c.time, reverse=True)
    items = {item["tinker_path"]: item for item in json.loads(out)["items"]}
    assert {path: item["status"] for path, item in items.items()} == {
        newest.tinker_path: "failed",
        older.tinker_path: "not_started",
    }
    assert items[newest.tinker_path]["error"] == (
        "stopped at the 1 s limit; what was fetched is kept and the next run resumes it"
    )
    assert err.splitlines()[-1] == "Error: sync incomplete: 1 failed, 1 not started"


def test_max_duration_cancels_a_trickling_download_keeps_its_part_and_frees_the_lock(
    remote, tmp_path
):
    # Issue 8 F4: a slow download in flight at --max-duration is cancelled; its bytes stay
    # resumable and the next cron run gets the lock (exit 0, not 9) and resumes.
    _, (checkpoint,) = remote.save(None, "big")
    dest = tmp_path / "mirror"
    target = checkpoint_dir(dest, CheckpointRef.parse(checkpoint.tinker_path))
    journal = target.parent / f".{target.name}.part.json"
    remote.proxy.limit(checkpoint.size_bytes // 3)
    process = remote.start(
        "ckpt", "sync", "-o", str(dest), "--connections", "1", "--max-duration", "2s", "--json"
    )
    code, out, err = finish(process)
    assert code == 8, err
    (item,) = json.loads(out)["items"]
    assert item["status"] == "failed"
    assert "the next run resumes it" in item["error"]
    kept = sum(json.loads(journal.read_text())["filled"])
    assert 0 < kept < checkpoint.size_bytes
    assert not target.exists()

    remote.proxy.open()
    rerun = remote.run("ckpt", "sync", "-o", str(dest), "--json")
    assert rerun.returncode == 0, rerun.stderr
    (item,) = json.loads(rerun.stdout)["items"]
    assert item["status"] == "downloaded"
    assert item["bytes_fetched"] == checkpoint.size_bytes - kept
    assert verify_checkpoint_dir(target).ok


def test_a_cron_run_logs_plain_timestamped_lines_and_exits_8_on_partial_failure(remote, tmp_path):
    run, saved = remote.save(None, "step-1", "step-2")
    dest = tmp_path / "mirror"

    first = remote.run("ckpt", "sync", "-o", str(dest))
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert "\x1b" not in first.stderr and "\r" not in first.stderr
    lines = first.stderr.splitlines()
    assert all(TIMESTAMPED.match(line) for line in lines), lines
    *item_lines, summary = lines  # one line per checkpoint, then the one-line summary
    assert sorted(tuple(line.split(" ")[1:3]) for line in item_lines) == sorted(
        ("downloaded", c.tinker_path) for c in saved
    )
    assert summary.split(" ", 1)[1].startswith("sync: 2 downloaded in ")

    again = remote.run("ckpt", "sync", "-o", str(dest), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["bytes_fetched"] == 0
    assert "\x1b" not in again.stderr

    # A new checkpoint whose place is taken by something else: that item fails, exit 8.
    _, (blocked,) = remote.save(run, "step-3")
    squatter = checkpoint_dir(dest, CheckpointRef.parse(blocked.tinker_path))
    squatter.mkdir()
    partial = remote.run("ckpt", "sync", "-o", str(dest))
    assert partial.returncode == 8
    assert partial.stderr.splitlines()[-1] == "Error: sync incomplete: 1 failed, 0 not started"
    assert any(
        TIMESTAMPED.match(line) and f"failed {blocked.tinker_path}" in line
        for line in partial.stderr.splitlines()
    )
    assert os.listdir(squatter) == []


def test_a_destructive_command_in_cron_refuses_instead_of_prompting(remote):
    run, _ = remote.save(None, "step-1", "step-2")
    refused = remote.run("ckpt", "rm", "--run", run, "--keep-last", "1")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0] == (
        "Error: refusing to delete without --yes when not on a terminal"
    )
    listed = remote.run("ckpt", "ls", run, "-q")
    assert len(listed.stdout.splitlines()) == 2
