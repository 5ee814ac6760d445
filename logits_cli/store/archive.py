"""Deterministic checkpoint archives (docs/protocol.md §7.1, §7.4).

``build_archive`` writes the tar itself, member by member, with ustar headers from
``tarfile.TarInfo``: the tarfile writer would read every member twice to get both the member
digests (for ``checkpoint_complete``) and the archive digest (the blob's name). Here each
member is read once in large chunks and written, while worker threads (hashlib releases the
GIL) update the archive digest and, unless the state file carries a remembered digest
(``lora.record_digest``), the member digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from logits_cli import models
from logits_cli.diskio import fsync_directory, write_all
from logits_cli.errors import IntegrityError, UsageError
from logits_cli.store.lora import (
    CHECKPOINT_COMPLETE,
    COPY_CHUNK,
    MEMBERS_BY_KIND,
    recorded_digest,
    temp_path_beside,
)
from logits_cli.uri import KIND_TO_TYPE

_MAX_MANIFEST_BYTES = 16 << 20
_WRITEBACK_EVERY = 64 << 20


def _member_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    try:
        return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError as exc:
        raise UsageError(f"{name} ({size} bytes) does not fit a ustar archive member") from exc


def _padding(size: int, block: int) -> bytes:
    return b"\0" * (-size % block)


class _HashingTarWriter:
    """Appends tar blocks to ``out`` and hashes every byte written into ``archive_hash``."""

    def __init__(self, out: BinaryIO, hashers: ThreadPoolExecutor, flusher: ThreadPoolExecutor):
        self._out = out
        self._hashers = hashers
        self._flusher = flusher
        self._in_flight: list[Future[None]] = []
        self._writeback: Future[None] | None = None
        self._unflushed = 0
        self.archive_hash = hashlib.sha256()
        self.size = 0

    def _start_writeback(self, written: int) -> None:
        # The blob must be fsynced before it is renamed. Flushing as we go lets the disk work
        # while we copy and hash, so the final fsync only waits for the tail.
        self._unflushed += written
        if self._unflushed >= _WRITEBACK_EVERY and (
            self._writeback is None or self._writeback.done()
        ):
            self._unflushed = 0
            self._writeback = self._flusher.submit(os.fdatasync, self._out.fileno())

    def sync(self) -> None:
        """Wait for the background flush, then make the whole file durable."""
        if self._writeback is not None:
            self._writeback.result()
        self._out.flush()
        os.fsync(self._out.fileno())

    def _settle(self) -> None:
        # Chunks must reach each digest in order, and a buffer may only be refilled once
        # both digests are done with it.
        for pending in self._in_flight:
            pending.result()
        self._in_flight = []

    def write_blocks(self, data: bytes) -> None:
        self._settle()
        self.archive_hash.update(data)
        write_all(self._out.fileno(), data)
        self.size += len(data)

    def write_bytes_member(self, name: str, data: bytes, mtime: int) -> None:
        self.write_blocks(
            _member_header(name, len(data), mtime) + data + _padding(len(data), tarfile.BLOCKSIZE)
        )

    def write_file_member(self, name: str, path: Path, mtime: int) -> models.FileDigest:
        buffers = (bytearray(COPY_CHUNK), bytearray(COPY_CHUNK))
        with open(path, "rb", buffering=0) as source:
            size = os.fstat(source.fileno()).st_size
            known_sha256 = recorded_digest(source.fileno())
            digests = [self.archive_hash] if known_sha256 else [self.archive_hash, hashlib.sha256()]
            self.write_blocks(_member_header(name, size, mtime))
            copied = 0
            turn = 0
            while True:
                view = memoryview(buffers[turn])
                count = source.readinto(view)
                if not count:
                    break
                chunk = view[:count]
                self._settle()
                self._in_flight = [self._hashers.submit(digest.update, chunk) for digest in digests]
                write_all(self._out.fileno(), chunk)
                self._start_writeback(count)
                copied += count
                turn ^= 1
            self._settle()
        if copied != size:
            raise IntegrityError(f"{name} changed size while it was archived")
        self.size += size
        self.write_blocks(_padding(size, tarfile.BLOCKSIZE))
        return models.FileDigest(sha256=known_sha256 or digests[-1].hexdigest(), size=size)

    def finish(self) -> None:
        end = b"\0" * (2 * tarfile.BLOCKSIZE)
        self.write_blocks(end + _padding(self.size + len(end), tarfile.RECORDSIZE))


def manifest_bytes(manifest: models.CheckpointComplete) -> bytes:
    """Canonical JSON (docs/protocol.md §7.4): keys sorted, no spaces, UTF-8, newline."""
    document = manifest.model_dump(mode="json")
    return (
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()


def build_archive(
    state_dir: Path,
    blobs_dir: Path,
    *,
    kind: str,
    tinker_path: str,
    created: datetime,
    owner: str | None = None,
) -> tuple[Path, str, int]:
    """Snapshot ``state_dir`` into ``blobs_dir/<sha256>``; returns (path, sha256, size).
    ``owner`` tags the temp file (``lora.temp_path_beside``) for the start-up sweep.

    The bytes depend only on the member files, ``kind``, ``tinker_path`` and ``created``.
    """
    if kind not in MEMBERS_BY_KIND:
        raise UsageError(f"unknown checkpoint kind {kind!r}")
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    mtime = int(created.timestamp())
    blobs_dir.mkdir(parents=True, exist_ok=True)

    with (
        temp_path_beside(blobs_dir, "archive", owner) as temp,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="archive-sha256") as hashers,
    ):
        # The flusher must be shut down (its fdatasync finished) before ``out`` is closed.
        with (
            open(temp, "wb", buffering=0) as out,
            ThreadPoolExecutor(1, "archive-flush") as flusher,
        ):
            writer = _HashingTarWriter(out, hashers, flusher)
            files = {
                name: writer.write_file_member(name, state_dir / name, mtime)
                for name in sorted(MEMBERS_BY_KIND[kind])
            }
            manifest = models.CheckpointComplete(
                checkpoint_type=KIND_TO_TYPE[kind],
                created=created,
                files=files,
                tinker_path=tinker_path,
            )
            writer.write_bytes_member(CHECKPOINT_COMPLETE, manifest_bytes(manifest), mtime)
            writer.finish()
            writer.sync()
        sha256 = writer.archive_hash.hexdigest()
        final = blobs_dir / sha256
        os.replace(temp, final)
    fsync_directory(blobs_dir)
    return final, sha256, writer.size


def read_manifest(archive: Path) -> models.CheckpointComplete:
    """The ``checkpoint_complete`` member of an archive (the last one, found by seeking)."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.name == CHECKPOINT_COMPLETE and member.isreg():
                    source = tar.extractfile(member)
                    if source is None:
                        break
                    return models.CheckpointComplete.model_validate_json(
                        source.read(_MAX_MANIFEST_BYTES)
                    )
    except (tarfile.TarError, ValueError) as exc:
        raise IntegrityError(f"checkpoint archive is corrupt: {exc}") from exc
    raise IntegrityError("checkpoint archive has no checkpoint_complete manifest")
