"""The team server under the second outside attack (issue 21, rows G3, G4, G5 and the run
metadata a public checkpoint exposed): concurrent migrations, an unreachable database, NUL
characters in request strings. Real processes, a real PostgreSQL (tests/services.py), the
S3 test server where a bucket matters.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from server_helpers import Api

from tests.services import S3_ENV, free_port, run_moto

# The NUL and visibility tests run on SQLite and on PostgreSQL + S3 (tests/conftest.py).
TEAM_BACKENDS = True
MIGRATED_CHECKPOINTS = 9
LOGITS = (sys.executable, "-m", "logits_cli")
WAIT_SECONDS = 60.0


def _store_with_checkpoints(root: Path) -> str:
    """A single-machine store at ``root`` with one run and MIGRATED_CHECKPOINTS saves;
    its run id. Every such store numbers its checkpoints 1, 2, …: the same ids."""
    from logits_cli import models
    from logits_cli.store.store import LOCAL_USER, Store

    store = Store.open(root)
    try:
        session = store.create_session(
            LOCAL_USER, tags=[], user_metadata=None, sdk_version="test", project_id=None
        )
        run = store.create_run(
            LOCAL_USER,
            session_id=session,
            model_seq_id=0,
            base_model="logits/tiny",
            lora_config=models.LoraConfig(rank=2, seed=1),
            user_metadata=None,
        )
        for index in range(MIGRATED_CHECKPOINTS):
            store.save_checkpoint(
                LOCAL_USER,
                run,
                kind="weights",
                name=f"c{index}",
                ttl_seconds=None,
                overwrite=False,
                uri_scheme="logits",
            )
    finally:
        store.close()
    return run


def _waiting_for_write_lock(conn: Any) -> int:
    from logits_cli.store.sql import WRITE_LOCK_KEY

    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s",
        (WRITE_LOCK_KEY >> 32, WRITE_LOCK_KEY & 0xFFFFFFFF),
    ).fetchone()
    return int(row[0])


def test_two_migrations_into_one_database_at_once_land_exactly_one(
    postgres_server: Any, s3_server: Any, tmp_path: Path
) -> None:
    import psycopg

    from logits_cli.store.sql import WRITE_LOCK_KEY
    from logits_cli.store.store import Store

    database = postgres_server.new_database()
    Store.open(tmp_path / "schema", database=database).close()  # the schema, made once
    homes = [tmp_path / "one", tmp_path / "two"]
    runs = {str(home): _store_with_checkpoints(home / "store") for home in homes}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    env.update({**S3_ENV, "AWS_ENDPOINT_URL": s3_server.endpoint_url})
    # Uploads into a bucket widen the window between the first check and the copy.
    target = ("--to-database", database, "--to-blobs", s3_server.new_prefix())

    # Both processes start while this connection holds the store's write lock, and go on
    # together once both wait for it: truly at once, not one after the other.
    with psycopg.connect(database) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        processes = [
            subprocess.Popen(
                [*LOGITS, "server", "migrate", *target, "--home", str(home)],
                env={**env, "LOGITS_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for home in homes
        ]
        with psycopg.connect(database, autocommit=True) as watcher:
            deadline = time.monotonic() + WAIT_SECONDS
            while _waiting_for_write_lock(watcher) < 2:
                assert all(p.poll() is None for p in processes), "a migration ended early"
                assert time.monotonic() < deadline, "the migrations never both waited"
                time.sleep(0.05)
    outcomes = [(p.wait(timeout=WAIT_SECONDS), *p.communicate()) for p in processes]

    assert sorted(code for code, _, _ in outcomes) == [0, 2], outcomes
    [(_, _, refused)] = [outcome for outcome in outcomes if outcome[0] == 2]
    assert refused.splitlines()[0].startswith("Error: the target database already holds")
    winner = next(
        str(home) for home, outcome in zip(homes, outcomes, strict=True) if not outcome[0]
    )

    # Nothing lost: every checkpoint of the store that landed is there, with its digest.
    with sqlite3.connect(Path(winner) / "store" / "meta.sqlite3") as source:
        expected = sorted(source.execute("SELECT id, run_id, name, sha256 FROM checkpoints"))
    with psycopg.connect(database) as target:
        landed = sorted(
            tuple(row) for row in target.execute("SELECT id, run_id, name, sha256 FROM checkpoints")
        )
        migrated_runs = [row[0] for row in target.execute("SELECT id FROM runs")]
    assert len(expected) == MIGRATED_CHECKPOINTS
    assert landed == expected
    assert migrated_runs == [runs[winner]]


def test_a_migration_never_skips_a_row_whose_key_the_target_holds(
    postgres_server: Any, tmp_path: Path
) -> None:
    """A session of the same id in the target (no run, so the emptiness check passes): the
    migration is refused whole, rather than copying the rest without that row."""
    import psycopg

    from logits_cli.store.store import Store

    database = postgres_server.new_database()
    home = tmp_path / "home"
    _store_with_checkpoints(home / "store")
    Store.open(tmp_path / "schema", database=database).close()
    with sqlite3.connect(home / "store" / "meta.sqlite3") as source:
        session = source.execute("SELECT * FROM sessions").fetchone()
    with psycopg.connect(database) as target:
        marks = ", ".join(["%s"] * len(session))
        target.execute(f"INSERT INTO sessions VALUES ({marks})", session)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    done = subprocess.run(
        [*LOGITS, "server", "migrate", "--to-database", database, "--home", str(home)],
        env={**env, "LOGITS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "Error: the target database already holds a row of sessions with the same key as "
        "this store's; migrate into an empty database"
    ]
    with psycopg.connect(database) as target:
        assert target.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)
        assert target.execute("SELECT count(*) FROM runs").fetchone() == (0,)


# -- G5: NUL characters in request strings -----------------------------------------------

NUL = "a\x00b"


def _nul_requests(model_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body or query) of every kind of text a request carries."""
    search = "/api/v1/sessions/search"
    return [
        ("GET", "/api/v1/training_runs/a%00b", None),
        ("GET", "/api/v1/training_runs/a%00b/checkpoints", None),
        ("GET", f"/api/v1/training_runs/{model_id}/checkpoints/weights/a%00b/archive", None),
        ("GET", "/api/v1/sessions/a%00b", None),
        ("GET", "/api/v1/checkpoints", {"access_scope": NUL}),
        ("GET", "/api/v1/training_runs", {NUL: "1"}),
        ("POST", "/api/v1/create_session", {"tags": [], "sdk_version": NUL}),
        ("POST", "/api/v1/create_session", {"tags": [], "sdk_version": "x", "project_id": NUL}),
        (
            "POST",
            search,
            {"cursor": {"last_created_at": "2026-01-01T00:00:00Z", "last_session_id": NUL}},
        ),
        ("POST", search, {"session_id": NUL}),
        ("POST", search, {"project_ids": [NUL]}),
        ("POST", "/api/v1/retrieve_future", {"request_id": NUL}),
        ("POST", "/api/v1/save_weights", {"model_id": NUL, "path": "x"}),
        ("POST", "/api/v1/save_weights", {"model_id": model_id, "path": NUL}),
        ("POST", "/api/v1/weights_info", {"tinker_path": f"tinker://{NUL}/weights/x"}),
        (
            "POST",
            "/api/v1/copy_weights",
            {"source": f"logits://{model_id}/weights/x", "destination_project_id": NUL},
        ),
    ]


