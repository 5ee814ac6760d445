"""The transfer engine through a fault-injecting proxy: resets, stalls, truncation, 5xx bursts,
servers that ignore Range, corrupted bytes and expiring URLs (docs/ARCHITECTURE.md §3, docs/protocol.md §6.3).

The server issues blob URLs pointing at the proxy (``public_url``), so API calls go straight
to the server and only archive bytes cross the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transfer_support import listing, make_checkpoint, ref_of, remote_client, server_blob

from logits_cli import models
from logits_cli.api import DownloadOptions
from logits_cli.api.verify import verify_checkpoint_dir
from logits_cli.errors import DownloadUrlRefusedError, IntegrityError, UnavailableError
from tests.faultproxy import Fault, FaultProxy

MiB = 1024 * 1024
OPTIONS = DownloadOptions(connections=3, segment_size=MiB, stall_timeout=0.5, keep_archive=True)


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
        server = server_factory(public_url=proxy.url, **settings)
        proxy.upstream = ("127.0.0.1", server.port)
        return server, proxy

    yield start
    for proxy in proxies:
        proxy.__exit__(None, None, None)


def run_download(
    server: Any,
    tmp_path: Path,
    *,
    before: Callable[[models.Checkpoint], None] = lambda _: None,
    options: DownloadOptions = OPTIONS,
    wrap_client: Callable[[Any], None] = lambda _: None,
) -> tuple[models.Checkpoint, Any]:
    async def scenario() -> tuple[models.Checkpoint, Any]:
        async with remote_client(server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=1)
            before(checkpoint)
            wrap_client(client)
            try:
                result = await client.download(
                    ref_of(checkpoint), tmp_path / "dest", options=options
                )
            except Exception as exc:
                return checkpoint, exc
            return checkpoint, result

    return asyncio.run(scenario())


def assert_good(server: Any, checkpoint: models.Checkpoint, result: Any, tmp_path: Path) -> None:
    assert not isinstance(result, Exception), result
    assert verify_checkpoint_dir(result.path).ok
    tar = tmp_path / "dest" / "ckpt.tar"
    assert tar.read_bytes() == server_blob(server.store, checkpoint).read_bytes()
    assert listing(tmp_path / "dest") == ["ckpt", "ckpt.tar"]


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
    checkpoint, result = run_download(server, tmp_path)
    assert_good(server, checkpoint, result, tmp_path)
    assert proxy.faults_applied == 7
    # Bytes that arrived before a fault are kept, never fetched twice.
    assert result.bytes_fetched == checkpoint.size_bytes


def test_a_dead_network_fails_unavailable_and_keeps_nothing_final(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    proxy.plan.extend([Fault("status", status=503)] * 3 + [Fault("reset", after=0)] * 100)
    _, result = run_download(server, tmp_path)
    assert isinstance(result, UnavailableError)
    assert "without progress" in str(result)
    assert set(listing(tmp_path / "dest")) <= {".ckpt.part", ".ckpt.part.json"}


def test_overall_timeout_is_unavailable(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    proxy.plan.extend([Fault("stall", after=0)] * 10)
    options = DownloadOptions(connections=2, segment_size=MiB, stall_timeout=60, timeout=0.5)
    _, result = run_download(server, tmp_path, options=options)
    assert isinstance(result, UnavailableError)
    assert str(result) == "download did not finish within 0.5 s"
    assert not (tmp_path / "dest" / "ckpt").exists()


def test_a_server_ignoring_range_gets_one_streamed_request(proxied, tmp_path: Path) -> None:
    server, proxy = proxied(strip_range=True)
    checkpoint, result = run_download(server, tmp_path)
    assert_good(server, checkpoint, result, tmp_path)
    assert result.bytes_fetched == checkpoint.size_bytes
    assert proxy.connections == 1


def test_a_truncated_stream_without_range_support_restarts(proxied, tmp_path: Path) -> None:
    server, proxy = proxied(strip_range=True)
    proxy.plan.append(Fault("truncate", after=500_000))
    checkpoint, result = run_download(server, tmp_path)
    assert_good(server, checkpoint, result, tmp_path)
    assert checkpoint.size_bytes < result.bytes_fetched < checkpoint.size_bytes + 500_000


def test_a_corrupted_byte_means_one_fresh_download(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()
    proxy.plan.append(Fault("corrupt", after=20_000))
    checkpoint, result = run_download(server, tmp_path)
    assert_good(server, checkpoint, result, tmp_path)
    assert result.bytes_fetched == 2 * checkpoint.size_bytes


def test_corruption_every_time_is_an_integrity_error(proxied, tmp_path: Path) -> None:
    server, _ = proxied(corrupt_every=1_000_003)
    _, result = run_download(server, tmp_path)
    assert isinstance(result, IntegrityError)
    assert "twice" in str(result)
    assert listing(tmp_path / "dest") == []


def test_a_tampered_blob_on_the_server_is_refused(proxied, tmp_path: Path) -> None:
    server, _ = proxied()

    def tamper(checkpoint: models.Checkpoint) -> None:
        blob = server_blob(server.store, checkpoint)
        data = bytearray(blob.read_bytes())
        data[600] ^= 0x01  # inside the first member's data
        blob.write_bytes(bytes(data))

    _, result = run_download(server, tmp_path, before=tamper)
    assert isinstance(result, IntegrityError)
    assert listing(tmp_path / "dest") == []


def counting_archive_urls(calls: list[models.CheckpointArchiveUrlResponse], delay_first: float = 0):
    """Wrap ``client.archive_url`` to record its answers; optionally hand out the first URL
    only after it has expired while claiming a long life (a client with a fast clock)."""

    def wrap(client: Any) -> None:
        original = client.archive_url

        async def archive_url(ref: Any) -> models.CheckpointArchiveUrlResponse:
            answer = await original(ref)
            calls.append(answer)
            if delay_first and len(calls) == 1:
                await asyncio.sleep(delay_first)
                return answer.model_copy(update={"expires": answer.expires.replace(year=2099)})
            return answer

        client.archive_url = archive_url

    return wrap


def test_url_expiring_mid_transfer_is_replaced(proxied, tmp_path: Path) -> None:
    # ~4 MiB at 1 MiB/s through the proxy: the 1-second URLs expire many times over.
    server, _ = proxied(rate=MiB, download_url_ttl=1)
    calls: list[models.CheckpointArchiveUrlResponse] = []
    checkpoint, result = run_download(server, tmp_path, wrap_client=counting_archive_urls(calls))
    assert_good(server, checkpoint, result, tmp_path)
    assert len(calls) >= 2
    assert result.bytes_fetched == checkpoint.size_bytes


def test_403_url_expired_fetches_a_fresh_url(proxied, tmp_path: Path) -> None:
    server, _ = proxied(download_url_ttl=1)
    calls: list[models.CheckpointArchiveUrlResponse] = []
    wrap = counting_archive_urls(calls, delay_first=2.1)
    checkpoint, result = run_download(server, tmp_path, wrap_client=wrap)
    assert_good(server, checkpoint, result, tmp_path)
    assert len(calls) >= 2


def test_a_bad_signature_is_refused_after_one_fresh_url(proxied, tmp_path: Path) -> None:
    server, _ = proxied()
    calls: list[str] = []

    def wrap(client: Any) -> None:
        original = client.archive_url

        async def archive_url(ref: Any) -> models.CheckpointArchiveUrlResponse:
            answer = await original(ref)
            calls.append(answer.url)
            return answer.model_copy(update={"url": answer.url[:-4] + "AAAA"})

        client.archive_url = archive_url

    _, result = run_download(server, tmp_path, wrap_client=wrap)
    assert isinstance(result, DownloadUrlRefusedError), result
    assert result.exit_code == 11
    assert "(HTTP 403 bad_signature: download URL signature is invalid)" in str(result)
    assert "AAAA" not in str(result)  # no URL, so no signature, in the message
    assert len(calls) == 1 + 2  # the generation probe, the URL, one fresh URL
    assert listing(tmp_path / "dest") == []


def test_resume_against_a_server_that_stopped_honouring_range(proxied, tmp_path: Path) -> None:
    server, proxy = proxied()

    async def scenario() -> None:
        async with remote_client(server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=1)
            halfway = asyncio.Event()

            def progress(done: int, total: int | None) -> None:
                if done >= checkpoint.size_bytes // 2:
                    halfway.set()

            task = asyncio.create_task(
                client.download(
                    ref_of(checkpoint), tmp_path / "dest", options=OPTIONS, progress=progress
                )
            )
            await halfway.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            proxy.strip_range = True
            result = await client.download(ref_of(checkpoint), tmp_path / "dest", options=OPTIONS)
            assert result.bytes_fetched == checkpoint.size_bytes
            assert_good(server, checkpoint, result, tmp_path)

    asyncio.run(scenario())
