"""The per-file engine (the files generation, docs/protocol.md §11.3) through the fault proxy:
the scenarios of test_transfer_faults.py against ``--downloads files``, where an
``external_weights/`` checkpoint is fetched file by file from its URL map.

The server hands out file URLs on the proxy (``public_url``); API calls go straight to the
server. What was installed is compared with the same files fetched from the server directly.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transfer_support import listing, remote_client

from logits_cli.api import DownloadOptions
from logits_cli.api.download_options import FileUrls
from logits_cli.api.verify import verify_checkpoint_dir
from logits_cli.errors import IntegrityError, UnavailableError
from logits_cli.uri import CheckpointRef
from tests.faultproxy import Fault, FaultProxy

MiB = 1024 * 1024
OPTIONS = DownloadOptions(connections=3, segment_size=MiB, stall_timeout=0.5)


@pytest.fixture
def proxied(server_factory: Callable[..., Any]) -> Iterator[Callable[..., tuple[Any, FaultProxy]]]:
    proxies: list[FaultProxy] = []

    def start(
        *,
        rate: int | None = None,
        strip_range: bool = False,
        corrupt_every: int | None = None,
        **settings: Any,
    ) -> tuple[Any, FaultProxy]:
        proxy = FaultProxy(rate=rate, strip_range=strip_range, corrupt_every=corrupt_every)
        proxy.__enter__()
        proxies.append(proxy)
        server = server_factory(public_url=proxy.url, downloads="files", **settings)
        proxy.upstream = ("127.0.0.1", server.port)
        return server, proxy

    yield start
    for proxy in proxies:
        proxy.__exit__(None, None, None)


def run_download(
    server: Any,
    proxy: FaultProxy,
    tmp_path: Path,
    *,
    options: DownloadOptions = OPTIONS,
    url_maps: list[FileUrls] | None = None,
) -> tuple[dict[str, str], Any]:
    """Export a run (``save_weights_external``), download it; returns the sha256 of each
    file as the server serves it (fetched directly, not through the proxy) and the
    download's result or exception."""

    async def scenario() -> tuple[dict[str, str], Any]:
        async with remote_client(server, tmp_path / "home") as client:
            run = await client.create_run("Qwen/Qwen3-0.6B", rank=1, seed=1)
            ref = await client.save_external(run.training_run_id, "exp", ttl_seconds=3600)
            expected = await served_digests(client, ref, server, proxy)
            if url_maps is not None:
                original = client.external_weights_urls

                async def counting(target: CheckpointRef) -> FileUrls:
                    answer = await original(target)
                    url_maps.append(answer)
                    return answer

                client.external_weights_urls = counting  # type: ignore[method-assign]
            try:
                result = await client.download(ref, tmp_path / "dest", options=options)
            except Exception as exc:
                return expected, exc
            return expected, result

    return asyncio.run(scenario())


async def served_digests(
    client: Any, ref: CheckpointRef, server: Any, proxy: FaultProxy
) -> dict[str, str]:
    names = list((await client.external_weights_urls(ref)).urls)
    digests = {}
    async with httpx.AsyncClient() as http:
        for name in names:
            # A fresh map per file: a test's URLs may live one second, less than a loaded
            # machine takes to fetch every file of one map.
            url = (await client.external_weights_urls(ref)).urls[name]
            answer = await http.get(url.replace(proxy.url, server.base_url))
            assert answer.status_code == 200, (name, answer.status_code)
            digests[name] = hashlib.sha256(answer.content).hexdigest()
    return digests


def assert_good(expected: dict[str, str], result: Any) -> None:
    assert not isinstance(result, Exception), result
    assert verify_checkpoint_dir(result.path).ok
    installed = {
        name: hashlib.sha256((result.path / name).read_bytes()).hexdigest() for name in expected
    }
    assert installed == expected
    assert listing(result.path.parent) == ["exp"]  # no part directory left behind


def total_size(result: Any, expected: dict[str, str]) -> int:
    """The bytes of the checkpoint's files (not of our manifest)."""
    return sum((result.path / name).stat().st_size for name in expected)


def test_resets_stalls_truncation_and_5xx_bursts_are_survived(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    proxy.plan.extend(
        [
            Fault("status", status=503),
            Fault("reset", after=100_000),
            Fault("status", status=500),
            Fault("truncate", after=300_000),
            Fault("stall", after=50_000),
            Fault("status", status=503),
            Fault("reset", after=0),
        ]
    )
    expected, result = run_download(server, proxy, tmp_path)
    assert_good(expected, result)
    # Faults go to connections in turn; one may fall on the small adapter_config.json,
    # whose answer ends before the fault's offset.
    assert proxy.faults_applied >= 6
    # Bytes that arrived before a fault are kept, never fetched twice.
    assert result.bytes_fetched == total_size(result, expected)


def test_a_server_ignoring_range_still_delivers_every_file(proxied, tmp_path: Path) -> None:
    server, proxy = proxied(strip_range=True)
    expected, result = run_download(server, proxy, tmp_path)
    assert_good(expected, result)
    assert result.bytes_fetched == total_size(result, expected)


def test_a_corrupted_byte_means_that_file_is_fetched_again(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    # One connection per file (3 // 2), opened together: the first two connections are the
    # two files', and the fault lands only on the one that carries 20 kB.
    proxy.plan.extend([Fault("corrupt", after=20_000)] * 2)
    expected, result = run_download(server, proxy, tmp_path)
    assert_good(expected, result)
    assert proxy.faults_applied == 1
    assert (
        total_size(result, expected) < result.bytes_fetched < 2 * total_size(result, expected) + 1
    )


def test_corruption_every_time_is_an_integrity_error(proxied, tmp_path: Path) -> None:
    server, proxy = proxied(corrupt_every=100_003)
    _, result = run_download(server, proxy, tmp_path)
    assert isinstance(result, IntegrityError), result
    assert not (tmp_path / "dest" / "exp").exists()


def test_a_dead_network_fails_unavailable_and_installs_nothing(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    proxy.plan.extend([Fault("status", status=503)] * 3 + [Fault("reset", after=0)] * 200)
    _, result = run_download(server, proxy, tmp_path)
    assert isinstance(result, UnavailableError), result
    assert "without progress" in str(result)
    assert not (tmp_path / "dest" / "exp").exists()


def test_url_map_expiring_mid_file_is_replaced(proxied, tmp_path: Path) -> None:
    # Megabytes at 1 MiB/s through the proxy: the 1-second URLs expire in the middle of a
    # file, and the rest of it is fetched with Range from a fresh URL map.
    server, proxy = proxied(rate=MiB, download_url_ttl=1)
    maps: list[FileUrls] = []
    expected, result = run_download(server, proxy, tmp_path, url_maps=maps)
    assert_good(expected, result)
    assert len(maps) >= 2
    assert maps[-1].expires > maps[0].expires  # renewed, not the same map again
    assert result.bytes_fetched == total_size(result, expected)
