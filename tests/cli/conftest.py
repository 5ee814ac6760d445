"""CLI test fixtures: the real Typer app against the embedded backend or a live server.

Tests that take ``cli`` run twice: once embedded, once over a socket against a real uvicorn
server (``LOGITS_BASE_URL`` + ``LOGITS_API_KEY`` set, as a user would).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from logits_cli.cli.main import app


@dataclass
class Cli:
    backend: str
    server: Any = None

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, prog_name="logits")

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
        return result

    def lines(self, *args: str) -> list[str]:
        return self.ok(*args).stdout.splitlines()


def invoke(args: Sequence[str], input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, prog_name="logits")


@pytest.fixture(params=["embedded", "socket"])
def cli(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Cli:
    if request.param == "socket":
        server = request.getfixturevalue("live_server")
        monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
        return Cli("socket", server)
    return Cli("embedded")


@pytest.fixture
def run(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh run on the tiny model, exported as LOGITS_RUN."""
    run_id = cli.ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q").stdout
    run_id = run_id.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return run_id
