"""Resume: an interrupted or killed download continues with the missing bytes only, and large
archives come through intact (docs/ARCHITECTURE.md §3, §8)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from transfer_support import (
    assert_matches_archive,
    listing,
    make_checkpoint,
    ref_of,
    remote_client,
    server_blob,
)

from logits_cli import models
from logits_cli.api import DownloadOptions
from logits_cli.api.verify import verify_checkpoint_dir

MiB = 1024 * 1024
CONNECTIONS = 4
OPTIONS = DownloadOptions(connections=CONNECTIONS, segment_size=MiB)

# Runs the engine in a child process that freezes, never to finish, once ``stop_at`` bytes are
# on disk; the parent then kills it with SIGKILL.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from logits_cli.api import DownloadOptions, open_client
    from logits_cli.config import Settings
    from logits_cli.uri import CheckpointRef

    base_url, key, path, dest, stop_at, home, connections, segment = sys.argv[1:9]

    def progress(done, total):
        if done >= int(stop_at):
            print("PAUSED", flush=True)
            time.sleep(3600)

    async def main():
        settings = Settings(home=Path(home), base_url=base_url, profile=None, run=None,
                            debug=False, api_key_value=key)
        async with open_client(settings) as client:
            options = DownloadOptions(connections=int(connections), segment_size=int(segment))
            await client.download(CheckpointRef.parse(path), Path(dest), options=options,
                                  progress=progress)

    asyncio.run(main())
    print("DONE", flush=True)
    """
)


def journaled_bytes(dest: Path) -> int:
    return sum(json.loads((dest / ".ckpt.part.json").read_text())["filled"])


def kill_at(server: Any, key: str, checkpoint: models.Checkpoint, dest: Path, stop_at: int) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            server.base_url,
            key,
            checkpoint.tinker_path,
            str(dest),
            str(stop_at),
            str(dest.parent / "child-home"),
            str(CONNECTIONS),
            str(MiB),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("LOGITS_", "TINKER_"))},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "PAUSED"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_fetches_only_what_is_missing(
    live_server: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    key = live_server.api_key("alice")

    async def create() -> models.Checkpoint:
        async with remote_client(live_server, tmp_path / "home") as client:
            return await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=4)

    checkpoint = asyncio.run(create())
    size = checkpoint.size_bytes
    assert size is not None and size > 16 * MiB
    rng = random.Random()
    points = sorted(rng.uniform(0.1, 0.9) * size for _ in range(3))
    journaled = 0
    for point in points:
        kill_at(live_server, key, checkpoint, dest, max(int(point), journaled + 1))
        now = journaled_bytes(dest)
        assert now >= journaled
        journaled = now
        assert not (dest / "ckpt").exists()

    async def resume() -> Any:
        async with remote_client(live_server, tmp_path / "home") as client:
            return await client.download(ref_of(checkpoint), dest, options=OPTIONS)

    result = asyncio.run(resume())
    assert result.resumed
    assert result.bytes_fetched <= size - journaled + CONNECTIONS * MiB
    assert result.bytes_fetched == size - journaled
    assert listing(dest) == ["ckpt"]
    assert_matches_archive(result.path, server_blob(live_server.store, checkpoint))


def test_cancelled_download_resumes_in_process(live_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=1)
            size = checkpoint.size_bytes
            halfway = asyncio.Event()

            def progress(done: int, total: int | None) -> None:
                if done >= size // 2:
                    halfway.set()

            task = asyncio.create_task(
                client.download(ref_of(checkpoint), dest, options=OPTIONS, progress=progress)
            )
            await halfway.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert listing(dest) == [".ckpt.part", ".ckpt.part.json"]
            journaled = journaled_bytes(dest)
            assert journaled >= size // 2

            result = await client.download(ref_of(checkpoint), dest, options=OPTIONS)
            assert result.resumed
            assert result.bytes_fetched == size - journaled
            assert verify_checkpoint_dir(result.path).ok
            assert listing(dest) == ["ckpt"]

    asyncio.run(scenario())


def test_journal_of_another_checkpoint_is_discarded(live_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            dest.mkdir()
            (dest / ".ckpt.part").write_bytes(b"\0" * checkpoint.size_bytes)
            journal = {
                "format": 1,
                "identity": {
                    "tinker_path": "logits://other:train:0/weights/ckpt",
                    "size": checkpoint.size_bytes,
                    "sha256": "0" * 64,
                },
                "size": checkpoint.size_bytes,
                "segment_size": checkpoint.size_bytes,
                "filled": [checkpoint.size_bytes],
                "headers": {},
            }
            (dest / ".ckpt.part.json").write_text(json.dumps(journal))
            result = await client.download(ref_of(checkpoint), dest)
            assert not result.resumed
            assert result.bytes_fetched == checkpoint.size_bytes
            assert verify_checkpoint_dir(result.path).ok

    asyncio.run(scenario())


@pytest.mark.slow
def test_large_archive_over_a_socket(live_server: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-8B", rank=16)
            assert checkpoint.size_bytes >= 500 * 1000 * 1000
            result = await client.download(ref_of(checkpoint), tmp_path / "dest")
            assert result.bytes_fetched == checkpoint.size_bytes
            assert listing(tmp_path / "dest") == ["ckpt"]
            assert_matches_archive(result.path, server_blob(live_server.store, checkpoint))

    asyncio.run(scenario())


def test_unreadable_journal_means_a_fresh_start(live_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            dest.mkdir()
            (dest / ".ckpt.part").write_bytes(b"junk")
            (dest / ".ckpt.part.json").write_text("{not json")
            result = await client.download(ref_of(checkpoint), dest)
            assert not result.resumed
            assert result.bytes_fetched == checkpoint.size_bytes
            assert listing(dest) == ["ckpt"]

    asyncio.run(scenario())


def test_bad_bytes_behind_a_complete_journal_are_fetched_again(
    live_server: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"

    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            size = checkpoint.size_bytes
            dest.mkdir()
            part = bytearray(server_blob(live_server.store, checkpoint).read_bytes())
            part[size // 2] ^= 0xFF  # the disk lied after the journal said "done"
            (dest / ".ckpt.part").write_bytes(bytes(part))
            identity = {
                "tinker_path": checkpoint.tinker_path,
                "size": size,
                "sha256": checkpoint.sha256,
            }
            journal = {
                "format": 1,
                "identity": identity,
                "size": size,
                "segment_size": MiB,
                "filled": [min(MiB, size - start) for start in range(0, size, MiB)],
                "headers": {},
            }
            (dest / ".ckpt.part.json").write_text(json.dumps(journal))

            result = await client.download(ref_of(checkpoint), dest)
            assert result.resumed
            assert result.bytes_fetched == size  # nothing left to resume, then one fresh copy
            assert verify_checkpoint_dir(result.path).ok
            assert listing(dest) == ["ckpt"]

    asyncio.run(scenario())
