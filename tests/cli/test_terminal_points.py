"""The smaller points of the terminal experience (issue 12): exit codes, ambiguous units,
bare names, ``rm --json`` kept, ``verify`` going on, the completion cache, root options
given after the command, human units, table layout, the README's set-up line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logits_cli.cli.completion_cache import CACHE_FILE_NAME, complete_path, remember
from logits_cli.cli.main import misplaced_root_option
from logits_cli.cli.tables import KEEP, Column, layout_table, relative_time
from tests.cli.conftest import Cli, invoke

REPO = Path(__file__).resolve().parents[2]


def save(cli: Cli, name: str, *extra: str) -> dict:
    return json.loads(cli.ok("ckpt", "save", name, "--json", *extra).stdout)


# -- server keys revoke ----------------------------------------------------------------------


def test_revoking_a_prefix_that_matches_nothing_is_not_found() -> None:
    key = invoke(["server", "keys", "create", "alice", "-q"]).stdout.strip()
    result = invoke(["server", "keys", "revoke", "lg_nothing_like_it"])
    assert result.exit_code == 4, result.stderr
    error, hint = result.stderr.splitlines()
    assert error.startswith("Error: no API key starts with 'lg_nothing")
    assert hint == "Hint: `logits server keys ls` lists the prefixes"
    # The real key is untouched, and revoking it works.
    assert invoke(["server", "keys", "revoke", key[:12]]).exit_code == 0


# -- m: minutes or months ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ckpt", "ls", "--before", "1m"],
        ["ckpt", "ls", "--since", "3m"],
        ["ckpt", "rm", "--run", "r", "--before", "6m", "--yes"],
        ["ckpt", "ttl", "logits://r/weights/a", "--set", "1m"],
        ["ckpt", "save", "x", "--run", "r", "--ttl", "2h30m"],
    ],
)
def test_a_bare_m_for_an_age_or_ttl_is_refused_with_a_hint(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    error, hint = result.stderr.splitlines()
    assert re.fullmatch(
        r"Error: ambiguous duration '[0-9hm]+': 'm' could mean minutes or months", error
    )
    assert re.fullmatch(r"Hint: write '[0-9hmin]+' for minutes or '[0-9hmo]+' for months", hint)


def test_min_and_mo_are_minutes_and_months(cli: Cli, run: str) -> None:
    old = save(cli, "old")["tinker_path"]
    assert cli.lines("ckpt", "ls", "-q", "--before", "1mo") == []
    assert cli.lines("ckpt", "ls", "-q", "--since", "10min") == [old]
    (updated,) = json.loads(cli.ok("ckpt", "ttl", old, "--set", "1mo", "--json").stdout)
    expires = datetime.fromisoformat(updated["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    # In waits, m stays minutes.
    assert cli("ckpt", "save", "waited", "--timeout", "10m").exit_code == 0


# -- bare names ----------------------------------------------------------------------------------


def test_a_bare_name_or_kind_and_name_is_a_checkpoint_of_logits_run(cli: Cli, run: str) -> None:
    weights = save(cli, "step_1")["tinker_path"]
    sampler = save(cli, "step_1", "--sampler")["tinker_path"]
    assert cli.lines("ckpt", "info", "step_1", "-q") == [weights]
    assert cli.lines("ckpt", "info", "weights/step_1", "-q") == [weights]
    assert cli.lines("ckpt", "info", "sampler_weights/@latest", "-q") == [sampler]
    assert cli.lines("ckpt", "publish", "sampler_weights/step_1", "-q") == [sampler]
    assert cli.lines("ckpt", "rm", "step_1", "--run", run, "--yes") == [weights]
    assert cli.lines("ckpt", "ls", "-q") == [sampler]


def test_a_bare_name_without_a_run_says_how_to_give_one(cli: Cli) -> None:
    result = cli("ckpt", "info", "weights/step_1")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: 'weights/step_1' names no run; pass --run RUN, set LOGITS_RUN, or give the "
        "full path logits://RUN/KIND/NAME",
        "Hint: `logits ckpt ls -q` prints full paths",
    ]


# -- rm --json: kept ---------------------------------------------------------------------------


def test_rm_json_kept_holds_only_checkpoints_of_the_selected_type(cli: Cli, run: str) -> None:
    training = save(cli, "t1")["tinker_path"]
    older = save(cli, "s1", "--sampler")["tinker_path"]
    newer = save(cli, "s2", "--sampler")["tinker_path"]
    result = cli.ok(
        "ckpt", "rm", "--run", run, "--type", "sampler", "--keep-last", "1", "--yes", "--json"
    )
    answer = json.loads(result.stdout)
    assert answer["deleted"] == [older]
    assert answer["kept"] == [newer]  # not the training checkpoint --type left out
    assert sorted(cli.lines("ckpt", "ls", "-q")) == sorted([training, newer])


# -- verify goes on past a missing directory -------------------------------------------------------


def test_verify_reports_a_missing_directory_and_checks_the_others(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    path = save(cli, "v1")["tinker_path"]
    (local,) = cli.lines("ckpt", "download", path, "-o", str(tmp_path / "dl"), "-q")
    missing = tmp_path / "nowhere"
    result = cli("ckpt", "verify", str(missing), str(tmp_path / "dl"))
    assert result.exit_code == 8
    assert result.stdout == f"{local}\ttrue\t{path}\n"
    assert result.stderr.splitlines() == [
        f"Error: {missing} is not a directory",
        "Error: 1 of 2 directories had no checkpoint to verify",
    ]
    # A failed verification outranks a missing directory.
    next(p for p in Path(local).rglob("*.json") if not p.name.startswith(".")).write_text("{}")
    assert cli("ckpt", "verify", str(missing), str(tmp_path / "dl")).exit_code == 7
    only_missing = cli("ckpt", "verify", str(missing))
    assert only_missing.exit_code == 4
    assert only_missing.stderr == f"Error: {missing} is not a directory\n"


# -- completion cache ------------------------------------------------------------------------------


def test_rm_drops_deleted_paths_from_completion(cli: Cli, run: str) -> None:
    kept = save(cli, "c1")["tinker_path"]
    gone = save(cli, "c2")["tinker_path"]
    prefix = f"logits://{run}/weights/c"
    assert set(complete_path(prefix)) == {kept, gone}
    cli.ok("ckpt", "rm", gone, "--yes")
    assert complete_path(prefix) == [kept]


def test_a_listing_drops_paths_it_no_longer_shows(cli: Cli, run: str, isolated_env: Path) -> None:
    kept = save(cli, "c1")["tinker_path"]
    stale = f"logits://{run}/weights/deleted_elsewhere"
    other_run = "logits://other-run/weights/untouched"
    remember(isolated_env, paths=[stale, other_run])
    cli.ok("ckpt", "ls", run, "--type", "sampler")  # filters apply after the full listing
    cached = json.loads((isolated_env / CACHE_FILE_NAME).read_text())["paths"]
    assert stale not in cached and kept in cached and other_run in cached
    cli.ok("ckpt", "ls")  # all runs: a run that is gone loses its paths too
    cached = json.loads((isolated_env / CACHE_FILE_NAME).read_text())["paths"]
    assert cached == [kept]


def test_latest_is_offered_in_the_scheme_being_typed(isolated_env: Path) -> None:
    remember(isolated_env, paths=["tinker://r1/sampler_weights/s9"])
    assert complete_path("logits://r1/sampler") == [
        "logits://r1/sampler_weights/s9",
        "logits://r1/sampler_weights/@latest",
    ]


# -- root options after the command ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["ckpt", "ls", "--base-url", "http://h:8000"],
            "--base-url is an option of `logits` itself: logits --base-url http://h:8000 ckpt ls",
        ),
        (
            ["runs", "ls", "-q", "--profile=team"],
            "--profile is an option of `logits` itself: logits --profile team runs ls -q",
        ),
        (
            ["ckpt", "ls", "--retry-for"],
            "--retry-for is an option of `logits` itself: logits --retry-for DURATION ckpt ls",
        ),
        (["--base-url", "http://h", "ckpt", "ls"], None),
        (["server", "keys", "ls", "--home", "/srv"], None),  # an option of its own there
        (["ckpt", "rm", "--", "--base-url"], None),
    ],
)
def test_root_options_after_the_command(argv: list[str], message: str | None) -> None:
    assert misplaced_root_option(argv) == message


def test_a_root_option_after_the_command_gets_the_corrected_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", "ckpt", "ls", "--base-url", "http://h:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "Error: --base-url is an option of `logits` itself: logits --base-url http://h:1 ckpt ls\n"
    )


# -- units -------------------------------------------------------------------------------------


def test_sizes_are_human_on_a_terminal_and_exact_when_piped_or_json(cli: Cli, run: str) -> None:
    result = cli.ok("ckpt", "save", "u1")
    assert re.fullmatch(r"Saved weights/u1 \(\d+\.\d KiB\)\n", result.stderr)
    (listed,) = json.loads(cli.ok("ckpt", "ls", "--json").stdout)
    (row,) = cli.lines("ckpt", "ls")
    assert row.split("\t")[2] == str(listed["size_bytes"])  # TSV: bytes, unchanged columns
    assert row.split("\t")[6] == listed["tinker_path"]


def test_relative_times() -> None:
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert relative_time(now - timedelta(hours=3, minutes=5), now) == "3h ago"
    assert relative_time(now - timedelta(minutes=7), now) == "7min ago"
    assert relative_time(now + timedelta(days=6, hours=1), now) == "in 6d"
    assert relative_time(now - timedelta(days=90), now) == "2025-11-02"


# -- table layout --------------------------------------------------------------------------------


def test_layout_drops_by_priority_shrinks_text_and_never_cuts_ids() -> None:
    columns = [
        Column("ID", "id"),
        Column("NOTE", "note", priority=3, shrink=True),
        Column("A", "a", priority=1),
        Column("B", "b", priority=2),
    ]
    rows = [{"id": "x" * 30, "note": "n" * 40, "a": "aaaa", "b": "bbbb"}]
    wide = layout_table(columns, rows, 200)
    assert wide[1].split() == ["x" * 30, "n" * 40, "aaaa", "bbbb"]
    narrow = layout_table(columns, rows, 52)
    assert narrow[0].split() == ["ID", "NOTE", "B"] and all(len(line) <= 52 for line in narrow)
    assert narrow[1].split()[0] == "x" * 30 and narrow[1].split()[1].endswith("…")
    tiny = layout_table(columns, rows, 10)  # ids overflow rather than lose characters
    assert tiny[0].split() == ["ID"] and tiny[1] == "x" * 30
    assert Column("ID", "id").priority == KEEP


# -- README ----------------------------------------------------------------------------------------


def test_readme_set_up_line_puts_logits_on_path() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    setup = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert setup is not None
    line = setup.group(1)
    exports = [part.strip() for part in line.split("&&") if part.strip().startswith("export PATH")]
    assert exports, line
    done = subprocess.run(
        ["bash", "-c", f"{exports[0]} && command -v logits"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert done.stdout.strip() == str(REPO / ".venv" / "bin" / "logits")
