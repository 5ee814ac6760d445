"""Shared fixtures. Every test gets its own LOGITS_HOME and a clean LOGITS_*/TINKER_* env."""

from __future__ import annotations

import os
from pathlib import Path

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
