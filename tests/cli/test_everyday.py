"""Everyday commands where a user tripped (issue 23): bare names with --run everywhere a
path is taken, help that lists only options the command accepts, the smaller messages."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logits_cli.cli.server_notices import is_loopback, without_password
from logits_cli.config import key_command_stderr
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
        for piece in re.split(r"(logits(?: [a-z][a-z-]*)+|[|;)]|\$\(|#)", unit):
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
    download = cli("ckpt", "download", "step_1")
    assert download.exit_code == 2
    assert download.stderr.splitlines()[0] == (
        f"Error: 'step_1' names no run; pass --run RUN, set LOGITS_RUN, {ways}"
    )
    info = cli("runs", "info")
    assert info.exit_code == 2
    assert info.stderr.splitlines()[0] == "Error: no run given; pass --run RUN or set LOGITS_RUN"
    lone = cli("runs", "create", "--run", "r1", "-m", "logits/tiny")
    assert lone.exit_code == 2
    assert lone.stderr == "Error: --run needs --from PATH\n"


# -- point 10: what a command says ---------------------------------------------------------


def test_ttl_over_a_run_that_matches_nothing_says_so_on_stderr(cli: Cli, run: str) -> None:
    cli.ok("ckpt", "save", "only_training")
    result = cli("ckpt", "ttl", "--run", run, "--type", "sampler", "--set", "7d")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "No checkpoints matched.\n")
    as_json = cli("ckpt", "ttl", "--run", run, "--type", "sampler", "--set", "7d", "--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
    quiet = cli("ckpt", "ttl", "--run", run, "--type", "sampler", "--set", "7d", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_counts_are_written_in_the_singular_for_one(cli: Cli, run: str) -> None:
    one = cli.lines("ckpt", "save", "c1")[0]
    two = cli.lines("ckpt", "save", "c2")[0]
    dry = cli("ckpt", "rm", "--run", run, "--dry-run")
    assert dry.stderr == "Would delete 2 checkpoints, kept 0\n"
    deleted = cli("ckpt", "rm", one, "--yes")
    assert (deleted.stdout, deleted.stderr) == (f"{one}\n", "Deleted 1 checkpoint\n")
    too_many = cli("ckpt", "rm", "--run", run, "--max-delete", "0", "--yes")
    assert too_many.exit_code == 2
    assert too_many.stderr == (
        "Error: 1 checkpoint matched, more than --max-delete 0; nothing deleted\n"
    )
    assert cli.lines("ckpt", "ls", "-q") == [two]


def test_revoking_one_key_says_one_key() -> None:
    key = invoke(["server", "keys", "create", "bob", "-q"]).stdout.strip()
    result = invoke(["server", "keys", "revoke", key[:12]])
    assert (result.exit_code, result.stderr) == (0, f"Revoked 1 key starting with {key[:12]}\n")


@pytest.fixture
def embedded_run(monkeypatch: pytest.MonkeyPatch) -> tuple[Cli, str]:
    """The embedded backend (what a pty's subprocess reaches) and a run as LOGITS_RUN."""
    cli = Cli("embedded")
    run = _new_run(cli)
    monkeypatch.setenv("LOGITS_RUN", run)
    return cli, run


def _on_terminal(*args: str) -> str:
    from tests.cli.test_terminal import run_on_terminal

    code, screen = run_on_terminal(list(args), columns=120)
    assert code == 0, screen
    return screen


@pytest.mark.slow
def test_info_shows_relative_times_beside_utc_on_a_terminal_and_exact_times_piped(
    embedded_run: tuple[Cli, str],
) -> None:
    cli, _ = embedded_run
    saved = json.loads(cli.ok("ckpt", "save", "t1", "--ttl", "3d", "--json").stdout)
    screen = _on_terminal("ckpt", "info", "t1")
    created = re.search(r"^created +(.*)$", screen, re.M)
    expires = re.search(r"^expires +(.*)$", screen, re.M)
    assert created and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\dZ \((just now|\d+s ago)\)", created.group(1).strip()
    )
    assert expires and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\dZ \(in (2d|3d|71h|72h)\)", expires.group(1).strip()
    )
    run_screen = _on_terminal("runs", "info")
    assert re.search(r"^last request +\S+ \S+ \((just now|\d+s ago)\)\s*$", run_screen, re.M)
    piped = dict(line.split("\t", 1) for line in cli.lines("ckpt", "info", "t1"))
    assert piped["created"] == saved["time"]
    assert piped["expires"] == saved["expires_at"]


@pytest.mark.slow
def test_runs_ls_latest_is_the_newest_checkpoint_of_either_kind(
    embedded_run: tuple[Cli, str],
) -> None:
    cli, run = embedded_run
    cli.ok("ckpt", "save", "only_sampler", "--sampler")
    (row,) = [line for line in _on_terminal("runs", "ls").splitlines() if line.startswith(run)]
    assert row.split()[-1] == "sampler_weights/only_sampler"
    cli.ok("ckpt", "save", "then_training")
    (row,) = [line for line in _on_terminal("runs", "ls").splitlines() if line.startswith(run)]
    assert row.split()[-1] == "weights/then_training"
    # Piped, the column is still the latest training checkpoint's full path.
    (piped,) = cli.lines("runs", "ls")
    assert piped.split("\t")[-1].endswith(f"{run}/weights/then_training")


