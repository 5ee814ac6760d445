"""``logits ckpt download`` under issue 8: --timeout, --lock-wait, unwritable destinations and
damaged local copies, through the real CLI against the real server."""

from __future__ import annotations

import json
import re
import socket
import tarfile
import threading
import time
from typing import Any

import filelock

from logits_cli.uri import CheckpointRef
from tests.hostile_server import Request, head, hostile, trickle

LIMIT_S = 60.0  # only a guard against a hung test


def saved_path(cli: Any, name: str = "d1") -> str:
    return json.loads(cli.ok("ckpt", "save", name, "--json").stdout)["tinker_path"]


def test_an_unwritable_destination_is_exit_1_with_a_real_hint(cli, run, tmp_path):
    path = saved_path(cli)
    result = cli("ckpt", "download", path, "-o", "/proc/self")
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[-2:] == [
        "Error: cannot create files in /proc/self: No such file or directory",
        "Hint: choose a directory you can write to with -o DIR",
    ]


def test_a_busy_download_hints_lock_wait_which_download_accepts(cli, run, tmp_path):
    path = saved_path(cli)
    name = CheckpointRef.parse(path).name
    dest = tmp_path / "dest"
    dest.mkdir()
    holding, release = threading.Event(), threading.Event()

    def other_downloader() -> None:
        with filelock.FileLock(dest / f".{name}.part.lock"):
            holding.set()
            release.wait(LIMIT_S)

    holder = threading.Thread(target=other_downloader)
    holder.start()
    try:
        assert holding.wait(LIMIT_S)
        busy = cli("ckpt", "download", path, "-o", str(dest))
        assert busy.exit_code == 9
        assert busy.stderr.splitlines()[-1] == (
            "Hint: let it finish, or pass --lock-wait 10m to wait for it"
        )
        threading.Timer(0.3, release.set).start()
        waited = cli.ok("ckpt", "download", path, "-o", str(dest), "--lock-wait", "1m")
    finally:
        release.set()
        holder.join()
    assert waited.stdout == f"{dest / name}\n"


def test_a_damaged_copy_is_repaired_and_says_so(cli, run, tmp_path):
    path = saved_path(cli)
    name = CheckpointRef.parse(path).name
    cli.ok("ckpt", "download", path, "-o", str(tmp_path))
    (tmp_path / name / "adapter_model.safetensors").unlink()
    again = cli.ok("ckpt", "download", path, "-o", str(tmp_path))
    assert again.stdout == f"{tmp_path / name}\n"
    assert any(
        line.endswith(f"repaired {tmp_path / name}: adapter_model.safetensors missing")
        for line in again.stderr.splitlines()
    ), again.stderr
    assert cli.lines("ckpt", "verify", str(tmp_path), "-q") == [str(tmp_path / name)]


def test_timeout_bounds_the_whole_download_and_keeps_the_resumable_part(
    server_factory, tmp_path, monkeypatch
):
    from tests.cli.conftest import invoke

    blob: dict[str, bytes] = {}

    def respond(request: Request, sock: socket.socket) -> None:
        data = blob["data"]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        first = int(match.group(1)) if match else 0
        last = (
            min(len(data) - 1, int(match.group(2))) if match and match.group(2) else len(data) - 1
        )
        piece = data[first : last + 1]
        headers = {
            "Content-Range": f"bytes {first}-{last}/{len(data)}",
            "Content-Length": str(len(piece)),
        }
        sock.sendall(head(206, headers, "Partial Content"))
        trickle(sock, piece, chunk=200, every_s=0.05)  # ~4 KB/s: minutes for the archive

    with hostile(respond) as srv:
        server = server_factory(public_url=srv.base_url)
        monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
        run_id = invoke(["runs", "create", "--base-model", "logits/tiny", "-q"]).stdout.strip()
        saved = json.loads(invoke(["ckpt", "save", "slow", "--run", run_id, "--json"]).stdout)
        ref = CheckpointRef.parse(saved["tinker_path"])
        blob["data"] = server.store.blob_for(
            ref.run_id, ref.kind, ref.name, saved["sha256"]
        ).path.read_bytes()
        started = time.monotonic()
        result = invoke(
            ["ckpt", "download", saved["tinker_path"], "-o", str(tmp_path), "--timeout", "2s"]
        )
        elapsed = time.monotonic() - started
    assert result.exit_code == 6, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "Error: did not finish within --timeout 2s",
        "Hint: run the same command again to resume the download",
    ]
    assert elapsed < LIMIT_S
    assert sorted(p.name for p in tmp_path.iterdir()) == [".slow.part", ".slow.part.json"]
    journal = json.loads((tmp_path / ".slow.part.json").read_text())
    assert 0 < sum(journal["filled"]) < len(blob["data"])


def test_timeout_is_a_duration(cli, run):
    result = cli("ckpt", "download", "logits://x/weights/y", "--timeout", "soon")
    assert result.exit_code == 2


# -- -o - and --archive-only -o FILE.tar (issue 12, point 4) ---------------------------------


def test_dash_o_writes_the_verified_archive_to_stdout_and_nothing_else(cli, run, tmp_path):
    path = saved_path(cli)
    reference = tmp_path / "ref"
    cli.ok("ckpt", "download", path, "--archive-only", "-o", str(reference))
    expected = (reference / f"{CheckpointRef.parse(path).name}.tar").read_bytes()
    streamed = cli.ok("ckpt", "download", path, "-o", "-")
    assert streamed.stdout_bytes == expected
    assert "-> stdout" in streamed.stderr
    assert list(tmp_path.iterdir()) == [reference]  # nothing written beside it


def test_archive_only_dash_o_file_tar_writes_that_file(cli, run, tmp_path):
    path = saved_path(cli)
    target = tmp_path / "mine.tar"
    result = cli.ok("ckpt", "download", path, "--archive-only", "-o", str(target))
    assert result.stdout == f"{target}\n"
    assert target.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["mine.tar"]
    with tarfile.open(target) as tar:
        assert "checkpoint_complete" in tar.getnames()
    as_json = cli.ok("ckpt", "download", path, "--archive-only", "-o", str(target), "--json")
    assert json.loads(as_json.stdout)[0]["local_path"] == str(target)


def test_dash_o_dash_takes_one_checkpoint(cli, run, tmp_path):
    first, second = saved_path(cli, "a1"), saved_path(cli, "a2")
    result = cli("ckpt", "download", first, second, "-o", "-")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: -o - takes one checkpoint, not 2",
        "Hint: download several into a directory: -o DIR",
    ]
