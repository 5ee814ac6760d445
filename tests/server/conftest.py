"""Fixtures for the server tests: one plain-httpx client per user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from server_helpers import Api


@pytest.fixture
def api_factory(live_server: Any) -> Iterator[Callable[[str | None], Api]]:
    """``api_factory("bob")`` is bob's client (a new key); ``api_factory(None)`` sends no key."""
    clients: list[Api] = []

    def make(user: str | None) -> Api:
        client = Api(live_server, live_server.api_key(user) if user else None)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.http.close()


@pytest.fixture
def alice(api_factory: Callable[[str | None], Api]) -> Api:
    return api_factory("alice")


@pytest.fixture
def bob(api_factory: Callable[[str | None], Api]) -> Api:
    return api_factory("bob")


@pytest.fixture
def anonymous(api_factory: Callable[[str | None], Api]) -> Api:
    return api_factory(None)


@pytest.fixture(scope="module")
def shared_alice(module_server: Any) -> Iterator[Api]:
    """A user of the module's shared server, for tests that neither count nor mutate."""
    client = Api(module_server, module_server.api_key("alice"))
    yield client
    client.http.close()