def test_nul_in_any_request_string_is_400_on_either_database(alice: Api) -> None:
    model_id = alice.create_model()
    for method, path, data in _nul_requests(model_id):
        answer = alice.http.get(path, params=data) if method == "GET" else alice.post(path, data)
        assert answer.status_code == 400, (path, data, answer.text)
        assert answer.json()["code"] == "invalid_argument"
        assert "NUL" in answer.json()["detail"]
    assert alice.http.get(f"/api/v1/training_runs/{model_id}").status_code == 200  # still serves


def test_a_nul_that_reaches_the_store_is_refused_not_a_500(
    live_server: Any, store_backend: str
) -> None:
    """Behind the boundary: the store on PostgreSQL maps the driver's NUL error to a
    UsageError (400); SQLite keeps the NUL and finds nothing (404)."""
    from logits_cli.errors import NotFoundError, UsageError
    from logits_cli.store import sessions

    with pytest.raises((UsageError, NotFoundError)) as caught:
        sessions.get_session(live_server.store, "alice", NUL)
    expected = NotFoundError if store_backend == "sqlite" else UsageError
    assert type(caught.value) is expected


# -- the run's user_metadata is its owner's ------------------------------------------------


def test_a_public_checkpoint_shows_a_stranger_no_run_metadata(alice: Api, bob: Api) -> None:
    body = {
        "session_id": alice.session(),
        "model_seq_id": 0,
        "base_model": "logits/tiny",
        "lora_config": {"rank": 2},
        "user_metadata": {"customer": "acme", "dataset": "s3://private/x"},
    }
    model_id = alice.future_result(alice.ok(alice.post("/api/v1/create_model", body)))["model_id"]
    alice.save(model_id, "shared", user_metadata={"step": "10"})
    published = alice.post(f"/api/v1/training_runs/{model_id}/checkpoints/weights/shared/publish")
    assert published.status_code == 204, published.text

    run_path = f"/api/v1/training_runs/{model_id}"
    owned = alice.ok(alice.http.get(run_path))
    assert owned["user_metadata"] == {"customer": "acme", "dataset": "s3://private/x"}
    seen = bob.ok(bob.http.get(run_path, params={"access_scope": "accessible"}))
    listed = bob.ok(bob.http.get("/api/v1/training_runs", params={"access_scope": "accessible"}))
    [listed_run] = [r for r in listed["training_runs"] if r["training_run_id"] == model_id]
    for run in (seen, listed_run):
        assert run["model_owner"] == owned["model_owner"] == "alice"
        assert run["user_metadata"] is None
        assert run["last_checkpoint"]["checkpoint_id"] == "weights/shared"
    # The published checkpoint itself, its own metadata included, is what is shared.
    assert bob.checkpoint(model_id, "weights/shared")["user_metadata"] == {"step": "10"}


