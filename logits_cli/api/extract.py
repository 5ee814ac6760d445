"""Safe, atomic extraction of a verified checkpoint archive (docs/ARCHITECTURE.md §3, docs/protocol.md §7.5).

Members are written into a temporary sibling directory ``DEST/.NAME.tmp-XXXX`` on the
destination's filesystem, each one checked (plain file at the root, safe name, no repeats)
before its first byte and hashed while it is written: an uncompressed archive member by
member with kernel copies (kernel_copy.py), a compressed one as a stream.
``checkpoint_complete`` must be present and every file it lists must match. Only then is the
manifest written inside the temporary directory and the directory renamed into place, so a
final ``DEST/NAME`` always verifies. Any failure removes the temporary directory.

Hostile archives are bounded (issue 8): at most ``MAX_MEMBERS`` members; every member must
be named by ``checkpoint_complete`` (docs/protocol.md §7.4 says ``files`` lists every other
member, so an unlisted one is not part of the checkpoint); a compressed archive may expand
to at most ``MAX_EXPANSION`` times its size, and no member is written that the disk cannot
hold, checked from its header before its first byte.

With ``adapter_only`` only ``ADAPTER_FILES`` (docs/protocol.md §7; what an export holds) are
written; the others, ``checkpoint_complete`` too (it lists files not installed), are read
past, each still admitted and its size compared: the archive's digest covers their bytes.
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from logits_cli import models
from logits_cli.api.kernel_copy import copy_range_hashed
from logits_cli.api.verify import HASH_CHUNK, MANIFEST_NAME, check_member_name
from logits_cli.diskio import fsync_directory, open_own_dir, write_all
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
# What a server needs to serve the checkpoint: the PEFT adapter (docs/protocol.md §7.2, §7.3).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def extract_checkpoint(
    archive: Path,
    dest_dir: Path,
    name: str,
    *,
    checkpoint: models.Checkpoint,
    archive_sha256: str,
    archive_size: int,
    force: bool,
    adapter_only: bool = False,
) -> Path:
    """Extract ``archive`` into ``dest_dir/name`` atomically and write its manifest; with
    ``adapter_only``, only ``ADAPTER_FILES`` (see the module doc)."""
    final = dest_dir / name
    staging = make_staging_dir(dest_dir, name)
    try:
        files, complete = _unpack_checked(archive, staging, archive_size, adapter_only)
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
            content="full"
            if checkpoint.checkpoint_type == "training" and not adapter_only
            else "adapter-only",
        )
        _write_durably(staging / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
        fsync_directory(staging)
        install_directory(staging, final, force=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(dest_dir)
    return final


def make_staging_dir(dest_dir: Path, name: str) -> Path:
    """A new directory ``DEST/.NAME.tmp-XXXXXXXX`` of ours, mode 0755 like any installed
    one. ``mkdtemp`` creates it (a fresh name, never through a symlink); its mode is set
    through a descriptor that refuses a symlink, so a directory swapped in meanwhile is
    never re-moded."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest_dir))
    try:
        fd = open_own_dir(staging)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.rmdir()
        raise
    try:
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
    return staging


def _is_compressed(archive: Path) -> bool:
    with open(archive, "rb") as raw:
        start = raw.read(6)
    return any(start.startswith(magic) for magic in _COMPRESSED_MAGIC)


def _check_room(
    member: tarfile.TarInfo, unpacked: int, budget: int, staging: Path, *, compressed: bool
) -> None:
    if unpacked + member.size > budget and not compressed:
        raise IntegrityError(
            f"archive member {member.name!r} is larger than what is left of the archive: truncated"
        )
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


class _Admission:
    """The checks every member passes before a byte of it is written."""

    def __init__(
        self, staging: Path, budget: int, *, compressed: bool, adapter_only: bool = False
    ) -> None:
        self.staging = staging
        self.budget = budget
        self.compressed = compressed
        self.adapter_only = adapter_only
        self.names: set[str] = set()
        self.unpacked = 0
        # Members read past with adapter_only: name -> size from the header.
        self.read_past: dict[str, int] = {}

    def writes(self, member: tarfile.TarInfo) -> bool:
        """Whether ``member`` is written, else read past (``adapter_only``, no adapter file)."""
        return not self.adapter_only or member.name in ADAPTER_FILES

    def admit(self, member: tarfile.TarInfo) -> None:
        if len(self.names) >= MAX_MEMBERS:
            raise IntegrityError(
                f"the archive has more than {MAX_MEMBERS} members; a checkpoint has a few"
            )
        check_member_name(member.name)
        if not member.isreg():
            raise IntegrityError(f"archive member {member.name!r} is not a regular file")
        if member.name in self.names:
            raise IntegrityError(f"archive member {member.name!r} appears twice")
        _check_room(member, self.unpacked, self.budget, self.staging, compressed=self.compressed)
        self.names.add(member.name)
        self.unpacked += member.size
        if not self.writes(member):
            self.read_past[member.name] = member.size


def _unpack_checked(
    archive: Path, staging: Path, archive_size: int, adapter_only: bool = False
) -> tuple[dict[str, models.FileDigest], models.CheckpointComplete]:
    compressed = _is_compressed(archive)
    size = max(archive_size, archive.stat().st_size)
    admission = _Admission(
        staging,
        size * MAX_EXPANSION if compressed else size,
        compressed=compressed,
        adapter_only=adapter_only,
    )
    try:
        if compressed:
            files, complete_raw = _unpack_stream(archive, staging, admission)
        else:
            files, complete_raw = _unpack_plain(archive, staging, admission)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IntegrityError(f"archive is not a readable tar file ({exc})") from None

    if complete_raw is None:
        raise IntegrityError(f"incomplete checkpoint: the archive has no {COMPLETE_MEMBER}")
    try:
        complete = models.CheckpointComplete.model_validate_json(complete_raw)
    except ValidationError:
        raise IntegrityError(f"incomplete checkpoint: {COMPLETE_MEMBER} is unreadable") from None
    check_complete_listing(files, complete, what="archive member", read_past=admission.read_past)
    if adapter_only:
        missing = [name for name in ADAPTER_FILES if name not in files]
        if missing:
            raise IntegrityError(
                f"the archive has no {missing[0]}: there is no adapter to install on its own",
                option="adapter_only",
            )
        files.pop(COMPLETE_MEMBER, None)  # read, not written: it lists files not installed
    return files, complete


