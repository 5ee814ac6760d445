"""Shared fixtures. Every test gets its own LOGITS_HOME and a clean LOGITS_*/TINKER_* env."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Read once at import: ``isolated_env`` clears every LOGITS_* variable before each test.
# The torch venv (.ci/run's .venv-torch: torch, transformers, peft, tinker-cookbook 0.6.1)
# runs driver scripts as subprocesses; this package never imports torch.
TORCH_PYTHON = os.environ.get("LOGITS_TORCH_PYTHON")
REQUIRE_TEAM_SERVICES = os.environ.get("LOGITS_REQUIRE_TEAM_SERVICES") == "1"


@pytest.fixture(scope="session")
def torch_python() -> str:
    """The torch venv's python; skips without it, fails in CI (LOGITS_REQUIRE_TEAM_SERVICES=1)."""
    if not TORCH_PYTHON:
        if REQUIRE_TEAM_SERVICES:
            pytest.fail("LOGITS_TORCH_PYTHON (the .venv-torch python) is required here")
        pytest.skip("LOGITS_TORCH_PYTHON (the .venv-torch python) is not set")
    return TORCH_PYTHON


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("LOGITS_", "TINKER_")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("logits-home")
    monkeypatch.setenv("LOGITS_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    return home


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a background thread, over a fresh store."""

    def __init__(self, running: Any, home: Path) -> None:
        self.base_url: str = running.base_url
        self.port: int = running.port
        self.store = running.store
        self.settings = running.settings
        self.home = home

    def api_key(self, user: str = "alice") -> str:
        return self.store.create_api_key(user)


# -- store back ends -------------------------------------------------------------------------
# A module that sets ``TEAM_BACKENDS = True`` runs every test on each back end: the default
# (SQLite + local directory) and the team server's (PostgreSQL + an S3 bucket), on one
# PostgreSQL cluster and one moto_server per test session (tests/services.py); each server
# gets a fresh database and a fresh bucket prefix.
BACKENDS = ("sqlite", "postgres+s3")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "TEAM_BACKENDS", False) and "store_backend" in (
        metafunc.fixturenames
    ):
        metafunc.parametrize("store_backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    from tests.services import run_postgres

    with run_postgres() as postgres:
        yield postgres


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    from tests.services import run_moto

    with run_moto() as server:
        yield server


def _database_for(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None (meta.sqlite3) or the URL of a fresh PostgreSQL database."""
    if backend == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_server").new_database())


def _blobs_for(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """ServerSettings overrides: none (the store directory) or a fresh s3:// prefix."""
    if backend == "sqlite":
        return {}
    from tests.services import S3_ENV

    s3 = request.getfixturevalue("s3_server")
    # boto3 (in this process, where the test servers run) finds moto through these.
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": s3.endpoint_url})
    return {"blobs": s3.new_prefix()}


@pytest.fixture
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LiveServer]]:
    """``server_factory(**ServerSettings overrides)`` starts a server; all stop at teardown."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    with contextlib.ExitStack() as servers:

        def start(**overrides: Any) -> LiveServer:
            home = tmp_path_factory.mktemp("server-home")
            database = _database_for(store_backend, request)
            settings = ServerSettings(**{**_blobs_for(store_backend, request), **overrides})
            running = servers.enter_context(start_in_thread(home, settings, database=database))
            return LiveServer(running, home)

        yield start


@pytest.fixture
def live_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory()


@pytest.fixture(scope="module")
def module_server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    """One default server shared by a test module, for tests that only read or add."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    home = tmp_path_factory.mktemp("server-home")
    settings = ServerSettings(
        signing_secret=b"module-server-secret", **_blobs_for(store_backend, request)
    )
    database = _database_for(store_backend, request)
    with start_in_thread(home, settings, database=database) as running:
        yield LiveServer(running, home)
