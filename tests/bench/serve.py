"""Serving benchmark (tests/bench): ``logits server`` against nginx serving the same blob file.

    .venv/bin/python tests/bench/serve.py [--base-model Qwen/Qwen3-4B] [--rank 32] [--repeat 5]

Starts ``logits server`` in its own process with one archive (Qwen3-4B rank 32, ~813 MiB),
and nginx (``sendfile on``, one worker; ``apt-get install nginx`` if it is missing) with its
root at the store's blob directory. ``curl -o /dev/null`` fetches the archive from each,
interleaved, ``--repeat`` times; each server's CPU time (user + system, its whole process
tree) during the fetch gives CPU per MiB. Then 8 concurrent curls of 8 different
checkpoints from ``logits server``: the sum of their throughputs against one stream's.
Targets: ≥ 0.8× nginx's speed, CPU per MiB ≤ 2× nginx's, 8 streams' sum ≥ one stream.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import SERVER, free_port, signed_url, wait_for_server

from logits_cli.api import open_client
from logits_cli.config import Settings
from logits_cli.server.serve import open_store
from logits_cli.server.settings import ServerSettings

STREAMS = 8

NGINX_CONF = textwrap.dedent(
    """
    daemon off;
    user root;
    worker_processes 1;
    pid {prefix}/nginx.pid;
    error_log {prefix}/error.log;
    events {{ worker_connections 64; }}
    http {{
        access_log off;
        sendfile on;
        tcp_nopush on;
        server {{
            listen 127.0.0.1:{port};
            root {root};
        }}
    }}
    """
)


def tree_cpu(pid: int) -> float:
    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def fetch(url: str, server_pid: int) -> tuple[float, float]:
    """(seconds, server CPU seconds) of one ``curl -o /dev/null``."""
    cpu_before = tree_cpu(server_pid)
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - started, tree_cpu(server_pid) - cpu_before


async def prepare(base_url: str, key: str, home: Path, base_model: str, rank: int, count: int):
    settings = Settings(
        home=home, base_url=base_url, profile=None, run=None, debug=False, api_key_value=key
    )
    async with open_client(settings) as client:
        run = await client.create_run(base_model, rank=rank, seed=0)
        saved = []
        for index in range(count):
            # Each save of the same state is one archive; the names make their digests differ.
            saved.append(await client.save(run.training_run_id, f"serve{index}", timeout=600))
        return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="Qwen/Qwen3-4B")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed (apt-get install nginx)")

    work = Path(tempfile.mkdtemp(prefix="logits-serve-bench-", dir=args.workdir))
    server_home = work / "server"
    store = open_store(server_home, ServerSettings())
    key = store.create_api_key("bench")
    store.close()
    port, nginx_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(server_home), str(port)], stderr=subprocess.DEVNULL
    )
    nginx_process = None
    try:
        wait_for_server(port)
        saved = asyncio.run(
            prepare(base_url, key, work / "client", args.base_model, args.rank, STREAMS)
        )
        size = saved[0].size_bytes
        assert size is not None
        blob = saved[0].sha256
        blobs_dir = server_home / "store" / "blobs"
        (work / "nginx").mkdir()
        conf = work / "nginx" / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=work / "nginx", port=nginx_port, root=blobs_dir))
        nginx_process = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(work / "nginx")], stderr=subprocess.DEVNULL
        )
        wait_for_server(nginx_port)
        nginx_url = f"http://127.0.0.1:{nginx_port}/{blob}"
        print(f"archive: {size / 2**20:.0f} MiB ({args.base_model}, rank {args.rank})")

        ours, theirs = [], []
        for _ in range(args.repeat):  # interleaved, the file in the page cache for both
            url = asyncio.run(signed_url(base_url, key, work / "client", saved[0].tinker_path))
            ours.append(fetch(url, server.pid))
            theirs.append(fetch(nginx_url, nginx_process.pid))
        ours_s = statistics.median(t for t, _ in ours)
        nginx_s = statistics.median(t for t, _ in theirs)
        ours_cpu = statistics.median(c for _, c in ours) / (size / 2**20)
        nginx_cpu = statistics.median(c for _, c in theirs) / (size / 2**20)
        print(
            f"runs (s): logits {[round(t, 2) for t, _ in ours]}, nginx {[round(t, 2) for t, _ in theirs]}"
        )
        print(
            f"logits server: {ours_s:.2f} s {size / ours_s / 2**20:7.0f} MiB/s, {ours_cpu * 1000:.2f} ms CPU/MiB"
        )
        print(
            f"nginx:         {nginx_s:.2f} s {size / nginx_s / 2**20:7.0f} MiB/s, {nginx_cpu * 1000:.2f} ms CPU/MiB"
        )
        print(
            f"speed vs nginx: {nginx_s / ours_s:.2f}x (target >= 0.8x); CPU per MiB {ours_cpu / nginx_cpu:.2f}x nginx's (target <= 2x)"
        )

        urls = [
            asyncio.run(signed_url(base_url, key, work / "client", c.tinker_path)) for c in saved
        ]
        started = time.perf_counter()
        curls = [
            subprocess.Popen(
                ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total}", u],
                stdout=subprocess.PIPE,
                text=True,
            )
            for u in urls
        ]
        times = [float(c.communicate()[0]) for c in curls]
        wall = time.perf_counter() - started
        total_rate = sum(size / t for t in times) / 2**20
        print(
            f"{STREAMS} concurrent streams of different checkpoints: {wall:.2f} s for all, "
            f"sum of throughputs {total_rate:.0f} MiB/s = {total_rate / (size / ours_s / 2**20):.2f}x "
            "one stream's (target >= 1x)"
        )
    finally:
        for process in (server, nginx_process):
            if process is not None:
                process.send_signal(signal.SIGINT if process is server else signal.SIGQUIT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
