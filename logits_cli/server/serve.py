"""Served mode: the app under uvicorn, with an access log on stderr and a TTL sweeper.

``run_server`` is what ``logits server start`` calls; ``start_in_thread`` runs the same server
in a background thread on an ephemeral port (tests, benchmarks).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logits_cli.store import exports
from logits_cli.store.catalog import load_catalog
from logits_cli.store.recovery import recover
from logits_cli.store.store import Store

from . import routes_training
from .app import close_app, create_app
from .settings import ServerSettings

logger = logging.getLogger("logits.server")
access_logger = logging.getLogger("logits.server.access")

# Blob tokens are credentials: the access log never shows them (docs/ARCHITECTURE.md §4).
_BLOB_TOKEN = re.compile(r"(/api/v1/blobs/)[^/?]+")
_START_TIMEOUT_SECONDS = 30.0
STORE_DIR_NAME = "store"  # the same layout as config.Settings.store_dir


class AccessLog:
    """ASGI middleware logging one line per request: method, path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            path = _BLOB_TOKEN.sub(r"\1<token>", scope.get("path", ""))
            elapsed_ms = (time.perf_counter() - started) * 1000
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                '%s "%s %s" %d %.1fms', client[0], scope["method"], path, status, elapsed_ms
            )


class Sweeper:
    """Runs ``store.sweep()`` every ``interval`` seconds on a daemon thread."""

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="logits-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                removed = self._store.sweep()
                # Swept exports leave their files behind (docs/protocol.md §11.3).
                removed += exports.gc_export_blobs(self._store)
            except Exception as exc:
                logger.error("TTL sweep failed", exc_info=exc)
            else:
                if removed:
                    logger.info("TTL sweep removed %d expired items", removed)


@dataclass
class BuiltServer:
    """A configured uvicorn server and what must be closed after it stops."""

    server: uvicorn.Server
    app: Starlette
    store: Store
    settings: ServerSettings
    sweeper: Sweeper

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until interrupted (or ``should_exit``), then shut everything down."""
        try:
            recovered = recover(self.store)  # what a crashed predecessor left behind
        except Exception as exc:
            logger.error("start-up recovery failed", exc_info=exc)
        else:
            if recovered.idempotency_claims or recovered.futures:
                logger.info(
                    "released %d idempotency records and failed %d futures of dead processes",
                    recovered.idempotency_claims,
                    recovered.futures,
                )
        # Saves that a dead server process sharing the store had taken are finished here.
        context = self.app.state.context
        context.futures.start_takeover(
            lambda spec: routes_training.resumable_job(self.store, spec, resumed=True),
            self.settings.takeover_interval,
        )
        self.sweeper.start()
        try:
            self.server.run(sockets=sockets)
        finally:
            self.sweeper.stop()
            close_app(self.app)
            self.store.close()


def open_store(home: Path, settings: ServerSettings, *, database: str | None = None) -> Store:
    """The store under ``home`` (``LOGITS_HOME``): ``home/store``, the directory the embedded
    backend and ``logits server keys`` use too, so a started server serves that same data.
    ``database``: a postgresql:// URL holding the metadata instead of ``meta.sqlite3``
    (store/sql.py); the live state of runs stays under ``home``."""
    return Store.open(
        home / STORE_DIR_NAME,
        database=database,
        blobs=settings.blobs,
        max_rank=settings.max_rank,
        future_retention=settings.future_retention,
        idempotency_retention=settings.idempotency_retention,
        catalog=load_catalog(settings.model_configs),
    )


# Where boto3 reads what a client-creation error is about, so the line names the setting.
_AWS_SETTING = {
    "InvalidRegionError": "AWS_DEFAULT_REGION",
    "ConfigParseError": "AWS_CONFIG_FILE",
    "ValueError": "AWS_ENDPOINT_URL",  # botocore: "Invalid endpoint: …"
}


def check_blobs(blobs: str | None) -> None:
    """Fail in one line naming the setting (ConfigError, exit 2) when the object store of
    ``--blobs`` cannot be used: a missing AWS profile, a bad region or endpoint, no access
    to the bucket. boto3 raises the first kinds while making its client, before
    ``ObjectStore.check`` can turn them into a usage error."""
    if blobs is None:
        return
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    from logits_cli.errors import ConfigError
    from logits_cli.store.object_store import ObjectStore

    try:
        objects = ObjectStore(blobs)
    except ProfileNotFound as exc:
        variable = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
        profile = exc.kwargs.get("profile", "")
        raise ConfigError(
            f'cannot use --blobs {blobs}: AWS profile "{profile}" not found ({variable})'
        ) from None
    except (BotoCoreError, ValueError) as exc:
        setting = _AWS_SETTING.get(type(exc).__name__)
        raise ConfigError(
            f"cannot use --blobs {blobs}: {exc}" + (f" ({setting})" if setting else "")
        ) from None
    objects.check()


def check_store(home: Path, settings: ServerSettings, *, database: str | None) -> None:
    """Open the store once and close it: the object store and the database answer, and
    the schema is migrated, before worker processes that would each fail start."""
    check_blobs(settings.blobs)
    open_store(home, settings, database=database).close()


def build_server(
    home: Path, settings: ServerSettings, host: str, port: int, *, database: str | None = None
) -> BuiltServer:
    store = open_store(home, settings, database=database)
    app = create_app(store, settings)
    config = uvicorn.Config(
        AccessLog(app),
        host=host,
        port=port,
        access_log=False,  # AccessLog replaces it: uvicorn's would print blob tokens
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    sweeper = Sweeper(store, settings.sweep_interval)
    return BuiltServer(uvicorn.Server(config), app, store, settings, sweeper)


def configure_logging() -> None:
    """One line per event on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("logits.server", "uvicorn.error"):
        named = logging.getLogger(name)
        named.handlers[:] = [handler]
        named.setLevel(logging.INFO)
        named.propagate = False


