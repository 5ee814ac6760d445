"""The transfer engine against the real server, over a socket and embedded (docs/ARCHITECTURE.md §3)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import pytest
from transfer_support import (
    assert_matches_archive,
    embedded_client,
    listing,
    make_checkpoint,
    ref_of,
    remote_client,
    server_blob,
)

from logits_cli import models
from logits_cli.api import DownloadOptions, transfer
from logits_cli.api.transfer import (
    Crc32c,
    SignedUrl,
    choose_digest,
    choose_segment_size,
    download_checkpoint,
)
from logits_cli.api.verify import MANIFEST_NAME, verify_checkpoint_dir
from logits_cli.errors import BusyError, ConflictError, LogitsError, NotFoundError

MiB = 1024 * 1024


def test_remote_download_extracts_exactly_the_archive(live_server: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            seen: list[tuple[int, int | None]] = []
            result = await client.download(
                ref_of(checkpoint), tmp_path / "dest", progress=lambda d, t: seen.append((d, t))
            )
            assert result.path == tmp_path / "dest" / "ckpt"
            assert result.bytes_fetched == checkpoint.size_bytes
            assert not result.skipped and not result.resumed
            assert seen[-1] == (checkpoint.size_bytes, checkpoint.size_bytes)
            assert listing(tmp_path / "dest") == ["ckpt"]
            assert_matches_archive(result.path, server_blob(live_server.store, checkpoint))
            manifest = models.LocalManifest.model_validate_json(
                (result.path / MANIFEST_NAME).read_bytes()
            )
            assert manifest.archive_sha256 == checkpoint.sha256
            assert manifest.tinker_path == checkpoint.tinker_path

            again = await client.download(ref_of(checkpoint), tmp_path / "dest")
            assert again.skipped and again.bytes_fetched == 0

            forced = await client.download(
                ref_of(checkpoint), tmp_path / "dest", options=DownloadOptions(force=True)
            )
            assert not forced.skipped and forced.bytes_fetched == checkpoint.size_bytes
            assert listing(tmp_path / "dest") == ["ckpt"]

    asyncio.run(scenario())


def test_remote_parallel_segments_keep_archive(live_server: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=1)
            assert checkpoint.size_bytes is not None and checkpoint.size_bytes > 3 * MiB
            options = DownloadOptions(connections=4, segment_size=MiB, keep_archive=True)
            result = await client.download(ref_of(checkpoint), tmp_path / "dest", options=options)
            assert listing(tmp_path / "dest") == ["ckpt", "ckpt.tar"]
            blob = server_blob(live_server.store, checkpoint)
            assert (tmp_path / "dest" / "ckpt.tar").read_bytes() == blob.read_bytes()
            assert_matches_archive(result.path, blob)

    asyncio.run(scenario())


def test_embedded_download_in_bounded_ranges(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, base_model="Qwen/Qwen3-0.6B", rank=2)
            assert checkpoint.size_bytes is not None and checkpoint.size_bytes > 8 * MiB
            options = DownloadOptions(archive_only=True)
            result = await client.download(ref_of(checkpoint), tmp_path / "dest", options=options)
            assert result.path == tmp_path / "dest" / "ckpt.tar"
            assert listing(tmp_path / "dest") == ["ckpt.tar"]
            digest = hashlib.sha256(result.path.read_bytes()).hexdigest()
            assert digest == checkpoint.sha256

            again = await client.download(ref_of(checkpoint), tmp_path / "dest", options=options)
            assert again.skipped

            extracted = await client.download(ref_of(checkpoint), tmp_path / "dest")
            assert_matches_archive(extracted.path, result.path)

    asyncio.run(scenario())


def test_latest_selector_is_resolved(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, name="newest")
            latest = ref_of(checkpoint).with_name("@latest")
            result = await client.download(latest, tmp_path / "dest")
            assert result.path.name == "newest"

    asyncio.run(scenario())


def test_something_else_in_the_way_is_a_conflict(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            (tmp_path / "dest" / "ckpt").mkdir(parents=True)
            (tmp_path / "dest" / "ckpt" / "mine.txt").write_text("keep me")
            with pytest.raises(ConflictError):
                await client.download(ref_of(checkpoint), tmp_path / "dest")
            assert (tmp_path / "dest" / "ckpt" / "mine.txt").exists()
            assert listing(tmp_path / "dest") == ["ckpt"]

    asyncio.run(scenario())


def test_a_held_part_lock_is_busy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            dest = tmp_path / "dest"
            dest.mkdir()
            with filelock.FileLock(dest / ".ckpt.part.lock"), pytest.raises(BusyError):
                await download_checkpoint(client, ref_of(checkpoint), dest)
            result = await client.download(ref_of(checkpoint), dest)
            assert verify_checkpoint_dir(result.path).ok
            assert listing(dest) == ["ckpt"]

    asyncio.run(scenario())


def test_deleted_checkpoint_is_not_found(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            await client.delete(ref_of(checkpoint))
            with pytest.raises(NotFoundError):
                await client.download(ref_of(checkpoint), tmp_path / "dest")

    asyncio.run(scenario())


# -- pure helpers -------------------------------------------------------------------------------


def test_digest_choice_follows_the_protocol_order() -> None:
    sha = hashlib.sha256(b"x").digest()
    other = hashlib.sha256(b"y").hexdigest()
    repr_digest = f"sha-512=:AAAA:, sha-256=:{base64.b64encode(sha).decode()}:"
    chosen = choose_digest({"repr-digest": repr_digest, "etag": f'"sha256:{other}"'}, other)
    assert (chosen.algorithm, chosen.value, chosen.source) == ("sha256", sha, "Repr-Digest")
    chosen = choose_digest({"etag": f'"sha256:{sha.hex()}"'}, other)
    assert (chosen.value, chosen.source) == (sha, "ETag")
    chosen = choose_digest({"etag": '"abc"'}, sha.hex())
    assert chosen.source == "checkpoint sha256"
    md5 = hashlib.md5(b"x").digest()
    goog = f"crc32c=AAAAAA==, md5={base64.b64encode(md5).decode()}"
    chosen = choose_digest({"x-goog-hash": goog}, None)
    assert (chosen.algorithm, chosen.value) == ("md5", md5)
    chosen = choose_digest({"x-goog-hash": "crc32c=4waSgw=="}, None)
    assert (chosen.algorithm, chosen.value) == ("crc32c", bytes.fromhex("e3069283"))
    chosen = choose_digest({"etag": f'"{md5.hex()}"'}, None)
    assert (chosen.algorithm, chosen.value) == ("md5", md5)
    assert choose_digest({"etag": f'"{md5.hex()}-3"'}, None) is None


def test_crc32c_check_value() -> None:
    crc = Crc32c()
    crc.update(b"123456789")
    assert crc.digest() == bytes.fromhex("e3069283")


def test_segment_sizes() -> None:
    assert choose_segment_size(None, connections=8, embedded=False) == 8 * MiB
    assert choose_segment_size(100 * MiB, connections=8, embedded=False) == 8 * MiB
    assert choose_segment_size(2048 * MiB, connections=8, embedded=False) == 32 * MiB
    assert choose_segment_size(2048 * MiB, connections=2, embedded=False) == 64 * MiB
    assert choose_segment_size(2048 * MiB, connections=8, embedded=True) == 4 * MiB


def test_signed_url_refresh_margin() -> None:
    now = [1000.0]
    issued: list[int] = []

    async def fetch() -> models.CheckpointArchiveUrlResponse:
        issued.append(1)
        expires = datetime.fromtimestamp(now[0] + lifetime, UTC)
        return models.CheckpointArchiveUrlResponse(url=f"u{len(issued)}", expires=expires)

    async def scenario() -> None:
        urls = SignedUrl(fetch, clock=lambda: now[0])
        assert (await urls.get())[0] == "u1"
        now[0] += lifetime - 31  # more than 30 s left: keep it
        assert (await urls.get())[0] == "u1"
        now[0] += 2  # less than 30 s left: replace it before the request
        assert (await urls.get())[0] == "u2"
        await urls.renew(1)  # someone already replaced generation 1
        assert (await urls.get())[0] == "u2"
        await urls.renew(2)
        assert (await urls.get())[0] == "u3"

    lifetime = 900
    asyncio.run(scenario())

    async def short_lived() -> None:
        urls = SignedUrl(fetch, clock=lambda: now[0])
        first = (await urls.get())[0]
        now[0] += 0.4  # a 1-second URL is kept for half its life, not replaced each time
        assert (await urls.get())[0] == first
        now[0] += 0.2
        assert (await urls.get())[0] != first
        assert not urls.expired()
        now[0] += 1
        assert urls.expired()

    lifetime = 1
    asyncio.run(short_lived())


def test_not_enough_disk_space_fails_before_fetching(tmp_path: Path, monkeypatch) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            usage = shutil.disk_usage(tmp_path)
            monkeypatch.setattr(
                transfer.install.shutil,
                "disk_usage",
                lambda _: usage._replace(free=checkpoint.size_bytes),
            )
            with pytest.raises(LogitsError, match="not enough free space"):
                await client.download(ref_of(checkpoint), tmp_path / "dest")
            assert listing(tmp_path / "dest") == []
            archive_only = DownloadOptions(archive_only=True)
            result = await client.download(
                ref_of(checkpoint), tmp_path / "dest", options=archive_only
            )
            assert result.bytes_fetched == checkpoint.size_bytes

    asyncio.run(scenario())


def test_leftovers_of_a_killed_extraction_are_swept(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            dest = tmp_path / "dest"
            (dest / ".ckpt.tmp-k1ll3d__").mkdir(parents=True)
            (dest / ".ckpt.tmp-k1ll3d__" / "adapter_model.safetensors").write_bytes(b"half")
            (dest / ".ckpt.old-0123abcd").mkdir()
            (dest / ".ckpt.tar.old-4242").write_bytes(b"old archive")
            # Another checkpoint's files whose names merely start alike stay.
            (dest / ".ckpt.tmp-abcdefgh.part").write_bytes(b"someone else's")
            await client.download(ref_of(checkpoint), dest)
            assert listing(dest) == [".ckpt.tmp-abcdefgh.part", "ckpt"]

    asyncio.run(scenario())


def test_an_unusable_destination_is_a_clean_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            blocker = tmp_path / "not-a-directory"
            blocker.write_text("a file where the destination should be")
            with pytest.raises(LogitsError, match=r"^cannot create .*not-a-directory: File exists"):
                await client.download(ref_of(checkpoint), blocker)

    asyncio.run(scenario())


def test_extraction_is_finished_before_a_cancellation_lands() -> None:
    async def scenario() -> None:
        started, release = threading.Event(), threading.Event()
        finished: list[bool] = []

        def extraction() -> None:
            started.set()
            release.wait(30)
            finished.append(True)

        outer = asyncio.create_task(
            transfer.complete_even_if_cancelled(asyncio.to_thread(extraction))
        )
        await asyncio.to_thread(started.wait, 30)
        outer.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not outer.done()  # still holding on while the thread works
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert finished == [True]

    asyncio.run(scenario())


# -- issue 8 F8: a damaged local copy is noticed and repaired ---------------------------------


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (lambda path: path.unlink(), "adapter_model.safetensors missing"),
        (
            lambda path: path.write_bytes(path.read_bytes()[:100]),
            "adapter_model.safetensors has 100 bytes, expected {size}",
        ),
    ],
    ids=["deleted", "truncated"],
)
def test_a_damaged_copy_is_downloaded_again(tmp_path: Path, damage: Any, reported: str) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            dest = tmp_path / "dest"
            first = await client.download(ref_of(checkpoint), dest)
            tensors = first.path / "adapter_model.safetensors"
            size = tensors.stat().st_size
            damage(tensors)
            assert not verify_checkpoint_dir(first.path).ok
            again = await client.download(ref_of(checkpoint), dest)
            assert not again.skipped
            assert again.repaired == (reported.format(size=size),)
            assert again.bytes_fetched == checkpoint.size_bytes
            assert verify_checkpoint_dir(again.path).ok
            assert listing(dest) == ["ckpt"]
            third = await client.download(ref_of(checkpoint), dest)
            assert third.skipped and third.repaired == ()

    asyncio.run(scenario())


# -- issue 8 F15: unwritable destinations and busy part files ---------------------------------


def test_an_unwritable_destination_is_not_reported_as_busy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            with pytest.raises(LogitsError) as caught:
                await client.download(ref_of(checkpoint), Path("/proc/self"))
            assert not isinstance(caught.value, BusyError)
            assert caught.value.exit_code == 1
            assert caught.value.message.startswith("cannot create files in /proc/self: ")
            assert caught.value.hint == "choose a directory you can write to with -o DIR"

    asyncio.run(scenario())


def test_a_busy_part_file_hints_lock_wait_and_lock_wait_waits(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    holding, release = threading.Event(), threading.Event()

    def other_downloader() -> None:
        # Its own thread takes and drops the lock (filelock's locks are per thread).
        with filelock.FileLock(dest / ".ckpt.part.lock"):
            holding.set()
            release.wait(60)

    async def scenario() -> None:
        async with embedded_client(tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            holder = threading.Thread(target=other_downloader)
            holder.start()
            try:
                assert holding.wait(60)
                with pytest.raises(BusyError) as caught:
                    await client.download(ref_of(checkpoint), dest)
                assert caught.value.option == "lock_wait"  # the CLI names the flag
                threading.Timer(0.3, release.set).start()
                result = await client.download(
                    ref_of(checkpoint), dest, options=DownloadOptions(lock_wait=60)
                )
            finally:
                release.set()
                holder.join()
            assert verify_checkpoint_dir(result.path).ok
            assert listing(dest) == ["ckpt"]

    asyncio.run(scenario())


def test_bytes_are_written_back_while_fetched_and_a_failed_writeback_fails(
    live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetcher.py starts an fdatasync in the background every WRITEBACK_EVERY bytes of a
    file that is installed as fetched (a kept archive, a per-file download), never of an
    archive that is extracted and deleted. Linux reports a writeback error to one fsync
    only, so an error there must fail the download: the install's own fsync may never see
    it. (An EIO a real disk cannot be made to give.)"""
    import errno
    import os

    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    def failing(fd: int) -> None:
        synced.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    async def scenario() -> None:
        async with remote_client(live_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            monkeypatch.setattr(transfer.part_file, "WRITEBACK_EVERY", 1)
            monkeypatch.setattr(transfer.part_file.os, "fdatasync", counting)
            extracted = await client.download(ref_of(checkpoint), tmp_path / "extracted")
            assert_matches_archive(extracted.path, server_blob(live_server.store, checkpoint))
            assert synced == []  # its archive is deleted after extraction

            kept = DownloadOptions(archive_only=True)
            result = await client.download(ref_of(checkpoint), tmp_path / "kept", options=kept)
            assert result.path == tmp_path / "kept" / "ckpt.tar" and result.path.is_file()
            assert synced

            synced.clear()
            monkeypatch.setattr(transfer.part_file.os, "fdatasync", failing)
            with pytest.raises(LogitsError, match=r"cannot write the download in .*: Input/"):
                await client.download(ref_of(checkpoint), tmp_path / "failed", options=kept)
            assert synced
            assert not (tmp_path / "failed" / "ckpt.tar").exists()

    asyncio.run(scenario())
