"""Shared fixtures. Every test gets its own LOGITS_HOME and a clean LOGITS_*/TINKER_* env."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


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


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """``server_factory(**ServerSettings overrides)`` starts a server; all stop at teardown."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    with contextlib.ExitStack() as servers:

        def start(**overrides: Any) -> LiveServer:
            home = tmp_path_factory.mktemp("server-home")
            running = servers.enter_context(start_in_thread(home, ServerSettings(**overrides)))
            return LiveServer(running, home)

        yield start


@pytest.fixture
def live_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One default server shared by a test module, for tests that only read or add."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    home = tmp_path_factory.mktemp("server-home")
    with start_in_thread(home, ServerSettings(signing_secret=b"module-server-secret")) as running:
        yield LiveServer(running, home)
