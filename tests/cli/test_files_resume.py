"""A killed export download resumes on its recorded export (docs/protocol.md §11.6).

A real ``logits ckpt download`` process against a real ``--downloads files`` server, whose
blob URLs go through a fault proxy (tests/faultproxy.py) that stalls the first connections
after 2.2 MB, so the process is SIGKILLed in the middle of a file with a journal that counts
the first 2 MiB write batch. The next run must reuse the export the journal
recorded and fetch only what is missing; if that export has gone, it makes a new one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from logits_cli.api.transfer.files_layout import journal_name
from logits_cli.api.verify import MANIFEST_NAME
from tests.cli.conftest import invoke
from tests.faultproxy import Fault, FaultProxy

STALL_AFTER = 2_200_000  # response bytes: past one 2 MiB write batch, short of the file


@pytest.fixture
def slow_files_server(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    with FaultProxy() as proxy:
        # Both files may be fetched at once; adapter_config.json is far smaller than this.
        proxy.plan.extend([Fault("stall", after=STALL_AFTER)] * 2)
        server = server_factory(downloads="files", public_url=proxy.url)
        proxy.upstream = ("127.0.0.1", server.port)
        monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
        yield server


def ok(*args: str) -> Any:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    return result


def _weights(monkeypatch: pytest.MonkeyPatch) -> str:
    # Rank 256 on the tiny model: an adapter of about 2.4 MB, above one 2 MiB write batch
    # (only written batches count in the journal).
    run_id = ok(
        "runs", "create", "--base-model", "logits/tiny", "--rank", "256", "-q"
    ).stdout.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return ok("ckpt", "save", "w1", "-q").stdout.strip()


def _kill_mid_file(path: str, dest: Path) -> dict[str, Any]:
    """Start a download process, SIGKILL it once a journal counts good bytes of the weights
    file; returns the export record it left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", "ckpt", "download", path, "-o", str(dest)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    journal = dest / ".w1.files" / "journal" / journal_name("adapter_model.safetensors")
    give_up = time.monotonic() + 60
    try:
        while time.monotonic() < give_up and process.poll() is None:
            try:
                state = json.loads(journal.read_text())
                if 0 < sum(state["filled"]) < state["size"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert process.poll() is None, "the download finished before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    return json.loads((dest / ".w1.files" / "export.json").read_text())


def _download_json(path: str, dest: Path) -> dict[str, Any]:
    result = ok("ckpt", "download", path, "-o", str(dest), "--json")
    return {"stderr": result.stderr, **json.loads(result.stdout)[0]}


def test_a_killed_export_download_resumes_on_the_same_export(
    slow_files_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _weights(monkeypatch)
    dest = tmp_path / "dest"
    record = _kill_mid_file(path, dest)
    assert not (dest / "w1").exists()
    resumed = _download_json(path, dest)
    assert resumed["resumed"] is True and "exporting" not in resumed["stderr"]
    size = sum(p.stat().st_size for p in (dest / "w1").iterdir() if p.name != MANIFEST_NAME)
    assert 0 < resumed["bytes_fetched"] < size
    manifest = json.loads((dest / "w1" / MANIFEST_NAME).read_text())
    assert manifest["export"] == record["export"]
    ok("ckpt", "verify", str(dest / "w1"))
    # The export is deleted once installed.
    assert invoke(["ckpt", "info", record["export"]]).exit_code == 4


def test_an_export_gone_between_runs_is_made_again(
    slow_files_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _weights(monkeypatch)
    dest = tmp_path / "dest"
    record = _kill_mid_file(path, dest)
    ok("ckpt", "rm", record["export"], "--yes")
    again = _download_json(path, dest)
    assert f"exporting {path}: " in again["stderr"]
    manifest = json.loads((dest / "w1" / MANIFEST_NAME).read_text())
    assert manifest["export"] != record["export"]
    ok("ckpt", "verify", str(dest / "w1"))
