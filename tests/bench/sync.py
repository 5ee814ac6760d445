"""Benchmark: ``sync`` with nothing new over 200 present checkpoints (target ≤ 1 s).

Run: ``.venv/bin/python tests/bench/sync.py``. A served reference server holds 200 real
checkpoints ("logits/tiny", saved through the store); a first sync downloads them all, then
the nothing-new sync is timed two ways: ``run_sync`` in-process (the library's own cost) and
the whole ``logits ckpt sync`` process as cron starts it (interpreter start-up included).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logits_cli import config, models
from logits_cli.api import open_client
from logits_cli.api.sync import SyncOptions, run_sync
from logits_cli.server.serve import start_in_thread
from logits_cli.server.settings import ServerSettings

CHECKPOINTS = 200
RUNS = 4
REPEATS = 5
TARGET_S = 1.0


def populate(store, user: str) -> None:
    """200 real checkpoints over a few runs, saved directly through the store (fast)."""
    session = store.create_session(
        user, tags=[], user_metadata=None, sdk_version="bench", project_id=None
    )
    for seq in range(RUNS):
        run_id = store.create_run(
            user,
            session_id=session,
            model_seq_id=seq,
            base_model="logits/tiny",
            lora_config=models.LoraConfig(rank=4),
            user_metadata=None,
        )
        for step in range(CHECKPOINTS // RUNS):
            kind = "sampler_weights" if step % 5 == 4 else "weights"
            store.save_checkpoint(
                user,
                run_id,
                kind=kind,
                name=f"step-{step:04d}",
                ttl_seconds=None,
                overwrite=False,
                uri_scheme="logits",
            )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="logits-bench-sync-") as scratch:
        root = Path(scratch)
        with start_in_thread(root / "server", ServerSettings()) as server:
            key = server.store.create_api_key("bench")
            started = time.perf_counter()
            populate(server.store, "bench")
            print(
                f"setup: {CHECKPOINTS} checkpoints saved in {time.perf_counter() - started:.1f} s"
            )

            env = {"LOGITS_HOME": str(root / "client"), "LOGITS_API_KEY": key}
            settings = config.resolve(base_url=server.base_url, env=env)
            dest = root / "mirror"

            async def sync_once(options: SyncOptions):
                async with open_client(settings) as client:
                    return await run_sync(client, dest, options)

            started = time.perf_counter()
            first = asyncio.run(sync_once(SyncOptions(jobs=4)))
            assert first.counts()["downloaded"] == CHECKPOINTS, first.counts()
            print(
                f"setup: first sync downloaded {CHECKPOINTS} in {time.perf_counter() - started:.1f} s"
            )

            library: list[float] = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                summary = asyncio.run(sync_once(SyncOptions()))
                library.append(time.perf_counter() - started)
                assert summary.counts()["present"] == CHECKPOINTS and summary.bytes_fetched == 0

            process_env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(root),
                "LOGITS_BASE_URL": server.base_url,
                **env,
            }
            command = [sys.executable, "-m", "logits_cli", "ckpt", "sync", "-o", str(dest)]
            process: list[float] = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                done = subprocess.run(
                    command, env=process_env, capture_output=True, stdin=subprocess.DEVNULL
                )
                process.append(time.perf_counter() - started)
                assert done.returncode == 0, done.stderr

    lib_median, proc_median = statistics.median(library), statistics.median(process)
    print(f"run_sync, nothing new, {CHECKPOINTS} present: median {lib_median * 1000:.0f} ms")
    print(f"`logits ckpt sync` process, same:       median {proc_median * 1000:.0f} ms")
    verdict = "OK" if proc_median <= TARGET_S else "OVER"
    print(f"target ≤ {TARGET_S:.0f} s (whole process): {verdict} ({proc_median / TARGET_S:.2f}×)")


if __name__ == "__main__":
    main()
