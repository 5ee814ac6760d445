"""Benchmark: one TAB of bash completion (target for a checkpoint path ≤ 150 ms median).

What a TAB costs is the program the shipped ``completions/logits.bash`` runs: the console
script with ``_LOGITS_COMPLETE=complete_bash`` and the words so far. Measured for a
checkpoint path (``logits ckpt download logits://<TAB>``, from a cache of 500 paths, the
cache's limit: answered from the cache before Typer loads, no network), and once through a
real bash that sources the script (``compgen``-free: the completion function itself), which
adds bash's own share. A subcommand (``logits ckpt <TAB>``) goes through Typer's own
completion and has no target (issue 22: no generated table of names); it is shown for
reference.

Run: ``.venv/bin/python tests/bench/completion.py [--repeats N]``; each figure is the median
wall time of N fresh processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logits_cli.cli.completion_cache import MAX_ENTRIES, remember

REPO = Path(__file__).resolve().parents[2]
LOGITS = str(Path(sys.executable).parent / "logits")
TARGET_S = 0.150  # a checkpoint path; command names have none
RUN = "c5545492-1615-4cac-8d9d-0c2d8df5d23c:train:0"


def median_s(command: list[str], env: dict[str, str], repeats: int, expect: str) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or expect not in done.stdout:
            raise SystemExit(f"{command} failed or answered nothing: {done.stderr[-500:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as home:
        remember(
            Path(home),
            runs=[RUN],
            paths=[f"logits://{RUN}/weights/step_{i:05d}" for i in range(MAX_ENTRIES)],
        )
        env = {**os.environ, "LOGITS_HOME": home, "PATH": f"{Path(LOGITS).parent}:/usr/bin:/bin"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's interpreter caches bytecode

        def protocol(words: str) -> dict[str, str]:
            return {
                **env,
                "_LOGITS_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split(" ")) - 1),
            }

        figures = {
            "TAB: logits ckpt download logits://": median_s(
                [LOGITS],
                protocol("logits ckpt download logits://"),
                repeats,
                "weights/@latest",
            ),
            "TAB: logits ckpt ": median_s([LOGITS], protocol("logits ckpt "), repeats, "download"),
        }
        line = "logits ckpt download logits://"
        script = (
            f"source {REPO / 'completions' / 'logits.bash'}; "
            f"COMP_LINE='{line}'; COMP_POINT={len(line)}; "
            "COMP_WORDS=(logits ckpt download logits : //); COMP_CWORD=5; "
            "_logits_completion logits; printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        figures["TAB through bash (no bash-completion)"] = median_s(
            ["bash", "--norc", "-c", script], env, repeats, "weights/@latest"
        )
    for name, seconds in figures.items():
        line = f"{name:<42} {seconds * 1000:7.1f} ms"
        if "logits://" in name or "bash" in name:
            verdict = "ok" if seconds <= TARGET_S else "OVER"
            line += f"  (target {TARGET_S * 1000:.0f} ms) {verdict}"
        print(line)


if __name__ == "__main__":
    main()
