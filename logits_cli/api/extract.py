"""Safe, atomic extraction of a verified checkpoint archive (docs/ARCHITECTURE.md §3, docs/protocol.md §7.5).

Members are streamed into a temporary sibling directory ``DEST/.NAME.tmp-XXXX`` on the
destination's filesystem, each one checked (plain file at the root, safe name, no repeats)
and hashed while it is written. ``checkpoint_complete`` must be present and every file it
lists must match. Only then is the manifest written inside the temporary directory and the
directory renamed into place, so a final ``DEST/NAME`` always verifies. Any failure removes
the temporary directory.

Hostile archives are bounded (issue 8): at most ``MAX_MEMBERS`` members; every member must
be named by ``checkpoint_complete`` (docs/protocol.md §7.4 says ``files`` lists every other
member, so an unlisted one is not part of the checkpoint); a compressed archive may expand
to at most ``MAX_EXPANSION`` times its size, and no member is written that the disk cannot
hold, checked from its header before its first byte.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from logits_cli import models
from logits_cli.api.verify import HASH_CHUNK, MANIFEST_NAME, check_member_name
from logits_cli.errors import ConflictError, IntegrityError, LogitsError, UsageError
from logits_cli.uri import CheckpointRef

COMPLETE_MEMBER = "checkpoint_complete"
# checkpoint_complete is a small JSON document; a huge one is hostile.
MAX_COMPLETE_SIZE = 16 * 1024 * 1024
# A checkpoint has four members; tens of thousands of junk ones are an attack on the
# directory, refused before they are all written.
MAX_MEMBERS = 256
# Tensors hardly compress; JSON does. Far past this, a compressed archive is a bomb.
MAX_EXPANSION = 32
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def extract_checkpoint(
    archive: Path,
    dest_dir: Path,
    name: str,
    *,
    checkpoint: models.Checkpoint,
    archive_sha256: str,
    archive_size: int,
    force: bool,
) -> Path:
    """Extract ``archive`` into ``dest_dir/name`` atomically and write its manifest."""
    final = dest_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the final directory is an ordinary one
    try:
        files, complete = _unpack_checked(archive, staging, archive_size)
        _check_belongs_to(complete, checkpoint)
        manifest = models.LocalManifest(
            tinker_path=checkpoint.tinker_path,
            checkpoint_id=checkpoint.checkpoint_id,
            checkpoint_type=checkpoint.checkpoint_type,
            archive_sha256=archive_sha256,
            archive_size=archive_size,
            created=checkpoint.time,
            downloaded_at=datetime.now(UTC),
            files=files,
            content="full" if checkpoint.checkpoint_type == "training" else "adapter-only",
        )
        _write_durably(staging / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
        _fsync_directory(staging)
        _install(staging, final, force=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(dest_dir)
    return final


def _expansion_budget(archive: Path, archive_size: int) -> int:
    """How many member bytes the archive may unpack to."""
    with open(archive, "rb") as raw:
        start = raw.read(6)
    compressed = any(start.startswith(magic) for magic in _COMPRESSED_MAGIC)
    size = max(archive_size, archive.stat().st_size)
    return size * MAX_EXPANSION if compressed else size


def _check_room(member: tarfile.TarInfo, unpacked: int, budget: int, staging: Path) -> None:
    if unpacked + member.size > budget:
        raise IntegrityError(
            f"archive member {member.name!r} would unpack the archive past {budget} bytes "
            f"({MAX_EXPANSION}x its size): refused as a decompression bomb"
        )
    free = shutil.disk_usage(staging).free
    if member.size > free:
        raise LogitsError(
            f"not enough free space in {staging.parent} to unpack {member.name!r}: "
            f"{member.size} bytes needed, {free} available"
        )


def _unpack_checked(
    archive: Path, staging: Path, archive_size: int
) -> tuple[dict[str, models.FileDigest], models.CheckpointComplete]:
    files: dict[str, models.FileDigest] = {}
    complete_raw: bytes | None = None
    budget = _expansion_budget(archive, archive_size)
    unpacked = 0
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise IntegrityError(
                        f"the archive has more than {MAX_MEMBERS} members; a checkpoint has a few"
                    )
                check_member_name(member.name)
                if not member.isreg():
                    raise IntegrityError(f"archive member {member.name!r} is not a regular file")
                if member.name in files:
                    raise IntegrityError(f"archive member {member.name!r} appears twice")
                _check_room(member, unpacked, budget, staging)
                unpacked += member.size
                source = tar.extractfile(member)
                if source is None:
                    raise IntegrityError(f"archive member {member.name!r} has no data")
                if member.name == COMPLETE_MEMBER:
                    if member.size > MAX_COMPLETE_SIZE:
                        raise IntegrityError(f"{COMPLETE_MEMBER} is implausibly large")
                    complete_raw = source.read()
                    _write_durably(staging / member.name, complete_raw)
                    digest = models.FileDigest(
                        sha256=hashlib.sha256(complete_raw).hexdigest(), size=len(complete_raw)
                    )
                else:
                    digest = _copy_member(source, staging / member.name)
                files[member.name] = digest
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IntegrityError(f"archive is not a readable tar file ({exc})") from None

    if complete_raw is None:
        raise IntegrityError(f"incomplete checkpoint: the archive has no {COMPLETE_MEMBER}")
    try:
        complete = models.CheckpointComplete.model_validate_json(complete_raw)
    except ValidationError:
        raise IntegrityError(f"incomplete checkpoint: {COMPLETE_MEMBER} is unreadable") from None
    check_complete_listing(files, complete, what="archive member")
    return files, complete


def check_complete_listing(
    files: dict[str, models.FileDigest], complete: models.CheckpointComplete, *, what: str
) -> None:
    """Every file is listed in ``checkpoint_complete`` and matches its size and sha256, and
    every listed file is there (docs/protocol.md §7.4); used by both generations."""
    unlisted = sorted(set(files) - set(complete.files) - {COMPLETE_MEMBER})
    if unlisted:
        raise IntegrityError(
            f"{what} {unlisted[0]!r} is not listed in {COMPLETE_MEMBER}"
            + (f" (nor are {len(unlisted) - 1} others)" if len(unlisted) > 1 else "")
        )
    for listed, expected in sorted(complete.files.items()):
        got = files.get(listed)
        if got is None:
            raise IntegrityError(f"{listed}: listed in {COMPLETE_MEMBER} but missing")
        if got.size != expected.size:
            raise IntegrityError(f"{listed}: size {got.size}, expected {expected.size}")
        if got.sha256 != expected.sha256.lower():
            raise IntegrityError(f"{listed}: sha256 does not match {COMPLETE_MEMBER}")


def _check_belongs_to(complete: models.CheckpointComplete, checkpoint: models.Checkpoint) -> None:
    """The archive must describe the checkpoint that was asked for (schemes may differ)."""
    try:
        inner = CheckpointRef.parse(complete.tinker_path, any_kind=True)
        outer = CheckpointRef.parse(checkpoint.tinker_path, any_kind=True)
    except UsageError:
        raise IntegrityError(f"{COMPLETE_MEMBER} names an unreadable checkpoint path") from None
    if inner.with_scheme(outer.scheme) != outer:
        raise IntegrityError(
            f"the archive holds {complete.tinker_path}, not {checkpoint.tinker_path}"
        )


def _copy_member(source: object, target: Path) -> models.FileDigest:
    digest = hashlib.sha256()
    size = 0
    # O_EXCL | O_NOFOLLOW: never write through something already at that name.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(HASH_CHUNK):  # type: ignore[attr-defined]
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return models.FileDigest(sha256=digest.hexdigest(), size=size)


def _write_durably(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(staging: Path, final: Path, *, force: bool) -> None:
    """Rename ``staging`` to ``final``; with ``force`` an existing ``final`` is moved aside
    first and removed only once the new directory is in place."""
    aside: Path | None = None
    if final.exists() or final.is_symlink():
        if not force:
            raise ConflictError(f"{final} already exists", hint="pass --force to replace it")
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                aside.unlink()
