"""``--help`` pages answered from the help cache (cli/help_cache.py): real processes, the
page compared with the one Typer prints itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Prints the page, then on stderr whether Typer was imported to answer.
PROBE = (
    "import sys; from logits_cli.cli import main; sys.argv = ['logits', *sys.argv[1:]]\n"
    "try:\n    main()\n"
    "finally:\n    sys.stderr.write('typer=' + str('typer' in sys.modules))"
)


def help_page(home: Path, *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOGITS_HOME": str(home), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    "args", [("--help",), ("ckpt", "--help"), ("ckpt", "download", "-h"), ("server", "-h")]
)
def test_the_second_page_is_the_same_and_needs_no_typer(tmp_path: Path, args: tuple[str]) -> None:
    first = help_page(tmp_path, *args)
    assert first.returncode == 0 and first.stderr == "typer=True", first.stderr
    assert "Usage: logits" in first.stdout
    second = help_page(tmp_path, *args)
    assert second.returncode == 0 and second.stderr == "typer=False", second.stderr
    assert second.stdout == first.stdout


@pytest.mark.parametrize("columns", [60, 120])
def test_a_page_is_kept_per_width(tmp_path: Path, columns: int) -> None:
    # Another width first: its page must not answer for this one.
    at_80 = help_page(tmp_path / "shared", "ckpt", "ls", "--help", columns=80)
    cached = help_page(tmp_path / "shared", "ckpt", "ls", "--help", columns=columns)
    again = help_page(tmp_path / "shared", "ckpt", "ls", "--help", columns=columns)
    fresh = help_page(tmp_path / "fresh", "ckpt", "ls", "--help", columns=columns)
    assert cached.stderr == "typer=True" and again.stderr == "typer=False"
    assert cached.stdout == again.stdout == fresh.stdout != at_80.stdout


def test_failures_are_never_kept(tmp_path: Path) -> None:
    for _ in range(2):
        done = help_page(tmp_path, "ckpt", "bogus", "--help")
        assert done.returncode == 2 and "No such command" in done.stderr
    assert not list((tmp_path / "help-cache").glob("*.txt"))


def test_pages_of_another_installation_go_and_an_unwritable_cache_is_ignored(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "help-cache"
    cache.mkdir()
    stale = cache / "0000000000000000-0000.txt"
    stale.write_text("Usage: an older logits\n")
    assert "Usage: logits" in help_page(tmp_path, "--help").stdout
    assert not stale.exists()

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = help_page(locked, "runs", "--help")
    assert done.returncode == 0 and "Usage: logits runs" in done.stdout
    if os.geteuid() != 0:  # root writes anyway
        assert not (locked / "help-cache").exists()
