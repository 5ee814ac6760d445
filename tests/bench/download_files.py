"""Per-file download benchmark (tests/bench): the files generation (docs/protocol.md §11.3).

    .venv/bin/python tests/bench/download_files.py [--base-model Qwen/Qwen3-4B] [--rank 32]

Starts ``logits server --downloads files`` in its own process, makes a run of the base model,
exports it with ``save_weights_external``, then alternates, in one run: ``curl`` fetching the
same per-file URLs one after another, and our engine (``download`` of the external_weights/
checkpoint: every file fetched, verified and installed durably) in a child process that
reports its peak RSS. Target: ≥ 0.9× curl. Prints the medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import children_cpu, engine, free_port, wait_for_server

from logits_cli.api import open_client
from logits_cli.config import Settings
from logits_cli.server.serve import open_store
from logits_cli.server.settings import ServerSettings
from logits_cli.uri import CheckpointRef

SERVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from logits_cli.server.serve import serve
    from logits_cli.server.settings import ServerSettings
    serve(Path(sys.argv[1]), ServerSettings(downloads="files"), "127.0.0.1", int(sys.argv[2]))
    """
)


def settings(base_url: str, key: str, home: Path) -> Settings:
    return Settings(
        home=home, base_url=base_url, profile=None, run=None, debug=False, api_key_value=key
    )


async def prepare(base_url: str, key: str, home: Path, base_model: str, rank: int) -> str:
    async with open_client(settings(base_url, key, home)) as client:
        run = await client.create_run(base_model, rank=rank, seed=0)
        export = await client.save_external(run.training_run_id, "bench", ttl_seconds=86400)
        return str(export)


async def file_urls(base_url: str, key: str, home: Path, path: str) -> dict[str, str]:
    async with open_client(settings(base_url, key, home)) as client:
        return dict((await client.external_weights_urls(CheckpointRef.parse(path))).urls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="Qwen/Qwen3-4B")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; medians")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="logits-bench-files-", dir=args.workdir))
    server_home = work / "server"
    store = open_store(server_home, ServerSettings())
    key = store.create_api_key("bench")
    store.close()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(server_home), str(port)], stderr=subprocess.DEVNULL
    )
    try:
        wait_for_server(port)
        path = asyncio.run(prepare(base_url, key, work / "client", args.base_model, args.rank))
        curl_times, curl_cpu, ours_runs = [], [], []
        for _ in range(args.repeat):
            urls = asyncio.run(file_urls(base_url, key, work / "client", path))
            target = work / "curl"
            target.mkdir()
            os.sync()
            before = children_cpu()
            started = time.perf_counter()
            for name, url in sorted(urls.items()):
                subprocess.run(["curl", "-sS", "-f", "-o", str(target / name), url], check=True)
            curl_times.append(time.perf_counter() - started)
            curl_cpu.append(children_cpu() - before)
            size = sum(p.stat().st_size for p in target.iterdir())
            shutil.rmtree(target)
            os.sync()
            ours_runs.append(engine(base_url, key, path, work / "ours", "files"))
            shutil.rmtree(work / "ours")
        curl_s = statistics.median(curl_times)
        ours_s = statistics.median(run["seconds"] for run in ours_runs)
        print(
            f"export: {size / 2**20:.0f} MiB in {len(urls)} files ({args.base_model}, rank {args.rank})"
        )
        print(
            f"curl, one file after another: {curl_s:.3f} s, cpu {statistics.median(curl_cpu):.2f} s"
        )
        print(
            f"logits download (fetch + verify + durable install): {ours_s:.3f} s, "
            f"cpu {statistics.median(run['cpu'] for run in ours_runs):.2f} s, "
            f"peak RSS {max(run['peak_rss'] for run in ours_runs) / 2**20:.0f} MB"
        )
        print(f"speed ratio (curl time / ours): {curl_s / ours_s:.2f}x  (target >= 0.9x)")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
