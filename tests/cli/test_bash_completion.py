"""The shipped completions/logits.bash in a real interactive bash on a pty: checkpoint URIs
complete whole although bash splits words at ':', with and without bash-completion."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logits_cli.cli.completion_cache import remember

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
RUN = "c5545492-1615-4cac-8d9d-0c2d8df5d23c:train:0"  # run ids hold colons too


class Terminal:
    """An interactive bash on a pty; ``expect`` waits (bounded) for text on the screen."""

    def __init__(self, rcfile: Path, env: dict[str, str]) -> None:
        self.controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            ["bash", "--rcfile", str(rcfile), "-i"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        os.close(terminal)
        self.screen = ""
        self.closed = False

    def send(self, text: str) -> None:
        os.write(self.controller, text.encode())

    def expect(
        self, text: str, limit_s: float = 30.0, quiet_s: float = 0.3, *, since: int = 0
    ) -> str:
        """The screen once ``text`` is on it (at ``since`` or later) and bash has then been
        silent for ``quiet_s`` (a candidate list arrives in pieces: the rest of it, and the
        redrawn line, too)."""
        deadline = time.monotonic() + limit_s
        while text not in self.screen[since:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} never appeared; screen:\n{self.screen}"
            if not self._read(remaining) and self.closed:
                break
        while time.monotonic() < deadline and self._read(quiet_s):
            pass
        return self.screen

    def _read(self, wait_s: float) -> bool:
        """Add what arrives within ``wait_s`` to the screen; False if nothing did."""
        ready, _, _ = select.select([self.controller], [], [], wait_s)
        if not ready:
            return False
        try:
            chunk = os.read(self.controller, 65536)
        except OSError:  # bash has exited: nothing more will come
            self.closed = True
            return False
        self.screen += chunk.decode("utf-8", "replace").replace("\r", "")
        return True

    def close(self) -> None:
        self.send("exit\n")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.controller)


@pytest.fixture(params=["bash-completion", "plain-bash"])
def terminal(
    request: pytest.FixtureRequest, tmp_path: Path, isolated_env: Path
) -> Iterator[Terminal]:
    with_library = request.param == "bash-completion"
    if with_library and not BASH_COMPLETION.is_file():
        pytest.fail("bash-completion is not installed (.ci/run installs it)")
    rcfile = tmp_path / "bashrc"
    rcfile.write_text(
        "PS1='$ '\n"
        + (f"source {BASH_COMPLETION}\n" if with_library else "")
        + f"source {REPO / 'completions' / 'logits.bash'}\n"
        + "bind 'set show-all-if-ambiguous on'\n"
        + "bind 'set completion-query-items 10000'\n"
        + "bind 'set page-completions off'\n"
        + "bind 'set bell-style none'\n"
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LOGITS_HOME": str(isolated_env),
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
    shell = Terminal(rcfile, env)
    shell.expect("$ ")
    yield shell
    shell.close()


def test_checkpoint_uris_complete_whole_in_a_real_bash(
    terminal: Terminal, isolated_env: Path
) -> None:
    remember(
        isolated_env,
        runs=[RUN],
        paths=[f"logits://{RUN}/weights/step_1000", f"logits://{RUN}/sampler_weights/final"],
    )
    terminal.send("logits ckpt download logits://\t")
    # Every candidate shares the run: bash inserts it whole (colons and all) and lists the
    # names, @latest included, for the next TAB.
    screen = terminal.expect("sampler_weights/@latest")
    for name in ("weights/step_1000", "sampler_weights/final", "weights/@latest"):
        assert name in screen
    assert "/weights/step_1000" in screen
    terminal.send("weights/s\t")
    # Show the completed line: go to its start and turn it into an echo.
    terminal.send("\x01echo \n")
    terminal.expect(f"\nlogits ckpt download logits://{RUN}/weights/step_1000\n")


def test_deleted_checkpoints_are_not_offered(terminal: Terminal, isolated_env: Path) -> None:
    from logits_cli.cli.completion_cache import forget

    gone = f"logits://{RUN}/weights/gone"
    remember(isolated_env, runs=[RUN], paths=[gone, f"logits://{RUN}/weights/kept"])
    forget(isolated_env, [gone])
    terminal.send(f"logits ckpt info logits://{RUN}/weights/\t")
    screen = terminal.expect("weights/@latest")
    terminal.send("\x03")  # drop the line
    assert "weights/kept" in screen and "weights/gone" not in screen


def test_hostile_cache_entries_are_not_offered_and_run_ids_are_quoted(
    terminal: Terminal, isolated_env: Path, tmp_path: Path
) -> None:
    """A cache planted with names a shell would run (issue 21 G8): names that do not parse
    are never offered, and a run id holding ';' and '$' (legal: run ids are opaque) is
    inserted quoted, so the line runs nothing but the command typed."""
    import json

    from logits_cli.cli.completion_cache import CACHE_FILE_NAME

    hostile_run = "r;touch${IFS}pwned;echo"
    (isolated_env / CACHE_FILE_NAME).write_text(
        json.dumps(
            {
                "runs": [RUN, hostile_run],
                "paths": [
                    f"logits://{RUN}/weights/a;touch${{IFS}}x",
                    f"logits://{RUN}/weights/d\nrm -rf x",
                    f"logits://{RUN}/weights/ok",
                    f"logits://{hostile_run}/weights/s1",
                ],
            }
        )
    )
    terminal.send(f"cd {tmp_path}\n")
    terminal.send(f"logits ckpt info logits://{RUN}/weights/\t")
    screen = terminal.expect("weights/@latest")
    assert "weights/ok" in screen and "touch" not in screen and "rm -rf" not in screen
    dropped = len(terminal.screen)
    terminal.send("\x03")  # drop the line, and wait for the new prompt before typing on
    terminal.expect("$ ", since=dropped)

    terminal.send("logits ckpt info logits://r\t")
    terminal.expect("weights/@latest")
    terminal.send("\x01echo \n")  # the completed line, run as an echo
    terminal.expect(f"\nlogits ckpt info logits://{hostile_run}/weights/\n")
    assert not (tmp_path / "pwned").exists()


def test_bare_names_of_the_default_run_complete_without_the_network(
    terminal: Terminal, isolated_env: Path
) -> None:
    """``download step_<TAB>`` and ``info sam<TAB>`` (issue 23 point 4) offer the bare names
    parse_path reads, of $LOGITS_RUN or of the line's --run, from the cache alone (no server
    is configured: LOGITS_BASE_URL is unset and nothing listens)."""
    other = "0e6f7d1c-2222-4cac-8d9d-0c2d8df5d23c:train:0"
    remember(
        isolated_env,
        runs=[RUN, other],
        paths=[
            f"tinker://{RUN}/weights/step_1000",
            f"tinker://{RUN}/sampler_weights/step_1000_s",
            f"logits://{other}/weights/other_final",
        ],
    )
    terminal.send(f"export LOGITS_RUN='{RUN}'\n")
    terminal.send("logits ckpt download step_\t")
    terminal.send("\x01echo \n")  # the completed line, run as an echo
    terminal.expect("\nlogits ckpt download step_1000\n")

    terminal.send("logits ckpt info sam\t")
    terminal.send("\x01echo \n")
    terminal.expect("\nlogits ckpt info sampler_weights/step_1000_s\n")

    # --run on the line names the run; another run's names are not offered.
    terminal.send(f"logits ckpt info --run '{other}' o\t")
    terminal.send("\x01echo \n")
    terminal.expect(f"\nlogits ckpt info --run {other} other_final\n")
    assert "step_1000" not in terminal.screen.rsplit("--run", 1)[1]
