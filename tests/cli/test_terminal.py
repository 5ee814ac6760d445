"""On a real terminal (a pty): tables, the confirmation prompt and progress bars on stderr."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;)")


def run_on_terminal(
    args: list[str], answer: bytes = b"", interrupt_at: bytes | None = None
) -> tuple[int, str]:
    """Run ``logits ARGS`` with stdin, stdout and stderr on one pty; returns (exit, screen).

    ``interrupt_at``: send SIGINT once this text has appeared (e.g. a prompt)."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    if answer:
        os.write(controller, answer)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        screen += chunk
        if interrupt_at is not None and interrupt_at in screen:
            process.send_signal(signal.SIGINT)
            interrupt_at = None
    os.close(controller)
    text = screen.decode("utf-8", "replace")
    assert not COLOUR.search(text), "NO_COLOR is set: no colour codes expected"
    return process.wait(timeout=120), ANSI.sub("", text)


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> str:
    run_id = cli("runs", "create", "--base-model", "logits/tiny", "--rank", "2")
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return cli("ckpt", "save", "tty1")


def test_rm_asks_on_a_terminal(saved: str) -> None:
    code, screen = run_on_terminal(["ckpt", "rm", saved], answer=b"n\n")
    assert code == 1
    assert "Delete them? [y/N]" in screen and saved in screen
    assert cli("ckpt", "ls", "-q") == saved
    code, screen = run_on_terminal(["ckpt", "rm", saved], answer=b"y\n")
    assert code == 0, screen
    assert cli("ckpt", "ls", "-q") == ""


def test_table_and_progress_bar_on_a_terminal(saved: str, tmp_path: Path) -> None:
    code, screen = run_on_terminal(["ckpt", "ls"])
    assert code == 0
    header = next(line for line in screen.splitlines() if "NAME" in line)
    assert header.split() == ["NAME", "TYPE", "SIZE", "PUBLIC", "CREATED", "EXPIRES", "PATH"]
    assert "tty1" in screen and " kB" in screen
    code, screen = run_on_terminal(["ckpt", "download", saved, "-o", str(tmp_path)])
    assert code == 0
    assert " kB" in screen and "━" in screen  # a rich progress bar was drawn
    assert str(tmp_path / "tty1") in screen


def test_ctrl_c_at_the_prompt_exits_130(saved: str) -> None:
    code, screen = run_on_terminal(["ckpt", "rm", saved], interrupt_at=b"Delete them?")
    assert code == 130
    assert screen.rstrip().endswith("Interrupted")
    assert cli("ckpt", "ls", "-q") == saved
