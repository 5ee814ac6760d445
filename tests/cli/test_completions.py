"""The committed completion scripts are what the app generates today, and completion of
paths and run ids reads the local cache only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from logits_cli.cli.completion_cache import (
    CACHE_FILE_NAME,
    answer_without_typer,
    complete_path,
    complete_run,
    remember,
)
from logits_cli.cli.main import app

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"
REGENERATE = "for s in zsh fish; do _LOGITS_COMPLETE=source_$s logits > completions/logits.$s; done"
# The call into the program that Typer's bash script makes, and ours must make too.
PROTOCOL_CALL = re.compile(
    r"env COMP_WORDS=\"\$\{(?:COMP_WORDS|words)\[\*\]\}\" \\\n\s+COMP_CWORD=\$(?:COMP_CWORD|cword) "
    r"\\\n\s+_LOGITS_COMPLETE=complete_bash \$1 "
)


def generated(shell: str) -> str:
    result = CliRunner().invoke(
        app, [], env={"_LOGITS_COMPLETE": f"source_{shell}"}, prog_name="logits"
    )
    assert result.exit_code == 0
    return result.stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_scripts_are_current(shell: str) -> None:
    committed = (COMPLETIONS / f"logits.{shell}").read_text()
    assert generated(shell) == committed, f"completions/logits.{shell} is stale; run: {REGENERATE}"


def test_shipped_bash_script_speaks_the_protocol_typer_generates() -> None:
    """completions/logits.bash is ours (it keeps logits:// paths whole); it must still call
    the program exactly as Typer's generated script does, and register the same way."""
    typer_script = generated("bash")
    ours = (COMPLETIONS / "logits.bash").read_text()
    assert PROTOCOL_CALL.search(typer_script), "Typer changed its bash protocol; update ours"
    assert PROTOCOL_CALL.search(ours)
    (register,) = [line for line in typer_script.splitlines() if line.startswith("complete ")]
    assert register in ours.splitlines()
    assert "__ltrim_colon_completions" in ours and "_get_comp_words_by_ref -n :" in ours


def test_cache_feeds_completion(isolated_env: Path) -> None:
    remember(isolated_env, runs=["run-a"], paths=["logits://run-a/weights/s1"])
    remember(isolated_env, runs=["run-b"], paths=["logits://run-b/weights/s2"])
    assert complete_run("run-") == ["run-b", "run-a"]
    assert complete_path("logits://run-a") == [
        "logits://run-a/weights/s1",
        "logits://run-a/weights/@latest",
    ]
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
    assert result.stdout.split() == ["logits://run-b/weights/s2", "logits://run-b/weights/@latest"]


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


@pytest.mark.parametrize(
    "words",
    [
        "logits ckpt download logits://",
        "logits ckpt info tinker://run-a/",
        "logits ckpt rm logits://x",
    ],
)
def test_the_fast_uri_answer_is_the_one_typer_gives(isolated_env: Path, words: str) -> None:
    """The console entry answers a URI word before loading Typer; it must say exactly what
    the full completion machinery would."""
    remember(
        isolated_env, runs=["run-a"], paths=["logits://run-a/weights/s1", "tinker://x/weights/y"]
    )
    env = {"_LOGITS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "3"}
    through_typer = CliRunner().invoke(app, [], env=env, prog_name="logits").stdout
    fast = answer_without_typer(env)
    assert fast is not None and fast.split() == through_typer.split()
    assert fast.split(), "the cache has candidates for each of these words"


@pytest.mark.parametrize(
    "words",
    [
        "logits ckpt download s",
        "logits ckpt info sam",
        "logits ckpt rm w",
        "logits ckpt url --run run-b ",
        "logits ckpt download --run=run-b o",
    ],
)
def test_the_fast_bare_name_answer_is_the_one_typer_gives(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, words: str
) -> None:
    """Bare NAME and KIND/NAME of $LOGITS_RUN (or the line's --run) are answered before
    Typer loads, and say what Typer would; after an option (maybe its value) Typer answers."""
    remember(
        isolated_env,
        paths=[
            "tinker://run-a/weights/step_1",
            "tinker://run-a/sampler_weights/sam_1",
            "logits://run-b/weights/other",
        ],
    )
    monkeypatch.setenv("LOGITS_RUN", "run-a")
    cword = str(len(words.split(" ")) - 1)
    env = {"_LOGITS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    through_typer = CliRunner().invoke(app, [], env=env, prog_name="logits").stdout
    fast = answer_without_typer(env)
    assert fast is not None and fast.split() == through_typer.split()
    assert fast.split(), "the cache has candidates for each of these words"
    after_an_option = {**env, "COMP_WORDS": "logits ckpt download -o s", "COMP_CWORD": "4"}
    assert answer_without_typer(after_an_option) is None


def test_command_and_option_names_are_typers_own_completion(isolated_env: Path) -> None:
    """No table of names is kept beside the app: a TAB on a command or option name is left
    to Typer, which answers it from the command tree itself (every group and command)."""
    import typer.main

    requests = []

    def walk(command: Any, words: list[str]) -> None:
        line = " ".join(["logits", *words])
        children = {n: c for n, c in getattr(command, "commands", {}).items() if not c.hidden}
        requests.append((f"{line} --he", ["--help"]))
        if children:
            requests.append((f"{line} ", sorted(children)))
        for name, child in children.items():
            walk(child, [*words, name])

    walk(typer.main.get_command(app), [])
    assert len(requests) > 30
    for words, expected in requests:
        env = {
            "_LOGITS_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
        assert answer_without_typer(env) is None, words
        through_typer = CliRunner().invoke(app, [], env=env, prog_name="logits").stdout
        assert sorted(through_typer.split()) == expected, words


def test_other_words_are_left_to_typer() -> None:
    env = {
        "_LOGITS_COMPLETE": "complete_bash",
        "COMP_WORDS": "logits --home /tmp ckpt ",
        "COMP_CWORD": "4",
    }
    assert answer_without_typer(env) is None
    assert answer_without_typer({"COMP_WORDS": "logits ckpt info logits://"}) is None
    leaf_argument = {**env, "COMP_WORDS": "logits ckpt info ", "COMP_CWORD": "3"}
    assert answer_without_typer(leaf_argument) is None


HOSTILE_PATHS = [
    "logits://run-a/weights/a;touch${IFS}x",
    "logits://run-a/weights/d\nrm -rf x",
    "logits://run-a/weights/e\x1b]0;owned\x07",
    "logits://run-a\u009b2J/weights/c1",
    "logits://run-a/weights/../x",
]
HOSTILE_RUNS = ["r\nrm -rf x", "r\x1b[2J", "r\u009b2J", "r x", ""]


def test_only_paths_that_parse_and_printable_runs_are_cached(isolated_env: Path) -> None:
    remember(
        isolated_env,
        runs=[*HOSTILE_RUNS, "run-a", "r;ok$"],
        paths=[*HOSTILE_PATHS, "logits://run-a/weights/ok", "logits://run-a/new_kind/n1"],
    )
    cached = json.loads((isolated_env / CACHE_FILE_NAME).read_text())
    assert cached == {
        "runs": ["run-a", "r;ok$"],  # opaque run ids may hold ';' and '$': bash quotes them
        "paths": ["logits://run-a/weights/ok", "logits://run-a/new_kind/n1"],
    }


def test_hostile_entries_planted_in_the_cache_are_not_offered(isolated_env: Path) -> None:
    (isolated_env / CACHE_FILE_NAME).write_text(
        json.dumps(
            {
                "runs": [*HOSTILE_RUNS, "run-a"],
                "paths": [*HOSTILE_PATHS, "logits://run-a/weights/ok"],
                "other": ["x"],
            }
        )
    )
    assert complete_run("") == ["run-a"]
    assert complete_path("logits://") == [
        "logits://run-a/weights/ok",
        "logits://run-a/weights/@latest",
    ]
    env = {
        "_LOGITS_COMPLETE": "complete_bash",
        "COMP_WORDS": "logits ckpt info logits://run-a/",
        "COMP_CWORD": "3",
    }
    assert answer_without_typer(env) == "logits://run-a/weights/ok\nlogits://run-a/weights/@latest"


def test_a_symlinked_cache_is_absent_and_its_target_untouched(
    isolated_env: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"runs": ["planted"], "paths": []}))
    (isolated_env / CACHE_FILE_NAME).symlink_to(victim)
    assert complete_run("") == []
    remember(isolated_env, runs=["run-a"])
    assert json.loads(victim.read_text()) == {"runs": ["planted"], "paths": []}
    cache = isolated_env / CACHE_FILE_NAME
    assert not cache.is_symlink() and complete_run("") == ["run-a"]


def test_a_cache_of_another_user_is_absent_and_replaced(isolated_env: Path) -> None:
    cache = isolated_env / CACHE_FILE_NAME
    cache.write_text(json.dumps({"runs": ["planted"], "paths": ["logits://planted/weights/p"]}))
    os.chown(cache, 65534, 65534)  # the tests run as root: 65534 is someone else
    assert complete_run("") == [] and complete_path("logits://") == []
    remember(isolated_env, runs=["run-a"])
    assert cache.stat().st_uid == os.geteuid()
    assert json.loads(cache.read_text()) == {"runs": ["run-a"], "paths": []}


def test_a_home_of_another_user_is_neither_read_nor_written(isolated_env: Path) -> None:
    cache = isolated_env / CACHE_FILE_NAME
    cache.write_text(json.dumps({"runs": ["planted"], "paths": []}))
    os.chown(isolated_env, 65534, 65534)
    assert complete_run("") == []
    remember(isolated_env, runs=["run-a"])  # silently not written: completion never fails
    assert json.loads(cache.read_text()) == {"runs": ["planted"], "paths": []}