def _read_complete(member: tarfile.TarInfo, source: object, staging: Path | None) -> bytes:
    """The bytes of ``checkpoint_complete``, also written into ``staging`` unless None."""
    if member.size > MAX_COMPLETE_SIZE:
        raise IntegrityError(f"{COMPLETE_MEMBER} is implausibly large")
    raw: bytes = source.read()  # type: ignore[attr-defined]
    if staging is not None:
        _write_durably(staging / member.name, raw)
    return raw


def _unpack_plain(
    archive: Path, staging: Path, admission: _Admission
) -> tuple[dict[str, models.FileDigest], bytes | None]:
    """An uncompressed tar: headers are read by seeking past the data, and each member's
    bytes are copied in the kernel and hashed beside (kernel_copy.py), one pass each."""
    files: dict[str, models.FileDigest] = {}
    complete_raw: bytes | None = None
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:") as tar,
        ThreadPoolExecutor(1, thread_name_prefix="logits-hash") as pool,
    ):
        end = os.fstat(raw.fileno()).st_size
        while (member := tar.next()) is not None:
            admission.admit(member)
            if member.offset_data + member.size > end:
                raise IntegrityError(f"archive member {member.name!r} is truncated")
            # checkpoint_complete is read whole; a sparse member's data is not one range
            # of the archive: both go through tarfile.
            if member.name == COMPLETE_MEMBER or member.sparse is not None:
                read = _unpack_through_tarfile(tar, member, staging, files, admission)
                complete_raw = read if read is not None else complete_raw
                continue
            if not admission.writes(member):
                continue  # tar.next() seeks past its data
            files[member.name] = copy_range_hashed(
                pool, raw.fileno(), member.offset_data, member.size, str(staging / member.name)
            )
    return files, complete_raw


def _unpack_stream(
    archive: Path, staging: Path, admission: _Admission
) -> tuple[dict[str, models.FileDigest], bytes | None]:
    """A compressed tar, read once as a stream."""
    files: dict[str, models.FileDigest] = {}
    complete_raw: bytes | None = None
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            admission.admit(member)
            read = _unpack_through_tarfile(tar, member, staging, files, admission)
            complete_raw = read if read is not None else complete_raw
    return files, complete_raw


def _unpack_through_tarfile(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    staging: Path,
    files: dict[str, models.FileDigest],
    admission: _Admission,
) -> bytes | None:
    """Write one member read through ``tarfile`` and record its digest; returns the bytes
    of ``checkpoint_complete`` when that is the member, else None. A member ``admission``
    does not write is read past (a stream skips its data when the next one is asked for)."""
    if member.name != COMPLETE_MEMBER and not admission.writes(member):
        return None
    source = tar.extractfile(member)
    if source is None:
        raise IntegrityError(f"archive member {member.name!r} has no data")
    if member.name == COMPLETE_MEMBER:
        complete_raw = _read_complete(member, source, None if admission.adapter_only else staging)
        files[member.name] = _digest_of(complete_raw)
        return complete_raw
    files[member.name] = _copy_member(source, staging / member.name)
    return None


def _digest_of(data: bytes) -> models.FileDigest:
    return models.FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def check_complete_listing(
    files: dict[str, models.FileDigest],
    complete: models.CheckpointComplete,
    *,
    what: str,
    read_past: dict[str, int] | None = None,
) -> None:
    """Every file is listed in ``checkpoint_complete`` and matches its size and sha256, and
    every listed file is there (docs/protocol.md §7.4); used by both generations. Members
    in ``read_past`` (name -> size, not written: ``--adapter-only``) are checked by size:
    their bytes were covered by the archive's digest, not hashed one by one."""
    read_past = read_past or {}
    unlisted = sorted((set(files) | set(read_past)) - set(complete.files) - {COMPLETE_MEMBER})
    if unlisted:
        raise IntegrityError(
            f"{what} {unlisted[0]!r} is not listed in {COMPLETE_MEMBER}"
            + (f" (nor are {len(unlisted) - 1} others)" if len(unlisted) > 1 else "")
        )
    for listed, expected in sorted(complete.files.items()):
        got = files.get(listed)
        if listed in read_past:  # its size is all there is to compare
            got = models.FileDigest(sha256=expected.sha256.lower(), size=read_past[listed])
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
    try:
        while chunk := source.read(HASH_CHUNK):  # type: ignore[attr-defined]
            digest.update(chunk)
            write_all(fd, chunk)
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return models.FileDigest(sha256=digest.hexdigest(), size=size)


def _write_durably(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def install_directory(staging: Path, final: Path, *, force: bool) -> None:
    """Rename ``staging`` to ``final``; with ``force`` an existing ``final`` is moved aside
    first and removed only once the new directory is in place. Renames never follow a
    symlink: one at ``final`` is itself moved aside and unlinked, never written through."""
    aside: Path | None = None
    if final.exists() or final.is_symlink():
        if not force:
            raise ConflictError(f"{final} already exists", option="force")
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
