"""Names and messages from a hostile server never reach a terminal raw, a shell's completion
list or DEST (issue 21 G8). The server is tests/hostile_server.py: our own server refuses
such names (uri.py's grammar), so only a malicious one sends them."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logits_cli.cli.completion_cache import CACHE_FILE_NAME
from logits_cli.cli.output import rich_label
from logits_cli.cli.tables import terminal_text
from tests.cli.conftest import invoke
from tests.hostile_server import HostileServer, Request, head, hostile

RUN = "5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0"
# An OSC 0 (window title), a screen clear, a C1 CSI, a line break and a tab.
HOSTILE_NAME = "a\x1b]0;owned\x07\x1b[2J\u009b2Jb\nc\td"
HOSTILE_PATH = f"tinker://{RUN}/weights/{HOSTILE_NAME}"
RAW_SEQUENCES = [b"\x1b]0;owned", b"\x1b[2J", b"\xc2\x9b", b"b\nc", b"b\r\nc"]
SHOWN = r"a\x1b]0;owned\x07\x1b[2J\x9b2Jb\x0ac\x09d"


def _json(sock: socket.socket, status: int, document: Any) -> None:
    body = json.dumps(document).encode()
    sock.sendall(
        head(status, {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body
    )


def listing_server(request: Request, sock: socket.socket) -> None:
    """Lists one checkpoint whose name and path hold escape sequences; a 404 whose detail
    holds some for anything else."""
    if request.path.endswith("/checkpoints"):
        row = {
            "checkpoint_id": f"weights/{HOSTILE_NAME}",
            "checkpoint_type": "training",
            "time": "2026-12-01T00:00:00Z",
            "tinker_path": HOSTILE_PATH,
            "size_bytes": 5,
        }
        return _json(sock, 200, {"checkpoints": [row], "cursor": None})
    return _json(sock, 404, {"detail": "gone \x1b]0;owned\x07\x1b[2J", "code": "not_found"})


@pytest.fixture
def server(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    with hostile(listing_server) as running:
        monkeypatch.setenv("LOGITS_BASE_URL", running.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", "tml-hostile-test-key")
        yield running


def on_terminal(args: list[str]) -> tuple[int, bytes]:
    """``logits ARGS`` with stdout and stderr on a pty: (exit code, every byte written)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "200", "TERM": "xterm"},
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    return process.wait(timeout=120), screen


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["ckpt", "ls"],
        ["ckpt", "ls", "-q"],
        ["ckpt", "ls", "--json"],
        ["runs", "info", RUN],
    ],
)
def test_server_text_reaches_a_terminal_escaped(server: HostileServer, args: list[str]) -> None:
    code, screen = on_terminal(args)
    for raw in RAW_SEQUENCES:
        assert raw not in screen, (raw, screen)
    text = screen.decode()
    if args[0] == "runs":  # the server's error detail, on stderr
        assert code == 4 and "Error: gone \\x1b]0;owned\\x07\\x1b[2J" in text, text
    elif "--json" in args:
        assert code == 0 and "\\u001b]0;owned\\u0007\\u001b[2J\\u009b2Jb\\nc\\td" in text, text
    else:
        assert code == 0 and SHOWN in text, text


def test_piped_rows_are_exact_but_never_split(server: HostileServer) -> None:
    result = invoke(["ckpt", "ls"])
    assert result.exit_code == 0, result.stderr
    (row,) = result.stdout.splitlines()
    fields = row.split("\t")
    assert len(fields) == 7
    assert fields[0] == HOSTILE_NAME.replace("\n", " ").replace("\t", " ")
    assert fields[-1] == HOSTILE_PATH.replace("\n", " ").replace("\t", " ")
    listed = json.loads(invoke(["ckpt", "ls", "--json"]).stdout)
    assert listed[0]["tinker_path"] == HOSTILE_PATH  # JSON: the exact text, escaped


def test_listed_names_that_do_not_parse_are_not_cached_for_completion(
    server: HostileServer, isolated_env: Path
) -> None:
    assert invoke(["ckpt", "ls"]).exit_code == 0
    cache = isolated_env / CACHE_FILE_NAME
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    assert cached.get("paths", []) == []
    assert all(terminal_text(run) == run for run in cached.get("runs", []))


def test_labels_are_escaped_for_rich_markup_and_the_terminal() -> None:
    from rich.console import Console

    label = rich_label("[/]\x1b[2J[bold]x")
    console = Console(record=True, width=80, force_terminal=True, no_color=True)
    console.print(label)  # a raw "[/]" raises MarkupError; "[bold]" would be swallowed
    assert console.export_text().strip() == "[/]\\x1b[2J[bold]x"


# -- the per-file path: names of the URL map (the archive path: tests/api/test_extract.py)

HOSTILE_FILE_NAMES = {
    "osc": "adapter\x1b]0;owned\x07.json",
    "newline": "d\nrm -rf x",
    "c1": "c1\u009b2J",
    "del": "del\x7f",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILE_NAMES))
def test_file_names_with_control_characters_are_refused_before_any_write(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli.test_files_hostile import EXTERNAL, GOOD, deployment

    names = {name: name for name in GOOD} | {HOSTILE_FILE_NAMES[case]: "adapter_config.json"}
    dest = tmp_path / "dest"
    with hostile(deployment(names, GOOD)) as files_server:
        monkeypatch.setenv("LOGITS_BASE_URL", files_server.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", "tml-hostile-test-key")
        result = invoke(["ckpt", "download", EXTERNAL, "-o", str(dest)])
        fetched = [r.path for r in files_server.requests if r.path.startswith("/blob/")]
    assert result.exit_code == 7, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: unsafe file name ") and "URL map" in error, error
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr
    assert fetched == [] and not dest.exists()
