"""Issue 8 F1: a run id or path segment `.`/`..` never re-targets a request.

`logits ckpt rm --run .. --yes` once deleted every checkpoint of every run, because httpx
folds `/training_runs/../checkpoints` into the user-wide listing. Every command that takes a
run or a path must refuse such input with exit 2 and touch nothing, on both backends.
"""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Cli

DOT_RUNS = [".", "..", "...", "a/..", "%2e%2e", "..\\x"]
DOT_PATHS = [
    "logits://../weights/s1",
    "logits://./weights/s1",
    "tinker://../weights/s1",
    "logits://RUN/../s1",
    "logits://RUN/weights/..",
    "logits://RUN/weights/.",
    "logits://RUN/%2e%2e/s1",
    "logits://../s1",
]


def _commands_with_run(dest: str) -> list[list[str]]:
    return [
        ["ckpt", "ls", "{run}"],
        ["ckpt", "rm", "--run", "{run}", "--yes"],
        ["ckpt", "rm", "--run", "{run}", "--yes", "--keep-last", "0"],
        ["ckpt", "ttl", "--run", "{run}", "--set", "1h"],
        ["ckpt", "sync", "{run}", "-o", dest],
        ["ckpt", "save", "--run", "{run}", "x1"],
        ["ckpt", "load", "--run", "{run}", "logits://RUN/weights/s1"],
        ["runs", "info", "{run}"],
    ]


def _commands_with_path(dest: str) -> list[list[str]]:
    return [
        ["ckpt", "info", "{path}"],
        ["ckpt", "rm", "{path}", "--yes"],
        ["ckpt", "ttl", "{path}", "--set", "1h"],
        ["ckpt", "publish", "{path}"],
        ["ckpt", "unpublish", "{path}"],
        ["ckpt", "url", "{path}"],
        ["ckpt", "download", "{path}", "-o", dest],
        ["ckpt", "load", "{path}"],
        ["runs", "create", "--from", "{path}"],
    ]


def _state(cli: Cli) -> list[dict[str, object]]:
    listed = json.loads(cli.ok("ckpt", "ls", "--json").stdout)
    runs = json.loads(cli.ok("runs", "ls", "--json").stdout)
    rows = [{k: c[k] for k in ("tinker_path", "public", "expires_at")} for c in listed]
    return [*sorted(rows, key=lambda c: str(c["tinker_path"])), {"runs": len(runs)}]


@pytest.fixture
def two_runs(cli: Cli) -> list[str]:
    """Two runs with a checkpoint each: what a re-targeted `rm` would destroy."""
    runs = []
    for _ in range(2):
        run_id = cli.ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q")
        runs.append(run_id.stdout.strip())
        cli.ok("ckpt", "save", "--run", runs[-1], "s1", "-q")
    return runs


def test_dot_run_ids_are_refused_and_nothing_is_touched(
    cli: Cli, two_runs: list[str], tmp_path: pytest.TempPathFactory
) -> None:
    before = _state(cli)
    dest = str(tmp_path / "out")  # type: ignore[operator]
    for template in _commands_with_run(dest):
        for run_id in DOT_RUNS:
            args = [a.replace("{run}", run_id).replace("RUN", two_runs[0]) for a in template]
            result = cli(*args)
            assert result.exit_code == 2, (args, result.exit_code, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            assert result.stderr.startswith("Error: "), (args, result.stderr)
            assert result.stdout == "", (args, result.stdout)
    assert _state(cli) == before
    assert not (tmp_path / "out").exists()  # type: ignore[operator]


def test_dot_segments_in_paths_are_refused_and_nothing_is_touched(
    cli: Cli, two_runs: list[str], tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITS_RUN", two_runs[0])
    before = _state(cli)
    dest = str(tmp_path / "out")  # type: ignore[operator]
    for template in _commands_with_path(dest):
        for path in DOT_PATHS:
            target = path.replace("RUN", two_runs[0])
            args = [a.replace("{path}", target) for a in template]
            result = cli(*args)
            assert result.exit_code == 2, (args, result.exit_code, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            assert result.stdout == "", (args, result.stdout)
    assert _state(cli) == before
    assert not (tmp_path / "out").exists()  # type: ignore[operator]


def test_dot_run_in_environment_is_refused(
    cli: Cli, two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _state(cli)
    monkeypatch.setenv("LOGITS_RUN", "..")
    for args in (["ckpt", "save", "x2"], ["ckpt", "load", "logits://R/weights/s1"]):
        args = [a.replace("R", two_runs[0]) if a.startswith("logits://") else a for a in args]
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert _state(cli) == before