def serve(
    home: Path,
    settings: ServerSettings,
    host: str,
    port: int,
    *,
    database: str | None = None,
    workers: int = 1,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until stopped. ``on_ready`` runs once the store has answered (and, with
    workers, the port is bound): what the command says about a server that is starting is
    not said about one that fails to, whose error is then the only line."""
    configure_logging()
    if workers <= 1:
        check_blobs(settings.blobs)
        built = build_server(home, settings, host, port, database=database)
        if on_ready is not None:
            on_ready()
        built.run()
        return
    from .supervisor import serve_workers

    serve_workers(home, settings, host, port, database=database, workers=workers, on_ready=on_ready)


def run_server(
    home: Path,
    *,
    host: str,
    port: int,
    uri_scheme: str,
    jwt_auth: bool = False,
    public_url: str | None = None,
    root_path: str = "",
    model_configs: tuple[str, ...] = (),
    downloads: str = "both",
    database: str | None = None,
    blobs: str | None = None,
    workers: int = 1,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Entry point of ``logits server start``."""
    settings = ServerSettings(
        blobs=blobs,
        uri_scheme=uri_scheme,
        jwt_auth=jwt_auth,
        public_url=public_url,
        root_path=root_path,
        model_configs=model_configs,
        downloads=downloads,
    )
    serve(home, settings, host, port, database=database, workers=workers, on_ready=on_ready)


@dataclass(frozen=True)
class RunningServer:
    base_url: str  # http://127.0.0.1:PORT plus root_path, no trailing slash
    port: int
    store: Store
    settings: ServerSettings


@contextmanager
def start_in_thread(
    home: Path, settings: ServerSettings | None = None, *, database: str | None = None
) -> Iterator[RunningServer]:
    """Serve on ``127.0.0.1`` at a free port in a background thread until the block ends."""
    settings = settings or ServerSettings()
    built = build_server(home, settings, "127.0.0.1", 0, database=database)
    thread = threading.Thread(target=built.run, name="logits-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while not built.server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            built.server.should_exit = True
            thread.join()
            raise RuntimeError("the logits server did not start")
        time.sleep(0.01)
    port = built.server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(
            f"http://127.0.0.1:{port}{settings.root_path.rstrip('/')}", port, built.store, settings
        )
    finally:
        built.server.should_exit = True
        thread.join()
