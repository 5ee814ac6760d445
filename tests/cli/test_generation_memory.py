"""A remembered generation is learnt again (issue 21 G11; docs/protocol.md §11.6):
``$LOGITS_HOME/generations.json`` answers older than a day, a remembered "files" before an
export and after a refused files path, and a memory file that is not ours.

Real servers over 127.0.0.1 with ``--downloads archive``, ``files`` or both (the default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from logits_cli.api.verify import MANIFEST_NAME
from tests.cli.conftest import invoke
from tests.cli.test_files_export_runs import ok, serve, server_state, weights


def remember(home: Path, base_url: str, generation: str, age_s: float = 0) -> Path:
    memory = home / "generations.json"
    entry = {"generation": generation, "learnt": time.time() - age_s}
    memory.write_text(json.dumps({base_url: entry}))
    return memory


def test_remembered_files_against_an_archive_server_learns_again(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path
) -> None:
    server = serve(server_factory, monkeypatch, downloads="archive")
    path = weights(monkeypatch)
    sampler = ok("ckpt", "save", "s1", "--sampler", "-q").stdout.strip()
    before = server_state(server)
    memory = remember(isolated_env, server.base_url, "files")
    # A refusal of ours (sampler_weights/ on the files generation) checks the memory again.
    ok("ckpt", "download", sampler, "-o", str(tmp_path / "s"))
    assert json.loads(memory.read_text())[server.base_url]["generation"] == "archive"
    memory = remember(isolated_env, server.base_url, "files")
    # An export is never made on a remembered answer: the archive endpoint is asked first.
    # (A process of its own: this one remembers the archive answer it just learnt.)
    command = [sys.executable, "-m", "logits_cli", "ckpt", "download", path]
    result = subprocess.run(
        [*command, "-o", str(tmp_path / "w")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "exporting" not in result.stderr
    assert json.loads((tmp_path / "w" / "w1" / MANIFEST_NAME).read_text())["content"] == "full"
    assert json.loads(memory.read_text())[server.base_url]["generation"] == "archive"
    assert server_state(server) == before  # no stray run


def test_a_remembered_answer_is_confirmed_once_per_process(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path
) -> None:
    """A sync refusing many items on a files deployment asks ``…/archive`` once, not once
    per item, and the confirmed answer is remembered afresh."""
    from logits_cli.api.client import LogitsClient

    server = serve(server_factory, monkeypatch, downloads="files")
    run_id = weights(monkeypatch).split("/")[2]
    for name in ("s1", "s2", "s3"):
        ok("ckpt", "save", name, "--sampler", "-q")
    memory = remember(isolated_env, server.base_url, "files", age_s=2 * 3600)
    asked = []
    archive_url = LogitsClient.archive_url

    async def counted(self: LogitsClient, *args: Any, **kwargs: Any) -> Any:
        asked.append(args)
        return await archive_url(self, *args, **kwargs)

    monkeypatch.setattr(LogitsClient, "archive_url", counted)
    # One job: items run one after the other (with N jobs, N may ask at once).
    result = invoke(
        ["ckpt", "sync", run_id, "-o", str(tmp_path / "s"), "--json", "--jobs", "1", "--no-export"]
    )
    assert result.exit_code == 10, result.stderr  # weights/ not exported
    statuses = [item["status"] for item in json.loads(result.stdout)["items"]]
    assert statuses.count("skipped") == 4  # three sampler checkpoints, weights/ not exported
    assert len(asked) == 1
    assert time.time() - json.loads(memory.read_text())[server.base_url]["learnt"] < 60


def test_a_day_old_answer_is_learnt_again(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path
) -> None:
    server = serve(server_factory, monkeypatch)  # both generations
    path = weights(monkeypatch)
    sampler = ok("ckpt", "save", "s1", "--sampler", "-q").stdout.strip()
    memory = remember(isolated_env, server.base_url, "files", age_s=25 * 3600)
    ok("ckpt", "download", sampler, "-o", str(tmp_path / "s"))
    entry = json.loads(memory.read_text())[server.base_url]
    assert entry["generation"] == "archive" and time.time() - entry["learnt"] < 60
    result = ok("ckpt", "download", path, "-o", str(tmp_path / "w"))
    assert json.loads((tmp_path / "w" / "w1" / MANIFEST_NAME).read_text())["content"] == "full"
    assert "exporting" not in result.stderr


@pytest.mark.parametrize("planted", ["symlink", "foreign"])
def test_a_memory_file_that_is_not_ours_is_ignored_and_never_written_through(
    planted: str,
    server_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    isolated_env: Path,
) -> None:
    server = serve(server_factory, monkeypatch)  # both generations
    sampler = (weights(monkeypatch), ok("ckpt", "save", "s1", "--sampler", "-q").stdout)[1]
    memory = isolated_env / "generations.json"
    planted_text = json.dumps({server.base_url: {"generation": "files", "learnt": time.time()}})
    victim = tmp_path / "victim.json"
    if planted == "symlink":
        victim.write_text(planted_text)
        memory.symlink_to(victim)
    else:
        if os.geteuid() != 0:
            pytest.skip("planting another user's file needs root")
        memory.write_text(planted_text)
        os.chown(memory, 12345, 12345)
    # Read as absent: the archive endpoint is probed, and the sampler checkpoint downloads.
    ok("ckpt", "download", sampler.strip(), "-o", str(tmp_path / "s"))
    assert (tmp_path / "s" / "s1").is_dir()
    # Replaced, never written through: ours now, and the symlink's target is untouched.
    assert not memory.is_symlink() and memory.stat().st_uid == os.geteuid()
    assert json.loads(memory.read_text())[server.base_url]["generation"] == "archive"
    if planted == "symlink":
        assert victim.read_text() == planted_text
