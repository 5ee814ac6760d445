"""Tables and progress bars at 80 and 120 columns (issue 23 points 2 and 3): the real CLI on
a pty against a real server over 127.0.0.1 (and the embedded one for tables), 44-character
run ids and long checkpoint names.

Tables keep SIZE and CREATED (gathering rows under ``RUN <id>`` before dropping a data
column) and name any column they leave out; bars stay one line each with whole numbers,
show the listed total from their first frame, and say when a download resumed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logits_cli.api.transfer.files_layout import journal_name
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.slow

# Escapes that move the cursor or erase (rich redraws its bars with them) end a line; the
# others (styles) are removed.
MOVES = re.compile(r"\x1b\[[0-9;?]*[ABCDEFGHJKlh]|\r")
STYLES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
HIDDEN = re.compile(r"\(hidden at (\d+) columns: ([A-Z ,]+); widen the terminal or pipe for all\)")
NUMBERS = r"\d+(?:\.\d)?/(?:\d+(?:\.\d)?|\?) (?:B|KiB|MiB)"
# A whole bar line: label, bar, sizes, speed and time left, none of them cut.
BAR_LINE = re.compile(
    rf"^(?P<label>\S.*?) +[━╸╺ ]* +(?P<numbers>{NUMBERS}) +(?:\?|\d+(?:\.\d)? (?:B|KiB|MiB)/s)"
    r"(?: +(?:-:--:--|\d+:\d\d:\d\d))?$"
)


def run_on_terminal(
    args: list[str], columns: int, *, stdout: Path | None = None, timeout: float = 120
) -> tuple[int, list[str]]:
    """``logits ARGS`` with stdin and stderr (and stdout unless ``stdout``) on a pty of
    ``columns`` columns; returns the exit code and every line drawn, a redrawn bar frame by
    frame (each cursor move or erase ends a line, so no two frames run together)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    out_file = open(stdout, "wb") if stdout is not None else None  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", *args],
        stdin=terminal,
        stdout=out_file or terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm"},
        close_fds=True,
    )
    os.close(terminal)
    if out_file is not None:
        out_file.close()
    screen = b""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    if process.poll() is None:
        process.kill()
    text = STYLES.sub("", MOVES.sub("\n", screen.decode("utf-8", "replace")))
    return process.wait(timeout=30), [line for line in text.split("\n") if line.strip()]


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(params=["embedded", "socket"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "socket":
        server = request.getfixturevalue("live_server")
        monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    return str(request.param)


def new_run(rank: int = 2) -> str:
    run_id = cli("runs", "create", "--base-model", "logits/tiny", "--rank", str(rank), "-q")
    assert len(run_id) == 44, run_id  # the service's ids are this long too
    return run_id


def table(lines: list[str]) -> tuple[str, list[str], list[str]]:
    """(header, body, footer lines) of a table printed on the terminal."""
    start = next(i for i, line in enumerate(lines) if line.split()[:1] in (["RUN"], ["CHECKPOINT"]))
    lines = lines[start:]
    end = next(i for i, line in enumerate(lines) if re.match(r"\d+ (checkpoints?|runs?)\b", line))
    return lines[0], lines[1:end], lines[end:]


# -- tables (point 2) --------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
def test_ckpt_ls_keeps_size_and_created_with_long_run_ids(backend: str, columns: int) -> None:
    """RUN and a short KIND/NAME fit one line at 80 columns, but not with every data
    column: the rows are gathered under their run instead of losing SIZE and CREATED."""
    paths = []
    for _ in range(2):
        run_id = new_run()
        paths.append(cli("ckpt", "save", "step_1000", "--run", run_id, "-q"))
        paths.append(cli("ckpt", "save", "step_000200", "--sampler", "--run", run_id, "-q"))
    for sort in ([], ["--sort", "size"]):
        code, lines = run_on_terminal(["ckpt", "ls", *sort], columns)
        assert code == 0, lines
        header, body, footer = table(lines)
        assert all(len(line) <= columns for line in [header, *body, *footer]), lines
        assert header.split() == ["CHECKPOINT", "SIZE", "PUBLIC", "CREATED", "EXPIRES"] or (
            header.split() == ["RUN", "CHECKPOINT", "SIZE", "PUBLIC", "CREATED", "EXPIRES"]
        ), header
        rows = [line for line in body if not line.startswith("RUN ")]
        assert len(rows) == 4
        for row in rows:  # every row has its size and its age
            assert re.search(r"\d+\.\d KiB  no  +(just now|\d+s ago)  +never$", row), row
        if columns == 80:  # 44 + 2 + 27 + the data columns > 80: one heading per run
            headings = [line.split()[1] for line in body if line.startswith("RUN ")]
            assert sorted(headings) == sorted({p.split("/")[2] for p in paths})
        else:
            assert header.startswith("RUN ") and len(body) == 4
        assert footer == [footer[0]] and footer[0].startswith("4 checkpoints in 2 runs, ")


def test_ckpt_ls_names_the_columns_it_hides(backend: str) -> None:
    """A name so long that even the grouped rows cannot hold every column: PUBLIC and
    EXPIRES go, SIZE and CREATED stay, and the footer says which went."""
    for _ in range(2):
        run_id = new_run()
        cli("ckpt", "save", "n" * 46, "--run", run_id)  # weights/ + 46: a 54-column name
    code, lines = run_on_terminal(["ckpt", "ls"], 80)
    assert code == 0, lines
    header, body, footer = table(lines)
    assert header.split() == ["CHECKPOINT", "SIZE", "CREATED"]
    assert all(len(line) <= 80 for line in lines), lines
    rows = [line for line in body if not line.startswith("RUN ")]
    assert len(rows) == 2
    assert all(re.search(r"\d+\.\d KiB  +(just now|\d+s ago)$", row) for row in rows), rows
    assert footer[1] == (
        "(hidden at 80 columns: PUBLIC, EXPIRES; widen the terminal or pipe for all)"
    )
    # Piped, every column is there.
    piped = cli("ckpt", "ls").splitlines()
    assert len(piped) == 2 and all(len(row.split("\t")) == 7 for row in piped)
    code, lines = run_on_terminal(["ckpt", "ls"], 120)
    assert not any(HIDDEN.search(line) for line in lines), lines


@pytest.mark.parametrize("columns", [80, 120])
def test_runs_ls_fits_and_names_any_hidden_column(backend: str, columns: int) -> None:
    for _ in range(2):
        cli("ckpt", "save", "a_rather_long_checkpoint_name_01", "--run", new_run())
    code, lines = run_on_terminal(["runs", "ls"], columns)
    assert code == 0, lines
    header, body, footer = table(lines)
    assert all(len(line) <= columns for line in lines), lines
    assert len(body) == 2 and all(len(line.split()[0]) == 44 for line in body)
    shown = {"RUN", "BASE MODEL", "RANK", "LAST REQUEST", "LATEST"}
    hidden = [HIDDEN.fullmatch(line) for line in footer[1:]]
    named = set(hidden[0].group(2).split(", ")) if hidden and hidden[0] else set()
    assert named == {c for c in shown if c not in header}, (header, footer)
    assert footer[0] == "2 runs"
    if columns == 120:
        assert not named


# -- progress bars (point 3) ---------------------------------------------------------------------


@pytest.fixture
def slow_servers(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """``slow_servers(**settings)``: a real server whose blob URLs go through a proxy at
    1.5 MB/s, so a download lasts long enough to be drawn (and killed) part way."""
    with contextlib.ExitStack() as proxies:

        def start(**settings: Any) -> Any:
            proxy = proxies.enter_context(FaultProxy(rate=1_500_000))
            server = server_factory(public_url=proxy.url, **settings)
            proxy.upstream = ("127.0.0.1", server.port)
            monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
            monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
            return server

        yield start


@pytest.fixture
def slow_server(slow_servers: Callable[..., Any]) -> Any:
    return slow_servers(downloads="archive")


def bar_lines(lines: list[str]) -> list[str]:
    """The lines drawn by the bars (every line that shows a transfer's numbers)."""
    return [line for line in lines if re.search(NUMBERS, line)]


def assert_whole_bars(lines: list[str], columns: int) -> list[re.Match[str]]:
    bars = bar_lines(lines)
    assert bars, lines
    matches = []
    for line in bars:
        assert len(line) <= columns - 1, line
        match = BAR_LINE.match(line)
        assert match is not None, line  # one line: label, bar, numbers, speed, time left
        matches.append(match)
    # No piece of a bar on a line of its own (a unit or numbers pushed off the line).
    assert not [line for line in lines if re.fullmatch(r"\s*(B|KiB|MiB|[0-9./?]+)\s*", line)]
    return matches


@pytest.mark.parametrize("columns", [80, 120])
def test_bars_fit_one_line_with_whole_numbers_and_a_known_total(
    slow_server: Any, tmp_path: Path, columns: int
) -> None:
    run_id = new_run(rank=64)
    names = ["a_rather_long_checkpoint_name_for_the_bars_01", "step_000200_of_a_long_run"]
    paths = [cli("ckpt", "save", names[0], "--run", run_id, "-q")]
    paths.append(cli("ckpt", "save", names[1], "--sampler", "--run", run_id, "-q"))
    listed = json.loads(cli("ckpt", "ls", run_id, "--json"))
    total_kib = sum(c["size_bytes"] for c in listed) / 1024
    code, lines = run_on_terminal(
        ["ckpt", "download", *paths, "-o", str(tmp_path / "out")],
        columns,
        stdout=tmp_path / "stdout",
    )
    assert code == 0, lines
    matches = assert_whole_bars(lines, columns)
    overall = [m for m in matches if m["label"].startswith("all (")]
    # The first frame of the overall bar already has the listed total.
    first = overall[0]["numbers"]
    assert first.startswith(("0/", "0.0/")) and "?" not in first, overall[0].string
    shown, unit = first.split("/")[1].split()
    assert float(shown) * {"KiB": 1, "MiB": 1024}[unit] == pytest.approx(total_kib, rel=0.05)
    labels = {m["label"].split(" · ")[0].strip() for m in matches}
    if columns == 80:  # the 45-character name is shortened in its middle, the rest whole
        assert any(re.fullmatch(r"a_rather_long\S*…\S*bars_01", label) for label in labels)
        assert names[1] in labels
    else:
        assert set(names) <= labels
    assert any("· extracting" in m["label"] or "· done" in m["label"] for m in matches)
    assert lines[-1].startswith("downloaded 2 of 2, ")


@pytest.mark.parametrize("generation", ["archive", "files"])
def test_a_resumed_download_says_where_it_resumed(
    slow_servers: Callable[..., Any], generation: str, tmp_path: Path
) -> None:
    """A download killed part way, then run again on a terminal: ``resumed NAME at X of Y``
    above the bar, X what the killed one left, and the bar still one whole line. On the
    files generation, through an export, the adapter's file part way."""
    slow_servers(downloads=generation)
    run_id = new_run(rank=256)  # several MiB: the kill lands part way
    name = "resume_me_with_a_rather_long_checkpoint_name_01"
    dest = tmp_path / "dest"
    path = cli("ckpt", "save", name, "--run", run_id, "-q")
    if generation == "archive":
        journal = dest / f".{name}.part.json"
    else:  # through an export, resumed on the same export
        weights = journal_name("adapter_model.safetensors")
        journal = dest / f".{name}.files" / "journal" / weights
    process = subprocess.Popen(
        [sys.executable, "-m", "logits_cli", "ckpt", "download", path, "-o", str(dest)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    give_up = time.monotonic() + 60
    try:
        while time.monotonic() < give_up and process.poll() is None:
            try:
                state = json.loads(journal.read_text())
                if 0 < sum(state["filled"]) < state["size"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()[1]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    kept = sum(json.loads(journal.read_text())["filled"])
    code, lines = run_on_terminal(["ckpt", "download", path, "-o", str(dest)], 80)
    assert code == 0, lines
    notices = [line for line in lines if line.startswith("resumed ")]
    assert len(notices) == 1, lines
    match = re.fullmatch(r"resumed (\S+) at (\d+\.\d) (KiB|MiB) of (\d+\.\d) MiB", notices[0])
    assert match is not None and len(notices[0]) < 80, notices
    assert match[1] == name
    at = float(match[2]) * (1 if match[3] == "KiB" else 1024) * 1024
    assert at == pytest.approx(kept, abs=0.05 * 1024 * 1024)
    assert_whole_bars(lines, 80)
    assert cli("ckpt", "verify", str(dest / name)) == f"{dest / name}\ttrue\t{path}"


def test_bar_pieces_fit_and_the_listed_totals_come_first() -> None:
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from logits_cli.api.download_options import report_resumed
    from logits_cli.cli.transfer_bars import (
        TransferBars,
        bar_layout,
        fit_label,
        shorten_middle,
        transfer_size_text,
    )

    assert shorten_middle("a_rather_long_checkpoint_name_01", 15) == "a_rathe…name_01"
    assert fit_label("a_rather_long_checkpoint_name_01", "extracting", 28) == (
        "a_rathe…name_01 · extracting"  # the phase whole, the name cut in its middle
    )
    assert fit_label("step_1", "done", 28) == "step_1 · done"
    assert transfer_size_text(0, 5 * 2**20) == "0.0/5.0 MiB"
    assert transfer_size_text(512, None) == "512/? B"
    for width in (80, 120):  # label, bar, 4 gaps and the fixed columns: one spare column
        label, bar = bar_layout(width)
        assert label + bar + 4 + 17 + 12 + 8 == width - 1
    screen = StringIO()
    progress = Progress(console=Console(file=screen, width=80), auto_refresh=False)
    bars = TransferBars(progress, 2, sizes=[1024, 2048])
    assert progress.tasks[0].total == 3072  # before any bar exists
    first = bars.bar("step_1", total=1024)
    report_resumed(first, 512, 1024)  # one part file, then another: said once bytes flow
    report_resumed(first, 600, 1024)
    first(600, 1024)
    assert screen.getvalue() == ""
    first(700, 1024)
    first(800, 1024)
    assert screen.getvalue() == "resumed step_1 at 600 B of 1.0 KiB\n"
    first.finish("present")  # nothing fetched, nothing left: the overall bar counts it
    assert progress.tasks[0].completed == 1024


def test_ttl_results_fit_80_columns_with_their_expiry(backend: str) -> None:
    paths = [
        cli("ckpt", "save", "a_rather_long_checkpoint_name_01", "--run", new_run(), "-q")
        for _ in range(2)
    ]
    code, lines = run_on_terminal(["ckpt", "ttl", *paths, "--set", "7d"], 80)
    assert code == 0, lines
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["CHECKPOINT"])
    header, *body = lines[start:]
    assert header.split() == ["CHECKPOINT", "EXPIRES"] and all(len(x) <= 80 for x in lines)
    rows = [line for line in body if not line.startswith("RUN ")]
    assert len(rows) == 2
    assert all(row.split()[0] == "weights/a_rather_long_checkpoint_name_01" for row in rows)
    assert all(re.search(r"in (6|7)d$", row) for row in rows), rows
    # Piped: the full path and the ISO expiry, as before.
    piped = cli("ckpt", "ttl", *paths, "--set", "7d").splitlines()
    assert [row.split("\t")[0] for row in piped] == paths


def test_publish_results_fit_80_columns_with_their_flags(backend: str) -> None:
    paths = [
        cli("ckpt", "save", "a_rather_long_checkpoint_name_02", "--run", new_run(), "-q")
        for _ in range(2)
    ]
    code, lines = run_on_terminal(["ckpt", "publish", *paths], 80)
    assert code == 0, lines
    assert all(len(line) <= 80 for line in lines), lines
    assert not any("hidden at" in line for line in lines), lines
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["CHECKPOINT"])
    header, *body = lines[start:]
    assert header.split() == ["CHECKPOINT", "PUBLIC", "CHANGED"]
    rows = [line.split() for line in body if line.strip() and not line.startswith("RUN ")]
    assert rows == [["weights/a_rather_long_checkpoint_name_02", "yes", "yes"]] * 2, lines
    # Piped: the full path, then the flags, as before.
    piped = cli("ckpt", "unpublish", *paths).splitlines()
    assert piped == [f"{path}\tfalse\ttrue" for path in paths]
