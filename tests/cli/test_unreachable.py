"""A wrong or unreachable base URL fails in seconds with exit 6, the reason and a hint
(issue 12): a refused connection and a host name that does not resolve. Timeouts and 5xx keep
the long retry budget (tests/api/test_retry.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on exit: connecting is refused


@pytest.mark.parametrize(
    "base_url", [f"http://127.0.0.1:{_closed_port()}", "http://no-such-host.invalid"]
)
def test_an_unreachable_service_fails_fast_with_exit_6(base_url: str) -> None:
    env = os.environ | {"LOGITS_BASE_URL": base_url, "LOGITS_API_KEY": "tml-unreachable-test"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", "ckpt", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 6, done.stderr
    assert elapsed < 15, elapsed
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith("Error: cannot connect") and "gave up after" in lines[-2], lines
    assert lines[-1] == "Hint: check the service address with `logits config show`"
    assert done.stdout == ""
