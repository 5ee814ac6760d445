"""Real processes with real pipes: stdout carries data only; stderr the rest."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def logits(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "logits_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_piped_stdout_holds_only_data(tmp_path: Path) -> None:
    created = logits("runs", "create", "--base-model", "logits/tiny", "--rank", "2")
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.strip()
    assert "\n" not in run_id and created.stderr
    env = {"LOGITS_RUN": run_id}
    saved = logits("ckpt", "save", "p1", env_extra=env)
    assert saved.stdout == f"logits://{run_id}/weights/p1\n"
    assert saved.stderr.startswith("Saved ")
    downloaded = logits(
        "ckpt", "download", f"logits://{run_id}/weights/@latest", "-o", str(tmp_path)
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert downloaded.stdout == f"{tmp_path / 'p1'}\n"
    assert " downloaded " in downloaded.stderr
    listed = logits("ckpt", "ls", "-q")
    assert listed.stdout.splitlines() == [f"logits://{run_id}/weights/p1"]
    assert listed.stderr == ""


def test_json_parses_when_empty_and_version() -> None:
    assert json.loads(logits("ckpt", "ls", "--json").stdout) == []
    assert json.loads(logits("runs", "ls", "--json").stdout) == []
    from logits_cli import __version__

    assert logits("--version").stdout == f"logits {__version__}\n"


def test_errors_have_no_traceback_unless_logits_debug(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()  # unreadable config: a known error, exit 2
    result = logits("ckpt", "ls", env_extra={"LOGITS_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")
    debug = logits("ckpt", "ls", env_extra={"LOGITS_HOME": str(tmp_path), "LOGITS_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def _start_server(home: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``logits server start`` in a real process; returns it and its http://127.0.0.1:PORT."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logits_cli",
            "server",
            "start",
            "--port",
            "0",
            "--home",
            str(home),
            *options,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:
        match = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            return server, match.group(1)
    server.kill()
    raise AssertionError("the server never said where it listens")


def test_server_start_serves_the_cli_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "server"
    key = logits("server", "keys", "create", "alice", "--home", str(home)).stdout.strip()
    server, origin = _start_server(home)
    try:
        env = {"LOGITS_BASE_URL": origin, "LOGITS_API_KEY": key}
        created = logits(
            "runs", "create", "--base-model", "logits/tiny", "--rank", "2", env_extra=env
        )
        assert created.returncode == 0, created.stderr
        listed = logits("runs", "ls", "-q", env_extra=env)
        assert listed.stdout == created.stdout
    finally:
        server.send_signal(signal.SIGINT)
        _, rest = server.communicate(timeout=60)
    assert "Finished server process" in rest  # a graceful shutdown, then the usual 130
    assert server.returncode == 130


def test_server_start_behind_a_proxy_prefix_issues_public_urls(tmp_path: Path) -> None:
    home = tmp_path / "server"
    key = logits("server", "keys", "create", "alice", "--home", str(home)).stdout.strip()
    server, origin = _start_server(
        home, "--root-path", "/svc/logits", "--public-url", "https://models.example.org"
    )
    try:
        env = {"LOGITS_BASE_URL": origin + "/svc/logits", "LOGITS_API_KEY": key}
        run = logits("runs", "create", "-m", "logits/tiny", "--rank", "2", env_extra=env)
        assert run.returncode == 0, run.stderr
        env["LOGITS_RUN"] = run.stdout.strip()
        path = logits("ckpt", "save", "s", env_extra=env).stdout.strip()
        url = json.loads(logits("ckpt", "url", path, "--json", env_extra=env).stdout)["url"]
        assert url.startswith("https://models.example.org/svc/logits/api/v1/blobs/")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def test_server_start_refuses_a_relative_public_url(tmp_path: Path) -> None:
    result = logits("server", "start", "--home", str(tmp_path), "--public-url", "example.org")
    assert result.returncode == 2
    assert result.stderr == ("Error: --public-url 'example.org' must be an absolute http(s) URL\n")