def test_paths_built_from_bare_names_use_the_servers_scheme(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(uri_scheme="tinker")
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    cli = Cli("socket", server)
    run = _new_run(cli)
    monkeypatch.setenv("LOGITS_RUN", run)
    weights = cli.lines("ckpt", "save", "s1")[0]
    sampler = cli.lines("ckpt", "save", "s2", "--sampler")[0]
    assert weights == f"tinker://{run}/weights/s1"
    assert cli.lines("ckpt", "publish", "s1", "sampler_weights/@latest") == [
        f"{weights}\ttrue\ttrue",
        f"{sampler}\ttrue\ttrue",
    ]
    missing = cli("ckpt", "info", "nope")
    assert (missing.exit_code, missing.stderr) == (
        4,
        f"Error: checkpoint tinker://{run}/weights/nope not found\n",
    )
    # A full URI as typed is shown as typed, and asks the server nothing more.
    typed = f"logits://{run}/weights/s1"
    assert cli.lines("ckpt", "unpublish", typed) == [f"{typed}\tfalse\ttrue"]
    assert cli.lines("ckpt", "rm", "s1", "--yes") == [weights]


# -- point 13: the server says where its store is; config show names config.toml ---------


def _server_start_lines(home: Path, *options: str) -> list[str]:
    """The stderr lines of `logits server start` up to uvicorn's "running on", then stopped
    with Ctrl-C; every wait bounded."""
    command = ["server", "start", "--port", "0", "--home", str(home), *options]
    server = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = server.stderr
    assert stderr is not None
    said: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stderr:
            said.put(line)

    threading.Thread(target=read, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while not any("running on http://" in line for line in lines):
            lines.append(said.get(timeout=max(0.1, deadline - time.monotonic())).rstrip("\n"))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    return lines


WARNING = (
    "Warning: no API keys, and listening on 0.0.0.0: every request will be refused until you "
    "create one with `logits server keys create USER`"
)


@pytest.mark.slow
def test_server_start_names_its_store_and_warns_of_no_keys_beyond_loopback(
    tmp_path: Path,
) -> None:
    home = tmp_path / "srv"
    store = home / "store"
    lines = _server_start_lines(home, "--host", "0.0.0.0")
    assert lines[0] == f"Store: {store} (metadata: {store}/meta.sqlite3; blobs: {store}/blobs)"
    assert lines[1] == WARNING
    assert WARNING not in _server_start_lines(home)  # 127.0.0.1: only this machine
    key = invoke(["server", "keys", "create", "alice", "--home", str(home), "-q"]).stdout
    assert key.strip()
    assert WARNING not in _server_start_lines(home, "--host", "0.0.0.0")


def test_a_database_url_is_shown_without_its_password() -> None:
    shown = without_password("postgresql://app:s3cret@db:5432/logits?sslmode=require&password=x")
    assert shown == "postgresql://app@db:5432/logits?sslmode=require"
    assert without_password("s3://bucket/prefix") == "s3://bucket/prefix"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("host.lan")


def test_config_show_names_the_config_file_it_reads_or_would_read(
    isolated_env: Path,
) -> None:
    path = isolated_env / "config.toml"
    rows = [line.split("\t") for line in invoke(["config", "show"]).stdout.splitlines()]
    assert rows[1] == ["config_file", str(path), "absent"]
    path.write_text('[profiles.team]\nbase_url = "http://127.0.0.1:9"\n')
    rows = [line.split("\t") for line in invoke(["config", "show"]).stdout.splitlines()]
    assert rows[1] == ["config_file", str(path), "read"]
    shown = json.loads(invoke(["config", "show", "--json"]).stdout)
    assert shown["config_file"] == {"path": str(path), "exists": True}


def test_a_failed_key_command_shows_the_end_of_its_stderr_never_its_stdout(
    live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITS_BASE_URL", live_server.base_url)
    noisy = "; ".join(f"echo line{n} >&2" for n in range(1, 6))
    monkeypatch.setenv(
        "LOGITS_API_KEY_CMD",
        f"echo tml-secret-key; {noisy}; echo 'denied tml-secret-key' >&2; exit 3",
    )
    result = invoke(["runs", "ls"])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "Error: the API key command exited with status 3: line4 | line5 | denied tml-secr…ey",
        "Hint: check LOGITS_API_KEY_CMD",
    ]
    assert "tml-secret-key" not in result.output
    monkeypatch.setenv("LOGITS_API_KEY_CMD", "echo 'vault: no token' >&2")
    empty = invoke(["runs", "ls"])
    assert empty.exit_code == 3
    assert empty.stderr.splitlines()[0] == (
        "Error: the API key command printed nothing: vault: no token"
    )
    long = key_command_stderr(b"start" + b"x" * 5000 + b"end\n", None)
    assert long.startswith(": …") and long.endswith("xend") and len(long) == 2 + 300