# -- G4: the database or the object store unreachable ---------------------------------------


class TcpProxy:
    """127.0.0.1:``port`` forwarded to PostgreSQL, which the test can cut (every connection
    reset, the port closed: what a server sees while its database is down) and restore on
    the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for sock in self._open:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            client.settimeout(None)
            upstream.settimeout(None)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def cut_database(postgres_server: Any) -> Iterator[tuple[str, TcpProxy]]:
    """(URL of a fresh database reached through a TcpProxy, the proxy)."""
    proxy = TcpProxy(postgres_server.host, postgres_server.port)
    proxy.start()
    direct = urlsplit(postgres_server.new_database())
    proxied = direct._replace(netloc=f"{direct.username}@127.0.0.1:{proxy.port}")
    try:
        yield urlunsplit(proxied), proxy
    finally:
        proxy.stop()


def _assert_unavailable_and_silent(answer: httpx.Response, *secrets: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == "unavailable"
    for secret in secrets:
        assert secret not in answer.text, answer.text
        assert all(secret not in value for value in answer.headers.values())


def _cli(base_url: str, key: str, home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    env.update(LOGITS_BASE_URL=base_url, LOGITS_API_KEY=key, LOGITS_HOME=str(home))
    return subprocess.Popen(
        [*LOGITS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_an_unreachable_database_is_503_retried_then_exit_6_and_never_named(
    cut_database: tuple[str, TcpProxy], postgres_server: Any, tmp_path: Path
) -> None:
    from logits_cli.server.serve import start_in_thread

    database, proxy = cut_database
    where = ("127.0.0.1", str(proxy.port), str(postgres_server.port), "postgres")
    with start_in_thread(tmp_path / "server", database=database) as running:
        key = running.store.create_api_key("alice")
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            assert http.get("/api/v1/healthz").status_code == 200
            proxy.stop()
            keyed = {"X-API-Key": key}
            # Every answer, the first ones on connections lost meanwhile and the later ones
            # that cannot connect at all.
            for _ in range(3):
                _assert_unavailable_and_silent(http.get("/api/v1/healthz"), *where)
                runs = http.get("/api/v1/training_runs", headers=keyed)
                _assert_unavailable_and_silent(runs, *where)
                session = http.post(
                    "/api/v1/create_session", json={"tags": [], "sdk_version": "t"}, headers=keyed
                )
                _assert_unavailable_and_silent(session, *where)

            started = time.monotonic()
            gave_up = _cli(
                running.base_url, key, tmp_path / "c1", "--retry-for", "3s", "runs", "ls"
            )
            _, stderr = gave_up.communicate(timeout=WAIT_SECONDS)
            assert gave_up.returncode == 6, stderr
            assert time.monotonic() - started >= 2  # retried (Retry-After: 1) before giving up
            assert all(secret not in stderr for secret in where), stderr

            # A client that is still retrying when the database is back succeeds.
            patient = _cli(
                running.base_url, key, tmp_path / "c2", "--retry-for", "60s", "runs", "ls"
            )
            time.sleep(2)
            assert patient.poll() is None  # still retrying
            proxy.start()
            _, stderr = patient.communicate(timeout=WAIT_SECONDS)
            assert patient.returncode == 0, stderr
            deadline = time.monotonic() + WAIT_SECONDS
            while http.get("/api/v1/healthz").status_code != 200:
                assert time.monotonic() < deadline, "healthz never recovered"
                time.sleep(0.1)


def test_healthz_is_503_while_the_object_store_is_unreachable_and_names_nothing(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logits_cli.server import routes_service
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    monkeypatch.setattr(routes_service, "BUCKET_PROBE_REUSE_SECONDS", 0.2)
    with ExitStack() as moto:
        s3 = moto.enter_context(run_moto())  # a bucket of this test's own, to take away
        for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3.endpoint_url}.items():
            monkeypatch.setenv(name, value)
        blobs = s3.new_prefix()
        settings = ServerSettings(blobs=blobs)
        database = postgres_server.new_database()
        with (
            start_in_thread(tmp_path / "server", settings, database=database) as running,
            httpx.Client(base_url=running.base_url, timeout=60) as http,
        ):
            assert http.get("/api/v1/healthz").status_code == 200
            moto.close()  # the object store goes away
            deadline = time.monotonic() + WAIT_SECONDS
            while (answer := http.get("/api/v1/healthz")).status_code == 200:
                assert time.monotonic() < deadline, "healthz never noticed"
                time.sleep(0.1)
            where = urlsplit(s3.endpoint_url)
            secrets = (s3.bucket, blobs.rsplit("/", 1)[1], where.netloc, str(where.port))
            _assert_unavailable_and_silent(answer, *secrets)
            assert answer.json()["detail"] == "the store's object store is not reachable"
            # Bounded: a probe never holds healthz longer than BUCKET_PROBE_SECONDS.
            started = time.monotonic()
            _assert_unavailable_and_silent(http.get("/api/v1/healthz"), *secrets)
            assert time.monotonic() - started < routes_service.BUCKET_PROBE_SECONDS + 2
