"""Per-file download benchmark (tests/bench): the files generation (docs/protocol.md §11.3).

    .venv/bin/python tests/bench/download_files.py [--base-model Qwen/Qwen3-4B] [--rank 32]

Starts ``logits server --downloads files`` in its own process, makes a run of the base model,
exports it with ``save_weights_external``, then interleaves, in one run: ``curl`` fetching the
same per-file URLs one after another; our engine (``download`` of the external_weights/
checkpoint: every file fetched, verified and installed durably) in a child process that
reports its peak RSS; and the same engine with response bodies read through httpx instead of
in threads (the case for ``api/blob_direct.py``). Target: ≥ 0.9× curl. Prints every round,
the medians and the ratios, and the ratio to curl followed by ``sync`` (our download returns
only once its files are on disk; curl's data may still be in the page cache).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import children_cpu, engine, free_port, openssl_sha256, settle, wait_for_server

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
        contenders = ("curl", "logits", "logits-httpx")
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        size = 0
        for round_ in range(args.repeat):
            # Interleaved, in a rotated order, each after the same settling pause.
            for name in contenders[round_ % 3 :] + contenders[: round_ % 3]:
                settle()
                if name == "curl":
                    urls = asyncio.run(file_urls(base_url, key, work / "client", path))
                    target = work / "curl"
                    target.mkdir()
                    before = children_cpu()
                    started = time.perf_counter()
                    for file_name, url in sorted(urls.items()):
                        subprocess.run(
                            ["curl", "-sS", "-f", "-o", str(target / file_name), url], check=True
                        )
                    seconds = time.perf_counter() - started
                    cpu = children_cpu() - before
                    # The durable yardstick: ours returns once the files are on disk.
                    subprocess.run(["sync"], check=True)
                    durable = time.perf_counter() - started
                    # The yardstick of the CPU target: curl, then sha256sum of what it wrote.
                    subprocess.run(
                        ["sha256sum", *sorted(str(p) for p in target.iterdir())],
                        check=True,
                        stdout=subprocess.DEVNULL,
                    )
                    cpu_sha = children_cpu() - before
                    # Measured after the CPU yardstick, so openssl's CPU is not counted in it.
                    verified = durable + openssl_sha256(sorted(target.iterdir()))
                    runs[name].append(
                        {
                            "seconds": seconds,
                            "durable": durable,
                            "verified": verified,
                            "cpu": cpu,
                            "cpu_sha": cpu_sha,
                        }
                    )
                    size = sum(p.stat().st_size for p in target.iterdir())
                    shutil.rmtree(target)
                else:
                    mode = "files" + name.removeprefix("logits")
                    runs[name].append(engine(base_url, key, path, work / "ours", mode))
                    shutil.rmtree(work / "ours")
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{name} {runs[name][-1]['seconds']:.3f} s (cpu {runs[name][-1]['cpu']:.2f})"
                    for name in contenders
                ),
                flush=True,
            )

        def median(name: str, field: str) -> float:
            return statistics.median(run[field] for run in runs[name])

        print(
            f"export: {size / 2**20:.0f} MiB in {len(urls)} files ({args.base_model}, rank {args.rank})"
        )
        print(
            f"curl, one file after another: {median('curl', 'seconds'):.3f} s, "
            f"cpu {median('curl', 'cpu'):.2f} s"
        )
        for name, label in (
            ("logits", "logits download (bodies read in threads)"),
            ("logits-httpx", "the same with bodies through httpx"),
        ):
            print(
                f"{label}: {median(name, 'seconds'):.3f} s, cpu {median(name, 'cpu'):.2f} s, "
                f"peak RSS {max(run['peak_rss'] for run in runs[name]) / 2**20:.0f} MB"
            )
        curl_s = median("curl", "seconds")
        print(
            f"speed ratio (curl time / ours): {curl_s / median('logits', 'seconds'):.2f}x "
            f"(target >= 0.9x); through httpx: {curl_s / median('logits-httpx', 'seconds'):.2f}x"
        )
        durable_s = median("curl", "durable")
        print(
            f"durable yardstick, curl then sync: {durable_s:.3f} s; ratio (its time / ours): "
            f"{durable_s / median('logits', 'seconds'):.2f}x (the limit: ours returns only "
            "once every file is verified and on disk)"
        )
        setup_s = median("logits", "setup")
        print(
            f"ours before its transfer starts (listing, URL map; curl is handed the URLs): "
            f"{setup_s:.3f} s; without it, ratio to curl then sync: "
            f"{durable_s / (median('logits', 'seconds') - setup_s):.2f}x"
        )
        verified_s = median("curl", "verified")
        print(
            f"the same work by hand, curl then sync then openssl sha256: {verified_s:.3f} s; "
            f"ratio (its time / ours): {verified_s / median('logits', 'seconds'):.2f}x"
        )
        print(
            f"client CPU ratio: ours / (curl + sha256sum) "
            f"{median('logits', 'cpu') / median('curl', 'cpu_sha'):.2f}x (target <= 1.5x), "
            f"ours / curl {median('logits', 'cpu') / median('curl', 'cpu'):.2f}x"
        )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
