"""External services the team-server tests start themselves: PostgreSQL and an S3 API server.

One PostgreSQL cluster (``initdb`` + ``pg_ctl`` in a temporary directory, as an unprivileged
user: PostgreSQL refuses to run as root) and one ``moto_server`` per test session; each
server under test gets its own schema and bucket prefix, so tests stay independent without
paying for a new cluster each. Both are stopped and their directories removed at exit.

When the binaries are missing the fixtures skip, unless ``LOGITS_REQUIRE_TEAM_SERVICES=1``
(set by ``.ci/run``), where they fail: CI must exercise both back ends.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 60.0
PG_USER = "postgres"  # the cluster's superuser (initdb -U), not a system account
_counter = itertools.count()


def _missing(what: str) -> None:
    if os.environ.get("LOGITS_REQUIRE_TEAM_SERVICES") == "1":
        pytest.fail(f"{what} is required here (LOGITS_REQUIRE_TEAM_SERVICES=1)")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _service_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("logits-test", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "logits-test"], check=True, capture_output=True
    )
    entry = pwd.getpwnam("logits-test")
    return entry.pw_uid, entry.pw_gid


@dataclass
class Postgres:
    host: str
    port: int
    # What ``restart`` needs: the cluster's directory, pg_ctl, the user it runs as, options.
    data: Path | None = None
    pg_ctl: str | None = None
    owner: tuple[int, int] | None = None
    options: str = ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def restart(self, down_for: float = 0.0) -> None:
        """``pg_ctl restart`` (fast: every connection is closed at once), or with
        ``down_for`` a stop, that many seconds down, and a start; returns once the server
        accepts connections again."""
        if down_for <= 0:
            self._pg_ctl("-m", "fast", "-w", "restart")
            return
        self._pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(down_for)
        self._pg_ctl("-o", self.options, "-w", "start")

    def _pg_ctl(self, *args: str) -> None:
        assert self.data is not None and self.pg_ctl is not None
        ids = {} if self.owner is None else {"user": self.owner[0], "group": self.owner[1]}
        subprocess.run(
            # -l: the server's output to its log, not to our pipes (run() would wait for it).
            [self.pg_ctl, "-D", str(self.data), "-l", str(self.data.parent / "log"), *args],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            **ids,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def run_postgres() -> Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        _missing("PostgreSQL (initdb, pg_ctl)")
    assert initdb is not None and pg_ctl is not None
    owner = _service_user()
    # Not under pytest's temp root: that is 0700 root-owned, and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="logits-pg-"))
    data = root / "data"
    ids = {} if owner is None else {"user": owner[0], "group": owner[1]}
    if owner is not None:
        os.chown(root, *owner)
    port = free_port()
    try:
        subprocess.run(
            [initdb, "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            **ids,  # type: ignore[arg-type]
        )
        # Durability is not under test: skip fsyncs so the suite stays fast.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            **ids,  # type: ignore[arg-type]
        )
        try:
            yield Postgres("127.0.0.1", port, data, pg_ctl, owner, options)
        finally:
            subprocess.run(
                [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=START_TIMEOUT_SECONDS,
                **ids,  # type: ignore[arg-type]
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str

    def new_prefix(self) -> str:
        """A fresh ``s3://BUCKET/PREFIX`` location for one server's blobs."""
        return f"s3://{self.bucket}/t{os.getpid()}-{next(_counter)}"


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def run_moto() -> Iterator[S3Server]:
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        _missing("moto_server (pip install 'moto[server]')")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **S3_ENV},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        import boto3

        bucket = "logits-test"
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(
            Bucket=bucket
        )
        yield S3Server(endpoint, bucket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }
