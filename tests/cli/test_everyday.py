"""Everyday commands where a user tripped (issue 23): bare names with --run everywhere a
path is taken, help that lists only options the command accepts, the smaller messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from tests.cli.conftest import Cli, invoke

# -- help lists only options the command accepts ------------------------------------------


def _help(path: list[str]) -> str:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    return result.stdout


def _commands(path: list[str]) -> Iterator[tuple[list[str], str]]:
    """Every command and group, walked through the help pages themselves."""
    text = _help(path)
    yield path, text
    _, _, listing = text.partition("\nCommands:\n")
    for line in listing.splitlines():
        found = re.match(r"  (\S+)", line)
        if found:
            yield from _commands([*path, found.group(1)])


OPTION = re.compile(r"(?<![\w$-])(--?[a-z][a-z-]*)")


def _listed_options(options_section: str) -> dict[str, bool]:
    """The Options section's names, each with whether it is shown taking a value."""
    listed: dict[str, bool] = {}
    for line in options_section.splitlines():
        if not re.match(r"  -", line):
            continue
        names = re.split(r"\s{2,}", line.strip())[0]  # "-o, --output DIR", "--a / --b"
        takes_value = " " in names.replace(", ", ",").replace(" / ", "/")
        for shown in re.split(r", | / ", names):
            listed[shown.split(" ")[0]] = takes_value
    return listed


def _mentions(path: list[str], body: str, known: set[str]) -> Iterator[tuple[str, str]]:
    """(command, option) for every option the help text names: an option written after
    `logits CMD…` belongs to that command; in prose any other belongs to the command whose
    help it is, in an example line to another program (`curl -o`, `| head -1`). Example
    lines are read one by one, prose a paragraph at a time (it is wrapped)."""
    units: list[tuple[str, str | None]] = []
    for paragraph in body.split("\n\n"):
        lines = paragraph.splitlines()
        if all(line.startswith("    ") for line in lines):
            units.extend((line, None) for line in lines)
        else:
            units.append((" ".join(line.strip() for line in lines), " ".join(path)))
    for unit, prose_owner in units:
        owner = prose_owner
        for piece in re.split(r"(logits(?: [a-z]+)+|[|;)]|\$\(|#)", unit):
            if piece.startswith("logits"):
                words = piece.split()[1:]
                while words and " ".join(words) not in known:
                    words.pop()
                owner = " ".join(words)
            elif piece in ("|", ";", ")", "$(", "#"):
                owner = prose_owner
            elif owner is not None:
                for option in OPTION.findall(piece):
                    yield owner, option


def test_every_option_a_help_page_names_is_accepted_by_its_command() -> None:
    pages = {" ".join(path): text for path, text in _commands([])}
    assert {"ckpt info", "ckpt url", "runs create", "server keys create", "config show"} <= set(
        pages
    )
    tried = 0
    for command, text in pages.items():
        body, _, options = text.partition("\nOptions:\n")
        named = set(_mentions(command.split(), body, set(pages)))
        named |= {(command, name) for name in _listed_options(options)}
        for owner, option in sorted(named):
            takes_value = _listed_options(pages[owner].partition("\nOptions:\n")[2]).get(option)
            given = [option, "x"] if takes_value else [option]
            # --help first: it is eager and exits before any other option acts (no server
            # starts, no completion is installed), but only after every option is parsed.
            args = [*owner.split(), "--help", *given]
            result = invoke(args)
            assert "No such option" not in result.output, (command, args, result.output)
            assert result.exit_code == 0, (command, args, result.output)
            tried += 1
    assert tried > 100


# -- bare NAME and KIND/NAME with --run, in every command that takes a path ---------------


def _new_run(cli: Cli) -> str:
    return cli.ok(
        "runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q"
    ).stdout.strip()


def test_every_path_command_takes_a_bare_name_in_the_run_of_its_run_option(cli: Cli) -> None:
    run = _new_run(cli)
    other = _new_run(cli)  # a run of the same user, to show --run is not ignored
    weights = cli.lines("ckpt", "save", "step_1", "--run", run)[0]
    sampler = cli.lines("ckpt", "save", "step_1", "--sampler", "--run", run)[0]
    assert cli.lines("ckpt", "info", "step_1", "--run", run, "-q") == [weights]
    assert cli.lines("ckpt", "info", "sampler_weights/@latest", "-r", run, "-q") == [sampler]
    assert cli("ckpt", "info", "step_1", "--run", other).exit_code == 4
    assert len(cli.lines("ckpt", "url", "step_1", "--run", run)) == 1
    assert cli.lines("ckpt", "publish", "sampler_weights/step_1", "--run", run) == [
        f"{sampler}\ttrue\ttrue"
    ]
    assert cli.lines("ckpt", "unpublish", "sampler_weights/step_1", "--run", run) == [
        f"{sampler}\tfalse\ttrue"
    ]
    ttl = cli.ok("ckpt", "ttl", "step_1", "--run", run, "--set", "7d", "--json")
    assert [c["tinker_path"] for c in json.loads(ttl.stdout)] == [weights]
    assert cli.lines("ckpt", "load", "step_1", "--run", run) == [weights]
    created = cli.lines("runs", "create", "--from", "step_1", "--run", run)
    assert len(created) == 1 and created[0] not in (run, other)
    assert cli.lines("runs", "info", "--run", run, "-q") == [run]
    assert cli.lines("ckpt", "rm", "weights/step_1", "--run", run, "--yes") == [weights]
    assert cli.lines("ckpt", "ls", "-q", run) == [sampler]


def test_logits_run_is_the_run_of_bare_names_for_runs_create_and_runs_info(
    cli: Cli, run: str
) -> None:
    cli.ok("ckpt", "save", "step_1000")
    created = cli.lines("runs", "create", "--from", "step_1000")
    assert len(created) == 1 and created[0] != run
    assert cli.lines("runs", "info", "-q") == [run]
    assert cli.lines("runs", "info", run, "--run", run, "-q") == [run]
    both = cli("runs", "info", run, "--run", created[0])
    assert both.exit_code == 2
    assert both.stderr == f"Error: two runs given: {run} and --run {created[0]}; give one\n"


def test_without_a_run_each_message_names_only_options_the_command_takes(cli: Cli) -> None:
    ways = "or give the full path logits://RUN/KIND/NAME"
    for args in (["ckpt", "info"], ["ckpt", "url"], ["ckpt", "publish"], ["ckpt", "ttl"]):
        result = cli(*args, "step_1", *(["--set", "7d"] if args[1] == "ttl" else []))
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.splitlines()[0] == (
            f"Error: 'step_1' names no run; pass --run RUN, set LOGITS_RUN, {ways}"
        )
    created = cli("runs", "create", "--from", "step_1")
    assert created.exit_code == 2
    assert created.stderr.splitlines()[0] == (
        f"Error: 'step_1' names no run; pass --run RUN, set LOGITS_RUN, {ways}"
    )
    # download has no --run of its own (yet): its message must not offer one.
    download = cli("ckpt", "download", "step_1")
    assert download.exit_code == 2
    assert download.stderr.splitlines()[0] == (
        f"Error: 'step_1' names no run; set LOGITS_RUN {ways}"
    )
    info = cli("runs", "info")
    assert info.exit_code == 2
    assert info.stderr.splitlines()[0] == "Error: no run given; pass --run RUN or set LOGITS_RUN"
    lone = cli("runs", "create", "--run", "r1", "-m", "logits/tiny")
    assert lone.exit_code == 2
    assert lone.stderr == "Error: --run needs --from PATH\n"
