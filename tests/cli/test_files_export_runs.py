"""The run an export is made in lives no longer than the export (issue 21 G2; docs/protocol.md
§11.6 and Appendix A, A30).

Real servers over 127.0.0.1 with ``--downloads files``. "Back to what it was" is measured on the server: the
caller's runs and every file (name and size) under the store's ``runs/`` (live states and
run locks) and ``exports/`` directories (with a bucket, its local cache).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from logits_cli import config
from logits_cli.api import open_client
from logits_cli.api.export_lifecycle import recorder
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.store import exports
from logits_cli.uri import CheckpointRef
from tests.cli.conftest import invoke
from tests.faultproxy import Fault, FaultProxy

# The server side (runs removed, states freed) on both back ends; the client-side cases once.
TEAM_BACKENDS = True
STALL_AFTER = 2_200_000  # response bytes: past one 2 MiB write batch, short of the adapter


def ok(*args: str) -> Any:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    return result


def serve(server_factory: Any, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    server = server_factory(**settings)
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    return server


def weights(monkeypatch: pytest.MonkeyPatch, rank: int = 8) -> str:
    run_id = ok(
        "runs", "create", "--base-model", "logits/tiny", "--rank", str(rank), "-q"
    ).stdout.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return str(ok("ckpt", "save", "w1", "-q").stdout.strip())


def server_state(server: Any) -> dict[str, Any]:
    """The caller's runs and every file under the store's runs/ and exports/."""
    runs, _ = server.store.list_runs("alice", access_scope="owned", limit=100, offset=0)
    files = {}
    for area in ("runs", "exports"):
        root = server.store.root / area
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file():
                files[str(path.relative_to(server.store.root))] = path.stat().st_size
    return {"runs": sorted(r.training_run_id for r in runs), "files": files}


def state_dirs(server: Any) -> list[str]:
    return sorted(p.name for p in server.store.runs_dir.iterdir() if p.is_dir())


def test_downloads_leave_no_run_and_no_state_behind(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before = server_state(server)
    assert len(before["runs"]) == 1 and before["files"]
    for attempt in range(3):
        dest = tmp_path / f"dest{attempt}"
        result = ok("ckpt", "download", path, "-o", str(dest))
        assert f"exporting {path}: " in result.stderr
        assert json.loads((dest / "w1" / MANIFEST_NAME).read_text())["content"] == "adapter-only"
        assert server_state(server) == before, attempt
    # Every session the downloads opened was finished.
    open_sessions = (
        server.store._db.connection()
        .execute("SELECT count(*) FROM sessions WHERE user_id = 'alice' AND finished IS NULL")
        .fetchone()[0]
    )
    assert open_sessions <= 1  # the one `runs create` made


@pytest.fixture
def sqlite_only(store_backend: str) -> None:
    if store_backend != "sqlite":
        pytest.skip("client-side behaviour, the same on every back end")


@pytest.fixture
def stalling_server(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, store_backend: str
) -> Any:
    if store_backend != "sqlite":
        pytest.skip("a bucket serves presigned URLs itself: no proxy to stall them")
    with FaultProxy() as proxy:
        proxy.plan.extend([Fault("stall", after=STALL_AFTER)] * 2)
        server = serve(server_factory, monkeypatch, downloads="files", public_url=proxy.url)
        proxy.upstream = ("127.0.0.1", server.port)
        yield server


def kill_mid_file(path: str, dest: Path) -> dict[str, Any]:
    """SIGKILL a download process once its journal counts good bytes of the weights file;
    returns the export record it left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", "ckpt", "download", path, "-o", str(dest)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journals = dest / ".w1.files" / "journal"
    give_up = time.monotonic() + 60
    try:
        while time.monotonic() < give_up and process.poll() is None:
            try:
                states = [json.loads(j.read_text()) for j in journals.glob("*.json")]
                if any(0 < sum(s["filled"]) < s["size"] for s in states):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert process.poll() is None, "the download finished before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    return dict(json.loads((dest / ".w1.files" / "export.json").read_text()))


