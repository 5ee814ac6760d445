"""On a real terminal (a pty with a window size): tables of one line per row that never cut
an id or a path, help at the terminal's width, the confirmation prompt, progress on stderr."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;)")


def run_on_terminal(
    args: list[str],
    answer: bytes = b"",
    interrupt_at: bytes | None = None,
    columns: int = 200,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
) -> tuple[int, str]:
    """Run ``logits ARGS`` with stdin, stdout and stderr on one pty of ``columns`` columns
    (window size and COLUMNS); returns (exit code, screen text without escapes).

    ``stdout``: send stdout to this file instead (what a script reads), stderr stays on the pty.

    ``interrupt_at``: send SIGINT once this text has appeared (e.g. a prompt)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    stdout_file = open(stdout, "wb") if stdout is not None else None  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", *args],
        stdin=terminal,
        stdout=stdout_file or terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm", **(env or {})},
        close_fds=True,
    )
    os.close(terminal)
    if stdout_file is not None:
        stdout_file.close()
    if answer:
        os.write(controller, answer)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        screen += chunk
        if interrupt_at is not None and interrupt_at in screen:
            process.send_signal(signal.SIGINT)
            interrupt_at = None
    os.close(controller)
    text = screen.decode("utf-8", "replace")
    assert not COLOUR.search(text), "NO_COLOR is set: no colour codes expected"
    return process.wait(timeout=120), ANSI.sub("", text)


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> str:
    run_id = cli("runs", "create", "--base-model", "logits/tiny", "--rank", "2")
    monkeypatch.setenv("LOGITS_RUN", run_id)
    return cli("ckpt", "save", "tty1")


