"""``--help`` is read-only (issue 22: the help-page cache is gone; issue 21 G7: a symlinked
help-cache directory made ``logits runs --help`` delete every file in its target)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [("--help",), ("runs", "--help"), ("ckpt", "download", "-h")])
def test_help_writes_nothing_and_follows_no_planted_cache(tmp_path: Path, args: tuple[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (home / "help-cache").symlink_to(victim)
    before = sorted(p.name for p in home.iterdir())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGITS_", "TINKER_", "XDG_"))}
    env.update(LOGITS_HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0 and "Usage: logits" in done.stdout, done.stderr
    assert sorted(p.name for p in home.iterdir()) == before
    assert [p.name for p in victim.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "victim"]
