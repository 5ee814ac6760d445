"""Benchmark: ``logits ckpt ls`` across 10,000 checkpoints on a served remote (target ≤ 2 s).

Run: ``.venv/bin/python tests/bench/ls_remote.py``. The rows are inserted straight into the
store's SQLite file (saving 10,000 archives would take minutes and the listing never reads
them); then a real ``logits server`` thread serves them and the whole ``logits ckpt ls``
process is timed, piped (tab-separated rows) and with ``--json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logits_cli import config, models
from logits_cli.api import open_client
from logits_cli.server.serve import open_store, start_in_thread
from logits_cli.server.settings import ServerSettings

CHECKPOINTS = 10_000
RUNS = 10
REPEATS = 3
TARGET_S = 2.0
USER = "bench"


def populate(home: Path) -> str:
    """Create the user, its runs and CHECKPOINTS checkpoint rows; returns an API key."""
    store = open_store(home, ServerSettings())
    database = store.root / "meta.sqlite3"
    try:
        key = store.create_api_key(USER)
        session = store.create_session(
            USER, tags=[], user_metadata=None, sdk_version="bench", project_id=None
        )
        runs = [
            store.create_run(
                USER,
                session_id=session,
                model_seq_id=seq,
                base_model="logits/tiny",
                lora_config=models.LoraConfig(rank=4),
                user_metadata=None,
            )
            for seq in range(RUNS)
        ]
    finally:
        store.close()
    base_micros = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z
    rows = []
    for index in range(CHECKPOINTS):
        run_id = runs[index % RUNS]
        kind = "sampler_weights" if index % 4 == 3 else "weights"
        name = f"step-{index:06d}"
        rows.append(
            (
                run_id,
                USER,
                kind,
                name,
                f"logits://{run_id}/{kind}/{name}",
                base_micros + index * 60_000_000,
                None,
                index % 7 == 0,
                50_000_000 + index,
                hashlib.sha256(name.encode()).hexdigest(),
            )
        )
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO checkpoints (run_id, user_id, kind, name, tinker_path, time,"
            " expires_at, public, size_bytes, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return key


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="logits-bench-ls-") as scratch:
        root = Path(scratch)
        key = populate(root / "server")
        with start_in_thread(root / "server", ServerSettings()) as server:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(root),
                "LOGITS_HOME": str(root / "client"),
                "LOGITS_BASE_URL": server.base_url,
                "LOGITS_API_KEY": key,
            }
            settings = config.resolve(base_url=server.base_url, env=env)

            async def list_all() -> int:
                async with open_client(settings) as client:
                    return sum([1 async for _ in client.iter_all_checkpoints()])

            started = time.perf_counter()
            assert asyncio.run(list_all()) == CHECKPOINTS
            library = time.perf_counter() - started

            timings: dict[str, list[float]] = {"tsv": [], "json": []}
            for label, extra in (("tsv", []), ("json", ["--json"])):
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    done = subprocess.run(
                        [sys.executable, "-m", "logits_cli", "ckpt", "ls", *extra],
                        env=env,
                        capture_output=True,
                        text=True,
                        stdin=subprocess.DEVNULL,
                    )
                    timings[label].append(time.perf_counter() - started)
                    assert done.returncode == 0, done.stderr
                    count = len(json.loads(done.stdout)) if extra else len(done.stdout.splitlines())
                    assert count == CHECKPOINTS, count

    print(f"iter_all_checkpoints in-process, {CHECKPOINTS} rows: {library * 1000:.0f} ms")
    for label, values in timings.items():
        median = statistics.median(values)
        verdict = "OK" if median <= TARGET_S else "OVER"
        print(
            f"`logits ckpt ls` ({label}), {CHECKPOINTS} checkpoints: median {median * 1000:.0f} ms"
            f" — target ≤ {TARGET_S:.0f} s: {verdict} ({median / TARGET_S:.2f}×)"
        )


if __name__ == "__main__":
    main()
