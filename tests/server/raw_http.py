"""Raw-socket HTTP for the hostile-client tests, and a ``logits server start`` subprocess.

httpx normalises dot segments and always sends whole bodies, so requests an attacker would
craft (``/../``, a huge ``Content-Length`` with a trickle of body, endless chunked bodies)
are written here byte by byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANSWER_TIMEOUT_S = 30.0
_START_COMMAND = (
    sys.executable,
    "-m",
    "logits_cli",
    "server",
    "start",
    "--port",
    "0",
)  # generous: the failure mode being tested is "never" or "minutes"


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_head(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S)
    sock.settimeout(ANSWER_TIMEOUT_S)
    return sock


def read_answer(sock: socket.socket) -> RawAnswer:
    """One response: head, then a Content-Length body (the server never chunks JSON)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawAnswer(status, headers, body[:length])


def send(port: int, raw: bytes) -> RawAnswer:
    with connect(port) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def assert_json_error(answer: RawAnswer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.body) > 0
    body = answer.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is cleaned up."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=ANSWER_TIMEOUT_S)


@contextlib.contextmanager
def server_process(home: Path, *extra: str) -> Iterator[ServerProcess]:
    """``python -m logits_cli server start --port 0`` on ``home``; stopped at the end."""
    log_path = home / f"server-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGITS_", "TINKER_"))}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*_START_COMMAND, "--home", str(home), *extra],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    try:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        port = None
        while port is None:
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            if found:
                port = int(found.group(1))
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log_path.read_text()}")
            else:
                time.sleep(0.05)
        yield ServerProcess(process, port, home, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=ANSWER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
