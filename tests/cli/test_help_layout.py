"""Help pages write positional arguments plainly (``PATH...``, ``[RUN]...``: no ``{PATH}``,
no Python type) through Typer's public ``cls`` hook, and no module reaches into Typer's or
Click's private API (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from logits_cli.cli.help_layout import PlainArgumentsCommand
from logits_cli.cli.main import app

PACKAGE = Path(__file__).resolve().parents[2] / "logits_cli"


def leaf_commands() -> list[tuple[list[str], Any]]:
    found = []

    def walk(command: Any, words: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            found.append((words, command))
        for name, child in (children or {}).items():
            walk(child, [*words, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_writes_its_arguments_plainly() -> None:
    leaves = leaf_commands()
    assert len(leaves) > 20
    for words, command in leaves:
        assert isinstance(command, PlainArgumentsCommand), words
        page = CliRunner().invoke(app, [*words, "--help"], prog_name="logits").stdout
        usage = page.splitlines()[0]
        assert usage.startswith(f"Usage: logits {' '.join(words)} [OPTIONS]"), usage
        assert not re.search(r"[{}<>]", usage), usage
        assert "<list[" not in page and "<str>" not in page, words


def test_a_listed_argument_has_its_help_and_no_type() -> None:
    page = CliRunner().invoke(app, ["ckpt", "download", "--help"], prog_name="logits").stdout
    assert page.splitlines()[0] == "Usage: logits ckpt download [OPTIONS] PATH..."
    arguments = page.split("\nArguments:\n", 1)[1].split("\n\n", 1)[0]
    assert arguments.split()[:3] == ["PATH", "Checkpoint", "paths:"], arguments
    assert "<" not in arguments
    sync = CliRunner().invoke(app, ["ckpt", "sync", "--help"], prog_name="logits").stdout
    assert sync.splitlines()[0] == "Usage: logits ckpt sync [OPTIONS] [RUN]..."


def test_no_private_typer_or_click_api() -> None:
    private = re.compile(r"\b(typer|click)\._|_usage_display_name|TyperArgument\.\w+ =")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []
