"""Benchmark (tests/bench): 64 concurrent clients against a team server of 1 and of 4
processes (``logits server start --workers N``) on one PostgreSQL database.

Each client owns a run of ``logits/tiny`` and loops over list (its run's checkpoints),
info (its run) and a save of a small checkpoint (submit + poll the future until done) for
``--seconds``; the two server sizes run alternately, ``--rounds`` times each, on fresh
databases. Prints operations per second and p50/p99 latency per operation kind for each,
and the ratio 4 processes / 1. PostgreSQL is started the way the tests start it
(tests/services.py: initdb + pg_ctl in a temporary directory).

Run: ``.venv/bin/python tests/bench/team_server.py [--clients 64] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.services import free_port, run_postgres

KINDS = ("list", "info", "save")


def start_server(home: Path, database: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logits_cli",
            "server",
            "start",
            "--port",
            str(port),
            "--database",
            database,
            "--workers",
            str(workers),
            "--home",
            str(home),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LOGITS_HOME": str(home)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/api/v1/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.1)


async def client(http: httpx.AsyncClient, index: int, stop: float, samples: dict) -> None:
    session = (
        await http.post(
            "/api/v1/create_session",
            json={
                "tags": [],
                "sdk_version": "bench",
                "user_metadata": {},
                "type": "create_session",
            },
        )
    ).json()
    body = {
        "session_id": session["session_id"],
        "model_seq_id": 0,
        "base_model": "logits/tiny",
        "lora_config": {"rank": 2, "seed": index},
    }
    handle = (await http.post("/api/v1/create_model", json=body)).json()
    model_id = (await poll(http, handle))["model_id"]
    step = 0
    while time.monotonic() < stop:
        started = time.perf_counter()
        assert (await http.get(f"/api/v1/training_runs/{model_id}/checkpoints")).status_code == 200
        samples["list"].append(time.perf_counter() - started)
        started = time.perf_counter()
        assert (await http.get(f"/api/v1/training_runs/{model_id}")).status_code == 200
        samples["info"].append(time.perf_counter() - started)
        started = time.perf_counter()
        handle = (
            await http.post("/api/v1/save_weights", json={"model_id": model_id, "path": f"s{step}"})
        ).json()
        result = await poll(http, handle)
        assert "path" in result, result
        samples["save"].append(time.perf_counter() - started)
        step += 1


async def poll(http: httpx.AsyncClient, handle: dict) -> dict:
    while True:
        answer = (
            await http.post("/api/v1/retrieve_future", json={"request_id": handle["request_id"]})
        ).json()
        if answer.get("type") != "try_again":
            return answer


async def load(base: str, key: str, clients: int, seconds: float) -> tuple[float, dict]:
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, timeout=120, limits=limits
    ) as http:
        started = time.perf_counter()
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(http, i, stop, samples) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return elapsed, samples


def one_round(postgres, workers: int, clients: int, seconds: float) -> dict:
    from logits_cli.store.store import Store

    home = Path(tempfile.mkdtemp(prefix="logits-team-bench-"))
    database = postgres.new_database()
    store = Store.open(home / "store", database=database)
    key = store.create_api_key("bench")
    store.close()
    process, base = start_server(home, database, workers)
    try:
        elapsed, samples = asyncio.run(load(base, key, clients, seconds))
    finally:
        process.send_signal(signal.SIGTERM)  # the parent stops its workers on SIGTERM
        process.wait(60)
        shutil.rmtree(home, ignore_errors=True)
    operations = sum(len(v) for v in samples.values())
    return {"ops_per_s": operations / elapsed, "samples": samples}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[int, list[dict]] = {1: [], 4: []}
    with run_postgres() as postgres:
        for _ in range(args.rounds):
            for workers in (1, 4):  # alternating: both see the same machine
                results[workers].append(one_round(postgres, workers, args.clients, args.seconds))
    print(
        f"{args.clients} clients, {args.seconds:.0f} s x {args.rounds} rounds, {os.cpu_count()} cores"
    )
    rates = {}
    for workers, runs in results.items():
        rates[workers] = statistics.median(r["ops_per_s"] for r in runs)
        merged = {kind: [s for r in runs for s in r["samples"][kind]] for kind in KINDS}
        latency = ", ".join(
            f"{kind} p50 {p(merged[kind], 0.5):.0f} ms p99 {p(merged[kind], 0.99):.0f} ms"
            for kind in KINDS
        )
        print(f"{workers} process(es): {rates[workers]:7.1f} ops/s  ({latency})")
    print(f"4 processes / 1: {rates[4] / rates[1]:.2f}x the operations per second")


if __name__ == "__main__":
    main()
