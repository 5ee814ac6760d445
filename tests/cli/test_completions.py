"""The committed completion scripts are what the app generates today, and completion of
paths and run ids reads the local cache only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from logits_cli.cli.completion_cache import CACHE_FILE_NAME, complete_path, complete_run, remember
from logits_cli.cli.main import app

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"
REGENERATE = (
    "for s in bash zsh fish; do _LOGITS_COMPLETE=source_$s logits > completions/logits.$s; done"
)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell: str) -> None:
    result = CliRunner().invoke(
        app, [], env={"_LOGITS_COMPLETE": f"source_{shell}"}, prog_name="logits"
    )
    assert result.exit_code == 0
    committed = (COMPLETIONS / f"logits.{shell}").read_text()
    assert result.stdout == committed, f"completions/logits.{shell} is stale; run: {REGENERATE}"


def test_cache_feeds_completion(isolated_env: Path) -> None:
    remember(isolated_env, runs=["run-a"], paths=["logits://run-a/weights/s1"])
    remember(isolated_env, runs=["run-b"], paths=["logits://run-b/weights/s2"])
    assert complete_run("run-") == ["run-b", "run-a"]
    assert complete_path("logits://run-a") == ["logits://run-a/weights/s1"]
    result = CliRunner().invoke(
        app,
        [],
        env={
            "_LOGITS_COMPLETE": "complete_bash",
            "COMP_WORDS": "logits ckpt info logits://run-b",
            "COMP_CWORD": "3",
        },
        prog_name="logits",
    )
    assert result.stdout.split() == ["logits://run-b/weights/s2"]


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"runs": "x", "paths": [3]}'])
def test_corrupt_cache_completes_nothing(isolated_env: Path, content: str) -> None:
    (isolated_env / CACHE_FILE_NAME).write_text(content)
    assert complete_run("") == []
    assert complete_path("") == []
    remember(isolated_env, runs=["fresh"])
    assert json.loads((isolated_env / CACHE_FILE_NAME).read_text())["runs"] == ["fresh"]


def test_missing_cache_completes_nothing() -> None:
    assert complete_run("") == [] and complete_path("logits://") == []


@pytest.mark.parametrize("command", ["ls", "sync"])
def test_run_arguments_complete_from_the_cache(isolated_env: Path, command: str) -> None:
    remember(isolated_env, runs=["run-a", "other"])
    result = CliRunner().invoke(
        app,
        [],
        env={
            "_LOGITS_COMPLETE": "complete_bash",
            "COMP_WORDS": f"logits ckpt {command} run-",
            "COMP_CWORD": "3",
        },
        prog_name="logits",
    )
    assert result.stdout.split() == ["run-a"]