def test_a_killed_download_then_its_resume_leave_no_run(
    stalling_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = stalling_server
    path = weights(monkeypatch, rank=256)  # an adapter of about 2.4 MB: killed mid-file
    before, before_dirs = server_state(server), state_dirs(server)
    dest = tmp_path / "dest"
    record = kill_mid_file(path, dest)
    # The record knows the session and the run; the session was finished once the export
    # existed, so the run is there (with its export) but its live state is not.
    export = CheckpointRef.parse(record["export"])
    assert record["run"] == export.run_id and record["session"]
    assert server_state(server)["runs"] == sorted([*before["runs"], export.run_id])
    assert state_dirs(server) == before_dirs
    resumed = json.loads(ok("ckpt", "download", path, "-o", str(dest), "--json").stdout)[0]
    assert resumed["resumed"] is True
    ok("ckpt", "verify", str(dest / "w1"))
    assert server_state(server) == before


def _run_made_then_killed(dest: Path, path: str) -> dict[str, str]:
    """What a process killed after its create-via-load and before its save_weights_external
    leaves: a recorded session and run (still live), no export."""

    async def work() -> dict[str, str]:
        async with open_client(config.resolve()) as client:
            target = CheckpointRef.parse(path)
            checkpoint = await client.get_checkpoint(target)
            write, _ = recorder(dest, checkpoint.name, checkpoint.tinker_path)
            made_in = {"session": await client.session_id()}
            write(made_in)
            run_id = await client.create_run_from(target)
            made_in |= {"run": run_id, "export_name": "export-w1-killed"}
            write(made_in)
            return made_in  # no finish: the process "died" here

    return asyncio.run(work())


def test_killed_between_the_run_and_its_export_resumes_from_that_run(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before = server_state(server)
    dest = tmp_path / "dest"
    made_in = _run_made_then_killed(dest, path)
    assert made_in["run"] in server_state(server)["runs"]
    result = ok("ckpt", "download", path, "-o", str(dest))
    assert "exporting" not in result.stderr  # the export was made from the recorded run
    manifest = json.loads((dest / "w1" / MANIFEST_NAME).read_text())
    assert manifest["export"].endswith(f"{made_in['run']}/external_weights/export-w1-killed")
    ok("ckpt", "verify", str(dest / "w1"))
    assert server_state(server) == before


def test_a_failed_export_takes_back_its_record_and_frees_its_run(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An export refused after its run was made (the checkpoint gone in between): nothing
    left in DEST, the session finished, the run's live state freed."""
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before_dirs = state_dirs(server)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise exports.NotFoundError("injected: the export cannot be made")

    monkeypatch.setattr(exports, "save_external", refuse)
    dest = tmp_path / "dest"
    result = invoke(["ckpt", "download", path, "-o", str(dest)])
    assert result.exit_code == 4, result.stderr
    assert not dest.exists()
    assert state_dirs(server) == before_dirs
    open_sessions = (
        server.store._db.connection()
        .execute("SELECT count(*) FROM sessions WHERE user_id = 'alice' AND finished IS NULL")
        .fetchone()[0]
    )
    assert open_sessions <= 1  # the one `runs create` made


@pytest.mark.usefixtures("sqlite_only")
def test_a_planted_working_directory_is_refused_before_any_run_is_made(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before = server_state(server)
    dest, victim = tmp_path / "dest", tmp_path / "victim"
    dest.mkdir()
    victim.mkdir()
    (dest / ".w1.files").symlink_to(victim)
    result = invoke(["ckpt", "download", path, "-o", str(dest)])
    assert result.exit_code == 1, result.stderr
    assert ".w1.files is a symbolic link" in result.stderr
    assert list(victim.iterdir()) == []  # the record was not written through the link
    assert server_state(server) == before


def test_url_export_run_lives_as_long_as_its_export(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before, before_dirs = server_state(server), state_dirs(server)
    answer = json.loads(ok("ckpt", "url", path, "--export", "--json").stdout)
    export = answer["path"]
    run_id = CheckpointRef.parse(export).run_id
    assert server_state(server)["runs"] == sorted([*before["runs"], run_id])
    # Its session is finished: its live state is freed while the export lives.
    assert state_dirs(server) == before_dirs
    ok("ckpt", "ttl", export, "--set", "1s")
    give_up = time.monotonic() + 10  # the export expires in 1 s; the sweep (ours or the
    while time.monotonic() < give_up:  # server's own) then removes it and its run
        server.store.sweep()
        if server_state(server) == before:
            break
        time.sleep(0.2)
    assert server_state(server) == before
    assert invoke(["ckpt", "info", export]).exit_code == 4


def test_the_sweep_frees_states_other_machines_left(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each machine of a team server keeps its own state copies: the sweep frees those of
    finished sessions (rebuilt here by a later save) and those of runs gone elsewhere."""
    server = serve(server_factory, monkeypatch, downloads="files")
    path = weights(monkeypatch)
    before_dirs = state_dirs(server)
    export = json.loads(ok("ckpt", "url", path, "--export", "--json").stdout)["path"]
    run_id = CheckpointRef.parse(export).run_id
    assert state_dirs(server) == before_dirs  # freed when its session finished
    # A save on the run (the archive dialect has no sessions) rebuilds its state here...
    monkeypatch.setenv("LOGITS_RUN", run_id)
    ok("ckpt", "save", "after-finish", "-q")
    assert len(state_dirs(server)) == len(before_dirs) + 1
    # ...and a run removed on another machine left its state here, long ago.
    ghost = server.store.runs_dir / "ghost-session%3Atrain%3A0"
    ghost.mkdir()
    (ghost / "adapter_model.safetensors").write_bytes(b"x" * 4096)
    os.utime(ghost, (time.time() - 2 * 3600, time.time() - 2 * 3600))
    server.store.sweep()
    assert state_dirs(server) == before_dirs
    assert run_id in server_state(server)["runs"]  # it holds a checkpoint: it stays
    ok("ckpt", "save", "rebuilt", "-q")  # rebuilt from its row once more
