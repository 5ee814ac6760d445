"""One test per row of the exit-code table, each produced by a real condition."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.cli.conftest import invoke


@pytest.fixture
def remote(live_server, monkeypatch):
    monkeypatch.setenv("LOGITS_BASE_URL", live_server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", live_server.api_key("alice"))
    return live_server


def make_run(monkeypatch: pytest.MonkeyPatch) -> str:
    result = invoke(["runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q"])
    assert result.exit_code == 0, result.stderr
    run_id = result.stdout.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return run_id


def test_exit_2_missing_yes() -> None:
    result = invoke(["ckpt", "rm", "logits://r/weights/a"])
    assert result.exit_code == 2
    assert (
        result.stderr.splitlines()[0]
        == "Error: refusing to delete without --yes when not on a terminal"
    )


def test_exit_2_bad_uri() -> None:
    result = invoke(["ckpt", "info", "s3://bucket/x"])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: checkpoint path 's3://bucket/x' has scheme 's3'; expected 'logits' or 'tinker'\n"
    )


def test_exit_3_wrong_key(live_server, monkeypatch) -> None:
    monkeypatch.setenv("LOGITS_BASE_URL", live_server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", "tml-" + "x" * 43)
    result = invoke(["ckpt", "ls"])
    assert result.exit_code == 3
    error, hint = result.stderr.splitlines()
    assert error == "Error: invalid or revoked API key"
    assert hint.startswith("Hint: ") and "LOGITS_API_KEY" in hint
    assert "x" * 43 not in result.stderr


def test_exit_4_unknown_checkpoint(monkeypatch) -> None:
    run_id = make_run(monkeypatch)
    result = invoke(["ckpt", "info", f"logits://{run_id}/weights/missing"])
    assert result.exit_code == 4
    assert result.stderr == f"Error: checkpoint logits://{run_id}/weights/missing not found\n"


def test_exit_5_existing_name(remote, monkeypatch) -> None:
    make_run(monkeypatch)
    assert invoke(["ckpt", "save", "dup"]).exit_code == 0
    assert invoke(["ckpt", "save", "dup"]).exit_code == 5


def test_exit_6_server_down(monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("LOGITS_API_KEY", "tml-test")
    result = invoke(["--retry-for", "1s", "--base-url", f"http://127.0.0.1:{port}", "ckpt", "ls"])
    assert result.exit_code == 6
    assert result.stderr.startswith("Error: cannot connect")
    assert (
        result.stderr.splitlines()[-1]
        == "Hint: check the service address with `logits config show`"
    )


def test_exit_7_hostile_archive(remote, monkeypatch, tmp_path: Path) -> None:
    make_run(monkeypatch)
    saved = json.loads(invoke(["ckpt", "save", "evil", "--json"]).stdout)
    blob = remote.store.blobs_dir / saved["sha256"]
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w") as archive:
        member = tarfile.TarInfo("../escaped")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"pwnd"))
    os.chmod(blob, 0o600)
    blob.write_bytes(hostile.getvalue().ljust(saved["size_bytes"], b"\0"))
    dest = tmp_path / "dest"
    result = invoke(["ckpt", "download", saved["tinker_path"], "-o", str(dest)])
    assert result.exit_code == 7
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert not (dest / "evil").exists()
    assert not (tmp_path / "escaped").exists()


def test_exit_8_partial_rm(monkeypatch) -> None:
    run_id = make_run(monkeypatch)
    path = invoke(["ckpt", "save", "one", "-q"]).stdout.strip()
    result = invoke(["ckpt", "rm", "--yes", path, f"logits://{run_id}/weights/two"])
    assert result.exit_code == 8
    assert result.stderr.splitlines()[-1] == "Error: 1 of 2 checkpoints could not be deleted"


def test_exit_9_sync_lock_held(monkeypatch, tmp_path: Path) -> None:
    make_run(monkeypatch)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys; lock = filelock.FileLock(sys.argv[1]); lock.acquire();"
            " print('held', flush=True); sys.stdin.read()",
            str(tmp_path / ".logits-sync.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = invoke(["ckpt", "sync", "-o", str(tmp_path)])
    finally:
        holder.communicate("")
    assert result.exit_code == 9
    assert result.stderr.startswith(f"Error: another sync is running in {tmp_path}")