@pytest.fixture
def two_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two runs (ids of 44 characters) with long checkpoint names of both kinds."""
    paths = []
    for _ in range(2):
        run_id = cli("runs", "create", "--base-model", "logits/tiny", "--rank", "2")
        paths.append(cli("ckpt", "save", "a_rather_long_checkpoint_name_01", "--run", run_id))
        paths.append(
            cli("ckpt", "save", "step_000200", "--sampler", "--ttl", "7d", "--run", run_id)
        )
    return paths


def table_lines(screen: str) -> list[str]:
    """The lines of the table and its footer (the spinner's line is erased on a terminal)."""
    lines = [line for line in screen.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.split()[:1] in (["RUN"], ["CHECKPOINT"]))
    return lines[start:]


@pytest.mark.parametrize("columns", [80, 120])
def test_ckpt_ls_rows_fit_the_terminal_and_paths_are_whole(
    two_runs: list[str], columns: int
) -> None:
    code, screen = run_on_terminal(["ckpt", "ls"], columns=columns)
    assert code == 0, screen
    lines = table_lines(screen)
    header, body, footer = lines[0], lines[1:-1], lines[-1]
    assert all(len(line) <= columns for line in lines), screen
    # 44-character run ids and 40-character KIND/NAMEs leave no room for every data column
    # beside them even at 120: one heading line per run keeps them all (issue 23 point 2).
    assert header.split() == ["CHECKPOINT", "SIZE", "PUBLIC", "CREATED", "EXPIRES"]
    assert len(body) == len(two_runs) + 2, screen
    assert "ago" in screen and "in 6d" in screen and "never" in screen
    for path in two_runs:
        run_id, _, checkpoint_id = path.removeprefix("logits://").partition("/")
        # The run id and KIND/NAME appear whole, as words; KIND/NAME on exactly one line.
        assert sum(checkpoint_id in line.split() for line in body) == len(two_runs) // 2
        assert any(run_id in line.split() for line in body), (run_id, screen)
    assert footer.startswith("4 checkpoints in 2 runs, ")
    assert re.fullmatch(r"\d+\.\d (KiB|MiB)", footer.split(", ")[1])


def test_ckpt_ls_of_one_run_names_it_in_the_footer(saved: str) -> None:
    code, screen = run_on_terminal(["ckpt", "ls"], columns=80)
    assert code == 0
    header, row, footer = table_lines(screen)
    assert header.split() == ["CHECKPOINT", "SIZE", "PUBLIC", "CREATED", "EXPIRES"]
    assert row.split()[0] == "weights/tty1" and row.endswith("never")
    assert re.search(r"  (\d+s ago|just now)  ", row), row
    run_id = saved.removeprefix("logits://").split("/")[0]
    assert footer.startswith(f"1 checkpoint in run {run_id}, ") and footer.endswith(" KiB")


@pytest.mark.parametrize("columns", [80, 120])
def test_runs_ls_never_folds_the_run_id(two_runs: list[str], columns: int) -> None:
    code, screen = run_on_terminal(["runs", "ls"], columns=columns)
    assert code == 0
    lines = table_lines(screen)
    if columns == 80:  # LATEST does not fit beside the 44-character id; the footer says so
        hidden = lines.pop()
        assert hidden == "(hidden at 80 columns: LATEST; widen the terminal or pipe for all)"
    assert len(lines) == 2 + 2 and lines[-1] == "2 runs"
    assert all(len(line) <= columns for line in lines)
    for path in two_runs:
        run_id = path.removeprefix("logits://").split("/")[0]
        assert any(line.split()[0] == run_id for line in lines[1:-1])


@pytest.mark.parametrize("columns", [80, 120])
def test_help_uses_the_terminal_width_and_names_no_python_types(columns: int) -> None:
    code, screen = run_on_terminal(["--help"], columns=columns)
    assert code == 0
    lines = screen.splitlines()
    assert all(len(line) <= columns for line in lines), screen
    for variable in ("LOGITS_BASE_URL", "LOGITS_API_KEY", "LOGITS_API_KEY_CMD", "LOGITS_RUN"):
        assert any(line.split()[:1] == [variable] for line in lines), variable
    home = next(line for line in lines if line.lstrip().startswith("--home DIR"))
    if columns == 120:  # wraps at 120, not at 80: this help line fits whole
        assert home.rstrip().endswith("(env: LOGITS_HOME).")
    for command in ("ls", "rm", "ttl", "info", "verify"):
        code, screen = run_on_terminal(["ckpt", command, "--help"], columns=columns)
        assert code == 0 and "Examples:" in screen
        assert not re.search(r"<(list\[|int|str|Path|bool)", screen), screen
        assert all(len(line) <= columns for line in screen.splitlines())


def every_command() -> list[list[str]]:
    import typer

    from logits_cli.cli.main import app

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [leaf for name, child in children.items() for leaf in walk(child, [*path, name])]

    return walk(typer.main.get_command(app), [])


def test_every_command_has_examples_and_plain_names_in_its_help() -> None:
    commands = every_command()
    assert len(commands) >= 20
    for command in commands:
        code, screen = run_on_terminal([*command, "--help"], columns=80)
        assert code == 0, command
        assert "Examples:" in screen, command
        # No Python type (<int range>, <list[str]>, <str>), no {REQUIRED} or [[OPTIONAL]].
        assert not re.search(r"<[a-z][a-z_|\[\] ]*>|\{[A-Z]+\}|\[\[", screen), screen
        assert all(len(line) <= 80 for line in screen.splitlines()), screen


def test_rm_prompt_shows_sizes_and_ages_and_declining_is_not_an_error(saved: str) -> None:
    code, screen = run_on_terminal(["ckpt", "rm", saved], answer=b"n\n")
    assert code == 1
    assert "Delete them? [y/N]" in screen and saved in screen
    assert re.search(r"\(\d+\.\d KiB, created (\d+s ago|just now)\)", screen), screen
    assert screen.rstrip().endswith("Nothing deleted.") and "Error" not in screen
    assert cli("ckpt", "ls", "-q") == saved
    code, screen = run_on_terminal(["ckpt", "rm", saved], answer=b"y\n")
    assert code == 0, screen
    assert cli("ckpt", "ls", "-q") == ""


def test_save_and_download_show_human_units(saved: str, tmp_path: Path) -> None:
    code, screen = run_on_terminal(["ckpt", "save", "tty2"])
    assert code == 0
    assert re.search(r"Saved weights/tty2 \(\d+\.\d KiB\)", screen), screen
    code, screen = run_on_terminal(["ckpt", "download", saved, "-o", str(tmp_path)])
    assert code == 0
    assert " KiB" in screen and "━" in screen  # a rich progress bar in binary units
    assert "tty1" in screen


def test_ctrl_c_at_the_prompt_exits_130(saved: str) -> None:
    code, screen = run_on_terminal(["ckpt", "rm", saved], interrupt_at=b"Delete them?")
    assert code == 130
    assert screen.rstrip().endswith("Interrupted")
    assert cli("ckpt", "ls", "-q") == saved


@pytest.mark.parametrize("columns", [80, 120])
def test_several_downloads_show_an_overall_bar_and_a_summary_on_stderr_only(
    saved: str, tmp_path: Path, columns: int
) -> None:
    second = cli("ckpt", "save", "tty2", "--sampler")
    paths_file = tmp_path / "stdout"
    code, screen = run_on_terminal(
        ["ckpt", "download", saved, second, "-o", str(tmp_path / "out")],
        columns=columns,
        stdout=paths_file,
    )
    assert code == 0, screen
    assert "all (2/2)" in screen and "tty1 · done" in screen and "tty2 · done" in screen
    assert re.search(
        r"^downloaded 2 of 2, \d+\.\d KiB in [0-9.]+ ?[a-z]+ \(.+/s\)$", screen, re.M
    ), screen
    # The last frame (redraws are joined once the escapes are gone): each bar on one line.
    *_, first_bar, second_bar, summary = screen.splitlines()
    assert first_bar.startswith("tty1 · done") and second_bar.startswith("tty2 · done")
    assert max(map(len, (first_bar, second_bar, summary))) <= columns
    # stdout is what a script reads: the two local paths, nothing of the bars or summary.
    assert paths_file.read_text() == f"{tmp_path / 'out' / 'tty1'}\n{tmp_path / 'out' / 'tty2'}\n"
    assert (tmp_path / "out" / "tty2" / "checkpoint_complete").is_file()


def test_transfer_bars_label_each_phase_and_count_finished_items() -> None:
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from logits_cli.api.download_options import report_phase
    from logits_cli.cli.output import TransferBars

    progress = Progress(console=Console(file=StringIO()), auto_refresh=False)
    bars = TransferBars(progress, items=2)
    first = bars.bar("step_1")
    first(512, 1024)
    overall, bar = progress.tasks
    assert (overall.description, overall.completed, overall.total) == ("all (0/2)", 512, None)
    for phase in ("verifying", "extracting", "installing"):
        report_phase(first, phase)
        assert bar.description == f"step_1 · {phase}"
    first(1024, 1024)
    first.finish()
    assert bar.description == "step_1 · done"
    second = bars.bar("step_2")
    second(0, 2048)
    assert (overall.description, overall.completed, overall.total) == ("all (1/2)", 1024, 3072)
    second.finish("failed")
    assert overall.description == "all (2/2)" and progress.tasks[2].description == "step_2 · failed"
    report_phase(None, "verifying")  # piped: no bars, nothing to tell


def test_ctrl_c_says_what_the_command_keeps(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from logits_cli.cli import failures

    @failures.handle_errors
    def interrupted_download() -> None:
        failures.on_interrupt("what arrived is kept in ./ckpts; run the same command again")
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exit_info:
        interrupted_download()
    assert exit_info.value.exit_code == 130
    assert capsys.readouterr().err == (
        "\nInterrupted: what arrived is kept in ./ckpts; run the same command again\n"
    )


def test_the_speed_column_counts_in_binary_units_like_the_sizes_beside_it() -> None:
    from types import SimpleNamespace

    from logits_cli.cli.output import binary_speed_column

    column = binary_speed_column()
    task = SimpleNamespace(finished_speed=None, speed=265.3 * 2**20)
    assert column.render(task).plain == "265.3 MiB/s"
    assert column.render(SimpleNamespace(finished_speed=None, speed=None)).plain == "?"


def test_a_commands_interrupt_note_does_not_carry_over_to_the_next(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    from logits_cli.cli import failures

    @failures.handle_errors
    def notes_and_returns() -> None:
        failures.on_interrupt("what arrived is kept in ./ckpts")

    @failures.handle_errors
    def interrupted() -> None:
        raise KeyboardInterrupt

    notes_and_returns()
    with pytest.raises(typer.Exit):
        interrupted()
    assert capsys.readouterr().err == "\nInterrupted\n"
