"""Benchmark: start-up of `logits --help`, `logits --version`, and `logits ckpt ls` on the
embedded backend holding 1,000 checkpoints (targets: none for --help since its page cache
went (issue 22), ≤ 100 ms, ≤ 300 ms), with the ratio to `tinker --help` (tinker 0.24.0)
when it is installed.

The floors beside them are what no code of ours can go under on this machine, measured the
same way: the interpreter (`python -c pass`), importing Typer (every command but --version),
and importing the libraries a command on the embedded backend must load (Typer, pydantic,
httpx, starlette).

Run: ``.venv/bin/python tests/bench/startup.py [--repeats N]``. Each figure is the median
wall time of N fresh processes. The tinker CLI is found as ``$LOGITS_SDK_PYTHON``'s
sibling ``tinker`` script, else ``tinker`` on PATH, else /tmp/tinkervenv/bin/tinker.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logits_cli import models
from logits_cli.store import Store
from logits_cli.store.store import LOCAL_USER

CHECKPOINTS = 1000
RUNS = 10
LOGITS = [sys.executable, "-m", "logits_cli"]
TARGETS_S = {"--version": 0.100, "ckpt ls (1,000)": 0.300}


def populate(home: Path) -> None:
    """1,000 checkpoints of the tiny model over 10 runs, saved straight into the store."""
    store = Store.open(home / "store")
    try:
        session = store.create_session(
            LOCAL_USER, tags=[], user_metadata=None, sdk_version="bench", project_id=None
        )
        for seq in range(RUNS):
            run_id = store.create_run(
                LOCAL_USER,
                session_id=session,
                model_seq_id=seq,
                base_model="logits/tiny",
                lora_config=models.LoraConfig(rank=1),
                user_metadata=None,
            )
            for step in range(CHECKPOINTS // RUNS):
                store.save_checkpoint(
                    LOCAL_USER,
                    run_id,
                    kind="weights",
                    name=f"step-{step:04d}",
                    ttl_seconds=None,
                    overwrite=False,
                    uri_scheme="logits",
                )
    finally:
        store.close()


def median_s(command: list[str], env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{command} failed: {done.stderr.decode()[-500:]}")
    return statistics.median(times)


def tinker_cli() -> str | None:
    sdk_python = os.environ.get("LOGITS_SDK_PYTHON")
    candidates = [str(Path(sdk_python).parent / "tinker")] if sdk_python else []
    candidates += [shutil.which("tinker") or "", "/tmp/tinkervenv/bin/tinker"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=11)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory(prefix="logits-bench-startup-") as scratch:
        home = Path(scratch)
        started = time.perf_counter()
        populate(home)
        print(f"setup: {CHECKPOINTS} checkpoints in {time.perf_counter() - started:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGITS_", "TINKER_"))}
        env["LOGITS_HOME"] = str(home)
        # A user's interpreter caches bytecode; one that may not (PYTHONDONTWRITEBYTECODE,
        # set in some sandboxes) compiles every changed module on every run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        listed = subprocess.run([*LOGITS, "ckpt", "ls", "-q"], env=env, capture_output=True)
        assert len(listed.stdout.splitlines()) == CHECKPOINTS, listed.stderr

        figures = {
            "--help": median_s([*LOGITS, "--help"], env, repeats),
            "--version": median_s([*LOGITS, "--version"], env, repeats),
            "ckpt ls (1,000)": median_s([*LOGITS, "ckpt", "ls"], env, repeats),
        }
        floors = {
            "python -c pass": median_s([sys.executable, "-c", "pass"], env, repeats),
            "import typer": median_s([sys.executable, "-c", "import typer"], env, repeats),
            "import typer, pydantic, httpx, starlette": median_s(
                [sys.executable, "-c", "import typer, pydantic, httpx, starlette.applications"],
                env,
                repeats,
            ),
        }
        tinker = tinker_cli()
        tinker_s = median_s([tinker, "--help"], env, repeats) if tinker else None

    print(f"median of {repeats} runs:")
    for name, seconds in figures.items():
        line = f"  logits {name:<17} {seconds * 1000:7.1f} ms"
        target = TARGETS_S.get(name)
        if target is not None:
            verdict = "ok" if seconds <= target else "OVER"
            line += f"  (target ≤ {target * 1000:.0f} ms: {verdict})"
        if tinker_s and name.startswith(("--help", "--version")):
            line += f"  ratio to tinker --help: {seconds / tinker_s:.2f}× (target ≤ 0.35×)"
        print(line)
    if tinker_s:
        print(f"  tinker --help            {tinker_s * 1000:7.1f} ms")
    else:
        print("  tinker CLI not found: no ratio")
    print("floors (no code of ours runs):")
    for name, seconds in floors.items():
        print(f"  {name:<41} {seconds * 1000:7.1f} ms")
    libraries = floors["import typer, pydantic, httpx, starlette"]
    print(
        f"  ckpt ls above its library floor: {(figures['ckpt ls (1,000)'] - libraries) * 1000:.0f} ms;"
        f" --help above `import typer`: {(figures['--help'] - floors['import typer']) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
